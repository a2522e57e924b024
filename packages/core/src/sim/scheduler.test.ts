import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { Scheduler, OUTSIDE_TASK_MESSAGE } from './scheduler.js';
import { Completion, WaitQueue } from './wait.js';
import { Mutex } from './locks.js';
import { TraceBus, TraceRecorder } from './trace.js';
import { VirtualClock } from './clock.js';
import { HmmError } from '../errors/errno.js';

/** Five tasks that each yield a few times, logging their id: the order depends only on the seed. */
async function yieldOrder(seed: number): Promise<number[]> {
  const s = new Scheduler({ seed });
  const log: number[] = [];
  for (let i = 1; i <= 5; i++) {
    s.spawn(`t${i}`, async () => {
      for (let k = 0; k < 3; k++) {
        log.push(i);
        await s.yield();
      }
      log.push(i);
    });
  }
  await s.run();
  return log;
}

describe('Scheduler: time and ordering', () => {
  it('wakes sleepers in order of their wake-up time and advances the clock to it', async () => {
    const s = new Scheduler();
    const log: [string, number][] = [];
    for (const [name, ns] of [
      ['c', 300],
      ['a', 100],
      ['b', 200],
      ['a2', 100],
    ] as const) {
      s.spawn(name, async () => {
        await s.sleep(ns);
        log.push([name, s.now]);
      });
    }
    expect(await s.run()).toBe('idle');
    expect(log.map(([, t]) => t)).toEqual([100, 100, 200, 300]);
    expect(log.slice(2)).toEqual([
      ['b', 200],
      ['c', 300],
    ]);
    expect(s.now).toBe(300);
  });

  it('accumulates sleeps within a task and interleaves tasks by time', async () => {
    const s = new Scheduler();
    const log: string[] = [];
    s.spawn('p', async () => {
      for (let i = 0; i < 3; i++) {
        await s.sleep(10);
        log.push(`p@${s.now}`);
      }
    });
    s.spawn('q', async () => {
      await s.sleep(15);
      log.push(`q@${s.now}`);
    });
    await s.run();
    expect(log).toEqual(['p@10', 'q@15', 'p@20', 'p@30']);
  });

  it('orders tasks ready at the same instant by the seed: same seed ⇒ same order, some seeds differ', async () => {
    const orders = new Map<string, number>();
    for (let seed = 1; seed <= 50; seed++) {
      const log = await yieldOrder(seed);
      expect(log).toHaveLength(20);
      expect(await yieldOrder(seed)).toEqual(log); // reproducible
      orders.set(log.join(','), seed);
    }
    expect(orders.size).toBeGreaterThanOrEqual(2);
    const [[first, seedA], [second, seedB]] = [...orders.entries()] as [[string, number], [string, number]];
    expect(first).not.toBe(second);
    expect((await yieldOrder(seedA)).join(',')).toBe(first);
    expect((await yieldOrder(seedB)).join(',')).toBe(second);
  });

  it('sleep(0) behaves as yield (stays at the same instant)', async () => {
    const s = new Scheduler({ seed: 3 });
    const times: number[] = [];
    await s.runTask('z', async () => {
      await s.sleep(0);
      times.push(s.now);
    });
    expect(times).toEqual([0]);
  });

  it('rejects bad sleep durations with EINVAL', async () => {
    const s = new Scheduler();
    await s.runTask('bad', async () => {
      for (const ns of [-1, Number.NaN, Infinity])
        await expect(s.sleep(ns)).rejects.toMatchObject({ code: 'EINVAL' });
    });
  });

  it('keeps running the same task across awaits of settled promises and non-blocking async helpers', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 1000 }), async (seed) => {
        const s = new Scheduler({ seed });
        const log: string[] = [];
        const helper = async (x: number): Promise<number> => {
          await Promise.resolve();
          return x + 1;
        };
        s.spawn('A', async () => {
          log.push('A1');
          await Promise.resolve();
          log.push('A2');
          await helper(1);
          log.push('A3');
          await s.yield(); // only here may B run
          log.push('A4');
        });
        s.spawn('B', async () => {
          log.push('B1');
          await helper(2);
          log.push('B2');
        });
        await s.run();
        const a1 = log.indexOf('A1');
        expect(log.slice(a1, a1 + 3)).toEqual(['A1', 'A2', 'A3']);
        const b1 = log.indexOf('B1');
        expect(log[b1 + 1]).toBe('B2');
      }),
      { numRuns: 50 },
    );
  });

  it('starts a synchronous task body and records its return value', async () => {
    const s = new Scheduler();
    expect(await s.runTask('sync', () => 7)).toBe(7);
  });

  it('gives task ids from 1 and reports state through the life cycle', async () => {
    const s = new Scheduler();
    const wq = new WaitQueue(s, 'wq');
    const a = s.spawn('a', () => wq.wait('test'));
    const b = s.spawn('b', async () => {
      await s.sleep(5);
      expect(a.state).toBe('blocked');
      expect(a.waitingOn).toBe('test');
      expect(b.state).toBe('running');
      expect(s.current).toBe(b);
      wq.wakeAll();
      expect(a.state).toBe('ready');
    });
    expect([a.id, b.id]).toEqual([1, 2]);
    expect(a.state).toBe('ready');
    expect(s.current).toBeNull();
    await s.run();
    expect([a.state, b.state]).toEqual(['done', 'done']);
    expect(a.waitingOn).toBeNull();
  });
});

