/**
 * On-Demand Paging MRs (drivers/infiniband/hw/mlx5/odp.c, MR side): registration pins nothing;
 * the translation is filled by page faults (and prefetch advice) and emptied by invalidations.
 *
 * - {@link OdpMr}: an explicit ODP MR over `[start, start + length)`: one umem and an MTT over the
 *   whole range, first filled by a snapshot pass (present pages only, nothing faulted in).
 * - {@link ImplicitOdpMr}: the implicit MR over the whole address space (`addr 0, length
 *   SIZE_MAX`): a KSM of {@link MLX5_IMR_CHILD_BYTES} entries whose children (a umem and a
 *   notifier each) are created on the first fault in their range and destroyed from a work item
 *   once an invalidation leaves them empty.
 *
 * Invalidation (`mlx5_ib_invalidate_range`): declines a non-blockable range; otherwise takes the
 * umem mutex, sets the sequence, zaps only the mapped translation blocks synchronously, unmaps the
 * pages (dirtying those mapped for write), counts them, and queues the free of an emptied child.
 *
 * @module
 */
import { HmmError, PAGE_SIZE, TASK_SIZE, hex, mmuIntervalSetSeq } from '@hmm/core';
import type { Fence, MmuNotifierRange } from '@hmm/core';
import { Mlx5Mr, PfFlags, clipPages, permOf } from './mr.js';
import type { MrKind } from './mr.js';
import type { Mlx5Pd } from './pd.js';
import { OdpDma, UmemOdp } from './umem-odp.js';
import type { UmemOdpOwner } from './umem-odp.js';

/** Bytes covered by one implicit-MR child (one KSM entry): 1 GiB. */
export const MLX5_IMR_CHILD_BYTES = 1024 ** 3;

/**
 * Faults `[start, end)` of `umem` into `mr`'s translation: `ib_umem_odp_map_dma_and_lock`, then a
 * UMR writing the valid pages, then the mutex released. Returns the pages mapped.
 */
async function faultUmem(
  mr: Mlx5Mr,
  umem: UmemOdp,
  start: number,
  end: number,
  flags: number,
): Promise<number> {
  const write = mr.writable && (flags & PfFlags.DOWNGRADE) === 0;
  const res = await umem.mapDmaAndLock(start, end, write, (flags & PfFlags.SNAPSHOT) === 0);
  try {
    // The UMR's entries, struct of arrays: the valid pages of the range.
    const vpns = new Float64Array(res.count);
    const pfns = new Int32Array(res.count);
    const perms = new Uint8Array(res.count);
    const base = umem.start / PAGE_SIZE;
    let n = 0;
    for (let i = 0; i < res.count; i++) {
      const k = res.first + i;
      const d = umem.dma[k]!;
      if (d === 0) continue;
      vpns[n] = base + k;
      pfns[n] = umem.pfns[k]!;
      perms[n++] = permOf((d & OdpDma.WRITE) !== 0);
    }
    await mr.umr(vpns.subarray(0, n), pfns.subarray(0, n), perms.subarray(0, n));
    if ((flags & PfFlags.PREFETCH) !== 0) mr.stats.prefetchedPages += n;
    else if ((flags & PfFlags.SNAPSHOT) === 0) mr.stats.faults += n;
    return n;
  } finally {
    umem.mutex.unlock();
  }
}

/**
 * `mlx5_ib_invalidate_range` for `umem` of `mr`: see the module doc. `onEmpty` runs (mutex held)
 * when the umem has no mapped page left.
 */
function invalidateUmem(
  mr: Mlx5Mr,
  umem: UmemOdp,
  range: MmuNotifierRange,
  seq: number,
  onEmpty: (() => void) | null,
): boolean | Promise<boolean> {
  if (!range.blockable) return false;
  return (async () => {
    await umem.mutex.lock();
    try {
      mmuIntervalSetSeq(umem.notifier, seq);
      const start = Math.max(range.start, umem.start);
      const end = Math.min(range.end, umem.end);
      const base = umem.start / PAGE_SIZE;
      let last: Fence | null = null;
      umem.forEachMappedBlock(start, end, (from, to) => {
        last = mr.zap(base + from, base + to);
      });
      // Synchronous: the zap's completion is the barrier (no fences are handed out).
      if (last !== null) await (last as Fence).wait();
      mr.stats.invalidations += umem.unmapDmaPages(start, end);
      if (umem.mapped === 0) onEmpty?.();
    } finally {
      umem.mutex.unlock();
    }
    return true;
  })();
}

/** An explicit ODP MR. */
export class OdpMr extends Mlx5Mr implements UmemOdpOwner {
  readonly kind: MrKind = 'odp';
  readonly umem: UmemOdp;

  /** @internal Use {@link Mlx5Pd.regMr} with `IbAccess.ON_DEMAND`. */
  constructor(pd: Mlx5Pd, start: number, length: number, access: number) {
    super(pd, start, length, access);
    const s = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
    const e = Math.ceil((start + length) / PAGE_SIZE) * PAGE_SIZE;
    this.umem = new UmemOdp(pd.process.mm, s, e, this, `${pd.hca.name}:mr${hex(this.lkey)}`);
  }

