/**
 * `pnpm bench` rows of the nouveau-like driver: GPU faults served per second of wall-clock, end to
 * end through the fault buffer (device translation miss → fault-buffer entry → bottom half: drain,
 * sort, de-duplicate, per-fault interval notifier and sequence loop, `hmm_range_fault`, PFNMAP →
 * flush and replay → the wave retranslates). Target ≥ 500,000 faults per second (issue 6).
 *
 * Run by the root `pnpm bench` after the core rows; `BENCH_JSON=path` appends these rows to the
 * file the core bench just wrote (or writes it), `BENCH_RUNS` sets the measured runs (default 3),
 * `BENCH_ONLY` must name `gpu-fault` (or be unset) for the rows to run.
 *
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Machine, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import { collect, fmtInt, gcExposed, median, readRuns } from '../../core/bench/harness.js';
import { formatTable, hostMeta, writeJson } from '../../core/bench/report.js';
import type { Row } from '../../core/bench/report.js';
import { NouveauGpu, NouveauSvm, runJob } from '../src/index.js';

const PAGES = 64 * 1024; // 256 MiB: 65,536 faults per run
const TARGET = 500_000;

/** One measured run: a fresh SVM client faults every page of a resident 256 MiB buffer in. */
async function once(): Promise<{ faults: number; wallNs: number; batches: number }> {
  const m = new Machine({ seed: 1, ramBytes: PAGES * PAGE_SIZE + 64 * 1024 * 1024 });
  const gpu = new NouveauGpu(m, { name: 'gp104', vramBytes: 64 * 1024 * 1024 });
  const svm = new NouveauSvm(gpu);
  return m.sched.runTask('bench', async () => {
    const p = m.createProcess('bench');
    const bytes = PAGES * PAGE_SIZE;
    const a = await p.mmap({
      length: bytes,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    await p.fill(a, bytes, 1);
    const svmm = svm.init(p);
    const ch = svmm.channelNew();
    const t0 = process.hrtime.bigint();
    const r = await runJob(ch, { name: 'touch', args: [{ addr: a, bytes, access: 'read' }], run() {} });
    const wallNs = Number(process.hrtime.bigint() - t0);
    const batches = svm.stats().batches;
    await svm.fini();
    await p.exit();
    return { faults: r.faults, wallNs, batches };
  });
}

async function main(): Promise<void> {
  const only = process.env.BENCH_ONLY;
  if (only !== undefined && only !== '' && !only.split(',').includes('gpu-fault')) return;
  const runs = readRuns();
  const log = (s: string): void => void process.stderr.write(s + '\n');
  log(`gpu-fault: warm-up + ${runs} runs of ${fmtInt(PAGES)} faults`);
  const warm = await once();
  collect();
  const rates: number[] = [];
  let last = warm;
  for (let i = 0; i < runs; i++) {
    last = await once();
    rates.push(last.faults / (last.wallNs / 1e9));
    collect();
  }
  const rate = median(rates);
  const rows: Row[] = [
    {
      id: 'gpu-fault.served-per-second',
      measurement: 'GPU faults served per second (nouveau, end to end through the fault buffer)',
      unit: 'ns',
      sim: 1e9 / rate,
      kernel: null,
      kernelSource: null,
      ratio: rate / TARGET,
      ratioText: `${fmtInt(Math.round(rate))}/s`,
      target: `≥ ${fmtInt(TARGET)} faults/s`,
      verdict: rate >= TARGET ? 'PASS' : 'FAIL',
      samples: rates.map((r) => 1e9 / r),
      warmup: warm.wallNs / warm.faults,
      details: [
        `gpu-fault: ${fmtInt(last.faults)} faults in ${fmtInt(last.batches)} batches per run; median ${fmtInt(Math.round(rate))} faults/s (${(1e9 / rate).toFixed(0)} ns each) over ${runs} runs`,
      ],
    },
  ];
  process.stdout.write(formatTable(rows) + '\n');
  const path = process.env.BENCH_JSON;
  if (path !== undefined && path !== '') {
    const abs = resolve(process.env.INIT_CWD ?? process.cwd(), path);
    // Append to what the core bench wrote in this `pnpm bench`, replacing older rows of ours.
    let prev: { meta?: unknown; rows?: Row[] } = {};
    if (existsSync(abs)) {
      try {
        prev = JSON.parse(readFileSync(abs, 'utf8')) as typeof prev;
      } catch {
        prev = {};
      }
    }
    const kept = (prev.rows ?? []).filter((r) => !r.id.startsWith('gpu-fault.'));
    const meta = (prev.meta as Parameters<typeof writeJson>[1] | undefined) ?? {
      ...hostMeta(runs, gcExposed),
      wallSeconds: 0,
      peakRssBytes: process.memoryUsage().rss,
    };
    log(`wrote ${writeJson(path, meta, [...kept, ...rows])}`);
  }
}

await main();
