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
] as const;

/** Variants no case of {@link ONLY} (nor, today, of the whole catalogue) catches, with why. */
const GAPS: Readonly<Record<string, string>> = {
  'no-read-retry':
    'only a race between a device fault and a CPU invalidation exposes it; anon_teardown races munmap, which also unmaps the device, so the stale commit is removed again',
  'no-set-seq': 'as no-read-retry: no case races an invalidation against the commit window',
  'ignores-blockable': 'no case runs a non-blockable invalidation (the OOM reaper, Machine.oomReap)',
  'no-retry-timeout': 'no case runs a livelocking invalidator, so the loop always ends',
  'maps-during-walk': 'as no-read-retry: the early commit is only stale under a racing invalidation',
};

function firstFailure(failed: readonly CaseResult[]): string {
  const f = failed[0];
  return f === undefined ? '(not caught)' : `${f.id} [${f.variant}]: ${f.error?.message ?? ''}`;
}

describe('broken dmirror variants against the conformance suite', () => {
  it('the unbroken dmirror passes every case used below', async () => {
    const report = await runConformance(dmirrorFactory, dmirrorManifest, { only: ONLY, seeds: 3 });
    expect(report.failed.map((r) => r.error?.message)).toEqual([]);
    expect(report.passed.length).toBe(ONLY.length * 2);
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
