/**
 * Trace events of the simulated devices, added to the sim layer's {@link TraceEventMap} (hardware
 * counterpart: a GPU's channel and MMU-fault tracepoints, e.g. nouveau's `nvkm_fault`, UVM's
 * fault-buffer events; kernel: `dma_fence_signaled`).
 *
 * @module
 */
import type { DeviceCommandOp } from './command-queue.js';
import type { DeviceAccessKind } from './device.js';

declare module '../sim/trace.js' {
  interface TraceEventMap {
    /**
     * A device command completed and its fence signalled. `entries`: entries written (map) or
     * cleared (unmap, unmap-all), 0 for nop. `asid` is null for nop; `startVpn`/`endVpn` are set for
     * unmap only. Kernel: `dma_fence_signaled`.
     */
    'device.cmd': {
      device: number;
      name: string;
      seqno: number;
      op: DeviceCommandOp;
      asid: number | null;
      entries: number;
      startVpn: number | null;
      endVpn: number | null;
    };
    /**
     * A device access found no entry with the needed permission. `address` is page aligned;
     * `attempt` counts faults on this page within one access, from 1; `handled` is false when no
     * fault handler was registered. Counterpart: a replayable GPU fault-buffer entry.
     */
    'device.fault': {
      device: number;
      name: string;
      asid: number;
      address: number;
      access: DeviceAccessKind;
      attempt: number;
      handled: boolean;
    };
  }
}

export {};
