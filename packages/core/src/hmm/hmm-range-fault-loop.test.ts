import { describe, expect, it } from 'vitest';
import { Machine } from '../system/machine.js';
import { Madv, MapFlag, PAGE_SIZE, Prot } from '../mm/constants.js';
import { Pte } from '../mm/pgtable.js';
import { Mutex } from '../sim/locks.js';
import { HmmPfn, hmmPfnFlags, hmmPfnToPfn, hmmRangeFault } from './hmm-range-fault.js';
import type { HmmRange } from './hmm-range-fault.js';
import { hmmRangeFaultLoop } from './hmm-range-fault-loop.js';
import {
  mmuIntervalNotifierInsert,
  mmuIntervalReadBegin,
  mmuIntervalSetSeq,
} from './mmu-interval-notifier.js';

const P = PAGE_SIZE;
const PAGES = 8;

/**
 * A minimal mirror: a device table vpn → pfn, filled by the fault loop and cleared by the
 * invalidate callback under the driver lock. `skipReadRetry` breaks the protocol on purpose.
 */
async function raceRun(seed: number, skipReadRetry: boolean): Promise<{ stale: number[]; retries: number }> {
  const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P, seed });
  const p = m.createProcess();
  const a = await p.mmap({
    length: PAGES * P,
    prot: Prot.READ | Prot.WRITE,
    flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
  });
  await p.fill(a, PAGES * P, 1);
  const child = await p.fork(); // pages shared: a CPU write will replace them (CLEAR)
  const table = new Map<number, number>();
  const lock = new Mutex(m.sched, 'driver');
  const sub = mmuIntervalNotifierInsert(p.mm, a, PAGES * P, {
    async invalidate(s, range, seq) {
      if (!range.blockable) return false;
      await lock.lock();
      mmuIntervalSetSeq(s, seq);
      for (const v of [...table.keys()]) if (v >= range.start / P && v < range.end / P) table.delete(v);
      lock.unlock();
      await m.sched.sleep(500); // the device's TLB invalidation
      return true;
    },
  });
  let retries = 0;
  const commit = (range: HmmRange): void => {
    for (let i = 0; i < range.hmmPfns.length; i++) {
      const w = range.hmmPfns[i]!;
      if ((hmmPfnFlags(w) & HmmPfn.VALID) !== 0) table.set(range.start / P + i, hmmPfnToPfn(w));
    }
  };
  /** The same loop without the read_retry check: it may program a mapping an invalidation already removed. */
  const brokenLoop = async (): Promise<void> => {
    for (;;) {
      const range: HmmRange = {
        notifier: sub,
        notifierSeq: await mmuIntervalReadBegin(sub),
        start: a,
        end: a + PAGES * P,
        hmmPfns: new Float64Array(PAGES),
        defaultFlags: HmmPfn.REQ_FAULT,
        pfnFlagsMask: 0,
        devPrivateOwner: null,
      };
      await p.mm.mmapLock.read();
      try {
        await hmmRangeFault(range);
      } catch (e) {
        if ((e as { code?: string }).code === 'EBUSY') continue;
        throw e;
      } finally {
        p.mm.mmapLock.readUnlock();
      }
      await m.sched.yield();
      await lock.lock();
      commit(range);
      lock.unlock();
      return;
    }
  };
  m.sched.spawn('device-fault', async () => {
    for (let round = 0; round < 3; round++) {
      if (skipReadRetry) await brokenLoop();
      else {
        await hmmRangeFaultLoop({
          notifier: sub,
          start: a,
          end: a + PAGES * P,
          defaultFlags: HmmPfn.REQ_FAULT,
          driverLock: lock,
          commit,
          onRetry: () => retries++,
        });
      }
      await m.sched.yield();
    }
  });
  m.sched.spawn('cpu', async () => {
    for (let k = 0; k < 3; k++) {
      await m.sched.yield();
      await p.write(a + k * 2 * P, new Uint8Array([9])); // COW: CLEAR on that page
    }
    await p.madvise(a + 7 * P, P, Madv.DONTNEED);
  });
  await m.sched.run();
  // Every device entry must still be what the CPU page table maps.
  const stale: number[] = [];
  for (const [vpn, pfn] of table) {
    const slot = p.mm.pgtable.lookup(vpn);
    const f = slot < 0 ? 0 : m.mm.arena.pteFlags[slot]!;
    if ((f & Pte.PRESENT) === 0 || m.mm.arena.pteVal[slot] !== pfn) stale.push(vpn * P - a);
  }
  await m.sched.runTask('exit', async () => {
    await child.exit();
    await p.exit();
  });
  m.checkInvariants();
  return { stale, retries };
}