describe('Scheduler: join and failures', () => {
  it('join blocks the joining task until the target ends and returns its value', async () => {
    const s = new Scheduler();
    const value = await s.runTask('parent', async () => {
      const child = s.spawn('child', async () => {
        await s.sleep(100);
        return 42;
      });
      const v = await child.join();
      expect(s.now).toBe(100);
      expect(child.state).toBe('done');
      return v + 1;
    });
    expect(value).toBe(43);
  });

  it('join of a finished task returns at once; join outside a task is the result promise', async () => {
    const s = new Scheduler();
    const t = s.spawn('t', () => 'x');
    await s.run();
    expect(await t.join()).toBe('x');
    await s.runTask('again', async () => {
      expect(await t.join()).toBe('x');
    });
  });

  it('join rethrows the target error; self-join is EDEADLK', async () => {
    const s = new Scheduler();
    await s.runTask('parent', async () => {
      const child = s.spawn('child', async () => {
        await s.yield();
        throw new Error('boom');
      });
      await expect(child.join()).rejects.toThrow('boom');
    });
    const self = s.spawn('self', async (): Promise<void> => {
      await self.join();
    });
    await s.run();
    expect(self.state).toBe('failed');
    expect(self.error).toMatchObject({ code: 'EDEADLK' });
  });

  it('runTask rethrows the task error; a failed task does not stop the others', async () => {
    const s = new Scheduler();
    await expect(
      s.runTask('fails', async () => {
        await s.sleep(1);
        throw new HmmError('EIO', 'device gone');
      }),
    ).rejects.toMatchObject({ code: 'EIO' });

    const bad = s.spawn('bad', () => {
      throw new Error('sync throw');
    });
    let goodRan = false;
    const good = s.spawn('good', async () => {
      await s.sleep(10);
      goodRan = true;
    });
    await s.run();
    expect(goodRan).toBe(true);
    expect(good.state).toBe('done');
    expect(bad.state).toBe('failed');
    expect((bad.error as Error).message).toBe('sync throw');
    await expect(bad.result).rejects.toThrow('sync throw');
  });

  it('reports a deadlock (two tasks, two mutexes, opposite order) as EDEADLK naming both tasks and locks', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 10_000 }), async (seed) => {
        const s = new Scheduler({ seed });
        const a = new Mutex(s, 'A');
        const b = new Mutex(s, 'B');
        s.spawn('takes-A-then-B', async () => {
          await a.lock();
          while (!b.isLocked) await s.yield();
          await b.lock();
        });
        s.spawn('takes-B-then-A', async () => {
          await b.lock();
          while (!a.isLocked) await s.yield();
          await a.lock();
        });
        const err = await s.run().then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(HmmError);
        const e = err as HmmError;
        expect(e.code).toBe('EDEADLK');
        expect(e.message).toContain('takes-A-then-B#1 waiting on mutex B (held by task takes-B-then-A#2)');
        expect(e.message).toContain('takes-B-then-A#2 waiting on mutex A (held by task takes-A-then-B#1)');
      }),
      { numRuns: 20 },
    );
  });

  it('does not report daemon tasks idling on a wait queue as a deadlock', async () => {
    const s = new Scheduler();
    const wq = new WaitQueue(s, 'kswapd_wait');
    const daemon = s.spawn(
      'kswapd',
      async () => {
        for (;;) await wq.wait();
      },
      { daemon: true },
    );
    expect(await s.runTask('user', () => 1)).toBe(1);
    expect(daemon.state).toBe('blocked');
    // the same wait without the daemon flag is a deadlock
    s.spawn('stuck', () => wq.wait());
    await expect(s.run()).rejects.toMatchObject({
      code: 'EDEADLK',
      message: expect.stringContaining('stuck#3 waiting on waitqueue kswapd_wait'),
    });
  });

  it('throws EDEADLK with a clear message when a primitive would block outside a task', async () => {
    const s = new Scheduler();
    const wq = new WaitQueue(s);
    const c = new Completion(s);
    const m = new Mutex(s, 'm');
    await m.lock(); // uncontended: fine outside a task
    const attempts = [s.sleep(1), s.yield(), s.block('x'), wq.wait(), c.wait(), m.lock()];
    for (const p of attempts) {
      await expect(p).rejects.toMatchObject({
        code: 'EDEADLK',
        message: expect.stringContaining(OUTSIDE_TASK_MESSAGE),
      });
    }
    expect(OUTSIDE_TASK_MESSAGE).toBe(
      'would block outside a simulated task; call it inside scheduler.spawn() or runTask()',
    );
    m.unlock();
  });

  it('rejects a nested run with EBUSY', async () => {
    const s = new Scheduler();
    await s.runTask('outer', async () => {
      await expect(s.run()).rejects.toMatchObject({ code: 'EBUSY' });
      await expect(s.runTask('inner', () => 1)).rejects.toMatchObject({ code: 'EBUSY' });
    });
  });
});

