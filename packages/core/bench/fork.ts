/**
 * `fork` of a process with 1 GiB of resident private anon memory: copy-on-write PTE copies, no data
 * copied. The kernel has no published per-page figure. The child's exit (zap of 1 GiB of shared
 * PTEs) is timed separately and reported in the details.
 *
 * @module
 */
import type { Populated } from './fixture.js';
import { collect, fmtBytes, fmtInt, repeat, timeNs } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

/**
 * Row: fork. Run it after the pin measurement: fork write-protects the parent's PTEs and drops the
 * pages' exclusive mark (the pages stay resident; the child exits after each run).
 */
export async function benchFork(cfg: BenchConfig, fx: Populated): Promise<Row[]> {
  cfg.log(`fork: parent with ${fmtInt(fx.pages)} resident pages`);
  const arena = fx.m.mm.arena;
  const before = arena.bytesInUse;
  let childTables = 0;
  let heapPerPage = 0;
  const r = await repeat(cfg, 'fork', async () => {
    let child = fx.p;
    collect();
    const heap0 = process.memoryUsage().heapUsed;
    const fork = await timeNs(async () => {
      child = await fx.p.fork('bench-child');
    });
    collect();
    heapPerPage = (process.memoryUsage().heapUsed - heap0) / fx.pages;
    if (child.mm.rssPages !== fx.pages)
      throw new Error(`bench fork: child maps ${child.mm.rssPages} of ${fx.pages} pages`);
    childTables = arena.bytesInUse - before;
    const exit = await timeNs(() => child.exit());
    return { fork: fork / fx.pages, exit: exit / fx.pages };
  });
  return [
    {
      id: 'fork',
      measurement: 'fork, 1 GiB resident (per page)',
      unit: 'ns',
      sim: r.fork.median,
      kernel: null,
      kernelSource: null,
      ratio: null,
      target: null,
      verdict: null,
      samples: r.fork.samples,
      warmup: r.fork.warmup,
      details: [
        `Child gets ${fmtInt(fx.pages)} COW-shared PTEs (${fmtBytes(childTables)} of page tables); no kernel anchor.`,
        `JS heap kept alive by the fork, beyond the SDK's counters: ${heapPerPage.toFixed(1)} B/page (the reverse map's per-page`,
        'overflow entries for pages mapped twice: Map<pfn, number[]> in rmap.ts).',
        `The child's exit afterwards (zap of its PTEs, rmap removal): ${r.exit.median.toFixed(1)} ns/page (median).`,
      ],
    },
  ];
}
