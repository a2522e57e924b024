#!/usr/bin/env node
// The conformance suite's self-test: every reference driver and the example device against the
// whole suite, with many seeds for the seed-exploring cases (race, anon_teardown, fault injection).
//
//   npx -y pnpm@10 selftest                 # 20 seeds (the default of `hmm-conformance run`)
//   npx -y pnpm@10 selftest --seeds 200     # the on-demand exploration
//   npx -y pnpm@10 selftest --only race.cow_read,hmm.anon_teardown --seeds 200
//
// Runs on the built packages (`tsc -b` first; the `selftest` script does it). Exit status 0 when
// every driver passes every case it can run, 1 otherwise.
import { parseArgs } from 'node:util';
import { formatReport, runConformance } from '../packages/conformance/dist/index.js';
import { nouveauFactory, nouveauManifest } from '../packages/driver-nouveau/dist/index.js';
import { mlx5Factory, mlx5Manifest } from '../packages/driver-mlx5/dist/index.js';
import { amdgpuFactory, amdgpuManifest } from '../packages/driver-amdgpu/dist/index.js';
import { dmirrorFactory, dmirrorManifest } from '../examples/dmirror/dist/factory.js';

const { values } = parseArgs({
  options: { seeds: { type: 'string', default: '20' }, only: { type: 'string' } },
});
const seeds = Number(values.seeds);
if (!Number.isSafeInteger(seeds) || seeds < 1) {
  console.error(`selftest: --seeds takes a positive integer, got '${values.seeds}'`);
  process.exit(2);
}
const only = values.only?.split(',').filter((s) => s !== '');

const drivers = [
  ['dmirror (example)', dmirrorFactory, dmirrorManifest],
  ['nouveau', nouveauFactory, nouveauManifest],
  ['mlx5', mlx5Factory, mlx5Manifest],
  ['amdgpu', amdgpuFactory, amdgpuManifest],
];
const rows = [];
let ok = true;
for (const [name, factory, manifest] of drivers) {
  const t0 = process.hrtime.bigint();
  process.stderr.write(`selftest: ${name}, ${seeds} seeds …\n`);
  const report = await runConformance(factory, manifest, {
    seeds,
    ...(only === undefined ? {} : { only }),
    onProgress: (e) => {
      if (e.type === 'case-finished' && e.result.status === 'failed') {
        process.stderr.write(`  FAILED ${e.result.id} [${e.result.variant}] seed ${e.result.seed}\n`);
      }
    },
  });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  if (!report.ok) {
    ok = false;
    console.log(formatReport(report));
  }
  const c = report.counts;
  rows.push([
    name,
    String(c.total),
    String(c.passed),
    String(c.failed),
    String(c.skipped),
    `${wall.toFixed(1)} s`,
  ]);
}
const head = ['driver', 'planned', 'passed', 'failed', 'skipped', 'wall'];
const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r) => r.map((x, i) => x.padEnd(w[i])).join('  ');
console.log(`conformance self-test, ${seeds} seeds per seed-exploring case`);
console.log([line(head), line(w.map((n) => '─'.repeat(n))), ...rows.map(line)].join('\n'));
console.log(ok ? 'Result: OK' : 'Result: FAILED');
process.exit(ok ? 0 : 1);
