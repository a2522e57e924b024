import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { Scheduler } from './scheduler.js';
import { Mutex, RwSemaphore } from './locks.js';
import { TraceBus, TraceRecorder } from './trace.js';
import { HmmError } from '../errors/errno.js';

function expectErrno(fn: () => unknown, code: string, text?: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected HmmError ${code}`).toBeInstanceOf(HmmError);
  expect((caught as HmmError).code).toBe(code);
  if (text !== undefined) expect((caught as HmmError).message).toContain(text);
}

/** Runs `s` and fails the test if any task failed (an `expect` inside a spawned task only fails that task). */
async function runChecked(s: Scheduler): Promise<void> {
  const failures: string[] = [];
  const off = s.trace.on('sched.end', (e) => {
    if (!e.ok) failures.push(`${e.name}: ${e.error}`);
  });
  try {
    await s.run();
  } finally {
    off();
  }
  expect(failures).toEqual([]);
}

/** `tasks` tasks each do `iterations` read-yield-write increments of a shared counter. */
async function racyIncrements(
  seed: number,
  tasks: number,
  iterations: number,
  locked: boolean,
): Promise<number> {
  const s = new Scheduler({ seed });
  const m = new Mutex(s, 'counter_lock');
  let counter = 0;
  for (let t = 0; t < tasks; t++) {
    s.spawn(`inc${t}`, async () => {
      for (let i = 0; i < iterations; i++) {
        if (locked) await m.lock();
        const v = counter;
        await s.yield(); // another task may run here
        counter = v + 1;
        if (locked) m.unlock();
        await s.yield();
      }
    });
  }
  await runChecked(s);
  return counter;
}

describe('Mutex', () => {
  it('never loses an increment made across a yield inside the lock (any seed)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 2 ** 31 }),
        fc.integer({ min: 2, max: 6 }),
        fc.integer({ min: 1, max: 4 }),
        async (seed, tasks, iterations) => {
          expect(await racyIncrements(seed, tasks, iterations, true)).toBe(tasks * iterations);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('the same workload without the mutex does lose increments for some seed (the test can fail)', async () => {
    let lost = false;
    for (let seed = 1; seed <= 20 && !lost; seed++) lost = (await racyIncrements(seed, 4, 3, false)) < 12;
    expect(lost).toBe(true);
  });

  it('hands the lock to waiters in FIFO order', async () => {
    const s = new Scheduler({ seed: 5 });
    const m = new Mutex(s, 'm');
    const order: string[] = [];
    s.spawn('holder', async () => {
      await m.lock();
      await s.sleep(100);
      m.unlock();
    });
    for (const [name, t] of [
      ['w2', 20],
      ['w1', 10],
      ['w3', 30],
    ] as const) {
      s.spawn(name, async () => {
        await s.sleep(t);
        await m.lock();
        order.push(`${name}@${s.now}`);
        await s.sleep(5);
        m.unlock();
      });
    }
    await runChecked(s);
    expect(order).toEqual(['w1@100', 'w2@105', 'w3@110']);
    expect(m.isLocked).toBe(false);
    expect(m.owner).toBeNull();
  });

  it('lock() is immediate when uncontended (no yield), and tryLock() never blocks', async () => {
    const s = new Scheduler({ seed: 11 });
    const m = new Mutex(s, 'm');
    const log: string[] = [];
    s.spawn('a', async () => {
      log.push('a-before');
      await m.lock();
      log.push('a-locked');
      expect(m.owner?.name).toBe('a');
      expect(m.tryLock()).toBe(false);
      m.unlock();
      expect(m.tryLock()).toBe(true);
      m.unlock();
    });
    s.spawn('b', () => {
      log.push('b');
    });
    await runChecked(s);
    const i = log.indexOf('a-before');
    expect(log[i + 1]).toBe('a-locked');
  });

  it('emits lock.contended with the holder', async () => {
    const bus = new TraceBus();
    const rec = new TraceRecorder(bus, (e) => e.type === 'lock.contended');
    const s = new Scheduler({ trace: bus });
    const m = new Mutex(s, 'big_lock');
    s.spawn('holder', async () => {
      await m.lock();
      await s.sleep(10);
      m.unlock();
    });
    s.spawn('waiter', async () => {
      await s.sleep(1);
      await m.lock();
      m.unlock();
    });
    await runChecked(s);
    expect(rec.events).toEqual([
      { type: 'lock.contended', ts: 1, lock: 'big_lock', kind: 'mutex', task: 2, holder: 1 },
    ]);
  });

  it('unlock of an unlocked mutex, or by a non-owner, is EPERM and changes nothing', async () => {
    const s = new Scheduler();
    const m = new Mutex(s, 'm');
    expectErrno(() => m.unlock(), 'EPERM', 'not locked');
    await s.runTask('owner', async () => {
      await m.lock();
      const intruder = s.spawn('intruder', () => {
        expectErrno(() => m.unlock(), 'EPERM', 'only the owner may unlock');
      });
      await intruder.join();
      expect(intruder.state).toBe('done');
      expect(m.owner?.name).toBe('owner');
      expect(m.isLocked).toBe(true);
      m.unlock();
    });
    expect(m.isLocked).toBe(false);
  });

  it('the owner may unlock; a lock taken outside any task is released outside any task', async () => {
    const s = new Scheduler();
    const m = new Mutex(s, 'm');
    await s.runTask('owner', async () => {
      await m.lock();
      m.unlock();
    });
    expect(m.isLocked).toBe(false);
    await m.lock();
    expect(m.owner).toBeNull();
    await s.runTask('not-outside', () => {
      expectErrno(() => m.unlock(), 'EPERM', 'held by code outside any task');
    });
    m.unlock();
    expect(m.isLocked).toBe(false);
  });

  it('recursive locking by the owner is EDEADLK', async () => {
    const s = new Scheduler();
    const m = new Mutex(s, 'm');
    await s.runTask('t', async () => {
      await m.lock();
      await expect(m.lock()).rejects.toMatchObject({
        code: 'EDEADLK',
        message: expect.stringContaining('recursive'),
      });
      m.unlock();
    });
  });
});

describe('RwSemaphore', () => {
  it('lets many readers in at once', async () => {
    const s = new Scheduler({ seed: 2 });
    const sem = new RwSemaphore(s, 'mmap_lock');
    let active = 0;
    let maxActive = 0;
    for (let i = 0; i < 6; i++) {
      s.spawn(`r${i}`, async () => {
        await sem.read();
        active++;
        maxActive = Math.max(maxActive, active);
        expect(sem.readers).toBe(active);
        await s.sleep(10);
        active--;
        sem.readUnlock();
      });
    }
    await runChecked(s);
    expect(maxActive).toBe(6);
    expect(s.now).toBe(10); // all concurrent
    expect(sem.readers).toBe(0);
  });

  it('a writer excludes readers and writers (any seed)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 2 ** 31 }),
        fc.array(fc.boolean(), { minLength: 2, maxLength: 10 }),
        async (seed, kinds) => {
          const s = new Scheduler({ seed });
          const sem = new RwSemaphore(s, 'mmap_lock');
          let readers = 0;
          let writers = 0;
          kinds.forEach((isWriter, i) => {
            s.spawn(`${isWriter ? 'w' : 'r'}${i}`, async () => {
              for (let k = 0; k < 2; k++) {
                await s.sleep(s.random.nextInt(5));
                if (isWriter) {
                  await sem.write();
                  writers++;
                  expect(writers).toBe(1);
                  expect(readers).toBe(0);
                  expect(sem.writer?.name).toBe(`w${i}`);
                  await s.yield();
                  expect(readers).toBe(0);
                  writers--;
                  sem.writeUnlock();
                } else {
                  await sem.read();
                  readers++;
                  expect(writers).toBe(0);
                  await s.yield();
                  expect(writers).toBe(0);
                  readers--;
                  sem.readUnlock();
                }
              }
            });
          });
          await runChecked(s);
          expect([sem.readers, sem.isWriteLocked, sem.waiters]).toEqual([0, false, 0]);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('a queued writer blocks later readers, so the writer is not starved', async () => {
    const s = new Scheduler();
    const sem = new RwSemaphore(s, 'mmap_lock');
    const log: string[] = [];
    s.spawn('r1', async () => {
      await sem.read();
      log.push(`r1 in @${s.now}`);
      await s.sleep(100);
      sem.readUnlock();
    });
    s.spawn('w', async () => {
      await s.sleep(10);
      await sem.write();
      log.push(`w in @${s.now}`);
      await s.sleep(50);
      sem.writeUnlock();
    });
    s.spawn('r2', async () => {
      await s.sleep(20);
      expect(sem.tryRead()).toBe(false); // a writer is queued
      await sem.read();
      log.push(`r2 in @${s.now}`);
      sem.readUnlock();
    });
    await runChecked(s);
    expect(log).toEqual(['r1 in @0', 'w in @100', 'r2 in @150']);
  });

  it('a stream of overlapping readers cannot starve a writer', async () => {
    const s = new Scheduler({ seed: 4 });
    const sem = new RwSemaphore(s, 'mmap_lock');
    let writerAt = -1;
    for (let i = 0; i < 20; i++) {
      s.spawn(`r${i}`, async () => {
        await s.sleep(i * 5); // each reader overlaps the next
        await sem.read();
        await s.sleep(10);
        sem.readUnlock();
      });
    }
    s.spawn('w', async () => {
      await s.sleep(7);
      await sem.write();
      writerAt = s.now;
      sem.writeUnlock();
    });
    await runChecked(s);
    expect(writerAt).toBe(15); // after r0 and r1 only, not after all 20 readers
  });

  it('downgrade turns the write lock into a read lock and admits queued readers (phase-fair, past a queued writer)', async () => {
    const s = new Scheduler();
    const sem = new RwSemaphore(s, 'mmap_lock');
    const log: string[] = [];
    s.spawn('w', async () => {
      await sem.write();
      await s.sleep(100);
      sem.downgrade();
      expect(sem.isWriteLocked).toBe(false);
      expect(sem.readers).toBe(3); // itself + r1 + r2
      log.push(`w downgraded @${s.now}`);
      await s.sleep(10);
      sem.readUnlock();
    });
    for (const [name, t] of [
      ['r1', 10],
      ['w2', 20],
      ['r2', 30],
    ] as const) {
      s.spawn(name, async () => {
        await s.sleep(t);
        if (name === 'w2') {
          await sem.write();
          log.push(`w2 in @${s.now}`);
          sem.writeUnlock();
        } else {
          await sem.read();
          log.push(`${name} in @${s.now}`);
          await s.sleep(20);
          sem.readUnlock();
        }
      });
    }
    await runChecked(s);
    expect(log.slice(0, 1)).toEqual(['w downgraded @100']);
    expect(log.slice(1, 3).sort()).toEqual(['r1 in @100', 'r2 in @100']);
    expect(log[3]).toBe('w2 in @120');
  });

  it('tryWrite/tryRead never block and respect holders', async () => {
    const s = new Scheduler();
    const sem = new RwSemaphore(s, 'sem');
    await s.runTask('t', async () => {
      expect(sem.tryWrite()).toBe(true);
      expect(sem.tryRead()).toBe(false);
      expect(sem.tryWrite()).toBe(false);
      sem.writeUnlock();
      expect(sem.tryRead()).toBe(true);
      expect(sem.tryRead()).toBe(true);
      expect(sem.tryWrite()).toBe(false);
      sem.readUnlock();
      sem.readUnlock();
      expect(sem.tryWrite()).toBe(true);
      sem.writeUnlock();
    });
  });

  it('unlocks by non-holders are EPERM', async () => {
    const s = new Scheduler();
    const sem = new RwSemaphore(s, 'sem');
    expectErrno(() => sem.readUnlock(), 'EPERM', 'not read-locked');
    expectErrno(() => sem.writeUnlock(), 'EPERM', 'not write-locked');
    expectErrno(() => sem.downgrade(), 'EPERM', 'not write-locked');
    await s.runTask('holder', async () => {
      await sem.read();
      await s
        .spawn('other', () => {
          expectErrno(() => sem.readUnlock(), 'EPERM', 'holds no read lock');
        })
        .join();
      sem.readUnlock();
      await sem.write();
      await s
        .spawn('other2', () => {
          expectErrno(() => sem.writeUnlock(), 'EPERM', 'only the writer');
          expectErrno(() => sem.downgrade(), 'EPERM', 'only the writer');
        })
        .join();
      expect(sem.writer?.name).toBe('holder');
      sem.writeUnlock();
    });
  });

  it('self-deadlocks are EDEADLK: write while reading, read while writing, recursive read behind a queued writer', async () => {
    const s = new Scheduler();
    const sem = new RwSemaphore(s, 'mmap_lock');
    await s.runTask('t', async () => {
      await sem.read();
      await expect(sem.write()).rejects.toMatchObject({ code: 'EDEADLK' });
      const w = s.spawn('writer', async () => {
        await sem.write();
        sem.writeUnlock();
      });
      while (sem.waiters === 0) await s.yield();
      await expect(sem.read()).rejects.toMatchObject({
        code: 'EDEADLK',
        message: expect.stringContaining('writer is queued'),
      });
      sem.readUnlock();
      await w.join();
      await sem.write();
      await expect(sem.read()).rejects.toMatchObject({ code: 'EDEADLK' });
      sem.writeUnlock();
    });
  });

  it('a contended lock outside any task is EDEADLK', async () => {
    const s = new Scheduler();
    const sem = new RwSemaphore(s, 'sem');
    await sem.write(); // uncontended, fine outside a task
    await expect(sem.read()).rejects.toMatchObject({ code: 'EDEADLK' });
    await expect(sem.write()).rejects.toMatchObject({ code: 'EDEADLK' });
    sem.writeUnlock();
  });
});
