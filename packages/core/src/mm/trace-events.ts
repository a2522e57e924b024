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
    /**
     * A migration collected its pages (`phase: 'setup'`, `pages` = entries marked MIGRATE) or ended
     * (`'finalize'`, `pages` = pages that moved, `restored` = collected pages put back). `mm` is -1 for
     * an eviction by frame number. Kernel: `migrate_vma_*` have no tracepoint; `mm_migrate_pages` is
     * the closest.
     */
    'mm.migrate': {
      mm: number;
      start: number;
      end: number;
      phase: 'setup' | 'finalize';
      pages: number;
      restored: number;
    };
    /** A CPU access found a device-private entry and asked its owner to migrate the page back. */
    'mm.migrate_to_ram': { mm: number; address: number; pfn: number; write: boolean };
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

/** Emits an `mm.migrate` event if anyone listens, and counts pages migrated. */
export function traceMigrate(
  ctx: MmContext,
  mm: number,
  start: number,
  end: number,
  phase: 'setup' | 'finalize',
  pages: number,
  restored: number,
): void {
  const bus = ctx.trace;
  if (bus.enabled('mm.migrate')) {
    bus.emit({ type: 'mm.migrate', ts: ctx.sched.now, mm, start, end, phase, pages, restored });
  }
  if (phase === 'finalize') bus.count('mm.migrate.pages', pages);
}
