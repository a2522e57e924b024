/**
 * The race the sequence protocol exists for, driven by seeds: the device READs a buffer while the
 * CPU replaces pages under it (copy-on-write after fork, MADV_DONTNEED). With the sanitizer
 * watching, the real dmirror never keeps or uses a stale mapping across 100 seeds; a copy whose
 * fault loop skips `mmuIntervalReadRetry` is caught on some seed of the same set.
 */
import { HmmSanitizer, Machine, Madv, MapFlag, PAGE_SIZE, Prot, SimDevice } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { loopWithoutReadRetry } from './broken.js';
import { Dmirror } from './dmirror.js';
import type { FaultLoop } from './dmirror.js';

const P = PAGE_SIZE;
const PAGES = 16;

async function race(seed: number, faultLoop?: FaultLoop): Promise<{ violations: string[]; dataOk: boolean }> {
  const m = new Machine({ ramBytes: 256 * P, swapBytes: 1024 * P, seed });
  const dev = new SimDevice(m.mm, { name: 'dmirror0' });
  const p = m.createProcess('race');
  const san = new HmmSanitizer(m.mm, 'record');
  let dataOk = true;
  await m.sched.runTask('setup', async () => {
    const a = await p.mmap({
      length: PAGES * P,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    await p.fill(a, PAGES * P, 1);
    // The child keeps every page shared, so a CPU write in the parent replaces it (a CLEAR invalidation).
    await p.fork();
    const mirror = await Dmirror.open(m, dev, p, faultLoop === undefined ? {} : { faultLoop });
    san.watch(dev, mirror.asid, p.mm);
    const rnd = m.sched.random;
    m.sched.spawn('device', async () => {
      for (let round = 0; round < 4; round++) {
        const r = await mirror.read(a, PAGES);
        // Each page reads either the old value (1), a CPU write (2), or zero after DONTNEED.
        for (let i = 0; i < PAGES; i++) if (![0, 1, 2].includes(r.data[i * P]!)) dataOk = false;
        await m.sched.yield();
      }
    });
    m.sched.spawn('cpu', async () => {
      for (let k = 0; k < 6; k++) {
        for (let y = rnd.nextInt(4); y > 0; y--) await m.sched.yield();
        const page = rnd.nextInt(PAGES);
        if (k % 3 === 2) await p.madvise(a + page * P, P, Madv.DONTNEED);
        else await p.write(a + page * P, new Uint8Array([2]));
      }
    });
  });
  await m.sched.run();
  san.checkAll();
  return { violations: san.violations.map((v) => v.rule), dataOk };
}

describe('dmirror under seeded races', () => {
  it('never keeps or uses a stale mapping across 100 seeds (sanitizer clean, data plausible)', async () => {
    for (let seed = 1; seed <= 100; seed++) {
      const r = await race(seed);
      expect(r.violations, `seed ${seed}`).toEqual([]);
      expect(r.dataOk, `seed ${seed}`).toBe(true);
    }
  });

  it('a copy that skips mmuIntervalReadRetry is caught by the sanitizer on some seed of the same 100', async () => {
    const caught: number[] = [];
    for (let seed = 1; seed <= 100; seed++)
      if ((await race(seed, loopWithoutReadRetry)).violations.length > 0) caught.push(seed);
    expect(caught.length).toBeGreaterThan(0);
  });
});
