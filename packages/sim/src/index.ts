/**
 * `@hmm/sim`: the `hmm-sim` CLI and its scenarios. Each scenario reproduces a published measurement
 * that motivated HMM with the SDK's reference drivers (`@hmm/driver-nouveau`, `@hmm/driver-mlx5`,
 * `@hmm/driver-amdgpu`), in simulated time, and reports its figures beside the published ones
 * (`perf-anchors.md`). The showcase runs several of them on one simulated machine and exports its
 * trace for Perfetto.
 *
 * @packageDocumentation
 */
export { ANCHORS } from './anchors.js';
export type { Anchor, AnchorTag } from './anchors.js';
export { ANCHOR_TOLERANCE, figure, formatBytes, runParams, assertNoLeaks } from './scenario.js';
export type { Figure, Scenario, ScenarioResult, ScenarioRunOptions, ScenarioSize } from './scenario.js';
export { SCENARIOS, findScenario } from './scenarios/index.js';
export { runVecAdd, vecaddScenario, VECADD_BYTES } from './scenarios/vecadd.js';
export type { VecAddDetails } from './scenarios/vecadd.js';
export { runFault2m, fault2mScenario } from './scenarios/fault-2m.js';
export type { Fault2mDetails } from './scenarios/fault-2m.js';
export { runPin8g, pin8gScenario, PIN_BYTES } from './scenarios/pin-8g.js';
export type { Pin8gDetails } from './scenarios/pin-8g.js';
export {
  runPinVsUserptrVsMirror,
  pinVsUserptrVsMirrorScenario,
  BUFFER_BYTES,
  MIRROR_TOUCH_BYTES,
  MUNMAP_BYTES,
  USERPTR_JOB_NS,
  USERPTR_MUNMAP_AT_NS,
} from './scenarios/pin-vs-userptr-vs-mirror.js';
export type { PinVsUserptrVsMirrorDetails, WayResult } from './scenarios/pin-vs-userptr-vs-mirror.js';
export {
  runP2pVsStaged,
  p2pVsStagedScenario,
  NDR200_GBS,
  P2P_READ_BYTES,
} from './scenarios/p2p-vs-staged.js';
export type { P2pVsStagedDetails } from './scenarios/p2p-vs-staged.js';
export {
  runOversubscribe,
  oversubscribeScenario,
  OVERSUBSCRIBE_VRAM_BYTES,
} from './scenarios/oversubscribe.js';
export type { OversubscribeDetails, OversubscribeRun } from './scenarios/oversubscribe.js';
export { blockMigratePolicy } from './scenarios/policies.js';
export type { BlockMigratePolicy, BlockMigrateStats } from './scenarios/policies.js';
export { runScenarios, resolveScenarios, SHOWCASE_SCENARIOS, TRACE_FAULTS_PER_MM } from './runner.js';
export type { RunScenariosOptions, RunScenariosResult } from './runner.js';
export { formatSummary, formatList, formatValue, withUnit, anchorTally, table } from './format.js';
export { Progress } from './progress.js';
export type { ProgressStream } from './progress.js';
export { main, simReport, SHOWCASE_TRACE_FILE, REPORT_VERSION } from './cli.js';
export type { CliIo, SimReport } from './cli.js';
