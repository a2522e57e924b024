/**
 * The "must show": CPU and GPU alternately touching the same pages. With the UVM-style
 * policy the thrashing detector engages (throttles, then pins the pages, which the GPU then maps
 * remotely) and migrations stop; with nouveau's policy and an application migrating before every
 * GPU job (SVM_BIND), the pages keep bouncing.
 */
import { Machine, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { NouveauGpu } from './gpu.js';
import { runJob } from './job.js';
import type { FaultPolicy } from './policy.js';
import { nouveauPolicy } from './policy.js';
import { NouveauSvm } from './svm.js';
import { uvmPolicy } from './uvm-policy.js';

/**
 * Pages shared by the CPU and the GPU. A round (GPU job, then the CPU pulling every page back one
 * by one at ≈ 8 µs each) must fit in the 500 µs thrashing window for the pattern to be thrashing at
 * all: 32 pages take ≈ 380 µs per round with the default cost model, 64 would take ≈ 700 µs.
 */
const PAGES = 32;
const ROUNDS = 40;

interface Run {
  /** Pages migrated (both directions) in each round. */
  readonly perRound: number[];
  /** Bytes the GPU read from VRAM and from system memory in the last round. */
  readonly lastVram: number;
  readonly lastSystem: number;
}

async function alternate(policy: FaultPolicy, bindBeforeJob: boolean): Promise<Run> {
  const m = new Machine({ seed: 1, ramBytes: 64 * 1024 * 1024 });
  const gpu = new NouveauGpu(m, { name: 'gp104', vramBytes: 16 * 1024 * 1024 });
  const svm = new NouveauSvm(gpu, { policy });
  const perRound: number[] = [];
  let lastVram = -1;
  let lastSystem = -1;
  await m.sched.runTask('app', async () => {
    const p = m.createProcess('app');
    const bytes = PAGES * PAGE_SIZE;
    const a = await p.mmap({
      length: bytes,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    await p.write(a, new Uint8Array(bytes));
    const svmm = svm.init(p);
    const ch = svmm.channelNew();
    const moved = () => svm.dmem.toVram + svm.dmem.toRam;
    for (let r = 0; r < ROUNDS; r++) {
      const before = moved();
      if (bindBeforeJob) {
        await p.mm.mmapLock.read();
        try {
          await svm.dmem.migrateToVram(p.mm, a, a + bytes);
        } finally {
          p.mm.mmapLock.readUnlock();
        }
      }
      // GPU: word 0 of every page += 1.
      const job = await runJob(ch, {
        name: 'bump',
        args: [{ addr: a, bytes, access: 'readwrite' }],
        run(blk) {
          blk.u32(0)[0]! += 1;
        },
      });
      lastVram = job.bytes.vram;
      lastSystem = job.bytes.system;
      // CPU: reads every page (pulling VRAM pages back), then writes word 1 of each.
      const seen = await p.read(a, bytes);
      const words = new Uint32Array(seen.buffer, seen.byteOffset, bytes / 4);
      for (let i = 0; i < PAGES; i++) {
        expect(words[(i * PAGE_SIZE) / 4], `page ${i} after GPU round ${r}`).toBe(r + 1);
        await p.writeU32(a + i * PAGE_SIZE + 4, r + 1);
      }
      perRound.push(moved() - before);
    }
    // The data survived every migration.
    for (let i = 0; i < PAGES; i++) {
      expect(await p.readU32(a + i * PAGE_SIZE)).toBe(ROUNDS);
      expect(await p.readU32(a + i * PAGE_SIZE + 4)).toBe(ROUNDS);
    }
    m.checkInvariants();
    await svm.fini();
    await p.exit();
  });
  expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  return { perRound, lastVram, lastSystem };
}

const sum = (xs: readonly number[]): number => xs.reduce((s, x) => s + x, 0);

describe('CPU/GPU ping-pong on the same pages', () => {
  it('UVM policy: the detector throttles, then pins, and migrations stop (the GPU maps the pages remotely)', async () => {
    const policy = uvmPolicy();
    const run = await alternate(policy, false);
    const first = sum(run.perRound.slice(0, 10));
    const last = sum(run.perRound.slice(-10));
    const s = policy.stats();
    expect(first, 'pages migrated in the first 10 rounds').toBeGreaterThan(0);
    expect(s.throttles, 'page throttles').toBeGreaterThanOrEqual(10 * PAGES);
    expect(s.pins, 'pages pinned').toBe(PAGES);
    expect(s.thrashingPages).toBe(PAGES);
    expect(s.unpins, 'pins last 300 windows, longer than the rest of the run').toBe(0);
    expect(last, `migrations in the last 10 rounds (first 10: ${first})`).toBe(0);
    // Pinned pages are served from system memory.
    expect(run.lastVram).toBe(0);
    expect(run.lastSystem).toBe(2 * PAGES * PAGE_SIZE);
  });

  it('nouveau policy with SVM_BIND before every job: the detector is never involved and pages keep bouncing', async () => {
    const run = await alternate(nouveauPolicy(), true);
    const first = sum(run.perRound.slice(0, 10));
    const last = sum(run.perRound.slice(-10));
    // Every round moves every page there and back: growth is linear.
    expect(run.perRound.every((n) => n === 2 * PAGES)).toBe(true);
    expect(last, `migrations in the last 10 rounds (first 10: ${first})`).toBe(first);
    expect(first).toBe(10 * 2 * PAGES);
    expect(run.lastVram).toBe(2 * PAGES * PAGE_SIZE);
  });
});
