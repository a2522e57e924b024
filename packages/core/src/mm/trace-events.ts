/**
 * Trace events of the memory manager (kernel tracepoints: `mm_filemap_*`, `mm_vmscan_*`,
 * `exceptions:page_fault_user`, `mmap_lock`), added to the sim layer's {@link TraceEventMap}.
 *
 * @module
 */
import type { MmContext } from './mm-context.js';

declare module '../sim/trace.js' {
  interface TraceEventMap {
    /** A page fault was resolved; `kind` names the path taken. Kernel: `page_fault_user`. */
    'mm.fault': { mm: number; address: number; write: boolean; kind: FaultKind };
    /** A page was reclaimed. Kernel: `mm_vmscan_lru_shrink_inactive`. */
    'mm.reclaim': { pfn: number; how: 'swap' | 'discard' | 'writeback' | 'drop' };
    /** An invalidation range started. Kernel: `mmu_notifier_invalidate_range_start`. */
    'mm.invalidate': { mm: number; start: number; end: number; event: string; blockable: boolean };
    /** A memory system call completed. */
    'mm.syscall': { mm: number; call: string; address: number; length: number };
  }
}

/** Path a fault took. */
export type FaultKind =
  'anon' | 'zero' | 'file' | 'cow' | 'reuse' | 'swapin' | 'special' | 'shared-write' | 'spurious';

const FAULT_COUNTERS: Readonly<Record<FaultKind, string>> = {
  anon: 'mm.fault.anon',
  zero: 'mm.fault.zero',
  file: 'mm.fault.file',
  cow: 'mm.fault.cow',
  reuse: 'mm.fault.reuse',
  swapin: 'mm.fault.swapin',
  special: 'mm.fault.special',
  'shared-write': 'mm.fault.shared-write',
  spurious: 'mm.fault.spurious',
};

/** Emits an `mm.fault` event if anyone listens, and counts the fault by kind. */
export function traceFault(
  ctx: MmContext,
  mm: number,
  address: number,
  write: boolean,
  kind: FaultKind,
): void {
  const bus = ctx.trace;
  if (bus.enabled('mm.fault')) bus.emit({ type: 'mm.fault', ts: ctx.sched.now, mm, address, write, kind });
  bus.count(FAULT_COUNTERS[kind]);
}

/** Emits an `mm.syscall` event if anyone listens. */
export function traceSyscall(
  ctx: MmContext,
  mm: number,
  call: string,
  address: number,
  length: number,
): void {
  const bus = ctx.trace;
  if (bus.enabled('mm.syscall'))
    bus.emit({ type: 'mm.syscall', ts: ctx.sched.now, mm, call, address, length });
}
