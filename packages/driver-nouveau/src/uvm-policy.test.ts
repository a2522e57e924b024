import { HmmError, Machine, MapFlag, Prot } from '@hmm/core';
import type { Process } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { NouveauGpu } from './gpu.js';
import { runJob } from './job.js';
import type { FaultPolicy } from './policy.js';
import { nouveauPolicy } from './policy.js';
import { NouveauSvm } from './svm.js';
import {
  ThrashHint,
  ThrashingDetector,
  UVM_THRASHING_PIN_THRESHOLD,
  UVM_THRASHING_PIN_WINDOWS,
  densityRegion,
  uvmPolicy,
} from './uvm-policy.js';

const LEAF = 16; // 64 KiB of 4 KiB pages
const BLOCK = 512; // 2 MiB

function bitmap(...ranges: [number, number][]): Uint8Array {
  const b = new Uint8Array(BLOCK);
  for (const [s, e] of ranges) b.fill(1, s, e);
  return b;
}

describe('densityRegion (the 51 % prefetch tree)', () => {
  it('the faulting big page alone when its parent is only half covered (50 % is not > 51 %)', () => {
    expect(densityRegion(bitmap([0, 16]), LEAF, 3, 0.51)).toEqual([0, 16]);
    expect(densityRegion(bitmap([0, 16], [16, 32]), LEAF, 3, 0.51)).toEqual([0, 32]);
    // 16 of 32 pages of the 128 KiB parent: exactly 50 %.
    expect(densityRegion(bitmap([0, 16]), LEAF, 15, 0.51)).toEqual([0, 16]);
    // 17 of 32 (53 %): the parent wins.
    expect(densityRegion(bitmap([0, 17]), LEAF, 15, 0.51)).toEqual([0, 32]);
  });

  it('the whole 2 MiB block needs more than 51 % of 512 pages: 262 yes, 261 no', () => {
    expect(densityRegion(bitmap([0, 262]), LEAF, 0, 0.51)).toEqual([0, BLOCK]);
    expect(densityRegion(bitmap([0, 261]), LEAF, 0, 0.51)).toEqual([0, 256]);
    // Seen from a fault in the other half (its own 1 MiB half is only 16 / 256 covered): 245 + 16
    // = 261 pages is not enough for the block, 246 + 16 is.
    expect(densityRegion(bitmap([0, 245], [496, 512]), LEAF, 500, 0.51)).toEqual([496, 512]);
    expect(densityRegion(bitmap([0, 246], [496, 512]), LEAF, 500, 0.51)).toEqual([0, BLOCK]);
  });

  it('the largest qualifying subregion wins even if a smaller one in between does not qualify', () => {
    // Leaf [0,16) covered, its sibling [16,32) empty, [32,64) full: 128 KiB is 50 %, 256 KiB is 75 %.
    expect(densityRegion(bitmap([0, 16], [32, 64]), LEAF, 5, 0.51)).toEqual([0, 64]);
  });

  it('null when not even the leaf is covered enough; EINVAL for shapes that are not a tree', () => {
    expect(densityRegion(bitmap([7, 8]), LEAF, 7, 0.51)).toBeNull();
    expect(() => densityRegion(new Uint8Array(500), LEAF, 0, 0.51)).toThrow(HmmError);
    expect(() => densityRegion(bitmap(), 12, 0, 0.51)).toThrow(/power-of-two/);
    expect(() => densityRegion(bitmap(), LEAF, BLOCK, 0.51)).toThrow(/EINVAL|power-of-two/);
  });
});

