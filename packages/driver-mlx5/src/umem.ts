/**
 * The classic pinned MR (`ib_umem_get`, drivers/infiniband/core/umem.c; `ibv_reg_mr` without
 * ON_DEMAND): registration faults in and pins every page of the range for the MR's lifetime
 * (`pin_user_pages` with FOLL_LONGTERM, and FOLL_WRITE when the MR is writable) and writes the
 * whole MTT once. Nothing of it is ever invalidated: the pages cannot move or be reclaimed.
 *
 * Simulated time, from the cost model (perf-anchors.md §1): `rdma.regPinPerPageNs` (62 ns, gup_test
 * of pre-faulted pages) per page already present, `rdma.regPinFaultInPerPageNs` (950 ns, VFIO pin +
 * fault-in + zero) per page faulted in, `gup.unpinPerPageNs` (15 ns) per page at deregistration.
 *
 * @module
 */
import { Foll, HmmError, PAGE_SIZE, hex, pinUserPages, unpinUserPages } from '@hmm/core';
import { Mlx5Mr, accessWritable, permOf } from './mr.js';
import type { MrKind } from './mr.js';
import type { Mlx5Pd } from './pd.js';

/** A pinned MR. */
export class PinnedMr extends Mlx5Mr {
  readonly kind: MrKind = 'pinned';
  /** The pinned frames, one per page of the page-aligned window. */
  readonly pfns: Int32Array;
  /** Simulated ns the registration took. */
  readonly regNs: number;

  private constructor(
    pd: Mlx5Pd,
    start: number,
    length: number,
    access: number,
    pfns: Int32Array,
    regNs: number,
  ) {
    super(pd, start, length, access);
    this.pfns = pfns;
    this.regNs = regNs;
  }

  /**
   * `ib_umem_get` + MTT creation: pins the pages (faulting them in), charges the pin time, writes
   * the MTT. Rejects, with nothing pinned, with GUP's error: EFAULT for a hole or a mapping it
   * cannot pin (PFNMAP, read-only memory for a writable MR), ENOMEM.
   * @internal Use {@link Mlx5Pd.regMr}.
   */
  static async register(pd: Mlx5Pd, start: number, length: number, access: number): Promise<PinnedMr> {
    const m = pd.hca.machine;
    const mm = pd.process.mm;
    const s = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
    const n = Math.ceil((start + length) / PAGE_SIZE) - s / PAGE_SIZE;
    const t0 = m.sched.now;
    // Pages the pin faults in show as new resident pages: no walk of the range beforehand.
    const rssBefore = mm.rssPages;
    const writable = accessWritable(access);
    let pfns: Int32Array;
    try {
      pfns = await pinUserPages(mm.ctx, mm, s, n, Foll.LONGTERM | (writable ? Foll.WRITE : 0));
    } catch (e) {
      if (e instanceof HmmError) {
        throw new HmmError(e.code, `ibv_reg_mr: pinning ${n} pages at ${hex(s)} failed (${e.message})`, {
          address: s,
          kernelRef: 'drivers/infiniband/core/umem.c:ib_umem_get',
        });
      }
      throw e;
    }
    const faulted = Math.max(0, mm.rssPages - rssBefore);
    const cost = m.cost.rdma;
    await m.sched.sleep((n - faulted) * cost.regPinPerPageNs + faulted * cost.regPinFaultInPerPageNs);
    const mr = new PinnedMr(pd, start, length, access, pfns, 0);
    const vpns = new Float64Array(n);
    const perms = new Uint8Array(n).fill(permOf(writable));
    for (let i = 0; i < n; i++) vpns[i] = s / PAGE_SIZE + i;
    await mr.umr(vpns, pfns, perms);
    (mr as { regNs: number }).regNs = m.sched.now - t0;
    return mr;
  }

  /** Pinned pages are always mapped: a miss here is a bug, reported as EFAULT. */
  pagefault(va: number): Promise<number> {
    return Promise.reject(
      new HmmError('EFAULT', `mlx5: pinned MR ${hex(this.lkey)} has no translation for ${hex(va)}`, {
        address: va,
      }),
    );
  }

  /** `ib_umem_release`: zaps the MTT, unpins every page (dirtying is GUP's job), charges the unpin. */
  async dereg(): Promise<void> {
    this.destroyKey();
    await this.zapAll();
    unpinUserPages(this.hca.machine.mm, this.pfns);
    await this.hca.machine.sched.sleep(this.pfns.length * this.hca.machine.cost.gup.unpinPerPageNs);
    this.freeContext();
  }
}
