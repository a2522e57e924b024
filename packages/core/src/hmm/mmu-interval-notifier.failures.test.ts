/**
 * Invalidate callbacks that break their contract: the dispatcher contains them (see the module doc
 * of mmu-interval-notifier.ts). A kernel callback returns a bool; a simulated one can also throw,
 * reject, or sleep where it must not.
 */
import { describe, expect, it } from 'vitest';
import { HmmError, isHmmError } from '../errors/errno.js';
import { ANON, P, RW } from '../testing/fixtures.js';
import { Machine } from '../system/machine.js';
import { Prot } from '../mm/constants.js';
import type { MmuNotifierRange } from '../mm/mmu-notifier-hooks.js';
import { NOTIFY_EVENT_NAMES } from '../mm/mmu-notifier-hooks.js';
import type { Process } from '../mm/process.js';
import { Mutex } from '../sim/locks.js';
import { TraceRecorder } from '../sim/trace.js';
import {
  MmuNotifierSubscriptions,
  mmuIntervalNotifierInsert,
  mmuIntervalReadBegin,
  mmuIntervalSetSeq,
} from './mmu-interval-notifier.js';
import type { MmuIntervalNotifier, MmuIntervalNotifierOps } from './mmu-interval-notifier.js';

async function setup(pages = 16): Promise<{ m: Machine; p: Process; a: number }> {
  const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P });
  const p = m.createProcess();
  const a = await p.mmap({ length: pages * P, prot: RW, flags: ANON });
  await p.fill(a, pages * P, 7);
  return { m, p, a };
}

/** A well-behaved subscriber that records the events it saw. */
function good(): { seen: string[]; ops: MmuIntervalNotifierOps } {
  const seen: string[] = [];
  return {
    seen,
    ops: {
      invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, seq: number) {
        if (!range.blockable) return false;
        seen.push(NOTIFY_EVENT_NAMES[range.event]!);
        mmuIntervalSetSeq(sub, seq);
        return true;
      },
    },
  };
}

