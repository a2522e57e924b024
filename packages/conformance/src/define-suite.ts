/**
 * The vitest entry, `@hmm/conformance/vitest` (vitest is an optional peer dependency; the main
 * entry never imports it). One `it` per case and variant, titled `<id> [variant] (<kernelRef>)`;
 * cases the driver cannot run are registered with `it.skip` and the reason in the title.
 *
 * ```ts
 * import { defineConformanceSuite } from '@hmm/conformance/vitest';
 * defineConformanceSuite(myFactory, { name: 'mine', capabilities: ['mirror'] });
 * ```
 *
 * @module @hmm/conformance/vitest
 */
import { describe, it } from 'vitest';
import { GROUPS } from './cases/index.js';
import type { GroupName } from './cases/index.js';
import { caseTitle, planCases, runPlannedCase } from './runner.js';
import type { RunOptions } from './runner.js';
import type { ConformanceFactory, ConformanceManifest } from './target.js';

function registerGroup(
  group: GroupName,
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions,
): void {
  const planned = planCases(manifest, opts.only === undefined ? { group } : { group, only: opts.only });
  if (planned.length === 0) return;
  describe(group, () => {
    for (const c of planned) {
      if (c.run === null) {
        it.skip(`${caseTitle(c)}: skipped: ${c.reason}`, () => {});
      } else {
        it(caseTitle(c), () =>
          runPlannedCase(c, factory, opts.seeds === undefined ? {} : { seeds: opts.seeds }),
        );
      }
    }
  });
}

/** Registers every group of the suite for the driver built by `factory`. */
export function defineConformanceSuite(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): void {
  describe(`@hmm/conformance: ${manifest.name}`, () => {
    for (const group of GROUPS) registerGroup(group, factory, manifest, opts);
  });
}

/** Registers the mirror group alone (READ / WRITE / SNAPSHOT without device memory). */
export function defineMirrorGroup(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): void {
  describe(`@hmm/conformance: ${manifest.name}`, () => registerGroup('mirror', factory, manifest, opts));
}

/** Registers the migrate group alone (device memory: migrate to device and back, GUP, COW). */
export function defineMigrateGroup(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): void {
  describe(`@hmm/conformance: ${manifest.name}`, () => registerGroup('migrate', factory, manifest, opts));
}

/** Registers the exclusive group alone (exclusive access for device atomics). */
export function defineExclusiveGroup(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): void {
  describe(`@hmm/conformance: ${manifest.name}`, () => registerGroup('exclusive', factory, manifest, opts));
}

/**
 * Registers the p2p group alone (a peer-to-peer exporter, imported by the driver's own importer or
 * the suite's reference importer; beyond the kernel's tests).
 */
export function defineP2pGroup(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): void {
  describe(`@hmm/conformance: ${manifest.name}`, () => registerGroup('p2p', factory, manifest, opts));
}

/** Registers the race group alone (seeded interleavings of device faults and invalidations). */
export function defineRaceGroup(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): void {
  describe(`@hmm/conformance: ${manifest.name}`, () => registerGroup('race', factory, manifest, opts));
}

/** Registers the fault-injection group alone. */
export function defineFaultGroup(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): void {
  describe(`@hmm/conformance: ${manifest.name}`, () => registerGroup('fault', factory, manifest, opts));
}

/** Registers the userptr group alone. */
export function defineUserptrGroup(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): void {
  describe(`@hmm/conformance: ${manifest.name}`, () => registerGroup('userptr', factory, manifest, opts));
}
