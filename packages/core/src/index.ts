/**
 * `@hmm/core`: a deterministic simulation of the Linux kernel's memory-management surface that
 * devices use to share a process address space (HMM).
 *
 * Layers, bottom-up: `sim` (clock, scheduler, locks, cost model, trace bus), `mm` (frames, page
 * tables, VMAs, faults, rmap, reclaim, swap, GUP, files, device memory and migration), `hmm` (MMU
 * interval notifiers, `hmm_range_fault`), `device` (device MMU, command queue, copy engine, device
 * memory), `pci` (topology, p2pdma, p2p_map), `sanitizer`, `driver`, `system` (the composition root,
 * {@link Machine}). See `docs/architecture.md` and the kernel ↔ SDK name table in `docs/kernel-names.md`.
 *
 * @module @hmm/core
 */
export { HmmError, Errno, isHmmError, hex } from './errors/errno.js';
export type { ErrnoName, FaultSignal, HmmErrorDetail } from './errors/errno.js';
export * from './sim/index.js';
export * from './mm/index.js';
export * from './hmm/index.js';
export { Machine } from './system/machine.js';
export type { MachineOptions, MemoryStats } from './system/machine.js';
export * from './device/index.js';
export * from './pci/index.js';
export * from './sanitizer/index.js';
export * from './driver/index.js';
export { System } from './system/system.js';
export type { SystemOptions } from './system/system.js';
