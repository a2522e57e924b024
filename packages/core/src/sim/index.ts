/**
 * The `sim` layer: virtual clock, seeded randomness, the deterministic scheduler and its blocking
 * primitives, sleeping locks, the cost model, the trace bus and its Chrome Trace / Perfetto export.
 * Nothing here depends on memory management (the export only reads the event types the other
 * layers declare); every layer above builds on it.
 *
 * @module
 */

export { SeededRandom } from './random.js';
export type { RandomState } from './random.js';
export { VirtualClock } from './clock.js';
export { Scheduler, OUTSIDE_TASK_MESSAGE } from './scheduler.js';
export type {
  SimTask,
  TaskState,
  SchedulerOptions,
  SpawnOptions,
  RunOptions,
  RunOutcome,
} from './scheduler.js';
export { WaitQueue, Completion } from './wait.js';
export { Mutex, RwSemaphore } from './locks.js';
export { TimerHeap } from './timer-heap.js';
export type { TimerEntry } from './timer-heap.js';
export { TraceBus, TraceRecorder } from './trace.js';
export type {
  TraceEventMap,
  TraceEventType,
  TraceEvent,
  TraceEventOf,
  TraceListener,
  AnyTraceListener,
} from './trace.js';
export { toChromeTrace } from './chrome-trace.js';
export type { ChromeTrace, ChromeTraceEvent, ChromeTraceOptions } from './chrome-trace.js';
export { validateChromeTrace } from './chrome-trace-validate.js';
export {
  DEFAULT_COST_MODEL,
  COST_SOURCES,
  createCostModel,
  costValue,
  dmaTransferNs,
  bandwidthNs,
} from './cost-model.js';
export type {
  CostModel,
  CostKey,
  CostUnit,
  CostSource,
  SourceTag,
  DeepPartial,
  CpuCosts,
  GupCosts,
  HmmCosts,
  NotifierCosts,
  GpuFaultCosts,
  MigrateCosts,
  DmaCosts,
  LinkCosts,
  MemCosts,
  OdpCosts,
  RdmaCosts,
  SwapCosts,
} from './cost-model.js';
