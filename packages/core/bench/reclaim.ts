/**
 * Reclaiming 1 GiB: a process writes 1 GiB on a 1.25 GiB machine with 1.25 GiB of swap, then
 * `m.reclaim(262144)` (like writing to `memory.reclaim`) swaps it out. Reports pages actually
 * reclaimed; the per-page figure divides by them. No kernel anchor.
 *
 * @module
 */
import { dispose, populated } from './fixture.js';
import { GiB, fmtInt, repeat, timeNs } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

const BYTES = GiB;
const RAM = 1.25 * GiB;
const SWAP = 1.25 * GiB;

interface Outcome {
  freed: number;
  scanned: number;
  swappedOut: number;
}

/** Row: reclaim. Builds and tears down its own machine each run. */
export async function benchReclaim(cfg: BenchConfig): Promise<Row[]> {
  cfg.log('reclaim: 1 GiB written on a 1.25 GiB machine with 1.25 GiB swap, fresh machine per run');
  let last: Outcome = { freed: 0, scanned: 0, swappedOut: 0 };
  const r = await repeat(cfg, 'reclaim', async () => {
    const fx = await populated({ ramBytes: RAM, swapBytes: SWAP, bytes: BYTES });
    let freed = 0;
    const ns = await timeNs(async () => {
      freed = await fx.m.reclaim(fx.pages);
    });
    const s = fx.m.stats().reclaim;
    last = { freed, scanned: s.scanned, swappedOut: s.swappedOut };
    if (freed === 0) throw new Error('bench reclaim: nothing reclaimed');
    if (fx.p.mm.rssPages !== fx.pages - freed)
      throw new Error('bench reclaim: rss does not match pages freed');
    await dispose(fx);
    return { ns: ns / freed };
  });
  return [
    {
      id: 'reclaim',
      measurement: 'reclaim 1 GiB to swap (per page freed)',
      unit: 'ns',
      sim: r.ns.median,
      kernel: null,
      kernelSource: null,
      ratio: null,
      target: null,
      verdict: null,
      samples: r.ns.samples,
      warmup: r.ns.warmup,
      details: [
        `m.reclaim(${fmtInt(BYTES / 4096)}) freed ${fmtInt(last.freed)} pages (${fmtInt(last.swappedOut)} swapped out) after scanning ${fmtInt(last.scanned)}:`,
        'freshly written pages are referenced, so the first pass activates them and a second pass, after aging, swaps them out.',
        'Includes copying 4 KiB per page into the swap store (fresh host memory for it). No kernel anchor.',
      ],
    },
  ];
}
