/**
 * The device layer: the hardware building blocks a driver programs. A device's MMU (one page
 * table per address-space context), its command queue and fences, and the device's memory accesses
 * with replayable faults. The SDK sees every device mapping and every device access through them.
 *
 * @module
 */
import './trace-events.js';

export { DeviceMmu, DevPerm, DEVICE_MMU_VPN_LIMIT } from './device-mmu.js';
export type { DevPermBits } from './device-mmu.js';
export { Fence } from './fence.js';
export { CommandQueue, defaultCommandLatency } from './command-queue.js';
export type {
  DeviceCommand,
  DeviceCommandOp,
  MapCommand,
  UnmapCommand,
  UnmapAllCommand,
  NopCommand,
  CommandLatency,
  CommandQueueHost,
} from './command-queue.js';
export { SimDevice, DEVICE_MAX_FAULT_RETRIES } from './device.js';
export type {
  DeviceAccessKind,
  DeviceFault,
  DeviceFaultHandler,
  DeviceAccessObserver,
  DeviceStats,
  SimDeviceOptions,
} from './device.js';
export { CopyEngine } from './copy-engine.js';
export type { CopyPage, CopyDirection, CopyResult, CopyEngineOptions } from './copy-engine.js';
export { HmmDevmem } from './hmm-devmem.js';
export {
  FaultBuffer,
  FaultBatch,
  FaultAccess,
  FAULT_ACCESS_NAMES,
  FAULT_BUFFER_DEFAULT_ENTRIES,
  FAULT_INSTANCE_MAX,
} from './fault-buffer.js';
export type { FaultAccessId, FaultBufferOptions, FaultBufferStats } from './fault-buffer.js';
export type { HmmDevmemOps, HmmDevmemOptions, EvictCopy } from './hmm-devmem.js';
