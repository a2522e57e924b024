/**
 * An address space (`struct mm_struct`, include/linux/mm_types.h): its page table, VMAs,
 * `mmap_lock`, RSS counters and notifier hooks.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import { RwSemaphore } from '../sim/locks.js';
import type { MmContext } from './mm-context.js';
import type { MmuNotifierHooks } from './mmu-notifier-hooks.js';
import { PageTable } from './pgtable.js';
import { VmaTree } from './vma.js';

/** RSS counter indices (`NR_MM_COUNTERS`: MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES). */
export const RssCounter = { FILE: 0, ANON: 1, SWAP: 2, SHMEM: 3 } as const;
export type RssCounterId = (typeof RssCounter)[keyof typeof RssCounter];

/** Lifecycle of an address space. */
export type MmState = 'live' | 'exiting' | 'dead';

/** One process address space. */
export class MmStruct {
  /** Page table (`mm->pgd`). */
  readonly pgtable: PageTable;
  /** VMAs in address order (`mm->mm_mt`). */
  readonly vmas = new VmaTree();
  /** `mm->mmap_lock`: write for layout changes, read for faults and GUP. */
  readonly mmapLock: RwSemaphore;
  /** RSS counters indexed by {@link RssCounter} (`mm->rss_stat`). */
  readonly rss = new Float64Array(4);
  /** Notifier hooks installed by the hmm layer (`mm->notifier_subscriptions`), or null. */
  notifier: MmuNotifierHooks | null = null;
  /** Lifecycle state; operations on a dead mm fail with ESRCH. */
  state: MmState = 'live';

  constructor(
    readonly ctx: MmContext,
    /** Id (index in the context's mm table; also the owner recorded in leaf page tables). */
    readonly id: number,
  ) {
    this.pgtable = new PageTable(ctx.arena, id);
    this.mmapLock = new RwSemaphore(ctx.sched, `mmap_lock:mm${id}`);
  }

  /** Resident pages: anon + file + shmem (`get_mm_rss`). */
  get rssPages(): number {
    return this.rss[RssCounter.ANON]! + this.rss[RssCounter.FILE]! + this.rss[RssCounter.SHMEM]!;
  }

  /** Throws ESRCH unless the mm is live (`mmget_not_zero` failing). */
  assertLive(op: string): void {
    if (this.state !== 'live') {
      throw new HmmError(
        'ESRCH',
        `${op} on mm ${this.id}, which has ${this.state === 'dead' ? 'exited' : 'begun exiting'}`,
      );
    }
  }
}
