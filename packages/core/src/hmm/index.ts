/**
 * The hmm layer: MMU interval notifiers and `hmm_range_fault` (mm/mmu_notifier.c, mm/hmm.c).
 *
 * @module
 */
export {
  MmuIntervalNotifier,
  MmuNotifierSubscriptions,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalCheckRetry,
  mmuIntervalSetSeq,
} from './mmu-interval-notifier.js';
export type { MmuIntervalNotifierOps, NotifierCallbackFailure } from './mmu-interval-notifier.js';
export {
  HmmPfn,
  hmmRangeFault,
  hmmPfnMake,
  hmmPfnToPfn,
  hmmPfnFlags,
  hmmPfnToMapOrder,
} from './hmm-range-fault.js';
export type { HmmRange } from './hmm-range-fault.js';
export {
  hmmRangeFaultLoop,
  HMM_RANGE_DEFAULT_TIMEOUT_NS,
  HMM_RANGE_MAX_RETRIES,
} from './hmm-range-fault-loop.js';
export type { HmmRangeFaultLoopArgs } from './hmm-range-fault-loop.js';
