/**
 * The ODP fault path (drivers/infiniband/hw/mlx5/odp.c, `mlx5_ib_eq_pf_action` →
 * `mlx5_ib_pfault`): one work item per HCA consumes the page-fault EQ in order. For each EQE:
 *
 * 1. it pays the event's fixed cost (`odp.faultNs`: interrupt, work scheduling, EQE parsing and the
 *    resume command; an estimate, perf-anchors.md §3);
 * 2. looks the memory key up (an unknown key fails the fault, EFAULT; a pinned MR counts as mapped)
 *    and runs the MR's `pagefault` over the demanded bytes: one packet when the HCA could not tell
 *    the length (RDMA WRITE or SEND at the responder), else the reported length;
 * 3. sends `PAGE_FAULT_RESUME` with the outcome (an error moves the stalled QP to the error state);
 * 4. after resuming a fault of unknown length, prefetches up to {@link MLX5_MAX_PREFETCH_BYTES}
 *    from the faulting address (clipped to its VMA and the MR; errors ignored), so the following
 *    packets find their pages mapped.
 *
 * Also {@link adviseMr}'s prefetch (`mlx5_ib_advise_mr_prefetch`).
 *
 * @module
 */
import { HmmError, hex, isHmmError } from '@hmm/core';
import { PfFlag } from './eq.js';
import type { PageFaultEqe, PfKindId } from './eq.js';
import type { Mlx5Hca } from './hca.js';
import { PfFlags } from './mr.js';
import type { Mlx5Mr } from './mr.js';

/** Prefetch after resuming a fault of unknown length: 4 MiB (`MAX_PREFETCH_LEN`). */
export const MLX5_MAX_PREFETCH_BYTES = 4 * 1024 * 1024;

/** Serves one EQE; resolves once it is resumed (and its prefetch done). */
export async function handlePageFault(hca: Mlx5Hca, e: Readonly<PageFaultEqe>): Promise<void> {
  await hca.machine.sched.sleep(hca.machine.cost.odp.faultNs);
  const mr = hca.mkey(e.mkey);
  let error: HmmError | null = null;
  const unknown = (e.flags & PfFlag.LENGTH_UNKNOWN) !== 0;
  if (mr === undefined) {
    error = new HmmError('EFAULT', `mlx5 ${hca.name}: page fault on unknown mkey ${hex(e.mkey)}`, {
      address: e.va,
    });
  } else if (mr.onDemand) {
    try {
      await mr.pagefault(e.va, unknown ? hca.mtu : e.bytes, 0);
    } catch (err) {
      if (!isHmmError(err)) throw err;
      error = err;
    }
  }
  if (hca.removed) return; // removal resumed every pending fault with ENODEV
  hca.resume(e.token, error);
  if (error === null && unknown && mr !== undefined && mr.onDemand) {
    await prefetchAfter(mr, e.va);
  }
}

/** The post-resume prefetch: up to 4 MiB from `va`, within its VMA; errors ignored. */
async function prefetchAfter(mr: Mlx5Mr, va: number): Promise<void> {
  const vma = mr.pd.process.mm.vmas.lookup(va);
  if (vma === undefined) return;
  const bytes = Math.min(MLX5_MAX_PREFETCH_BYTES, vma.end - va);
  try {
    await mr.pagefault(va, bytes, PfFlags.PREFETCH);
  } catch (err) {
    if (!isHmmError(err)) throw err;
  }
}

/** Starts the HCA's page-fault work item (a daemon task draining the EQ). */
export function startPageFaultWork(hca: Mlx5Hca): void {
  hca.machine.sched.spawn(
    `${hca.name}:page_fault`,
    async () => {
      const e: PageFaultEqe = { token: 0, kind: 1 as PfKindId, mkey: 0, va: 0, bytes: 0, flags: 0 };
      while (await hca.eq.waitInterrupt()) {
        while (hca.eq.pop(e)) await handlePageFault(hca, e);
      }
    },
    { daemon: true },
  );
}

