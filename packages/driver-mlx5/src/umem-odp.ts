/**
 * `struct ib_umem_odp` (drivers/infiniband/core/umem_odp.c): the on-demand view of one range of
 * user memory, per explicit ODP MR or per implicit-MR child. It pins nothing. Per page it keeps
 * the frame and the DMA rights it was mapped with (`dma` bits, 0 = not mapped), counts mapped
 * pages, owns the `umem_mutex` its invalidate callback takes, and one interval notifier over its
 * range. The MR decides what the invalidate callback does ({@link UmemOdpOwner.invalidate}).
 *
 * @module
 */
import {
  HMM_RANGE_DEFAULT_TIMEOUT_NS,
  HmmError,
  HmmPfn,
  Mutex,
  PAGE_SIZE,
  PG,
  hex,
  hmmPfnFlags,
  hmmPfnToPfn,
  hmmRangeFault,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
} from '@hmm/core';
import type { HmmRange, MmStruct, MmuIntervalNotifier, MmuNotifierRange } from '@hmm/core';

/** `dma` bits of a page. */
export const OdpDma = {
  READ: 1,
  WRITE: 2,
} as const;

/** What the umem's invalidate callback calls (the MR's `mlx5_ib_invalidate_range`). */
export interface UmemOdpOwner {
  invalidate(umem: UmemOdp, range: MmuNotifierRange, seq: number): boolean | Promise<boolean>;
}

/** The pages {@link UmemOdp.mapDmaAndLock} found (valid while the umem mutex is held). */
export interface OdpMapResult {
  /** First page index (into the umem) of the range. */
  readonly first: number;
  /** Pages of the range. */
  readonly count: number;
  /** The `hmm_range_fault` words of the range. */
  readonly words: Float64Array;
}

/** One ODP umem. */
export class UmemOdp {
  /** Frame of each page (meaningful where `dma` is non-zero). */
  readonly pfns: Int32Array;
  /** {@link OdpDma} bits of each page, 0 = not mapped. */
  readonly dma: Uint8Array;
  /** `umem_mutex`: serialises mapping against invalidation. */
  readonly mutex: Mutex;
  readonly notifier: MmuIntervalNotifier;
  #mapped = 0;
  #removed = false;
  /** `hmm_range_fault` retries (EBUSY or a sequence change). */
  retries = 0;

  /**
   * A umem over `[start, end)` (page aligned) of `mm`: inserts its interval notifier
   * (`ib_umem_odp_get` / `ib_umem_odp_alloc_child`).
   */
  constructor(
    readonly mm: MmStruct,
    readonly start: number,
    readonly end: number,
    owner: UmemOdpOwner,
    name: string,
  ) {
    if (start % PAGE_SIZE !== 0 || end % PAGE_SIZE !== 0 || !(end > start)) {
      throw new HmmError('EINVAL', `${name}: umem [${hex(start)}, ${hex(end)}) is empty or not page aligned`);
    }
    const n = (end - start) / PAGE_SIZE;
    this.pfns = new Int32Array(n);
    this.dma = new Uint8Array(n);
    this.mutex = new Mutex(mm.ctx.sched, `${name}.umem_mutex`);
    this.notifier = mmuIntervalNotifierInsert(mm, start, end - start, {
      invalidate: (_sub, range, seq) => owner.invalidate(this, range, seq),
    });
  }

  /** Pages mapped now (`umem_odp->npages`). */
  get mapped(): number {
    return this.#mapped;
  }

  /** Page index of `addr` in this umem. */
  index(addr: number): number {
    return (addr - this.start) / PAGE_SIZE;
  }

