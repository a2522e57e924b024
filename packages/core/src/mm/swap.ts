/**
 * Swap space (mm/swapfile.c): slots with a use count (`swap_map`), contents in a {@link PageStore}.
 * A swap PTE's value is its slot. Slot 0 is reserved, as the kernel reserves the swap header page.
 *
 * Simplification: there is no swap cache. Swap-in copies the slot into a new private frame and drops
 * one use of the slot, so processes sharing a swapped page after fork each get their own copy on
 * swap-in (contents are the same; only memory use differs from the kernel).
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import { PageStore } from './page-store.js';
import type { PhysMem } from './physmem.js';

/** Largest use count of one slot (`SWAP_MAP_MAX`-like; the SDK's counts are 16-bit). */
export const SWAP_MAP_MAX = 0xffff;

/** One swap device. */
export class SwapSpace {
  /** Slots, including the reserved slot 0. */
  readonly nrSlots: number;
  /** Use count per slot (`si->swap_map`), 0 = free. */
  readonly swapMap: Uint16Array;
  /** Slot contents. */
  readonly store: PageStore;
  private readonly next: Int32Array;
  private freeHead = -1;
  private nrFreeSlots = 0;

  constructor(bytes: number) {
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', `swap size ${bytes} must be a whole number of pages`);
    }
    const n = bytes / PAGE_SIZE + 1;
    this.nrSlots = n;
    this.swapMap = new Uint16Array(n);
    this.store = new PageStore(n);
    this.next = new Int32Array(n).fill(-1);
    for (let s = n - 1; s >= 1; s--) {
      this.next[s] = this.freeHead;
      this.freeHead = s;
    }
    this.nrFreeSlots = n - 1;
    this.swapMap[0] = SWAP_MAP_MAX;
  }

  /** Free slots. */
  get nrFree(): number {
    return this.nrFreeSlots;
  }

  /** Slots in use. */
  get nrUsed(): number {
    return this.nrSlots - 1 - this.nrFreeSlots;
  }

  /** Allocates a slot with use count `uses` (`folio_alloc_swap`), or returns -1 when swap is full. */
  alloc(uses: number): number {
    const s = this.freeHead;
    if (s < 0) return -1;
    this.freeHead = this.next[s]!;
    this.next[s] = -1;
    this.nrFreeSlots--;
    this.swapMap[s] = uses;
    return s;
  }

  /** Adds a use of a slot (`swap_duplicate`, at fork). */
  dup(slot: number): void {
    const c = this.swapMap[slot]!;
    if (c === 0 || slot === 0) throw new HmmError('EINVAL', `swap_duplicate of free slot ${hex(slot)}`);
    if (c >= SWAP_MAP_MAX) throw new HmmError('ENOMEM', `swap slot ${hex(slot)} use count would overflow`);
    this.swapMap[slot] = c + 1;
  }

  /** Drops a use of a slot (`swap_free`); the slot and its contents are freed with the last use. */
  free(slot: number): void {
    const c = this.swapMap[slot]!;
    if (c === 0 || slot === 0) throw new HmmError('EINVAL', `swap_free of free slot ${hex(slot)}`);
    this.swapMap[slot] = c - 1;
    if (c === 1) {
      this.store.clear(slot);
      this.next[slot] = this.freeHead;
      this.freeHead = slot;
      this.nrFreeSlots++;
    }
  }

  /** Writes a frame's contents to a slot (`swap_writepage`). */
  writeOut(mem: PhysMem, pfn: number, slot: number): void {
    this.store.copyPageFrom(mem.content, pfn, slot);
  }

  /** Reads a slot into a frame (`swap_read_folio`). */
  readIn(mem: PhysMem, slot: number, pfn: number): void {
    mem.content.copyPageFrom(this.store, slot, pfn);
  }
}
