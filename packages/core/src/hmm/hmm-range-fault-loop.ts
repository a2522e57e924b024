/**
 * The mirror's fault loop, written once so drivers need not rewrite it (the pattern of
 * Documentation/mm/hmm.rst, and `hmm_range_fault_unlocked_timeout` in recent mainline):
 *
 * ```text
 * again:
 *   range.notifierSeq = mmu_interval_read_begin(notifier)
 *   mmap_read_lock(mm); ret = hmm_range_fault(range); mmap_read_unlock(mm)
 *   if ret == -EBUSY: goto again (until the timeout)
 *   take the driver lock (the one the invalidate callback takes)
 *   if mmu_interval_read_retry(notifier, range.notifierSeq): unlock; goto again
 *   commit: program the device from range.hmmPfns
 *   release the driver lock
 * ```
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from '../mm/constants.js';
import type { Mutex } from '../sim/locks.js';
import { hmmRangeFault } from './hmm-range-fault.js';
import type { HmmRange } from './hmm-range-fault.js';
import { mmuIntervalReadBegin, mmuIntervalReadRetry } from './mmu-interval-notifier.js';
import type { MmuIntervalNotifier } from './mmu-interval-notifier.js';

/** The kernel drivers' usual budget for one fault (`HMM_RANGE_DEFAULT_TIMEOUT`, 1000 ms), in ns. */
export const HMM_RANGE_DEFAULT_TIMEOUT_NS = 1_000_000_000;

/** Retries after which the loop gives up even if no simulated time passed (a livelock guard). */
export const HMM_RANGE_MAX_RETRIES = 10_000;

/** Arguments of {@link hmmRangeFaultLoop}. */
export interface HmmRangeFaultLoopArgs {
  readonly notifier: MmuIntervalNotifier;
  readonly start: number;
  readonly end: number;
  /** Request flags for every page (`HmmPfn.REQ_FAULT`, `REQ_WRITE`). */
  readonly defaultFlags: number;
  /** Per-page request words and the mask selecting them (optional). */
  readonly requests?: Float64Array;
  readonly pfnFlagsMask?: number;
  readonly devPrivateOwner?: unknown;
  /** The driver lock its invalidate callback takes around `mmuIntervalSetSeq`. */
  readonly driverLock: Mutex;
  /**
   * Programs the device from `range.hmmPfns`. Runs with `driverLock` held and only if no
   * invalidation hit the range since the walk began; it must not sleep on the mmap lock.
   */
  readonly commit: (range: HmmRange) => void | Promise<void>;
  /** Budget in simulated ns; default {@link HMM_RANGE_DEFAULT_TIMEOUT_NS}. */
  readonly timeoutNs?: number;
  /** Called on each retry with its cause (for counters and tests). */
  readonly onRetry?: (why: 'ebusy' | 'read-retry') => void;
}

/**
 * Faults [start, end) for a device and commits it under the driver lock, retrying until no
 * invalidation races with it (see the module doc). Returns the committed range. Throws EBUSY when the
 * budget runs out, and any error of `hmmRangeFault` other than EBUSY (EFAULT, EPERM, ENOMEM).
 */
export async function hmmRangeFaultLoop(args: HmmRangeFaultLoopArgs): Promise<HmmRange> {
  const { notifier, start, end } = args;
  const mm = notifier.mm;
  const sched = mm.ctx.sched;
  const npages = (end - start) / PAGE_SIZE;
  const deadline = sched.now + (args.timeoutNs ?? HMM_RANGE_DEFAULT_TIMEOUT_NS);
  const range: HmmRange = {
    notifier,
    notifierSeq: 0,
    start,
    end,
    hmmPfns: new Float64Array(Number.isInteger(npages) && npages > 0 ? npages : 0),
    defaultFlags: args.defaultFlags,
    pfnFlagsMask: args.pfnFlagsMask ?? 0,
    devPrivateOwner: args.devPrivateOwner ?? null,
  };
  for (let attempt = 0; ; attempt++) {
    if (sched.now > deadline || attempt >= HMM_RANGE_MAX_RETRIES) {
      throw new HmmError(
        'EBUSY',
        `hmm_range_fault of [${hex(start)}, ${hex(end)}) kept being invalidated: gave up after ${attempt} tries and ${sched.now - (deadline - (args.timeoutNs ?? HMM_RANGE_DEFAULT_TIMEOUT_NS))} ns`,
        { kernelRef: 'mm/hmm.c:hmm_range_fault (HMM_RANGE_DEFAULT_TIMEOUT)' },
      );
    }
    if (args.requests !== undefined) range.hmmPfns.set(args.requests);
    range.notifierSeq = await mmuIntervalReadBegin(notifier);
    if (!mm.mmapLock.tryRead()) await mm.mmapLock.read();
    try {
      await hmmRangeFault(range);
    } catch (e) {
      if (e instanceof HmmError && e.code === 'EBUSY') {
        args.onRetry?.('ebusy');
        continue;
      }
      throw e;
    } finally {
      mm.mmapLock.readUnlock();
    }
    // A preemption point (cond_resched): the window the sequence protocol exists for, in which an
    // invalidation may land between the walk and the commit.
    if (sched.current !== null) await sched.yield();
    await args.driverLock.lock();
    try {
      if (mmuIntervalReadRetry(notifier, range.notifierSeq)) {
        args.onRetry?.('read-retry');
        continue;
      }
      await args.commit(range);
      return range;
    } finally {
      args.driverLock.unlock();
    }
  }
}
