/**
 * The memory manager's machine-wide state: physical memory with its LRU lists, the page-table
 * arena, swap, the file store, the reverse map and the table of address spaces. Every mm operation
 * takes this context (kernel: the globals behind `NODE_DATA(0)`, `swap_info`, the inode cache).
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import type { HmmRange } from '../hmm/hmm-range-fault.js';
import type { CostModel } from '../sim/cost-model.js';
import type { Scheduler } from '../sim/scheduler.js';
import type { TraceBus } from '../sim/trace.js';
import { PAGE_SIZE } from './constants.js';
import { FileStore } from './filemap.js';
import { Lru } from './lru.js';
import { MmStruct } from './mm-struct.js';
import { PG } from './page-flags.js';
import { PageTableArena } from './pgtable.js';
import { PhysMem } from './physmem.js';
import type { DevPagemap } from './memremap.js';
import { WaitQueue } from '../sim/wait.js';
import { Rmap } from './rmap.js';
import { SwapSpace } from './swap.js';
import { shrinkNode } from './vmscan.js';

/** Sizes of the simulated machine's memory. */
export interface MmConfig {
  /** RAM in bytes (a whole number of pages, ≥ 16 pages). */
  readonly ramBytes: number;
  /** Swap in bytes (0 = no swap). */
  readonly swapBytes: number;
}

/** Frames direct reclaim tries to free per attempt (`SWAP_CLUSTER_MAX`). */
export const SWAP_CLUSTER_MAX = 32;

/** Machine-wide memory-manager state. */
export class MmContext {
  readonly mem: PhysMem;
  readonly lru: Lru;
  readonly arena = new PageTableArena();
  readonly swap: SwapSpace;
  readonly files = new FileStore();
  readonly rmap: Rmap;
  /** Device pagemaps by id (`pgmap` of a device frame = `pagemaps[mem.owner[pfn]]`); index 0 unused. */
  readonly pagemaps: (DevPagemap | undefined)[] = [undefined];
  /**
   * Called for each page whose migration commits (source frame, or -1 for a filled empty slot, and
   * destination frame). Installed by the sanitizer to check migrated data; null when unused.
   */
  onMigratePage: ((srcPfn: number, dstPfn: number) => void) | null = null;
  /**
   * Race injection (test instrumentation; no kernel counterpart): awaited by `hmmRangeFault` after a
   * walk that succeeded, in the caller's task, with the caller's mmap lock still held for read. What
   * it does lands after the walk's last sequence check and before the caller's
   * `mmu_interval_read_retry`: the window the interval-notifier sequence protocol exists for. The
   * conformance suite's race group installs it to invalidate there. It may take the mmap lock for
   * read (MADV_DONTNEED, a CPU fault), never for write. null when unused.
   */
  onRangeFaultDone: ((range: HmmRange) => Promise<void>) | null = null;
  /** Called when `memunmapPages` refuses because frames are still in use (sanitizer hook); null when unused. */
  onMemunmapBusy: ((pgmap: DevPagemap, frames: readonly number[]) => void) | null = null;
  /** Sleepers on frame locks (the kernel's hashed folio wait table, as one queue). */
  readonly pageLockWait: WaitQueue;
  private readonly mms: (MmStruct | undefined)[] = [undefined];
  private readonly freeMmIds: number[] = [];

  constructor(
    config: MmConfig,
    readonly sched: Scheduler,
    readonly trace: TraceBus,
    readonly cost: CostModel,
  ) {
    this.mem = new PhysMem(config.ramBytes);
    this.lru = new Lru(this.mem);
    this.pageLockWait = new WaitQueue(sched, 'folio-lock');
    this.mem.onDeviceFrameFree = (pfn) => {
      const pgmap = this.pagemaps[this.mem.owner[pfn]!];
      if (pgmap === undefined) throw new Error(`internal: device frame ${pfn} has no pagemap`);
      pgmap.ops.pageFree(pfn);
    };
    this.swap = new SwapSpace(config.swapBytes);
    this.rmap = new Rmap(
      this.mem,
      this.arena,
      (id) => this.mms[id],
      (id) => this.files.get(id),
    );
  }

  /** Creates an empty address space (`mm_alloc`). */
  createMm(): MmStruct {
    const id = this.freeMmIds.pop() ?? this.mms.length;
    const mm = new MmStruct(this, id);
    this.mms[id] = mm;
    return mm;
  }

  /** Forgets a torn-down address space (`mmdrop`). */
  destroyMm(mm: MmStruct): void {
    if (this.mms[mm.id] !== mm) return;
    this.mms[mm.id] = undefined;
    this.freeMmIds.push(mm.id);
  }

  /** The address space with this id. */
  mmById(id: number): MmStruct | undefined {
    return this.mms[id];
  }

  /** Address spaces that exist. */
  liveMms(): MmStruct[] {
    return this.mms.filter((m): m is MmStruct => m !== undefined);
  }

  /** Drops one reference to a frame (`folio_put`): the last one takes it off the LRU and frees it. */
  putPage(pfn: number): void {
    const mem = this.mem;
    if (mem.refcount[pfn] === 1 && (mem.flags[pfn]! & PG.LRU) !== 0) this.lru.del(pfn);
    mem.put(pfn);
  }

  /**
   * Allocates a frame (`alloc_pages` with `GFP_HIGHUSER_MOVABLE`), running direct reclaim when none
   * is free. Fails with ENOMEM only when reclaim can free nothing (every page pinned, referenced
   * elsewhere, or swap full).
   */
  async allocPage(): Promise<number> {
    for (;;) {
      const pfn = this.mem.alloc();
      if (pfn >= 0) return pfn;
      const freed = await shrinkNode(this, SWAP_CLUSTER_MAX);
      if (freed === 0 && this.mem.nrFree === 0) {
        throw new HmmError(
          'ENOMEM',
          `out of memory: all ${this.mem.nrRamFrames - 1} frames are in use and reclaim freed none (pinned, in use, or swap full: ${this.swap.nrFree} of ${this.swap.nrSlots - 1} swap slots free)`,
        );
      }
    }
  }

  /** Bytes of RAM. */
  get ramBytes(): number {
    return this.mem.nrRamFrames * PAGE_SIZE;
  }
}
