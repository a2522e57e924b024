/**
 * A protection domain (`ibv_pd`) of one process on one HCA, and the verbs that create what lives in
 * it: memory regions (`ibv_reg_mr`, pinned or ON_DEMAND, explicit or implicit; `ibv_reg_dmabuf_mr`
 * for peer memory), prefetch advice (`ibv_advise_mr`) and queue pairs.
 *
 * @module
 */
import { HmmError, PAGE_SIZE, TASK_SIZE, hex, isHmmError } from '@hmm/core';
import type { Process } from '@hmm/core';
import type { Mlx5Hca } from './hca.js';
import { IB_ACCESS_ALL, IbAccess, PfFlags } from './mr.js';
import type { Mlx5Mr } from './mr.js';
import { ImplicitOdpMr, OdpMr } from './odp-mr.js';
import { adviseMr } from './odp.js';
import type { AdviseMrAdvice, IbSge } from './odp.js';
import { PeerMr } from './peer-mr.js';
import { Mlx5Qp } from './qp.js';
import type { QpOptions } from './qp.js';
import { PinnedMr } from './umem.js';

/** One protection domain. */
export class Mlx5Pd {
  readonly #mrs = new Set<Mlx5Mr>();
  readonly #qps = new Set<Mlx5Qp>();

  constructor(
    readonly hca: Mlx5Hca,
    readonly process: Process,
  ) {
    hca.checkAlive('ibv_alloc_pd');
  }

  /** Live MRs of this PD. */
  get mrs(): readonly Mlx5Mr[] {
    return [...this.#mrs].filter((mr) => !mr.destroyed);
  }

  /** Checks access flags and a window; EINVAL otherwise. */
  #checkReg(what: string, addr: number, length: number, access: number): void {
    this.hca.checkAlive(what);
    if (!(Number.isInteger(access) && (access & ~IB_ACCESS_ALL) === 0)) {
      throw new HmmError('EINVAL', `${what}: unknown access flags ${hex(access)}`);
    }
    if (
      (access & (IbAccess.REMOTE_WRITE | IbAccess.REMOTE_ATOMIC)) !== 0 &&
      (access & IbAccess.LOCAL_WRITE) === 0
    ) {
      throw new HmmError('EINVAL', `${what}: REMOTE_WRITE and REMOTE_ATOMIC need LOCAL_WRITE (IB spec)`);
    }
    if (!(Number.isSafeInteger(addr) && Number.isSafeInteger(length) && addr >= 0 && length > 0)) {
      throw new HmmError(
        'EINVAL',
        `${what}: ${String(length)} bytes at ${String(addr)} is not a non-empty range`,
      );
    }
    if (addr + length > TASK_SIZE) {
      throw new HmmError('EINVAL', `${what}: [${hex(addr)}, +${hex(length)}) leaves the user address space`, {
        address: addr,
      });
    }
  }

  /**
   * `ibv_reg_mr`. Without `IbAccess.ON_DEMAND`: pins the range now ({@link PinnedMr}; GUP's error,
   * e.g. EFAULT for a hole, with nothing pinned). With it: an explicit ODP MR ({@link OdpMr}) that
   * pins nothing; its MTT starts from a snapshot of the pages already present (nothing faulted in).
   * EINVAL for bad flags or range.
   */
  async regMr(addr: number, length: number, access: number): Promise<Mlx5Mr> {
    this.#checkReg('ibv_reg_mr', addr, length, access);
    let mr: Mlx5Mr;
    if ((access & IbAccess.ON_DEMAND) === 0) {
      mr = await PinnedMr.register(this, addr, length, access);
    } else {
      mr = new OdpMr(this, addr, length, access);
      try {
        await mr.pagefault(addr, length, PfFlags.SNAPSHOT);
      } catch (e) {
        // A range with holes registers fine; the snapshot pass maps nothing then.
        if (!isHmmError(e)) throw e;
      }
    }
    this.#mrs.add(mr);
    return mr;
  }

  /**
   * `ibv_reg_mr(pd, NULL, SIZE_MAX, access | ON_DEMAND)`: the implicit ODP MR over the whole
   * address space ({@link ImplicitOdpMr}). EINVAL for bad flags.
   */
  regImplicitOdp(access: number): ImplicitOdpMr {
    this.#checkReg('ibv_reg_mr (implicit ODP)', 0, PAGE_SIZE, access | IbAccess.ON_DEMAND);
    const mr = new ImplicitOdpMr(this, access | IbAccess.ON_DEMAND);
    this.#mrs.add(mr);
    return mr;
  }

  /**
   * `ibv_reg_dmabuf_mr`: an MR over a mapping of an exporter's device file ({@link PeerMr}), mapped
   * through `p2pMap` on first access. EINVAL if the range is not inside one such mapping, or the HCA
   * has no PCI position.
   */
  async regPeerMr(addr: number, length: number, access: number): Promise<PeerMr> {
    this.#checkReg('ibv_reg_dmabuf_mr', addr, length, access | IbAccess.ON_DEMAND);
    const mm = this.process.mm;
    await mm.mmapLock.read();
    try {
      const vma = mm.vmas.lookup(addr);
      if (vma === undefined || vma.ops?.p2pMap === undefined || addr + length > vma.end) {
        throw new HmmError(
          'EINVAL',
          `ibv_reg_dmabuf_mr: [${hex(addr)}, +${hex(length)}) is not inside one mapping of an exporter's device file`,
          { address: addr },
        );
      }
    } finally {
      mm.mmapLock.readUnlock();
    }
    const mr = new PeerMr(this, addr, length, access | IbAccess.ON_DEMAND);
    this.#mrs.add(mr);
    return mr;
  }

  /** `ibv_dereg_mr`. EINVAL for an MR of another PD or one already deregistered (nothing changes). */
  async deregMr(mr: Mlx5Mr): Promise<void> {
    if (!this.#mrs.has(mr))
      throw new HmmError('EINVAL', `ibv_dereg_mr: MR ${hex(mr.lkey)} is not of this PD`);
    if (mr.destroyed)
      throw new HmmError('EINVAL', `ibv_dereg_mr: MR ${hex(mr.lkey)} is already deregistered`);
    this.#mrs.delete(mr);
    await mr.dereg();
  }

  /** `ibv_advise_mr` on MRs of this PD: see {@link adviseMr}. */
  adviseMr(advice: AdviseMrAdvice, flags: number, sgList: readonly IbSge[]): Promise<number> {
    return adviseMr(this.hca, (mr) => mr.pd === this, advice, flags, sgList);
  }

  /** `ibv_create_qp` (RC). */
  createQp(opts: QpOptions): Mlx5Qp {
    this.hca.checkAlive('ibv_create_qp');
    const qp = new Mlx5Qp(this, opts);
    this.#qps.add(qp);
    return qp;
  }

  /**
   * `ibv_dealloc_pd` after destroying what it holds: destroys its QPs and deregisters its MRs.
   * Runs inside a task.
   */
  async dealloc(): Promise<void> {
    for (const qp of this.#qps) qp.destroy();
    this.#qps.clear();
    for (const mr of [...this.#mrs]) {
      this.#mrs.delete(mr);
      if (!mr.destroyed) await mr.dereg();
    }
  }
}