describe('invalidate callbacks that break the contract', () => {
  it('blockable: a callback that throws is contained; the others are still called, the operation completes', async () => {
    const { m, p, a } = await setup();
    const rec = new TraceRecorder(m.trace, (e) => e.type === 'mm.notifier_error');
    const before = good();
    mmuIntervalNotifierInsert(p.mm, a, 16 * P, before.ops);
    const thrower = mmuIntervalNotifierInsert(p.mm, a, 16 * P, {
      invalidate: () => {
        throw new TypeError('driver bug');
      },
    });
    const after = good();
    const watched = mmuIntervalNotifierInsert(p.mm, a, 16 * P, after.ops);
    const subs = MmuNotifierSubscriptions.of(p.mm);
    const observed: string[] = [];
    subs.failureObservers.add((f) => observed.push(f.error.code));
    await m.sched.runTask('app', async () => {
      await p.mprotect(a, 4 * P, Prot.READ); // reaches every subscriber, resolves
      await p.munmap(a + 8 * P, 8 * P);
    });
    expect(before.seen).toEqual(['PROTECTION_VMA', 'UNMAP']);
    expect(after.seen).toEqual(['PROTECTION_VMA', 'UNMAP']);
    expect(p.mm.vmas.lookup(a + 8 * P)).toBeUndefined();
    expect(subs.activeInvalidateRanges).toBe(0);
    expect(subs.invalidating).toBe(false);
    expect(subs.callbackFailureCount).toBe(2);
    const f = subs.callbackFailures[0]!;
    expect(f.sub).toBe(thrower);
    expect(f.thrown).toBeInstanceOf(TypeError);
    expect(isHmmError(f.error, 'EINVAL')).toBe(true);
    expect(f.error.message).toMatch(/threw in a blockable invalidation.*contained.*driver bug/);
    expect(observed).toEqual(['EINVAL', 'EINVAL']);
    expect(rec.ofType('mm.notifier_error').map((e) => e.event)).toEqual(['PROTECTION_VMA', 'UNMAP']);
    // The sequence is even: a read section starts at once.
    expect(await mmuIntervalReadBegin(watched)).toBe(watched.invalidateSeq);
    m.checkInvariants();
  });

  it('blockable: a rejection keeps its errno; a declined blockable range is recorded, not thrown', async () => {
    const { m, p, a } = await setup();
    mmuIntervalNotifierInsert(p.mm, a, 8 * P, {
      invalidate: () => Promise.reject(new HmmError('ENODEV', 'device gone')),
    });
    mmuIntervalNotifierInsert(p.mm, a + 8 * P, 8 * P, { invalidate: () => false });
    await m.sched.runTask('app', () => p.munmap(a, 16 * P));
    const subs = MmuNotifierSubscriptions.of(p.mm);
    expect(subs.callbackFailures.map((f) => f.error.code)).toEqual(['ENODEV', 'EINVAL']);
    expect(subs.callbackFailures[1]!.error.message).toMatch(/returned false from a blockable invalidation/);
    expect(subs.callbackFailures[1]!.thrown).toBeNull();
    expect(subs.activeInvalidateRanges).toBe(0);
    m.checkInvariants();
  });

  it('exit with a throwing subscriber still tears the address space down', async () => {
    const { m, p, a } = await setup();
    mmuIntervalNotifierInsert(p.mm, a, 16 * P, {
      invalidate: () => {
        throw new Error('boom');
      },
    });
    await m.sched.runTask('app', () => p.exit(0));
    expect(p.exited).toBe(true);
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
  });

  it('non-blockable: a callback that throws counts as declining; nothing is reaped, nothing lost', async () => {
    const { m, p, a } = await setup();
    mmuIntervalNotifierInsert(p.mm, a, 16 * P, {
      invalidate: (_s, range) => {
        if (!range.blockable) throw new Error('cannot handle it');
        return true;
      },
    });
    expect(m.oomReap(p)).toBe(false);
    const subs = MmuNotifierSubscriptions.of(p.mm);
    expect(subs.activeInvalidateRanges).toBe(0);
    expect(subs.callbackFailures[0]!.error.message).toMatch(
      /non-blockable invalidation \(taken as declining/,
    );
    expect(m.sched.inAtomic).toBe(false);
    expect(await p.read(a, 4)).toEqual(new Uint8Array([7, 7, 7, 7]));
  });

  it('non-blockable: a callback that sleeps fails the reaper at once; its continuation is contained and the run ends', async () => {
    const { m, p, a } = await setup();
    const lock = new Mutex(m.sched, 'drv');
    let reachedAfterLock = 0;
    mmuIntervalNotifierInsert(p.mm, a, 16 * P, {
      // Serves every invalidation as blockable: takes its lock and sleeps (the broken pattern).
      invalidate: async (sub, _range, seq) => {
        await lock.lock();
        try {
          reachedAfterLock++;
          await m.sched.sleep(1000);
          mmuIntervalSetSeq(sub, seq);
          return true;
        } finally {
          lock.unlock();
        }
      },
    });
    const outcome = await m.sched.runTask('main', async () => {
      // A device keeps the clock moving meanwhile (as a running device would).
      const ticker = m.sched.spawn('ticker', async () => {
        for (let i = 0; i < 100; i++) await m.sched.sleep(100);
      });
      // The OOM reaper runs as a task of its own (the kernel's oom_reaper thread).
      const reaper = m.sched.spawn('oom_reaper', () => {
        try {
          return m.oomReap(p);
        } catch (e) {
          return e;
        }
      });
      const r = await reaper.join();
      // The contained continuation settled before any task ran again: the lock is free, tasks sleep.
      expect(m.sched.inAtomic).toBe(false);
      expect(lock.isLocked).toBe(false);
      await m.sched.sleep(10);
      // A later blockable invalidation reaches the same callback, which may sleep there.
      await p.munmap(a, 16 * P);
      await ticker.join();
      return r;
    });
    expect(isHmmError(outcome, 'EINVAL')).toBe(true);
    expect((outcome as Error).message).toMatch(/slept \(returned a promise\) in a non-blockable/);
    // The continuation never got past its lock (taking a mutex in an atomic section fails at once).
    expect(reachedAfterLock).toBe(1);
    const subs = MmuNotifierSubscriptions.of(p.mm);
    expect(subs.callbackFailures.map((f) => f.error.code)).toEqual(['EINVAL']);
    expect(subs.activeInvalidateRanges).toBe(0);
    m.checkInvariants();
  }, 10_000);
});
