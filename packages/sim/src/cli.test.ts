import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateChromeTrace } from '@hmm/core';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from './cli.js';
import type { SimReport } from './cli.js';
import { SCENARIOS } from './scenarios/index.js';

const dir = mkdtempSync(join(tmpdir(), 'hmm-sim-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI with captured output (not a terminal: progress comes as plain lines). */
async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    cwd: dir,
  });
  return { code, out, err };
}

describe('hmm-sim list', () => {
  it('lists every scenario with its description and anchors', async () => {
    const r = await cli('list');
    expect(r.code).toBe(0);
    for (const s of SCENARIOS) {
      expect(r.out).toContain(s.name);
      expect(r.out).toContain(s.description);
      for (const a of s.anchors) expect(r.out).toContain(a.source);
    }
  });

  it('--json gives names, descriptions and anchors', async () => {
    const r = await cli('list', '--json');
    expect(r.code).toBe(0);
    const list = JSON.parse(r.out) as { name: string; anchors: { id: string; value: number }[] }[];
    expect(list.map((s) => s.name)).toEqual(SCENARIOS.map((s) => s.name));
    expect(list.every((s) => s.anchors.length > 0 && s.anchors.every((a) => a.value > 0))).toBe(true);
  });
});

describe('hmm-sim run', () => {
  it('prints the summary table and writes a JSON report of the documented shape', async () => {
    const r = await cli('run', 'fault-2m', '--json', 'report.json');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/scenario\s+figure\s+simulated\s+published\s+ratio\s+±25 %/);
    expect(r.out).toContain('1 of 1 anchored figures within ±25 %');
    // Not a terminal: one plain progress line per scenario on stderr.
    expect(r.err).toContain('[1/1] fault-2m ...');
    const report = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as SimReport;
    expect(report).toMatchObject({
      tool: 'hmm-sim',
      reportVersion: 1,
      command: 'run',
      seed: 1,
      size: 'quick',
      tolerance: 0.25,
      anchored: { within: 1, outside: 0 },
    });
    expect(report.results).toHaveLength(1);
    const res = report.results[0]!;
    expect(res.scenario).toBe('fault-2m');
    const total = res.figures.find((f) => f.id === 'totalUs')!;
    expect(Object.keys(total).sort()).toEqual([
      'anchor',
      'id',
      'label',
      'ratio',
      'simulated',
      'unit',
      'within',
    ]);
    expect(total.anchor).toMatchObject({ id: 'fault-2m.us', value: 966, unit: 'µs', tag: 'P' });
    expect(total.within).toBe(true);
  });

  it('is deterministic: the same seed gives the same JSON, byte for byte', async () => {
    await cli('run', 'p2p-vs-staged', 'fault-2m', '--seed', '7', '--json', 'a.json');
    await cli('run', 'p2p-vs-staged', 'fault-2m', '--seed', '7', '--json', 'b.json');
    const a = readFileSync(join(dir, 'a.json'), 'utf8');
    expect(a).toBe(readFileSync(join(dir, 'b.json'), 'utf8'));
    expect(JSON.parse(a)).toMatchObject({ seed: 7 });
  });

  it('--trace writes a Chrome Trace Event file that passes validateChromeTrace', async () => {
    const r = await cli('run', 'fault-2m', 'p2p-vs-staged', '--trace', 'run.trace.json');
    expect(r.code).toBe(0);
    expect(r.out).toContain('ui.perfetto.dev');
    const trace: unknown = JSON.parse(readFileSync(join(dir, 'run.trace.json'), 'utf8'));
    expect(validateChromeTrace(trace)).toEqual([]);
    const events = (trace as { traceEvents: { ph: string; name: string }[] }).traceEvents;
    expect(events.length).toBeGreaterThan(10);
    expect(events.some((e) => e.ph === 'M' && e.name === 'process_name')).toBe(true);
  });

  it('bad arguments exit with 2 and say what is wrong', async () => {
    const unknown = await cli('run', 'nope', 'vecadd');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain("unknown scenario 'nope'");
    expect(unknown.err).toContain('known: pin-vs-userptr-vs-mirror, vecadd');

    const seed = await cli('run', 'fault-2m', '--seed', 'abc');
    expect(seed.code).toBe(2);
    expect(seed.err).toContain("the seed must be an integer, got 'abc'");

    const missing = await cli('run');
    expect(missing.code).toBe(2);
    expect(missing.err).toContain("missing required argument 'scenario'");

    const both = await cli('run', 'fault-2m', '--full', '--quick');
    expect(both.code).toBe(2);
    expect(both.err).toContain('--full and --quick exclude each other');

    const option = await cli('run', 'fault-2m', '--bogus');
    expect(option.code).toBe(2);
    expect(option.err).toContain("unknown option '--bogus'");

    const command = await cli('frobnicate');
    expect(command.code).toBe(2);
    expect(command.err).toContain("unknown command 'frobnicate'");
  });

  it('--help exits with 0', async () => {
    const r = await cli('--help');
    expect(r.code).toBe(0);
    expect(r.out).toContain('showcase');
  });
});
