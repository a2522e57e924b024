/**
 * Deliberately broken pieces for tests that prove the checks can fail.
 *
 * @module
 */
import { HmmError, hmmRangeFault, mmuIntervalReadBegin } from '@hmm/core';
import type { HmmRange } from '@hmm/core';
import type { FaultLoop } from './dmirror.js';

/**
 * The sequence loop without its `mmuIntervalReadRetry` check: it commits what `hmmRangeFault` saw
 * even if an invalidation landed between the walk and the commit — the bug the protocol prevents.
 */
export const loopWithoutReadRetry: FaultLoop = async (args) => {
  const mm = args.notifier.mm;
  const sched = mm.ctx.sched;
  for (;;) {
    const range: HmmRange = {
      notifier: args.notifier,
      notifierSeq: await mmuIntervalReadBegin(args.notifier),
      start: args.start,
      end: args.end,
      hmmPfns: new Float64Array((args.end - args.start) / 4096),
      defaultFlags: args.defaultFlags,
      pfnFlagsMask: 0,
      devPrivateOwner: args.devPrivateOwner ?? null,
    };
    await mm.mmapLock.read();
    try {
      await hmmRangeFault(range);
    } catch (e) {
      if (e instanceof HmmError && e.code === 'EBUSY') continue;
      throw e;
    } finally {
      mm.mmapLock.readUnlock();
    }
    if (sched.current !== null) await sched.yield();
    await args.driverLock.lock();
    try {
      await args.commit(range); // no mmuIntervalReadRetry here
      return range;
    } finally {
      args.driverLock.unlock();
    }
  }
};