/** `ibv_advise_mr` advice. */
export type AdviseMrAdvice = 'PREFETCH' | 'PREFETCH_WRITE' | 'PREFETCH_NO_FAULT';

/** `IB_UVERBS_ADVISE_MR_FLAG_FLUSH`: run synchronously instead of from a work item. */
export const ADVISE_MR_FLAG_FLUSH = 1;

/** One scatter/gather entry of advice or of a work request. */
export interface IbSge {
  readonly lkey: number;
  readonly addr: number;
  readonly length: number;
}

/** Page-fault flags of each advice: PREFETCH maps read-only, NO_FAULT only what is present. */
function adviceFlags(advice: AdviseMrAdvice): number {
  switch (advice) {
    case 'PREFETCH':
      return PfFlags.PREFETCH | PfFlags.DOWNGRADE;
    case 'PREFETCH_WRITE':
      return PfFlags.PREFETCH;
    case 'PREFETCH_NO_FAULT':
      return PfFlags.PREFETCH | PfFlags.SNAPSHOT;
  }
}

/**
 * `mlx5_ib_advise_mr_prefetch`: checks every entry first (EINVAL for an unknown key, another PD's
 * MR, a non-ODP MR or a range leaving the MR; EPERM for PREFETCH_WRITE on an MR without write
 * access; nothing is done then), then prefetches each one. With {@link ADVISE_MR_FLAG_FLUSH} it
 * runs now and rejects with the first fault error; otherwise it is queued on a work item and errors
 * are dropped, as the kernel's are. Resolves to the pages prefetched (0 when queued).
 */
export async function adviseMr(
  hca: Mlx5Hca,
  pdOf: (mr: Mlx5Mr) => boolean,
  advice: AdviseMrAdvice,
  flags: number,
  sgList: readonly IbSge[],
): Promise<number> {
  if (advice !== 'PREFETCH' && advice !== 'PREFETCH_WRITE' && advice !== 'PREFETCH_NO_FAULT') {
    throw new HmmError('EOPNOTSUPP', `ibv_advise_mr: unknown advice ${String(advice)}`);
  }
  if ((flags & ~ADVISE_MR_FLAG_FLUSH) !== 0) {
    throw new HmmError('EINVAL', `ibv_advise_mr: unknown flags ${hex(flags)}`);
  }
  const mrs: Mlx5Mr[] = [];
  for (const sge of sgList) {
    const mr = hca.mkey(sge.lkey);
    if (mr === undefined || !pdOf(mr)) {
      throw new HmmError(
        'EINVAL',
        `ibv_advise_mr: lkey ${hex(sge.lkey)} is not an MR of this protection domain`,
      );
    }
    if (!mr.onDemand) {
      throw new HmmError('EINVAL', `ibv_advise_mr: MR ${hex(sge.lkey)} is pinned, not an ODP MR`);
    }
    const bad = mr.accessError(sge.addr, sge.length, 0, 'ibv_advise_mr');
    if (bad !== null || !(sge.length > 0)) {
      throw new HmmError('EINVAL', bad?.message ?? `ibv_advise_mr: empty entry at ${hex(sge.addr)}`, {
        address: sge.addr,
      });
    }
    if (advice === 'PREFETCH_WRITE' && !mr.writable) {
      throw new HmmError(
        'EPERM',
        `ibv_advise_mr: PREFETCH_WRITE on MR ${hex(sge.lkey)} registered without write access`,
      );
    }
    mrs.push(mr);
  }
  const pf = adviceFlags(advice);
  const run = async (): Promise<number> => {
    let n = 0;
    for (let i = 0; i < mrs.length; i++) n += await mrs[i]!.pagefault(sgList[i]!.addr, sgList[i]!.length, pf);
    return n;
  };
  if ((flags & ADVISE_MR_FLAG_FLUSH) !== 0) return run();
  hca.machine.sched.spawn(`${hca.name}:prefetch`, async () => {
    try {
      await run();
    } catch (err) {
      if (!isHmmError(err)) throw err;
    }
  });
  return 0;
}
