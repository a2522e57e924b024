/**
 * `@hmm/conformance`: the conformance suite for simulated HMM drivers: the catalogue of cases
 * (the kernel's `hmm-tests.c`, with stable ids and kernel references), the driver-independent
 * cases of the mirror, migrate (device memory), exclusive and peer-to-peer groups, a programmatic runner
 * ({@link runConformance}) with known-failure {@link Expectations}, its reports (text, JSON,
 * JUnit XML) and the `hmm-conformance` command (`list`, `run <driver-module>`). The vitest entry is `@hmm/conformance/vitest`
 * (`defineConformanceSuite`); this entry does not import vitest.
 *
 * @module @hmm/conformance
 */
export { CASES, FAULT_CASES, P2P_CASES, RACE_CASES, USERPTR_CASES, findCase } from './catalog.js';
export type { Capability, CaseInfo, Variant } from './catalog.js';
export { SnapshotByte } from './target.js';
export { snapshotByteOf, snapshotRange } from './snapshot.js';
export type { SnapshotRangeOptions } from './snapshot.js';
export type {
  CommandResult,
  ConformanceFactory,
  ConformanceFactoryOptions,
  ConformanceManifest,
  ConformanceTarget,
  OpenOptions,
  P2pExporterHandle,
  P2pImporterHandle,
  P2pPlace,
  P2pPosition,
  P2pTarget,
  ReadBackResult,
  SnapshotByteValue,
  TestDevice,
  UserptrHandle,
  UserptrHandleMode,
  UserptrRegisterOptions,
  UserptrTarget,
} from './target.js';
/**
 * The suite's reference peer-to-peer importer (a device reaching an exporter's device-file mapping
 * through `p2pMap` under the interval-notifier sequence protocol). The p2p cases use it for
 * exporter-only drivers; a driver may reuse it in its own tests as the importer side.
 */
export { ReferenceP2pImporter } from './reference/p2p-importer.js';
export { ConformanceFailure, check, checkEqual, checkRejects, withSeed } from './assert.js';
export type { FailureLocation } from './assert.js';
export {
  EXCLUSIVE_CASES,
  GROUPS,
  IMPLEMENTATIONS,
  MIGRATE_CASES,
  MIRROR_CASES,
  P2P_CASES_IMPL,
  RACE_CASES_IMPL,
  FAULT_CASES_IMPL,
  USERPTR_CASES_IMPL,
  groupOf,
} from './cases/index.js';
export type { CaseContext, CaseFn, GroupName } from './cases/index.js';
export {
  CASE_STATUSES,
  DEFAULT_SEED,
  DEFAULT_SEEDS,
  INTERLEAVING_TAIL,
  caseTitle,
  isErrorStatus,
  planCases,
  runConformance,
  runPlannedCase,
} from './runner.js';
export type {
  CaseReplay,
  CaseResult,
  CaseStatus,
  ConformanceReport,
  PlannedCase,
  ProgressEvent,
  ReportCounts,
  RunOptions,
} from './runner.js';
export { expectationFor, expectationKey, validateExpectations } from './expectations.js';
export type { Expectation, Expectations } from './expectations.js';
export {
  formatReport,
  formatTraceEvent,
  reportToJson,
  reportToJunit,
  reportToObject,
  reproduceCommand,
  summaryLine,
  xmlEscape,
} from './report.js';
export type { CaseResultJson, ConformanceReportJson, FormatOptions } from './report.js';
export { USAGE as CLI_USAGE, main as cliMain } from './cli.js';
export type { CliWrite } from './cli.js';
