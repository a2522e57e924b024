/**
 * The importer's fault loop for peer memory, written once so drivers need not rewrite it: the
 * sequence protocol of `hmmRangeFaultLoop` around `p2pMap` instead of `hmm_range_fault`.
 *
 * ```text
 * again:
 *   seq = mmu_interval_read_begin(notifier)
 *   mmap_read_lock(mm); m = p2p_map(range); mmap_read_unlock(mm)
 *   take the driver lock (the one the invalidate callback takes)
 *   if mmu_interval_read_retry(notifier, seq): p2p_unmap(m); unlock; goto again
 *   commit: program the device from m
 *   release the driver lock
 * ```
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { HMM_RANGE_DEFAULT_TIMEOUT_NS, HMM_RANGE_MAX_RETRIES } from '../hmm/hmm-range-fault-loop.js';
import { mmuIntervalReadBegin, mmuIntervalReadRetry } from '../hmm/mmu-interval-notifier.js';
import type { MmuIntervalNotifier } from '../hmm/mmu-interval-notifier.js';
import type { P2pImporterRef, P2pMapping } from '../mm/vma.js';
import type { Mutex } from '../sim/locks.js';
import { p2pMap, p2pUnmap } from './p2p-map.js';

/** Arguments of {@link p2pMapLoop}. */
export interface P2pMapLoopArgs {
  /** The importer's interval notifier over the range. */
  readonly notifier: MmuIntervalNotifier;
  readonly start: number;
  readonly end: number;
  readonly importer: P2pImporterRef;
  readonly write: boolean;
  /** The driver lock its invalidate callback takes around `mmuIntervalSetSeq`. */
  readonly driverLock: Mutex;
  /**
   * Installs `mapping` in the device. Runs with `driverLock` held and only if no invalidation hit
   * the range since `p2pMap`; the mapping is the caller's from then on (give it back with `p2pUnmap`).
   */
  readonly commit: (mapping: P2pMapping) => void | Promise<void>;
  /** Budget in simulated ns; default `HMM_RANGE_DEFAULT_TIMEOUT_NS` (1 s). */
  readonly timeoutNs?: number;
  /** Called after each `p2pMap` call (for counters and tests). */
  readonly onMap?: (mapping: P2pMapping) => void;
}

/**
 * Maps `[start, end)` with `p2pMap` and commits it under the driver lock, retrying (and giving back
 * the stale mapping) until no invalidation races it. Resolves to the committed mapping. EBUSY when
 * the budget runs out (or after `HMM_RANGE_MAX_RETRIES` attempts if no simulated time passes); `p2pMap`'s own errors (EINVAL, the exporter's ENODEV, ...) as they come.
 */
export async function p2pMapLoop(args: P2pMapLoopArgs): Promise<P2pMapping> {
  const { notifier, start, end, importer, write, driverLock } = args;
  const mm = notifier.mm;
  const sched = mm.ctx.sched;
  const deadline = sched.now + (args.timeoutNs ?? HMM_RANGE_DEFAULT_TIMEOUT_NS);
  for (let attempt = 0; ; attempt++) {
    if (sched.now > deadline || attempt >= HMM_RANGE_MAX_RETRIES) {
      throw new HmmError(
        'EBUSY',
        `p2p_map of [${hex(start)}, ${hex(end)}) by ${importer.name} kept racing invalidations past its budget`,
        { address: start },
      );
    }
    const seq = await mmuIntervalReadBegin(notifier);
    await mm.mmapLock.read();
    let m: P2pMapping;
    try {
      m = await p2pMap(mm, start, end, importer, write);
    } finally {
      mm.mmapLock.readUnlock();
    }
    args.onMap?.(m);
    await driverLock.lock();
    try {
      if (mmuIntervalReadRetry(notifier, seq)) {
        // Invalidated meanwhile: the frames may be gone already; ask again.
        p2pUnmap(m);
        continue;
      }
      await args.commit(m);
      return m;
    } finally {
      driverLock.unlock();
    }
  }
}