describe('Scheduler: run({ until })', () => {
  it('stops before passing `until`, leaves the clock there, and resumes later', async () => {
    const s = new Scheduler();
    const done: number[] = [];
    const late = s.spawn('late', async () => {
      await s.sleep(300);
      done.push(s.now);
    });
    s.spawn('early', async () => {
      await s.sleep(100);
      done.push(s.now);
    });
    expect(await s.run({ until: 200 })).toBe('until');
    expect(s.now).toBe(200);
    expect(done).toEqual([100]);
    expect(late.state).toBe('blocked');
    expect(await s.run({ until: 300 })).toBe('idle'); // the timer at exactly `until` fires
    expect(done).toEqual([100, 300]);
    expect(s.now).toBe(300);
  });

  it('rejects an `until` in the past or not finite with EINVAL', async () => {
    const clock = new VirtualClock();
    clock.advanceTo(50);
    const s = new Scheduler({ clock });
    expect(s.now).toBe(50);
    await expect(s.run({ until: 10 })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(s.run({ until: Number.NaN })).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('WaitQueue and Completion', () => {
  it('wakeOne wakes in FIFO order, wakeAll the rest, and counts them; the waker keeps running', async () => {
    const s = new Scheduler({ seed: 9 });
    const wq = new WaitQueue(s, 'q');
    const log: string[] = [];
    for (const n of ['w1', 'w2', 'w3']) {
      s.spawn(n, async () => {
        await wq.wait();
        log.push(n);
      });
    }
    await s.runTask('waker', async () => {
      while (wq.waiters < 3) await s.yield();
      // deterministic arrival order is whatever the seed chose; FIFO is relative to it
      expect(wq.wakeOne()).toBe(1);
      log.push('waker-after-wakeOne');
      await s.sleep(1);
      expect(wq.wakeAll()).toBe(2);
      expect(wq.wakeAll()).toBe(0);
      expect(wq.wakeOne()).toBe(0);
    });
    expect(log[0]).toBe('waker-after-wakeOne');
    expect(log).toHaveLength(4);
  });

  it('wakeOne picks the longest waiter', async () => {
    const s = new Scheduler();
    const wq = new WaitQueue(s);
    const order: string[] = [];
    for (const [n, t] of [
      ['second', 20],
      ['first', 10],
      ['third', 30],
    ] as const) {
      s.spawn(n, async () => {
        await s.sleep(t);
        await wq.wait();
        order.push(n);
      });
    }
    await s.runTask('waker', async () => {
      await s.sleep(100);
      for (let i = 0; i < 3; i++) {
        wq.wakeOne();
        await s.sleep(1);
      }
    });
    expect(order).toEqual(['first', 'second', 'third']);
  });

  it('waitUntil re-checks its condition after each wake-up', async () => {
    const s = new Scheduler();
    const wq = new WaitQueue(s);
    let level = 0;
    const waiter = s.spawn('waiter', async () => {
      await wq.waitUntil(() => level >= 3);
      return s.now;
    });
    s.spawn('producer', async () => {
      for (let i = 0; i < 5; i++) {
        await s.sleep(10);
        level++;
        wq.wakeAll();
      }
    });
    await s.run();
    expect(await waiter.result).toBe(30);
  });

  it('Completion: wait returns at once once completed; complete() lets one waiter through; completeAll() all', async () => {
    const s = new Scheduler();
    const c = new Completion(s, 'done');
    const woke: string[] = [];
    for (const n of ['a', 'b', 'c']) {
      s.spawn(n, async () => {
        await c.wait();
        woke.push(`${n}@${s.now}`);
      });
    }
    s.spawn('signaller', async () => {
      await s.sleep(10);
      c.complete();
      await s.sleep(10);
      c.completeAll();
    });
    await s.run();
    expect(woke).toHaveLength(3);
    expect(woke.filter((w) => w.endsWith('@10'))).toHaveLength(1);
    expect(woke.filter((w) => w.endsWith('@20'))).toHaveLength(2);
    expect(c.done).toBe(true);
    await s.runTask('late', async () => {
      await c.wait(); // completeAll sticks
      expect(s.now).toBe(20);
    });
    c.reinit();
    expect(c.done).toBe(false);
    c.complete();
    expect(c.done).toBe(true);
    await c.wait(); // counted completion consumed without blocking, even outside a task
    expect(c.done).toBe(false);
  });
});

describe('Scheduler: trace', () => {
  it('emits spawn, run, block, wake, clock and end events stamped with the simulated time', async () => {
    const bus = new TraceBus();
    const rec = new TraceRecorder(bus);
    const s = new Scheduler({ trace: bus });
    expect(s.trace).toBe(bus);
    await s.runTask('sleeper', async () => {
      await s.sleep(25);
    });
    expect(rec.events).toEqual([
      { type: 'sched.spawn', ts: 0, task: 1, name: 'sleeper', parent: null },
      { type: 'sched.run', ts: 0, task: 1, name: 'sleeper' },
      { type: 'sched.block', ts: 0, task: 1, name: 'sleeper', on: 'sleep until 25 ns' },
      { type: 'sched.clock', ts: 25, from: 0 },
      { type: 'sched.wake', ts: 25, task: 1, name: 'sleeper', by: null },
      { type: 'sched.run', ts: 25, task: 1, name: 'sleeper' },
      { type: 'sched.end', ts: 25, task: 1, name: 'sleeper', ok: true, error: null },
    ]);
  });

  it('names the waker and the failure', async () => {
    const bus = new TraceBus();
    const rec = new TraceRecorder(bus);
    const s = new Scheduler({ trace: bus });
    const wq = new WaitQueue(s, 'q');
    s.spawn('w', () => wq.wait());
    s.spawn('k', async () => {
      while (wq.waiters === 0) await s.yield();
      wq.wakeOne();
      throw new Error('after wake');
    });
    await s.run();
    expect(rec.ofType('sched.wake')).toEqual([{ type: 'sched.wake', ts: 0, task: 1, name: 'w', by: 2 }]);
    expect(rec.ofType('sched.end').find((e) => e.task === 2)).toMatchObject({
      ok: false,
      error: 'after wake',
    });
  });
});

describe('stray wake-ups', () => {
  it('a stray Scheduler.wake() does not let a task through a join, mutex, rwsem or completion early', async () => {
    const s = new Scheduler({ seed: 13 });
    const m = new Mutex(s, 'm');
    const c = new Completion(s, 'c');
    const log: string[] = [];
    const target = s.spawn('target', async () => {
      await m.lock();
      await s.sleep(100);
      m.unlock();
      c.complete();
      return 'ok';
    });
    const joiner = s.spawn('joiner', async () => {
      log.push(`joined ${await target.join()} @${s.now}`);
    });
    const locker = s.spawn('locker', async () => {
      await s.sleep(1);
      await m.lock();
      log.push(`locked @${s.now}`);
      m.unlock();
    });
    const waiter = s.spawn('waiter', async () => {
      await c.wait();
      log.push(`completed @${s.now}`);
    });
    s.spawn('stray', async () => {
      for (let i = 0; i < 5; i++) {
        await s.sleep(10);
        for (const t of [joiner, locker, waiter]) s.wake(t);
      }
    });
    await s.run();
    expect(log.sort()).toEqual(['completed @100', 'joined ok @100', 'locked @100']);
  });

  it('a stray wake-up of a wait-queue waiter does not swallow a later wakeOne', async () => {
    const s = new Scheduler({ seed: 2 });
    const wq = new WaitQueue(s, 'wq');
    const m = new Mutex(s, 'm');
    const log: string[] = [];
    const a = s.spawn('a', async () => {
      await wq.wait();
      log.push('a resumed');
      await m.lock(); // blocks on the mutex (held by b) while still listed in wq if the entry were stale
      m.unlock();
    });
    s.spawn('b', async () => {
      await m.lock();
      await s.sleep(10);
      s.wake(a); // stray: a was not woken through wq
      await s.sleep(10);
      s.spawn('c', async () => {
        await wq.wait();
        log.push('c resumed');
      });
      await s.sleep(10);
      expect(wq.waiters).toBe(1);
      expect(wq.wakeOne()).toBe(1); // must wake c, not the stale a
      await s.sleep(10);
      m.unlock();
    });
    await s.run();
    expect(log).toEqual(['a resumed', 'c resumed']);
  });
});
