/**
 * The LRU lists (`struct lruvec`, include/linux/mm_inline.h, mm/swap.c): inactive/active × anon/file,
 * doubly linked through the frame table's `lruPrev`/`lruNext`. New pages enter at the head of the
 * inactive list; reclaim scans from the tail.
 *
 * As in the kernel, the list a frame is on follows from its flags: `PG.ACTIVE` picks active/inactive
 * and `PG.SWAPBACKED` picks anon/file (so MADV_FREE'd anon pages sit on the file list). Callers
 * remove a frame before changing either flag.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PG } from './page-flags.js';
import type { PhysMem } from './physmem.js';

/** `enum lru_list`. */
export const LruList = { INACTIVE_ANON: 0, ACTIVE_ANON: 1, INACTIVE_FILE: 2, ACTIVE_FILE: 3 } as const;
export type LruListId = (typeof LruList)[keyof typeof LruList];

/** The four LRU lists of one memory arena. */
export class Lru {
  private readonly head = new Int32Array(4).fill(-1);
  private readonly tail = new Int32Array(4).fill(-1);
  private readonly count = new Int32Array(4);

  constructor(private readonly mem: PhysMem) {}

  /** The list a frame belongs on, from its flags (`folio_lru_list`). */
  listOf(pfn: number): LruListId {
    const f = this.mem.flags[pfn]!;
    return (((f & PG.SWAPBACKED) === 0 ? 2 : 0) + ((f & PG.ACTIVE) !== 0 ? 1 : 0)) as LruListId;
  }

  /** Number of frames on a list. */
  size(list: LruListId): number {
    return this.count[list]!;
  }

  /** Tail (oldest) frame of a list, or -1. */
  tailOf(list: LruListId): number {
    return this.tail[list]!;
  }

  /** Adds a frame at the head of its list (`lruvec_add_folio`). */
  add(pfn: number): void {
    const mem = this.mem;
    if ((mem.flags[pfn]! & PG.LRU) !== 0)
      throw new HmmError('EINVAL', `frame ${hex(pfn)} is already on an LRU list`);
    const l = this.listOf(pfn);
    const h = this.head[l]!;
    mem.lruPrev[pfn] = -1;
    mem.lruNext[pfn] = h;
    if (h >= 0) mem.lruPrev[h] = pfn;
    else this.tail[l] = pfn;
    this.head[l] = pfn;
    this.count[l]!++;
    mem.flags[pfn]! |= PG.LRU;
  }

  /** Removes a frame from its list (`lruvec_del_folio`); no-op if it is on none. */
  del(pfn: number): void {
    const mem = this.mem;
    if ((mem.flags[pfn]! & PG.LRU) === 0) return;
    const l = this.listOf(pfn);
    const p = mem.lruPrev[pfn]!;
    const n = mem.lruNext[pfn]!;
    if (p >= 0) mem.lruNext[p] = n;
    else this.head[l] = n;
    if (n >= 0) mem.lruPrev[n] = p;
    else this.tail[l] = p;
    mem.lruPrev[pfn] = -1;
    mem.lruNext[pfn] = -1;
    this.count[l]!--;
    mem.flags[pfn]! &= ~PG.LRU;
  }

  /** Moves a frame to the head of the active or inactive list of its kind. */
  setActive(pfn: number, active: boolean): void {
    this.del(pfn);
    if (active) this.mem.flags[pfn]! |= PG.ACTIVE;
    else this.mem.flags[pfn]! &= ~PG.ACTIVE;
    this.add(pfn);
  }

  /** Frames on a list from head to tail (for tests and invariant checks). */
  toArray(list: LruListId): number[] {
    const out: number[] = [];
    for (let p = this.head[list]!; p >= 0; p = this.mem.lruNext[p]!) out.push(p);
    return out;
  }
}
