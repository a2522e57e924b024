import { describe, expect, it } from 'vitest';
import { isHmmError } from '../errors/errno.js';
import { Mutex, RwSemaphore } from './locks.js';
import { Scheduler } from './scheduler.js';
import { WaitQueue } from './wait.js';

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return isHmmError(e) ? e.code : String(e);
  }
}

describe('atomic sections (might_sleep)', () => {
  it('every sleeping primitive fails at once with EDEADLK inside a section; try-locks work', async () => {
    const s = new Scheduler();
    const mutex = new Mutex(s, 'm');
    const rw = new RwSemaphore(s, 'rw');
    const wq = new WaitQueue(s, 'wq');
    const got = await s.runTask('t', async () => {
      s.enterAtomic('test section');
      const codes = await Promise.all([
        codeOf(s.sleep(10)),
        codeOf(s.yield()),
        codeOf(s.block('x')),
        codeOf(mutex.lock()), // uncontended: still a might_sleep
        codeOf(rw.read()),
        codeOf(rw.write()),
        codeOf(wq.wait()),
      ]);
      const tries = [mutex.tryLock(), rw.tryRead()];
      const msg = s.mightSleep('probe')?.message ?? '';
      s.exitAtomic();
      mutex.unlock();
      rw.readUnlock();
      await s.sleep(5); // fine again
      return { codes, tries, msg, now: s.now, atomic: s.inAtomic };
    });
    expect(got.codes).toEqual(new Array(7).fill('EDEADLK'));
    expect(got.tries).toEqual([true, true]);
    expect(got.msg).toMatch(/probe would sleep inside an atomic section \(test section\)/);
    expect(got).toMatchObject({ now: 5, atomic: false });
    expect(() => s.exitAtomic()).toThrow(/no atomic section/);
  });

  it('a contained promise keeps the section until it settles, and no task runs before', async () => {
    const s = new Scheduler();
    const order: string[] = [];
    let settle!: () => void;
    const pending = new Promise<void>((r) => {
      settle = r;
    });
    s.spawn('a', () => {
      s.containAtomic(pending, 'leftover');
      order.push(`a contains, atomic ${s.inAtomic}`);
      // Settled by a chain of microtasks, as a contained continuation that cannot park is.
      void Promise.resolve()
        .then(() => Promise.resolve())
        .then(() => {
          order.push('leftover settles');
          settle();
        });
    });
    s.spawn('b', async () => {
      order.push(`b runs, atomic ${s.inAtomic}`);
      await s.sleep(1);
    });
    await s.run();
    const a = order.indexOf('a contains, atomic true');
    const settled = order.indexOf('leftover settles');
    const b = order.indexOf('b runs, atomic false');
    // Whichever of a and b the seed picks first, b never runs while the leftover is pending.
    expect(settled).toBeGreaterThan(a);
    if (b > a) expect(b).toBeGreaterThan(settled);
    expect(s.inAtomic).toBe(false);
  });
});
