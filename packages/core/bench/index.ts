/**
 * `pnpm bench`: wall-clock cost of the simulator per 4 KiB page, side by side with the real kernel's
 * published per-page costs (DESIGN §7, `shared/reference/perf-anchors.md`).
 *
 * Each timing is the median of `BENCH_RUNS` runs (default 3) after one warm-up run. Progress goes to
 * stderr, the table to stdout; `BENCH_JSON=path` also writes the rows as JSON (path relative to the
 * directory the command was run from). `BENCH_ONLY=group,…` runs only the named groups: fault-in,
 * resident (metadata, pin, hmm-snapshot, fork), mirror, reclaim, sparse, copy, migrate, p2p (peer
 * reads of 1 GiB by PCI path, in simulated GB/s).
 *
 * @module
 */
import { benchCopy } from './copy.js';
import { benchFaultIn } from './fault-in.js';
import { dispose, populated } from './fixture.js';
import { benchFork } from './fork.js';
import { benchHmmSnapshot } from './hmm-snapshot.js';
import { GiB, collect, fmtBytes, gcExposed, readRuns } from './harness.js';
import type { BenchConfig } from './harness.js';
import { benchMetadata } from './metadata.js';
import { benchMigrate } from './migrate.js';
import { benchMirror } from './mirror.js';
import { benchP2p } from './p2p.js';
import { benchPin } from './pin.js';
import { benchReclaim } from './reclaim.js';
import { formatTable, hostMeta, writeJson } from './report.js';
import type { BenchMeta, Row } from './report.js';
import { benchSparse } from './sparse.js';

async function main(): Promise<void> {
  const t0 = process.hrtime.bigint();
  const runs = readRuns();
  const cfg: BenchConfig = { runs, log: (line) => process.stderr.write(line + '\n') };
  if (!gcExposed) cfg.log('note: run node with --expose-gc for stable timings (the bench script does)');

  const only = readOnly();
  const want = (group: string): boolean => only === null || only.has(group);

  const rows: Row[] = [];
  if (want('fault-in')) {
    rows.push(...(await benchFaultIn(cfg)));
    collect();
  }

  if (want('resident')) {
    // One process with 1 GiB resident serves metadata, pin and fork, in that order: fork
    // write-protects the parent's PTEs, which would make a later FOLL_WRITE pin fault.
    cfg.log('fixture: 1 GiB written on a 1.5 GiB machine');
    const fx = await populated({ ramBytes: 1.5 * GiB, swapBytes: 0, bytes: GiB });
    rows.push(...benchMetadata(cfg, fx));
    rows.push(...(await benchPin(cfg, fx)));
    rows.push(...(await benchHmmSnapshot(cfg, fx)));
    rows.push(...(await benchFork(cfg, fx)));
    await dispose(fx);
    collect();
  }

  if (want('mirror')) {
    rows.push(...(await benchMirror(cfg)));
    collect();
  }
  if (want('reclaim')) {
    rows.push(...(await benchReclaim(cfg)));
    collect();
  }
  if (want('sparse')) {
    rows.push(...(await benchSparse(cfg)));
    collect();
  }
  if (want('copy')) {
    rows.push(...(await benchCopy(cfg)));
    collect();
  }
  if (want('migrate')) {
    rows.push(...(await benchMigrate(cfg)));
    collect();
  }
  if (want('p2p')) rows.push(...(await benchP2p(cfg)));

  const order = [
    'fault-in',
    'fault-in-nodata',
    'host-first-touch',
    'pin',
    'unpin',
    'hmm-snapshot',
    'device-fault',
    'munmap-mirrored',
    'fork',
    'reclaim',
    'metadata',
  ];
  rows.sort((a, b) => rank(order, a.id) - rank(order, b.id));

  const meta: BenchMeta = {
    ...hostMeta(runs, gcExposed),
    wallSeconds: Number(process.hrtime.bigint() - t0) / 1e9,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
  };
  const out = [
    '',
    `@hmm/core bench — node ${meta.node}, ${meta.cpu} ×${meta.cpus}`,
    `Wall-clock per 4 KiB page; timings are the median of N=${runs} runs after 1 warm-up run` +
      ` (BENCH_RUNS=${runs}); gc between runs: ${gcExposed ? 'yes' : 'no'}.`,
    'Kernel figures: shared/reference/perf-anchors.md, via the cost model defaults (see Details).',
    ...(rows.some((r) => r.unit === 'GB/s')
      ? ['GB/s rows: simulated throughput (bytes / simulated ns), one deterministic run, not wall clock.']
      : []),
    '',
    formatTable(rows),
    '',
    `Total ${meta.wallSeconds.toFixed(1)} s, peak RSS ${fmtBytes(meta.peakRssBytes)}.`,
  ];
  const failed = rows.filter((r) => r.verdict === 'FAIL').map((r) => r.id);
  out.push(failed.length === 0 ? 'All targets met.' : `Targets missed: ${failed.join(', ')}.`);
  process.stdout.write(out.join('\n') + '\n');

  const jsonPath = process.env.BENCH_JSON;
  if (jsonPath !== undefined && jsonPath !== '') {
    process.stdout.write(`Wrote ${writeJson(jsonPath, meta, rows)}\n`);
  }
}

const GROUPS = ['fault-in', 'resident', 'mirror', 'reclaim', 'sparse', 'copy', 'migrate', 'p2p'];

/** Reads `BENCH_ONLY` (comma-separated group names), or null for every group. */
function readOnly(env: NodeJS.ProcessEnv = process.env): Set<string> | null {
  const raw = env.BENCH_ONLY;
  if (raw === undefined || raw.trim() === '') return null;
  const names = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const unknown = names.filter((n) => !GROUPS.includes(n));
  if (unknown.length > 0)
    throw new Error(`BENCH_ONLY: unknown group(s) ${unknown.join(', ')} (known: ${GROUPS.join(', ')})`);
  return new Set(names);
}

function rank(order: readonly string[], id: string): number {
  const i = order.indexOf(id);
  return i < 0 ? order.length : i;
}

await main();
