/**
 * `@hmm/conformance`: the conformance suite for simulated HMM drivers: the catalogue of cases
 * (the kernel's `hmm-tests.c`, with stable ids and kernel references), the driver-independent
 * cases of the mirror, migrate (device memory), exclusive and peer-to-peer groups, a programmatic runner
 * ({@link runConformance}) and the
 * `hmm-conformance list` command. The vitest entry is `@hmm/conformance/vitest`
 * (`defineConformanceSuite`); this entry does not import vitest.
 *
 * @packageDocumentation
 */
export { CASES, P2P_CASES, findCase } from './catalog.js';
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
  groupOf,
} from './cases/index.js';
export type { CaseContext, CaseFn, GroupName } from './cases/index.js';
export {
  DEFAULT_SEED,
  DEFAULT_SEEDS,
  caseTitle,
  planCases,
  runConformance,
  runPlannedCase,
} from './runner.js';
export type { CaseResult, ConformanceReport, PlannedCase, RunOptions } from './runner.js';
export { main as cliMain } from './cli.js';
