/**
 * Sleeping locks for simulated tasks: a mutex and a reader–writer semaphore.
 *
 * Acquiring an uncontended lock returns an already-resolved promise and never yields, so it works
 * outside a task too; a lock taken outside any task must be released outside any task. Blocking on
 * a contended lock requires a current task (EDEADLK otherwise), as does any blocking primitive.
 * Inside an atomic section (`Scheduler.inAtomic`) taking a lock rejects with EDEADLK, contended or
 * not, as the kernel's `might_sleep()` in `mutex_lock()` / `down_read()` warns; the try variants work.
 *
 * @module
 */

import { HmmError } from '../errors/errno.js';
import { OUTSIDE_TASK_MESSAGE } from './scheduler.js';
import type { Scheduler, SimTask } from './scheduler.js';

const RESOLVED: Promise<void> = Promise.resolve();

function who(task: SimTask | null): string {
  return task === null ? 'code outside any task' : `task ${task.toString()}`;
}

/**
 * A sleeping mutual-exclusion lock with an owner. Kernel counterpart: `struct mutex`
 * (kernel/locking/mutex.c). Waiters are served in FIFO order and ownership is handed directly to
 * the next waiter on unlock (the kernel's handoff path; the model has no optimistic spinning).
 */
export class Mutex {
  /** Name used in traces and deadlock reports. */
  readonly name: string;
  readonly #sched: Scheduler;
  readonly #waiters: SimTask[] = [];
  #locked = false;
  #owner: SimTask | null = null;

  constructor(scheduler: Scheduler, name = 'mutex') {
    this.#sched = scheduler;
    this.name = name;
  }

  /** True while held. Kernel: `mutex_is_locked()`. */
  get isLocked(): boolean {
    return this.#locked;
  }

  /** Holding task, or null when unlocked or held by code outside any task. */
  get owner(): SimTask | null {
    return this.#owner;
  }

  /** Number of tasks waiting for the lock. */
  get waiters(): number {
    return this.#waiters.length;
  }