  invalidate(umem: UmemOdp, range: MmuNotifierRange, seq: number): boolean | Promise<boolean> {
    return invalidateUmem(this, umem, range, seq, null);
  }

  async pagefault(va: number, bytes: number, flags: number): Promise<number> {
    if (this.destroyed) throw new HmmError('EINVAL', `mlx5: fault on deregistered MR ${hex(this.lkey)}`);
    const [s, e] = clipPages(va, bytes, this.umem.start, this.umem.end);
    if (s >= e) return 0;
    this.stats.faultEvents += (flags & (PfFlags.PREFETCH | PfFlags.SNAPSHOT)) === 0 ? 1 : 0;
    return faultUmem(this, this.umem, s, e, flags);
  }

  async dereg(): Promise<void> {
    this.destroyKey();
    await this.umem.release();
    await this.umem.mutex.lock();
    try {
      await this.zapAll();
      this.umem.unmapDmaPages(this.umem.start, this.umem.end);
    } finally {
      this.umem.mutex.unlock();
    }
    this.freeContext();
  }
}

/** One child of an implicit MR: a 1 GiB umem. */
interface ImplicitChild {
  readonly index: number;
  readonly umem: UmemOdp;
  /** Faults running on it (it is not freed under them). */
  users: number;
  freeQueued: boolean;
}

/** The implicit ODP MR over the whole address space. */
export class ImplicitOdpMr extends Mlx5Mr {
  readonly kind: MrKind = 'implicit';
  readonly #children = new Map<number, ImplicitChild>();
  #childrenCreated = 0;
  #childrenFreed = 0;

  /** @internal Use {@link Mlx5Pd.regImplicitOdp}. */
  constructor(pd: Mlx5Pd, access: number) {
    super(pd, 0, TASK_SIZE, access);
  }

  /** Live children (1 GiB KSM entries that point at a child MTT, not the null mkey). */
  get children(): number {
    return this.#children.size;
  }

  /** Children created and freed so far. */
  childStats(): { readonly created: number; readonly freed: number; readonly live: number } {
    return { created: this.#childrenCreated, freed: this.#childrenFreed, live: this.#children.size };
  }

  /** The child of KSM entry `index`, created (with its notifier) on first use (`implicit_get_child_mr`). */
  #child(index: number): ImplicitChild {
    let c = this.#children.get(index);
    if (c === undefined) {
      const start = index * MLX5_IMR_CHILD_BYTES;
      const end = Math.min(TASK_SIZE, start + MLX5_IMR_CHILD_BYTES);
      const child: ImplicitChild = {
        index,
        umem: new UmemOdp(
          this.pd.process.mm,
          start,
          end,
          {
            invalidate: (umem, range, seq) =>
              invalidateUmem(this, umem, range, seq, () => this.#queueFree(child)),
          },
          `${this.hca.name}:imr${hex(this.lkey)}[${index}]`,
        ),
        users: 0,
        freeQueued: false,
      };
      c = child;
      this.#children.set(index, c);
      this.#childrenCreated++;
    }
    return c;
  }

  /** Queues the free of an emptied child on a work item (`free_implicit_child_mr_work`). */
  #queueFree(c: ImplicitChild): void {
    if (c.freeQueued) return;
    c.freeQueued = true;
    this.hca.machine.sched.spawn(`${this.hca.name}:imr-free`, async () => {
      c.freeQueued = false;
      if (c.users > 0 || c.umem.mapped > 0 || this.#children.get(c.index) !== c) return;
      this.#children.delete(c.index);
      this.#childrenFreed++;
      await c.umem.release();
    });
  }

  async pagefault(va: number, bytes: number, flags: number): Promise<number> {
    if (this.destroyed) throw new HmmError('EINVAL', `mlx5: fault on deregistered MR ${hex(this.lkey)}`);
    const [s, e] = clipPages(va, bytes, 0, TASK_SIZE);
    if (s >= e) return 0;
    this.stats.faultEvents += (flags & (PfFlags.PREFETCH | PfFlags.SNAPSHOT)) === 0 ? 1 : 0;
    let n = 0;
    for (let pos = s; pos < e;) {
      const index = Math.floor(pos / MLX5_IMR_CHILD_BYTES);
      const stop = Math.min(e, (index + 1) * MLX5_IMR_CHILD_BYTES);
      const c = this.#child(index);
      c.users++;
      try {
        n += await faultUmem(this, c.umem, pos, stop, flags);
      } finally {
        c.users--;
        if (c.umem.mapped === 0 && !c.umem.released) this.#queueFree(c);
      }
      pos = stop;
    }
    return n;
  }

  async dereg(): Promise<void> {
    this.destroyKey();
    const children = [...this.#children.values()];
    this.#children.clear();
    for (const c of children) await c.umem.release();
    await this.zapAll();
    for (const c of children) {
      await c.umem.mutex.lock();
      c.umem.unmapDmaPages(c.umem.start, c.umem.end);
      c.umem.mutex.unlock();
      this.#childrenFreed++;
    }
    this.freeContext();
  }
}
