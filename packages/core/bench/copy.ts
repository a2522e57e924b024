/**
 * Data copy throughput: `p.write` of 64 MiB into resident pages of a process, against a raw
 * `Uint8Array.set` of the same 64 MiB into an already-touched buffer on this machine.
 * DESIGN §7 target: the simulator's copy at ≥ 50 % of the raw copy's throughput.
 *
 * @module
 */
import { Machine, MapFlag, PAGE_SIZE, Prot } from '../src/index.js';
import { TARGETS } from './anchors.js';
import { MiB, fmtInt, repeat, timeNs } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

const BYTES = 64 * MiB;
const PAGES = BYTES / PAGE_SIZE;

/** A deterministic, non-constant source buffer. */
function pattern(): Uint8Array {
  const src = new Uint8Array(BYTES);
  let x = 0x9e3779b9;
  for (let i = 0; i < BYTES; i += 4) {
    x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + i) >>> 0;
    src[i] = x;
    src[i + 1] = x >>> 8;
    src[i + 2] = x >>> 16;
    src[i + 3] = x >>> 24;
  }
  return src;
}

const gbps = (nsPerPage: number): string => (PAGE_SIZE / nsPerPage).toFixed(2);

/** Rows: `p.write` and the raw `Uint8Array.set` baseline. */
export async function benchCopy(cfg: BenchConfig): Promise<Row[]> {
  cfg.log('copy: 64 MiB, p.write into resident pages vs Uint8Array.set');
  const src = pattern();
  const m = new Machine({ ramBytes: 256 * MiB, swapBytes: 0, seed: 1 });
  const p = m.createProcess('copy');
  const addr = await p.mmap({
    length: BYTES,
    prot: Prot.READ | Prot.WRITE,
    flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
  });
  // Fault the destination in (and materialise its content) outside the timing.
  await p.fill(addr, BYTES, 0xff);
  const dst = new Uint8Array(BYTES).fill(0xff);
  const r = await repeat(cfg, 'copy', async () => {
    const sim = await timeNs(() => p.write(addr, src));
    const raw = await timeNs(() => dst.set(src));
    return { sim: sim / PAGES, raw: raw / PAGES };
  });
  let back: Uint8Array = new Uint8Array(0);
  const readNs =
    (await timeNs(async () => {
      back = await p.read(addr, BYTES);
    })) / PAGES;
  if (Buffer.compare(back, src) !== 0)
    throw new Error('bench copy: data read back differs from data written');
  await p.exit();
  const frac = r.raw.median / r.sim.median;
  return [
    {
      id: 'copy-write',
      measurement: 'copy: p.write 64 MiB (resident)',
      unit: 'ns',
      sim: r.sim.median,
      kernel: null,
      kernelSource: null,
      ratio: frac,
      ratioText: `${(frac * 100).toFixed(0)} % of raw`,
      target: `≥ ${TARGETS.copyFraction * 100} % of raw`,
      verdict: frac >= TARGETS.copyFraction ? 'PASS' : 'FAIL',
      samples: r.sim.samples,
      warmup: r.sim.warmup,
      details: [
        `${gbps(r.sim.median)} GB/s through p.write vs ${gbps(r.raw.median)} GB/s raw: ${(frac * 100).toFixed(1)} % (sim/kernel column: throughput as % of raw).`,
        `Destination pages resident and writable beforehand (no faults in the timing); ${fmtInt(PAGES)} pages per run.`,
        `p.read of the same 64 MiB (one run, checked equal): ${fmtInt(readNs)} ns/page, ${gbps(readNs)} GB/s (includes a fresh 64 MiB result buffer).`,
      ],
    },
    {
      id: 'copy-raw',
      measurement: 'copy: raw Uint8Array.set 64 MiB (host)',
      unit: 'ns',
      sim: r.raw.median,
      kernel: null,
      kernelSource: null,
      ratio: null,
      target: null,
      verdict: null,
      samples: r.raw.samples,
      warmup: r.raw.warmup,
      details: [],
    },
  ];
}