  /**
   * `ib_umem_odp_map_dma_and_lock`: collects the pages of `[start, end)` (inside the umem, page
   * aligned) with `hmm_range_fault` (faulting them in unless `fault` is false, for write if `write`),
   * retrying while invalidations race it for up to 1 s, then takes the umem mutex and records each
   * valid page (frame, READ, and WRITE if both `write` allows it and the page is writable).
   * **Returns with the mutex held**; the caller writes the translation and unlocks. Rejects, with
   * the mutex free, with the error of `hmm_range_fault` or EBUSY after the timeout.
   */
  async mapDmaAndLock(start: number, end: number, write: boolean, fault: boolean): Promise<OdpMapResult> {
    if (this.#removed)
      throw new HmmError('EINVAL', `umem [${hex(this.start)}, ${hex(this.end)}) was released`);
    const sched = this.mm.ctx.sched;
    const count = (end - start) / PAGE_SIZE;
    const range: HmmRange = {
      notifier: this.notifier,
      notifierSeq: 0,
      start,
      end,
      hmmPfns: new Float64Array(count),
      defaultFlags: fault ? HmmPfn.REQ_FAULT | (write ? HmmPfn.REQ_WRITE : 0) : 0,
      pfnFlagsMask: 0,
      devPrivateOwner: null,
    };
    const deadline = sched.now + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    for (;;) {
      if (sched.now > deadline) {
        throw new HmmError('EBUSY', `umem fault at ${hex(start)} kept racing invalidations for 1 s`, {
          address: start,
        });
      }
      range.notifierSeq = await mmuIntervalReadBegin(this.notifier);
      await this.mm.mmapLock.read();
      try {
        await hmmRangeFault(range);
      } catch (e) {
        if (e instanceof HmmError && e.code === 'EBUSY') {
          this.retries++;
          continue;
        }
        throw e;
      } finally {
        this.mm.mmapLock.readUnlock();
      }
      await this.mutex.lock();
      if (mmuIntervalReadRetry(this.notifier, range.notifierSeq)) {
        this.mutex.unlock();
        this.retries++;
        continue;
      }
      break;
    }
    const first = this.index(start);
    const words = range.hmmPfns;
    for (let i = 0; i < count; i++) {
      const w = words[i]!;
      const f = hmmPfnFlags(w);
      if ((f & HmmPfn.VALID) === 0) continue;
      const k = first + i;
      if (this.dma[k] === 0) this.#mapped++;
      this.pfns[k] = hmmPfnToPfn(w);
      // Pages already mapped only get their rights refreshed.
      this.dma[k] = OdpDma.READ | (write && (f & HmmPfn.WRITE) !== 0 ? OdpDma.WRITE : 0);
    }
    return { first, count, words };
  }

  /**
   * `ib_umem_odp_unmap_dma_pages` of `[start, end)`: forgets every mapped page, marking the ones
   * mapped for write dirty (the HCA may have written them). Call with the mutex held, after the
   * translation entries are zapped. Returns the pages unmapped.
   */
  unmapDmaPages(start: number, end: number): number {
    const mem = this.mm.ctx.mem;
    const from = Math.max(0, this.index(Math.max(start, this.start)));
    const to = Math.min(this.dma.length, this.index(Math.min(end, this.end)));
    let n = 0;
    for (let k = from; k < to; k++) {
      const d = this.dma[k]!;
      if (d === 0) continue;
      const pfn = this.pfns[k]!;
      if ((d & OdpDma.WRITE) !== 0 && (mem.flags[pfn]! & (PG.ALLOCATED | PG.ZONE_DEVICE)) === PG.ALLOCATED) {
        mem.flags[pfn]! |= PG.DIRTY;
      }
      this.dma[k] = 0;
      n++;
    }
    this.#mapped -= n;
    return n;
  }

  /**
   * Calls `fn(startIndex, endIndex)` for each run of mapped pages within `[start, end)` (the MTT
   * blocks an invalidation must zap).
   */
  forEachMappedBlock(start: number, end: number, fn: (from: number, to: number) => void): void {
    const from = Math.max(0, this.index(Math.max(start, this.start)));
    const to = Math.min(this.dma.length, this.index(Math.min(end, this.end)));
    let run = -1;
    for (let k = from; k < to; k++) {
      if (this.dma[k] !== 0) {
        if (run < 0) run = k;
      } else if (run >= 0) {
        fn(run, k);
        run = -1;
      }
    }
    if (run >= 0) fn(run, to);
  }

  /** `ib_umem_odp_release`: removes the notifier (waiting for a running invalidation). Idempotent. */
  async release(): Promise<void> {
    if (this.#removed) return;
    this.#removed = true;
    await mmuIntervalNotifierRemove(this.notifier);
  }

  /** True after {@link release}. */
  get released(): boolean {
    return this.#removed;
  }
}