describe('ThrashingDetector', () => {
  const W = 500_000;
  const det = () => new ThrashingDetector({ windowNs: W, threshold: 3 });

  it('three migrations within the window make a page thrash; an event one window old has expired', () => {
    const d = det();
    d.record(7, 0);
    d.record(7, 100_000);
    expect(d.eventsInWindow(7, 100_000)).toBe(2);
    expect(d.isThrashing(7, 100_000)).toBe(false);
    d.record(7, W - 1);
    expect(d.isThrashing(7, W - 1)).toBe(true);
    expect(d.stats().thrashingPages).toBe(1);

    const e = det();
    e.record(9, 0);
    e.record(9, 100_000);
    e.record(9, W); // the first one is exactly a window old
    expect(e.eventsInWindow(9, W)).toBe(2);
    expect(e.isThrashing(9, W)).toBe(false);
    expect(e.hint(9, W)).toBe(ThrashHint.NONE);
    expect(e.eventsInWindow(9, 2 * W + 100_000)).toBe(0);
    // Pages are independent, in the same block or another one.
    expect(e.eventsInWindow(10, W)).toBe(0);
    expect(e.hint(12_345, W)).toBe(ThrashHint.NONE);
  });

  it('throttle ×10 → pin for 300 windows → unpin, and the page starts over', () => {
    const d = det();
    for (const t of [0, 1000, 2000]) d.record(3, t);
    let now = 3000;
    for (let i = 0; i < UVM_THRASHING_PIN_THRESHOLD; i++) {
      expect(d.hint(3, now), `throttle ${i + 1}`).toBe(ThrashHint.THROTTLE);
      now += W; // the nap; the page keeps migrating in between
      d.record(3, now);
    }
    expect(d.stats().throttles).toBe(UVM_THRASHING_PIN_THRESHOLD);
    expect(d.isPinned(3, now)).toBe(false);
    expect(d.hint(3, now)).toBe(ThrashHint.PIN);
    const pinnedAt = now;
    expect(d.stats().pins).toBe(1);
    expect(d.isPinned(3, now)).toBe(true);
    expect(d.isThrashing(3, now)).toBe(true);
    const until = pinnedAt + UVM_THRASHING_PIN_WINDOWS * W;
    expect(d.hint(3, until - 1)).toBe(ThrashHint.PIN);
    expect(d.stats().pins).toBe(1); // still the same pin
    expect(d.isPinned(3, until)).toBe(false);
    expect(d.hint(3, until)).toBe(ThrashHint.NONE);
    expect(d.stats().unpins).toBe(1);
    expect(d.isThrashing(3, until)).toBe(false);
    expect(d.eventsInWindow(3, until)).toBe(0);
    // It has to thrash again to be throttled again.
    d.record(3, until + 1);
    d.record(3, until + 2);
    expect(d.hint(3, until + 3)).toBe(ThrashHint.NONE);
    d.record(3, until + 3);
    expect(d.hint(3, until + 4)).toBe(ThrashHint.THROTTLE);
    expect(d.stats()).toEqual({ throttles: 11, pins: 1, unpins: 1, thrashingPages: 2 });
  });

  it('a thrashing page that stays quiet for an epoch is forgotten', () => {
    const d = new ThrashingDetector({ windowNs: W, threshold: 3, epochWindows: 4 });
    for (const t of [0, 1, 2]) d.record(1, t);
    expect(d.hint(1, 3)).toBe(ThrashHint.THROTTLE);
    expect(d.isThrashing(1, 2 + 4 * W - 1)).toBe(true);
    expect(d.isThrashing(1, 2 + 4 * W)).toBe(false);
    expect(d.hint(1, 2 + 4 * W)).toBe(ThrashHint.NONE);
  });

  it('EINVAL for bad parameters', () => {
    expect(() => new ThrashingDetector({ windowNs: 0, threshold: 3 })).toThrow(/windowNs/);
    expect(() => new ThrashingDetector({ windowNs: W, threshold: 0 })).toThrow(/threshold/);
    expect(() => new ThrashingDetector({ windowNs: W, threshold: 3, blockPages: 300 })).toThrow(/blockPages/);
  });
});

