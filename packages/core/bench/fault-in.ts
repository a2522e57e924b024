/**
 * Write-faulting 1 GiB of fresh private anonymous memory (`p.fill(addr, 1 GiB, v)`), against the
 * kernel's fault-in + zero cost, plus two reference points that explain the figure:
 *
 * - the same faults with value 0, which the SDK's lazy content store satisfies without
 *   materialising bytes: the fault path's bookkeeping alone;
 * - the host's cost of handing out and writing 1 GiB of fresh memory in the content store's
 *   64 KiB chunks (what `PageStore` pays the host for page contents).
 *
 * @module
 */
import { PAGE_SIZE, PAGES_PER_CHUNK } from '../src/index.js';
import { FAULT_IN_ZERO } from './anchors.js';
import { checkResident, dispose, mapped } from './fixture.js';
import { GiB, fmtInt, repeat, timeNs } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

const BYTES = GiB;
const PAGES = BYTES / PAGE_SIZE;
/** RAM large enough that the faults never reclaim. */
const RAM = 1.5 * GiB;

async function simFill(value: number): Promise<number> {
  const fx = await mapped({ ramBytes: RAM, swapBytes: 0, bytes: BYTES });
  const ns = await timeNs(() => fx.p.fill(fx.addr, BYTES, value));
  checkResident(fx);
  await dispose(fx);
  return ns / PAGES;
}

function hostFirstTouch(): Promise<number> {
  const chunkBytes = PAGES_PER_CHUNK * PAGE_SIZE;
  let chunks: Uint8Array[] = [];
  return timeNs(() => {
    for (let i = 0; i < BYTES / chunkBytes; i++) {
      const c = new Uint8Array(chunkBytes);
      c.fill(1);
      chunks.push(c);
    }
  }).then((ns) => {
    chunks = [];
    return ns / PAGES;
  });
}

/** Rows: fault-in with data, fault-in without data, host first-touch baseline. */
export async function benchFaultIn(cfg: BenchConfig): Promise<Row[]> {
  cfg.log('fault-in: 1 GiB, fresh 1.5 GiB machine per run');
  const host = await repeat(cfg, 'host alloc+fill', async () => ({ ns: await hostFirstTouch() }));
  const fill1 = await repeat(cfg, 'p.fill(…, 1)', async () => ({ ns: await simFill(1) }));
  const fill0 = await repeat(cfg, 'p.fill(…, 0)', async () => ({ ns: await simFill(0) }));
  const k = FAULT_IN_ZERO.value;
  const sdkPart = fill1.ns.median - host.ns.median;
  return [
    {
      id: 'fault-in',
      measurement: 'write-fault 1 GiB anon (p.fill 1)',
      unit: 'ns',
      sim: fill1.ns.median,
      kernel: k,
      kernelSource: FAULT_IN_ZERO.source,
      ratio: fill1.ns.median / k,
      target: null,
      verdict: null,
      samples: fill1.ns.samples,
      warmup: fill1.ns.warmup,
      details: [
        `${fmtInt(PAGES)} write faults, no reclaim (checked); 1 GiB of page contents materialised in 64 KiB chunks.`,
        `Of which the host's fresh-memory cost (row "host: …") ≈ ${fmtInt(host.ns.median)} ns; the rest, ≈ ${fmtInt(sdkPart)} ns/page, is the SDK's fault path + copy.`,
      ],
    },
    {
      id: 'fault-in-nodata',
      measurement: 'write-fault 1 GiB anon, no data (p.fill 0)',
      unit: 'ns',
      sim: fill0.ns.median,
      kernel: k,
      kernelSource: null,
      ratio: fill0.ns.median / k,
      target: null,
      verdict: null,
      samples: fill0.ns.samples,
      warmup: fill0.ns.warmup,
      details: [
        "Same faults; zero-filling a never-written page materialises no content, so this is the fault path's bookkeeping alone",
        '(frame allocation, page-table entry, rmap, LRU, rss, trace counter, async lock/fault plumbing).',
        'The kernel figure includes zeroing: 78.6 % of it is clear_page_erms (VFIO commit), i.e. ≈ 0.2 µs of bookkeeping.',
      ],
    },
    {
      id: 'host-first-touch',
      measurement: 'host: new Uint8Array(64 KiB)+fill, 1 GiB',
      unit: 'ns',
      sim: host.ns.median,
      kernel: null,
      kernelSource: null,
      ratio: null,
      target: null,
      verdict: null,
      samples: host.ns.samples,
      warmup: host.ns.warmup,
      details: [
        'No simulator code: the price this host (V8 + the OS under it) charges for fresh memory, per 4 KiB, in the',
        "content store's allocation pattern. It bounds from below what any page-contents-holding simulator pays on first touch.",
      ],
    },
  ];
}
