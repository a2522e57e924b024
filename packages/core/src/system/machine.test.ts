import { describe, expect, it } from 'vitest';
import { TraceRecorder } from '../sim/trace.js';
import { Machine } from './machine.js';
import { ANON, P, RW } from '../testing/fixtures.js';

/**
 * Three processes write, fork, unmap and reclaim concurrently as scheduler tasks that yield and sleep
 * between steps; returns the recorded trace and what each process read back.
 */
async function scenario(seed: number): Promise<{ trace: string; sums: number[] }> {
  const m = new Machine({ ramBytes: 32 * P, swapBytes: 512 * P, seed });
  const rec = new TraceRecorder(m.trace);
  const sums: number[] = [];
  const sched = m.sched;
  for (let t = 0; t < 3; t++) {
    sched.spawn(`worker${t}`, async () => {
      const p = m.createProcess(`w${t}`);
      const a = await p.mmap({ length: 24 * P, prot: RW, flags: ANON });
      for (let i = 0; i < 24; i++) {
        await p.writeU32(a + i * P, t * 1000 + i);
        if (i % 3 === 0) await sched.yield();
      }
      const child = await p.fork();
      await sched.sleep(100 * (t + 1));
      await child.writeU32(a, 7);
      await p.munmap(a + 20 * P, 4 * P);
      let sum = 0;
      for (let i = 0; i < 20; i++) {
        sum += await p.readU32(a + i * P);
        await sched.yield();
      }
      sums[t] = sum;
      await child.exit();
      await p.exit();
    });
  }
  sched.spawn('kswapd', async () => {
    for (let k = 0; k < 5; k++) {
      await sched.sleep(50);
      await m.reclaim(8);
    }
  });
  await sched.run();
  m.checkInvariants();
  expect(m.stats().usedPages).toBe(0);
  rec.stop();
  return { trace: rec.toJSONL(), sums };
}

describe('Machine determinism', () => {
  it('gives the same trace, byte for byte, for the same seed', async () => {
    const a = await scenario(42);
    const b = await scenario(42);
    expect(a.trace.length).toBeGreaterThan(1000);
    expect(a.trace).toBe(b.trace);
  });

  it('interleaves differently for different seeds while every process reads its own data', async () => {
    const traces = new Set<string>();
    for (let seed = 1; seed <= 6; seed++) {
      const r = await scenario(seed);
      traces.add(r.trace);
      for (let t = 0; t < 3; t++) {
        let want = 0;
        for (let i = 0; i < 20; i++) want += t * 1000 + i;
        expect(r.sums[t]).toBe(want);
      }
    }
    expect(traces.size).toBeGreaterThan(1);
  });
});

describe('Machine', () => {
  it('validates its options and reports memory use', async () => {
    expect(() => new Machine({ ramBytes: 1000 })).toThrow(/whole number of pages/);
    const m = new Machine({ ramBytes: 64 * P, swapBytes: 0 });
    expect(m.stats()).toMatchObject({ ramPages: 64, freePages: 63, usedPages: 0, swapSlots: 0 });
    await expect(m.reclaim(0)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(() => m.process(99)).toThrow(/no process 99/);
    const p = m.createProcess();
    expect(m.process(p.pid)).toBe(p);
  });

  it('fails with ENOMEM when RAM is full of unreclaimable pages and there is no swap', async () => {
    const m = new Machine({ ramBytes: 16 * P, swapBytes: 0 });
    const p = m.createProcess();
    const a = await p.mmap({ length: 32 * P, prot: RW, flags: ANON });
    await expect(p.fill(a, 32 * P, 1)).rejects.toMatchObject({ code: 'ENOMEM' });
    m.checkInvariants();
    // Pages written before the failure are intact.
    expect(await p.readU32(a)).toBe(0x01010101);
    await p.exit();
    expect(m.stats().usedPages).toBe(0);
  });
});
