/**
 * A device's copy engine (DMA engine): moves whole pages between memories in simulated time. The
 * time of one transfer comes from the cost model: over the bus (host ↔ device) the UVMSmart size
 * curve `dmaTransferNs` on the link's peak bandwidth, inside device memory `mem.gpuHbmGBs`, inside
 * host memory `mem.hostGBs`. One engine runs one transfer at a time, in arrival order. A failure can
 * be injected for the next transfer: it stops after a given number of pages, as a copy engine that
 * faults mid-job, and reports how many pages did arrive so the caller can abandon the rest page by
 * page (what `migrate_vma` drivers do when a copy fails).
 *
 * Hardware counterpart: a GPU copy engine (nouveau's `nvif` copy class, `dma_copy` on a channel), a
 * NIC DMA engine. Pages are addressed as (store, index) so that RAM frames, device frames and swap
 * slots are all endpoints.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import { PAGE_SIZE } from '../mm/constants.js';
import type { PageStore } from '../mm/page-store.js';
import type { CostModel } from '../sim/cost-model.js';
import { bandwidthNs, dmaTransferNs } from '../sim/cost-model.js';
import { Mutex } from '../sim/locks.js';
import type { Scheduler } from '../sim/scheduler.js';
import './trace-events.js';

/** One page as a copy endpoint. */
export interface CopyPage {
  readonly store: PageStore;
  readonly index: number;
}

/** Which memories a transfer connects: host RAM (`h`) or device memory (`d`). */
export type CopyDirection = 'h2d' | 'd2h' | 'd2d' | 'h2h';

/** Outcome of one transfer. */
export interface CopyResult {
  /** Pages that arrived, a prefix of the request. */
  readonly copied: number;
  /** The injected failure that stopped the transfer early, or null. */
  readonly error: HmmError | null;
  /** Simulated ns the transfer took. */
  readonly ns: number;
}

/** Options of a {@link CopyEngine}. */
export interface CopyEngineOptions {
  readonly name?: string;
  /** Bus peak bandwidth in GB/s (default `link.pcie4PeakGBs`). */
  readonly linkGBs?: number;
  /**
   * Id of the device the engine belongs to, for traces (`device.copy`); default none (a trace
   * exporter then matches the engine to a device by its name's prefix, see `toChromeTrace`).
   */
  readonly device?: number;
}

/** One copy engine. */
export class CopyEngine {
  readonly name: string;
  readonly linkGBs: number;
  /** Device id for traces, or null. */
  readonly device: number | null;
  private readonly lock: Mutex;
  private failAfter = -1;
  private _bytes = 0;
  private _transfers = 0;
  private _busyNs = 0;

  constructor(
    private readonly sched: Scheduler,
    private readonly cost: CostModel,
    opts: CopyEngineOptions = {},
  ) {
    this.name = opts.name ?? 'copy-engine';
    this.linkGBs = opts.linkGBs ?? cost.link.pcie4PeakGBs;
    this.device = opts.device ?? null;
    if (!(Number.isFinite(this.linkGBs) && this.linkGBs > 0)) {
      throw new HmmError(
        'EINVAL',
        `copy engine ${this.name}: link bandwidth ${String(opts.linkGBs)} GB/s must be > 0`,
      );
    }
    this.lock = new Mutex(sched, `${this.name}:engine`);
  }

  /** Simulated ns to move `pages` pages in `dir` (no waiting for the engine). */
  transferNs(pages: number, dir: CopyDirection): number {
    const bytes = pages * PAGE_SIZE;
    switch (dir) {
      case 'h2d':
      case 'd2h':
        return dmaTransferNs(this.cost, bytes, this.linkGBs);
      case 'd2d':
        return bandwidthNs(bytes, this.cost.mem.gpuHbmGBs);
      case 'h2h':
        return bandwidthNs(bytes, this.cost.mem.hostGBs);
    }
  }

  /**
   * Makes the next transfer fail after `afterPages` pages (0: nothing arrives). Kernel analogue:
   * dmirror's `HMM_DMIRROR_FLAGS` fault injection, applied to the copy.
   */
  failNext(afterPages = 0): void {
    if (!Number.isInteger(afterPages) || afterPages < 0) {
      throw new HmmError(
        'EINVAL',
        `copy engine ${this.name}: failNext(${String(afterPages)}) needs a page count ≥ 0`,
      );
    }
    this.failAfter = afterPages;
  }

  /**
   * Copies `src[i]` to `dst[i]` for every i as one transfer, waiting for the engine and for the
   * transfer's simulated time (so it must run inside a task unless the transfer takes no time).
   * Returns how many pages arrived; EINVAL (nothing copied) when the two lists differ in length.
   */
  async copy(src: readonly CopyPage[], dst: readonly CopyPage[], dir: CopyDirection): Promise<CopyResult> {
    if (src.length !== dst.length) {
      throw new HmmError(
        'EINVAL',
        `copy engine ${this.name}: ${src.length} sources for ${dst.length} destinations`,
      );
    }
    await this.lock.lock();
    try {
      const fail = this.failAfter;
      this.failAfter = -1;
      const n = fail >= 0 ? Math.min(fail, src.length) : src.length;
      const ns = this.transferNs(n, dir);
      const bus = this.sched.trace;
      if (bus.enabled('device.copy')) {
        bus.emit({
          type: 'device.copy',
          ts: this.sched.now,
          engine: this.name,
          device: this.device,
          dir,
          pages: src.length,
          copied: n,
          ns,
        });
      }
      if (ns > 0) await this.sched.sleep(ns);
      for (let i = 0; i < n; i++) dst[i]!.store.copyPageFrom(src[i]!.store, src[i]!.index, dst[i]!.index);
      this._bytes += n * PAGE_SIZE;
      this._transfers++;
      this._busyNs += ns;
      const error =
        fail >= 0 && n < src.length
          ? new HmmError(
              'EIO',
              `copy engine ${this.name}: injected failure after ${n} of ${src.length} pages`,
            )
          : null;
      return { copied: n, error, ns };
    } finally {
      this.lock.unlock();
    }
  }

  /** Counters: bytes moved, transfers, simulated busy time. */
  stats(): { bytes: number; transfers: number; busyNs: number } {
    return { bytes: this._bytes, transfers: this._transfers, busyNs: this._busyNs };
  }
}
