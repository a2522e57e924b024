/**
 * The conformance suite against deliberately broken copies of dmirror (broken.ts): each variant
 * misses one obligation of a mirroring driver, and the suite must fail it in at least one case. A
 * variant no case catches is listed in `GAPS` with why: the test then asserts that it is still not
 * caught (so a new case that closes the gap turns this test red and the entry must move).
 */
import { describe, expect, it } from 'vitest';
import { runConformance } from '@hmm/conformance';
import type { CaseResult } from '@hmm/conformance';
import { BROKEN_VARIANTS } from './broken.js';
import { dmirrorFactory, dmirrorManifest, makeDmirrorFactory } from './factory.js';

/** Cases that catch the variants (kept short for speed). */
const ONLY = [
  'hmm.anon_read',
  'hmm.anon_read_multiple',
  'hmm.migrate',
  'hmm.migrate_release',
  'hmm2.migrate_mixed',
  'hmm2.double_map',
  'hmm.anon_teardown',
  'race.dontneed_read',
  'race.livelock',
  'fault.oom_reap',
] as const;

/** Variants no case of {@link ONLY} (nor, today, of the whole catalogue) catches, with why. */
const GAPS: Readonly<Record<string, string>> = {};

function firstFailure(failed: readonly CaseResult[]): string {
  const f = failed[0];
  return f === undefined ? '(not caught)' : `${f.id} [${f.variant}]: ${f.error?.message ?? ''}`;
}

describe('broken dmirror variants against the conformance suite', () => {
  it('the unbroken dmirror passes every case used below', async () => {
    const report = await runConformance(dmirrorFactory, dmirrorManifest, { only: ONLY, seeds: 3 });
    expect(report.failed.map((r) => r.error?.message)).toEqual([]);
    // The kernel's cases run in both variants, the race cases once.
    expect(report.passed.length).toBe(report.results.length);
    expect(report.results.length).toBeGreaterThanOrEqual(ONLY.length);
  }, 60_000);

  it('each broken variant fails at least one case, except the listed gaps', async () => {
    const table: string[] = [];
    for (const v of BROKEN_VARIANTS) {
      const report = await runConformance(makeDmirrorFactory(v.options), dmirrorManifest, {
        only: ONLY,
        seeds: 3,
      });
      table.push(`${v.name.padEnd(30)} → ${firstFailure(report.failed).slice(0, 240)}`);
      if (v.name in GAPS) expect(report.failed, `${v.name} is a known gap`).toEqual([]);
      else expect(report.failed.length, `${v.name} (${v.obligation})`).toBeGreaterThan(0);
    }
    console.log(`variant → first failing case\n${table.join('\n')}`);
    expect(BROKEN_VARIANTS.length).toBeGreaterThanOrEqual(12);
  }, 120_000);
});
