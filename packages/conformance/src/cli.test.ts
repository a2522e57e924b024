import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { validateChromeTrace } from '@hmm/core';
import { CASES, FAULT_CASES, RACE_CASES, USERPTR_CASES } from './catalog.js';
import { main } from './cli.js';
import type { ConformanceReportJson } from './report.js';

async function run(args: string[]): Promise<{ code: number; text: string; err: string }> {
  let text = '';
  let err = '';
  const code = await main(
    args,
    (s) => (text += s),
    (s) => (err += s),
  );
  return { code, text, err };
}

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
/** The dmirror example as a driver module, relative to the current directory (as a user types it). */
const DMIRROR = relative(process.cwd(), fixture('dmirror-driver.mjs'));
const STALE = fixture('dmirror-stale-expectation.mjs');
const NO_READ_RETRY = fixture('dmirror-no-read-retry.mjs');

describe('hmm-conformance list', () => {
  it('prints every case with id, kernel reference, capabilities and variants as JSON', async () => {
    const { code, text } = await run(['list', '--json']);
    expect(code).toBe(0);
    const parsed = JSON.parse(text) as {
      cases: {
        id: string;
        kernelRef: string;
        requires: string[];
        requiresAny: string[];
        variants: string[];
      }[];
    };
    // The 38 test functions of hmm-tests.c, then the 7 peer-to-peer cases, then the groups beyond
    // the kernel's tests (race, fault injection, userptr).
    const kernel = parsed.cases.filter((c) => c.kernelRef.startsWith('hmm-tests.c:'));
    expect(kernel).toHaveLength(38);
    expect(parsed.cases.filter((c) => c.id.startsWith('p2p.'))).toHaveLength(7);
    for (const prefix of ['race.', 'fault.', 'userptr.']) {
      expect(parsed.cases.filter((c) => c.id.startsWith(prefix)).length, prefix).toBeGreaterThan(0);
    }
    expect(parsed.cases).toHaveLength(38 + 7 + RACE_CASES.length + FAULT_CASES.length + USERPTR_CASES.length);
    expect(parsed.cases[1]).toMatchObject({
      id: 'hmm.anon_read',
      kernelRef: 'hmm-tests.c:anon_read',
      requires: ['mirror'],
    });
    expect(parsed.cases.find((c) => c.id === 'hmm2.snapshot')).toBeDefined();
    expect(new Set(parsed.cases.map((c) => c.id)).size).toBe(parsed.cases.length);
    for (const c of parsed.cases) {
      if (c.id.startsWith('p2p.')) {
        expect(c.variants).toEqual(['device-private']);
        expect(c.requires).toEqual([]);
        expect(c.requiresAny).toEqual(['p2p-exporter', 'p2p-importer']);
        expect(c.kernelRef).toMatch(/p2p_map/);
      } else if (c.kernelRef.startsWith('hmm-tests.c:')) {
        expect(c.variants).toEqual(['device-private', 'device-coherent']);
      }
    }
  });

  it('prints a table, and usage errors exit with 2', async () => {
    const t = await run(['list']);
    expect(t.code).toBe(0);
    expect(t.text).toContain('hmm.anon_teardown');
    expect(t.text).toContain('p2p-exporter|p2p-importer');
    expect(t.text).toContain(`${CASES.length} cases`);
    expect((await run(['frobnicate'])).code).toBe(2);
    expect((await run([])).code).toBe(2);
    expect((await run(['list', '--bogus'])).code).toBe(2);
    expect((await run(['list', 'extra'])).code).toBe(2);
    const help = await run(['--help']);
    expect(help.code).toBe(0);
    expect(help.text).toContain(
      'hmm-conformance run <driver-module> [--seeds N] [--seed S] [--only id,...] [--json file] [--junit file]',
    );
  });
});