describe('uvmPolicy configuration', () => {
  it('defaults come from the machine cost model at attach; options override them', () => {
    const p = uvmPolicy();
    expect(p.batchSize).toBe(256);
    expect(p.maxBatchesPerService).toBe(20);
    expect(p.thrashing).toBeNull();
    const m = new Machine({ cost: { gpuFault: { batchSize: 64, thrashingWindowNs: 250_000 } } });
    const gpu = new NouveauGpu(m, { vramBytes: 8 * 1024 * 1024 });
    new NouveauSvm(gpu, { policy: p });
    expect(p.batchSize).toBe(64);
    expect(p.thrashing?.windowNs).toBe(250_000);
    expect(p.thrashing?.threshold).toBe(3);

    const q = uvmPolicy({ batchSize: 32, thrashingThreshold: 4 });
    new NouveauSvm(new NouveauGpu(m, { name: 'gpu2', vramBytes: 8 * 1024 * 1024 }), { policy: q });
    expect(q.batchSize).toBe(32);
    expect(q.thrashing?.threshold).toBe(4);
  });

  it('one policy object per GPU (EBUSY); EINVAL for bad options', () => {
    const m = new Machine();
    const p = uvmPolicy();
    new NouveauSvm(new NouveauGpu(m, { name: 'a', vramBytes: 8 * 1024 * 1024 }), { policy: p });
    expect(
      () => new NouveauSvm(new NouveauGpu(m, { name: 'b', vramBytes: 8 * 1024 * 1024 }), { policy: p }),
    ).toThrow(/already attached/);
    expect(() => uvmPolicy({ batchSize: 0 })).toThrow(/batchSize/);
    expect(() => uvmPolicy({ prefetchThreshold: 1.5 })).toThrow(/prefetchThreshold/);
    expect(() => uvmPolicy({ vaBlockBytes: 3 * 1024 * 1024 })).toThrow(/vaBlockBytes/);
    expect(() => uvmPolicy({ prefetchLeafBytes: 1000 })).toThrow(/prefetchLeafBytes/);
  });
});

interface ReadRun {
  readonly batches: number;
  readonly vramPages: number;
  readonly sum: number;
}

/** A GPU job summing 4 MiB of malloc'd (mmap anon) floats the CPU wrote. */
async function read4MiB(policy: FaultPolicy): Promise<ReadRun> {
  const m = new Machine({ seed: 1, ramBytes: 64 * 1024 * 1024 });
  const gpu = new NouveauGpu(m, { name: 'gp104', vramBytes: 16 * 1024 * 1024 });
  const svm = new NouveauSvm(gpu, { policy });
  const bytes = 4 * 1024 * 1024;
  const n = bytes / 4;
  let out: ReadRun | null = null;
  await m.sched.runTask('app', async () => {
    const p: Process = m.createProcess('app');
    const a = await p.mmap({
      length: bytes,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    const init = new Float32Array(n);
    for (let i = 0; i < n; i++) init[i] = i % 1000;
    await p.write(a, new Uint8Array(init.buffer));
    const svmm = svm.init(p);
    const ch = svmm.channelNew();
    let sum = 0;
    await runJob(ch, {
      name: 'sum',
      args: [{ addr: a, bytes, access: 'read' }],
      run(blk) {
        for (const v of blk.f32(0)) sum += v;
      },
    });
    const vramPages = svm.dmem.devmem.nrAllocated;
    // The CPU still sees the same data (pulling pages back as it reads).
    const back = await p.read(a, bytes);
    const f = new Float32Array(back.buffer, back.byteOffset, n);
    for (let i = 0; i < n; i += 4093) expect(f[i]).toBe(i % 1000);
    out = { batches: svm.stats().batches, vramPages, sum };
    m.checkInvariants();
    await svm.fini();
    await p.exit();
  });
  expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  return out!;
}

describe('nouveau policy versus UVM policy on a 4 MiB read', () => {
  it('UVM migrates the data to VRAM with fewer fault batches; nouveau migrates nothing; both read it right', async () => {
    const expected = (() => {
      let s = 0;
      for (let i = 0; i < 1024 * 1024; i++) s += i % 1000;
      return s;
    })();
    const nv = await read4MiB(nouveauPolicy());
    const policy = uvmPolicy();
    const uvm = await read4MiB(policy);
    expect(nv.sum).toBe(expected);
    expect(uvm.sum).toBe(expected);
    expect(nv.vramPages).toBe(0);
    expect(uvm.vramPages).toBe(1024);
    expect(policy.stats().migrations).toBe(1024);
    expect(policy.stats().prefetched, 'pages the density prefetcher added beyond the faults').toBeGreaterThan(
      0,
    );
    expect(uvm.batches, `UVM batches (nouveau: ${nv.batches})`).toBeLessThan(nv.batches);
  });
});