  /**
   * Acquires the lock (kernel: `mutex_lock()`). Uncontended: takes it and returns a resolved promise
   * without yielding. Contended: blocks the current task until the lock is handed to it. EDEADLK if
   * the current task already holds it (recursive locking), or if it would block outside a task.
   */
  lock(): Promise<void> {
    if (this.#sched.inAtomic) return Promise.reject(this.#sched.mightSleep(`mutex ${this.name}: lock`));
    const current = this.#sched.current;
    if (!this.#locked) {
      this.#locked = true;
      this.#owner = current;
      return RESOLVED;
    }
    if (current === null)
      return Promise.reject(new HmmError('EDEADLK', `mutex ${this.name}: ${OUTSIDE_TASK_MESSAGE}`));
    if (this.#owner === current) {
      return Promise.reject(
        new HmmError(
          'EDEADLK',
          `mutex ${this.name}: recursive locking, task ${current.toString()} already holds it`,
        ),
      );
    }
    const trace = this.#sched.trace;
    if (trace.enabled('lock.contended')) {
      trace.emit({
        type: 'lock.contended',
        ts: this.#sched.now,
        lock: this.name,
        kind: 'mutex',
        task: current.id,
        holder: this.#owner?.id ?? null,
      });
    }
    this.#waiters.push(current);
    return this.#waitHandoff(current);
  }

  async #waitHandoff(task: SimTask): Promise<void> {
    // Ownership is handed over by unlock(); re-check after each wake-up (kernel: the slowpath loop).
    do await this.#sched.block(() => `mutex ${this.name} (held by ${who(this.#owner)})`);
    while (this.#owner !== task);
  }

  /** Takes the lock if free; never blocks. Kernel: `mutex_trylock()`. */
  tryLock(): boolean {
    if (this.#locked) return false;
    this.#locked = true;
    this.#owner = this.#sched.current;
    return true;
  }

  /**
   * Releases the lock and hands it to the longest waiter, if any (kernel: `mutex_unlock()`). EPERM if
   * the lock is not held, or is held by someone other than the caller.
   */
  unlock(): void {
    const current = this.#sched.current;
    if (!this.#locked) {
      throw new HmmError(
        'EPERM',
        `mutex ${this.name}: unlock of a mutex that is not locked (by ${who(current)})`,
      );
    }
    if (this.#owner !== current) {
      throw new HmmError(
        'EPERM',
        `mutex ${this.name}: unlock by ${who(current)}, but it is held by ${who(this.#owner)}; only the owner may unlock`,
      );
    }
    const next = this.#waiters.shift();
    if (next !== undefined) {
      this.#owner = next; // handoff: the lock stays locked, now owned by the next waiter
      this.#sched.wake(next);
      return;
    }
    this.#locked = false;
    this.#owner = null;
  }
}

/** Largest number of readers one wake-up grants (kernel: `MAX_READERS_WAKEUP`). */
const MAX_READERS_WAKEUP = 256;

interface RwWaiter {
  readonly task: SimTask;
  readonly kind: 'read' | 'write';
}

/**
 * A reader–writer semaphore: many readers or one writer. Kernel counterpart: `struct
 * rw_semaphore` (kernel/locking/rwsem.c), the type of `mm->mmap_lock`.
 *
 * Fairness follows the kernel: once anyone is queued, new readers queue too (so a waiting writer is
 * not starved by a stream of readers); waiters are served from the head of the queue: a writer
 * alone, or, when the head is a reader, every queued reader at once (up to 256), skipping queued
 * writers, as `rwsem_mark_wake()` does ("phase-fair" reader wake-up).
 *
 * Read holders are tracked per task, so a read unlock by a task that holds no read lock is EPERM.
 */
export class RwSemaphore {
  /** Name used in traces and deadlock reports. */
  readonly name: string;
  readonly #sched: Scheduler;
  readonly #queue: RwWaiter[] = [];
  readonly #readHolders = new Map<SimTask | null, number>();
  #readers = 0;
  #writeLocked = false;
  #writer: SimTask | null = null;

  constructor(scheduler: Scheduler, name = 'rwsem') {
    this.#sched = scheduler;
    this.name = name;
  }

  /** Number of read locks held. */
  get readers(): number {
    return this.#readers;
  }

  /** True while held for writing. */
  get isWriteLocked(): boolean {
    return this.#writeLocked;
  }

  /** Task holding the write lock, or null (unlocked, read-locked, or write-held outside any task). */
  get writer(): SimTask | null {
    return this.#writer;
  }

  /** Number of tasks queued. */
  get waiters(): number {
    return this.#queue.length;
  }

  /**
   * Acquires for reading (kernel: `down_read()`). Immediate, without yielding, if no writer holds it
   * and nobody is queued; otherwise queues the current task. EDEADLK if the current task holds the
   * write lock, or already holds a read lock while others are queued (it would wait behind a
   * writer that waits for it), or if it would block outside a task.
   */
  read(): Promise<void> {
    if (this.#sched.inAtomic) return Promise.reject(this.#sched.mightSleep(`rwsem ${this.name}: read lock`));
    const current = this.#sched.current;
    if (!this.#writeLocked && this.#queue.length === 0) {
      this.#grantRead(current);
      return RESOLVED;
    }
    if (current === null)
      return Promise.reject(new HmmError('EDEADLK', `rwsem ${this.name}: ${OUTSIDE_TASK_MESSAGE}`));
    if (this.#writeLocked && this.#writer === current) {
      return Promise.reject(
        new HmmError(
          'EDEADLK',
          `rwsem ${this.name}: task ${current.toString()} takes a read lock while holding the write lock`,
        ),
      );
    }
    if (this.#readHolders.has(current)) {
      return Promise.reject(
        new HmmError(
          'EDEADLK',
          `rwsem ${this.name}: recursive read lock by task ${current.toString()} while a writer is queued; the writer waits for this task and this task would wait for the writer`,
        ),
      );
    }
    return this.#enqueue(current, 'read');
  }

  /**
   * Acquires for writing (kernel: `down_write()`). Immediate if unlocked and nobody is queued;
   * otherwise queues the current task. EDEADLK if the current task already holds it (read or
   * write; the kernel has no upgrade), or if it would block outside a task.
   */
  write(): Promise<void> {
    if (this.#sched.inAtomic) return Promise.reject(this.#sched.mightSleep(`rwsem ${this.name}: write lock`));
    const current = this.#sched.current;
    if (!this.#writeLocked && this.#readers === 0 && this.#queue.length === 0) {
      this.#writeLocked = true;
      this.#writer = current;
      return RESOLVED;
    }
    if (current === null)
      return Promise.reject(new HmmError('EDEADLK', `rwsem ${this.name}: ${OUTSIDE_TASK_MESSAGE}`));
    if ((this.#writeLocked && this.#writer === current) || this.#readHolders.has(current)) {
      return Promise.reject(
        new HmmError(
          'EDEADLK',
          `rwsem ${this.name}: task ${current.toString()} takes the write lock while already holding it`,
        ),
      );
    }
    return this.#enqueue(current, 'write');
  }

  /** Read lock if available at once (no writer, nobody queued); never blocks. Kernel: `down_read_trylock()`. */
  tryRead(): boolean {
    if (this.#writeLocked || this.#queue.length > 0) return false;
    this.#grantRead(this.#sched.current);
    return true;
  }

  /** Write lock if available at once (unlocked, nobody queued); never blocks. Kernel: `down_write_trylock()`. */
  tryWrite(): boolean {
    if (this.#writeLocked || this.#readers > 0 || this.#queue.length > 0) return false;
    this.#writeLocked = true;
    this.#writer = this.#sched.current;
    return true;
  }

  /** Releases one read lock of the caller (kernel: `up_read()`). EPERM if the caller holds none. */
  readUnlock(): void {
    const current = this.#sched.current;
    const held = this.#readHolders.get(current);
    if (held === undefined) {
      throw new HmmError(
        'EPERM',
        this.#readers === 0
          ? `rwsem ${this.name}: read unlock by ${who(current)}, but it is not read-locked`
          : `rwsem ${this.name}: read unlock by ${who(current)}, which holds no read lock on it`,
      );
    }
    if (held === 1) this.#readHolders.delete(current);
    else this.#readHolders.set(current, held - 1);
    this.#readers--;
    if (this.#readers === 0) this.#wakeWaiters();
  }

  /** Releases the write lock (kernel: `up_write()`). EPERM if not write-locked, or write-locked by someone else. */
  writeUnlock(): void {
    this.#checkWriter('write unlock');
    this.#writeLocked = false;
    this.#writer = null;
    this.#wakeWaiters();
  }

  /**
   * Turns the caller's write lock into a read lock without releasing it, and lets queued readers in
   * if a reader heads the queue (kernel: `downgrade_write()`). EPERM as for {@link writeUnlock}.
   */
  downgrade(): void {
    const writer = this.#checkWriter('downgrade');
    this.#writeLocked = false;
    this.#writer = null;
    this.#grantRead(writer);
    if (this.#queue[0]?.kind === 'read') this.#wakeReaders();
  }

  /**
   * True if the current task (or, outside any task, code outside tasks) holds this semaphore for
   * reading or writing. Kernel: `lockdep_assert_held(&mm->mmap_lock)` / `mmap_assert_locked()`.
   */
  heldByCurrent(): boolean {
    const current = this.#sched.current;
    if (this.#writeLocked && this.#writer === current) return true;
    return (this.#readHolders.get(current) ?? 0) > 0;
  }

  #checkWriter(op: string): SimTask | null {
    const current = this.#sched.current;
    if (!this.#writeLocked) {
      throw new HmmError('EPERM', `rwsem ${this.name}: ${op} by ${who(current)}, but it is not write-locked`);
    }
    if (this.#writer !== current) {
      throw new HmmError(
        'EPERM',
        `rwsem ${this.name}: ${op} by ${who(current)}, but the write lock is held by ${who(this.#writer)}; only the writer may release it`,
      );
    }
    return current;
  }

  #grantRead(task: SimTask | null): void {
    this.#readers++;
    this.#readHolders.set(task, (this.#readHolders.get(task) ?? 0) + 1);
  }

  #enqueue(task: SimTask, kind: 'read' | 'write'): Promise<void> {
    const trace = this.#sched.trace;
    if (trace.enabled('lock.contended')) {
      trace.emit({
        type: 'lock.contended',
        ts: this.#sched.now,
        lock: this.name,
        kind,
        task: task.id,
        holder: this.#writer?.id ?? null,
      });
    }
    this.#queue.push({ task, kind });
    return this.#waitGrant(task, kind);
  }

  async #waitGrant(task: SimTask, kind: 'read' | 'write'): Promise<void> {
    // The lock is granted by the waker; re-check after each wake-up (kernel: rwsem_down_*_slowpath).
    do await this.#sched.block(() => `rwsem ${this.name} for ${kind} (${this.#describeHolders()})`);
    while (kind === 'read' ? !this.#readHolders.has(task) : !(this.#writeLocked && this.#writer === task));
  }

  #describeHolders(): string {
    if (this.#writeLocked) return `write-held by ${who(this.#writer)}`;
    if (this.#readers > 0) return `read-held by ${[...this.#readHolders.keys()].map(who).join(', ')}`;
    return 'free';
  }

  /** Serves the queue head once the lock is free of writers (and of readers, for a writer). */
  #wakeWaiters(): void {
    if (this.#writeLocked) return;
    const head = this.#queue[0];
    if (head === undefined) return;
    if (head.kind === 'read') {
      this.#wakeReaders();
      return;
    }
    if (this.#readers > 0) return;
    this.#queue.shift();
    this.#writeLocked = true;
    this.#writer = head.task;
    this.#sched.wake(head.task);
  }

  /** Grants every queued reader (up to MAX_READERS_WAKEUP), skipping queued writers. */
  #wakeReaders(): void {
    let granted = 0;
    const rest: RwWaiter[] = [];
    for (const w of this.#queue) {
      if (w.kind === 'read' && granted < MAX_READERS_WAKEUP) {
        granted++;
        this.#grantRead(w.task);
        this.#sched.wake(w.task);
      } else {
        rest.push(w);
      }
    }
    this.#queue.length = 0;
    this.#queue.push(...rest);
  }
}