describe('hmm-conformance run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hmm-conformance-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs the dmirror driver module: progress per case, the report, JSON and JUnit files, exit 0', async () => {
    const json = join(dir, 'out', 'report.json');
    const junit = join(dir, 'out', 'junit.xml');
    const r = await run([
      'run',
      DMIRROR,
      '--only',
      'hmm.open_close,hmm.anon_read',
      '--seeds',
      '2',
      '--json',
      json,
      '--junit',
      junit,
    ]);
    expect(r.err).not.toContain('hmm-conformance:');
    expect(r.code).toBe(0);
    // One progress line per planned case (two cases, two variants), on stderr, without times.
    expect(r.err.split('\n').filter((l) => l.startsWith('['))).toEqual([
      '[1/4] passed          hmm.open_close [device-private]',
      '[2/4] passed          hmm.open_close [device-coherent]',
      '[3/4] passed          hmm.anon_read [device-private]',
      '[4/4] passed          hmm.anon_read [device-coherent]',
    ]);
    expect(r.text).toContain("@hmm/conformance report for driver 'dmirror' (seed 1, seeds 2)");
    expect(r.text).toContain('Passed (4):\n  hmm.open_close [device-private] (hmm-tests.c:open_close)');
    expect(r.text).toContain('4 cases: 4 passed\nResult: OK');
    const parsed = JSON.parse(readFileSync(json, 'utf8')) as ConformanceReportJson;
    expect(parsed).toMatchObject({ driver: 'dmirror', ok: true, seed: 1, seeds: 2 });
    expect(parsed.counts).toMatchObject({ total: 4, passed: 4, failed: 0 });
    expect(parsed.results.map((x) => x.status)).toEqual(['passed', 'passed', 'passed', 'passed']);
    // The device's work takes simulated time: anon_read's is reported (never wall-clock time).
    expect(parsed.results[2]!.simNs).toBeGreaterThan(0);
    const xml = readFileSync(junit, 'utf8');
    expect(xml).toContain('tests="4" failures="0" errors="0" skipped="0"');
    expect(xml.match(/<testcase /g)).toHaveLength(4);
    expect(r.err).toContain(`wrote the JUnit report to ${junit}`);
  });

  it('fails with exit 1 on a stale expectation (unexpected pass), and honours expected skips', async () => {
    const r = await run(['run', STALE, '--only', 'hmm.open_close,hmm.anon_read', '--seed', '3']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('[1/4] unexpected-pass hmm.open_close [device-private]');
    expect(r.err).toContain('[4/4] expected-skip   hmm.anon_read [device-coherent]');
    expect(r.text).toContain('Unexpected passes (expected to fail, but passed) (2):');
    expect(r.text).toContain('      expectation: pretend open is broken');
    expect(r.text).toContain('remove the stale expectation');
    expect(r.text).toContain(`reproduce: hmm-conformance run ${STALE} --only hmm.open_close --seed 3`);
    expect(r.text).toContain(
      'Skipped by expectation (1):\n  hmm.anon_read [device-coherent]: pretend the coherent arena hangs',
    );
    expect(r.text).toContain('4 cases: 1 passed, 2 unexpected-pass, 1 expected-skip\nResult: FAILED');
  });

  it('exits 2 on usage errors: a module without factory/manifest, a missing module, bad options', async () => {
    // catalog.ts loads (vitest runs TypeScript) but exports no factory.
    const notDriver = await run(['run', fileURLToPath(new URL('./catalog.ts', import.meta.url))]);
    expect(notDriver.code).toBe(2);
    expect(notDriver.err).toContain(
      'it must export `factory` (a ConformanceFactory function) and `manifest`',
    );
    const missing = await run(['run', join(dir, 'nope.mjs')]);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain("cannot load driver module '");
    const missingTs = await run(['run', join(dir, 'nope.ts')]);
    expect(missingTs.err).toContain('runs under tsx');
    expect(missingTs.err).not.toContain('Options:');
    const unknown = await run(['run', DMIRROR, '--only', 'hmm.anon_read,hmm.nope']);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain("unknown case id 'hmm.nope'");
    expect((await run(['run'])).code).toBe(2);
    expect((await run(['run', DMIRROR, '--seeds', '0'])).code).toBe(2);
    expect((await run(['run', DMIRROR, '--seed', 'x'])).code).toBe(2);
    expect((await run(['run', DMIRROR, 'extra'])).code).toBe(2);
    expect((await run(['run', DMIRROR, '--json'])).code).toBe(2);
  });

  it('replays a race failure at its seed: prints the interleaving, and --trace writes a Perfetto timeline', async () => {
    const trace = join(dir, 'race.trace.json');
    const r = await run([
      'run',
      NO_READ_RETRY,
      '--only',
      'race.dontneed_read',
      '--seeds',
      '3',
      '--trace',
      trace,
    ]);
    expect(r.code).toBe(1);
    expect(r.text).toContain('Failed (1):\n  race.dontneed_read [device-private]');
    // The failure names its seed; the replay at that seed took the same interleaving.
    const seed = /race\.dontneed_read --seed (\d+) --seeds 1 --trace trace\.json/.exec(r.text);
    expect(seed, r.text).not.toBeNull();
    expect(r.text).toContain(
      `replay at seed ${seed![1]} (1 seed): the replay failed the same way; its last 30 events:`,
    );
    expect(r.text).toMatch(/\d+\.\d{3} µs {2}(sched|mm|device|lock)\./);
    expect(r.err).toContain(
      `wrote the trace of race.dontneed_read [device-private] at seed ${seed![1]} to ${trace}`,
    );
    const parsed: unknown = JSON.parse(readFileSync(trace, 'utf8'));
    expect(validateChromeTrace(parsed)).toEqual([]);
    expect((parsed as { traceEvents: unknown[] }).traceEvents.length).toBeGreaterThan(30);
    // Replaying from the printed command reproduces it at one seed.
    const again = await run([
      'run',
      NO_READ_RETRY,
      '--only',
      'race.dontneed_read',
      '--seed',
      seed![1]!,
      '--seeds',
      '1',
    ]);
    expect(again.code).toBe(1);
    expect(again.text).toContain('Failed (1):\n  race.dontneed_read [device-private]');
  }, 60_000);
});