describe('hmmRangeFaultLoop', () => {
  it('never commits a stale mapping across 100 seeds, and the race does happen (read_retry or EBUSY)', async () => {
    let retried = 0;
    for (let seed = 1; seed <= 100; seed++) {
      const r = await raceRun(seed, false);
      expect(r.stale, `seed ${seed}`).toEqual([]);
      if (r.retries > 0) retried++;
    }
    expect(retried).toBeGreaterThan(0);
  });

  it('a loop that skips read_retry installs a stale mapping on some seed of the same 100', async () => {
    const staleSeeds: number[] = [];
    for (let seed = 1; seed <= 100; seed++) {
      if ((await raceRun(seed, true)).stale.length > 0) staleSeeds.push(seed);
    }
    expect(staleSeeds.length).toBeGreaterThan(0);
  });

  it('passes fault errors through, gives up with EBUSY when the budget is spent, commits once otherwise', async () => {
    const m = new Machine({ ramBytes: 64 * P, swapBytes: 0 });
    const p = m.createProcess();
    const a = await p.mmap({ length: P, prot: Prot.READ, flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    const lock = new Mutex(m.sched, 'driver');
    const sub = mmuIntervalNotifierInsert(p.mm, a, P, {
      invalidate: (s, _r, seq) => (mmuIntervalSetSeq(s, seq), true),
    });
    const args = { notifier: sub, start: a, end: a + P, driverLock: lock, commit: () => {} };
    await expect(
      m.sched.runTask('w', () =>
        hmmRangeFaultLoop({ ...args, defaultFlags: HmmPfn.REQ_FAULT | HmmPfn.REQ_WRITE }),
      ),
    ).rejects.toMatchObject({ code: 'EPERM' });
    // An exhausted budget: EBUSY before any walk.
    await expect(
      m.sched.runTask('w', () =>
        hmmRangeFaultLoop({ ...args, defaultFlags: HmmPfn.REQ_FAULT, timeoutNs: -1 }),
      ),
    ).rejects.toMatchObject({ code: 'EBUSY' });
    // Within budget it commits once.
    let commits = 0;
    await m.sched.runTask('w', () =>
      hmmRangeFaultLoop({ ...args, defaultFlags: HmmPfn.REQ_FAULT, commit: () => void commits++ }),
    );
    expect(commits).toBe(1);
  });

  it('the race-injection point runs after the walk: an invalidation there makes the loop walk again', async () => {
    const m = new Machine({ ramBytes: 64 * P, swapBytes: 0 });
    const p = m.createProcess();
    const a = await p.mmap({
      length: 2 * P,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    await p.fill(a, 2 * P, 7);
    const lock = new Mutex(m.sched, 'driver');
    let invalidations = 0;
    const sub = mmuIntervalNotifierInsert(p.mm, a, 2 * P, {
      invalidate: (s, _r, seq) => (invalidations++, mmuIntervalSetSeq(s, seq), true),
    });
    const walks: number[] = [];
    m.mm.onRangeFaultDone = async (range) => {
      walks.push(range.notifierSeq);
      // Lands after the walk's last sequence check: hmm_range_fault still returns success.
      if (walks.length === 1) await p.madvise(a, P, Madv.DONTNEED);
    };
    const committed: number[] = [];
    await m.sched.runTask('w', () =>
      hmmRangeFaultLoop({
        notifier: sub,
        start: a,
        end: a + 2 * P,
        driverLock: lock,
        defaultFlags: HmmPfn.REQ_FAULT,
        commit: (r) => void committed.push(hmmPfnToPfn(r.hmmPfns[0]!)),
      }),
    );
    m.mm.onRangeFaultDone = null;
    expect(walks).toHaveLength(2); // the first walk's result was thrown away by read_retry
    expect(invalidations).toBe(1);
    expect(committed).toHaveLength(1);
    // What was committed is what the CPU maps now (the zero page after DONTNEED), not the old frame.
    expect(committed[0]).toBe(
      p.mm.pgtable.lookup(a / P) < 0 ? -1 : m.mm.arena.pteVal[p.mm.pgtable.lookup(a / P)],
    );
  });
});
