/**
 * Wait queues and completions: the ways a task sleeps until another one says so.
 *
 * @module
 */

import { HmmError } from '../errors/errno.js';
import { OUTSIDE_TASK_MESSAGE } from './scheduler.js';
import type { Scheduler, SimTask } from './scheduler.js';

/**
 * A FIFO queue of blocked tasks. Kernel counterpart: `wait_queue_head_t` (kernel/sched/wait.c),
 * with `wait_event()` as {@link waitUntil} and `wake_up()` / `wake_up_all()` as
 * {@link wakeOne} / {@link wakeAll}. Waking never passes the baton: woken tasks become ready at the
 * current instant and the waker keeps running.
 */
export class WaitQueue {
  /** Name used in traces and deadlock reports. */
  readonly name: string;
  readonly #sched: Scheduler;
  readonly #waiters: SimTask[] = [];

  constructor(scheduler: Scheduler, name = 'waitqueue') {
    this.#sched = scheduler;
    this.name = name;
  }

  /** Number of tasks waiting. */
  get waiters(): number {
    return this.#waiters.length;
  }

  /**
   * Blocks the current task until woken. Like the kernel's, a wake-up says "re-check", not "your
   * condition holds": prefer {@link waitUntil}. EDEADLK outside a task.
   */
  wait(reason?: string): Promise<void> {
    const task = this.#sched.current;
    if (task === null)
      return Promise.reject(new HmmError('EDEADLK', `${this.name}: ${OUTSIDE_TASK_MESSAGE}`));
    this.#waiters.push(task);
    return this.#waitWoken(task, reason ?? `waitqueue ${this.name}`);
  }

  async #waitWoken(task: SimTask, reason: string): Promise<void> {
    await this.#sched.block(reason);
    // Woken by someone else (a stray Scheduler.wake()): drop the stale entry so that a later
    // wakeOne() is not spent on a task that no longer waits here. Callers re-check their condition.
    const i = this.#waiters.indexOf(task);
    if (i >= 0) this.#waiters.splice(i, 1);
  }

  /**
   * Waits until `condition()` is true, re-checking it after each wake-up (kernel: `wait_event()`).
   * Returns without blocking if it already holds.
   */
  async waitUntil(condition: () => boolean, reason?: string): Promise<void> {
    while (!condition()) await this.wait(reason);
  }

  /** Wakes the longest-waiting task; returns how many were woken (0 or 1). */
  wakeOne(): number {
    for (let t = this.#waiters.shift(); t !== undefined; t = this.#waiters.shift()) {
      if (this.#sched.wake(t)) return 1;
    }
    return 0;
  }

  /** Wakes every waiting task, in FIFO order; returns how many were woken. */
  wakeAll(): number {
    if (this.#waiters.length === 0) return 0;
    const waiters = this.#waiters.splice(0);
    let n = 0;
    for (const t of waiters) if (this.#sched.wake(t)) n++;
    return n;
  }
}

/**
 * A one-shot (or counted) event. Kernel counterpart: `struct completion` (kernel/sched/completion.c):
 * each {@link complete} lets exactly one {@link wait} through, now or later; {@link completeAll}
 * lets every present and future waiter through until {@link reinit}.
 */
export class Completion {
  /** Name used in traces and deadlock reports. */
  readonly name: string;
  readonly #sched: Scheduler;
  readonly #waiters: { readonly task: SimTask; granted: boolean }[] = [];
  #count = 0;
  #all = false;

  constructor(scheduler: Scheduler, name = 'completion') {
    this.#sched = scheduler;
    this.name = name;
  }

  /** True if a {@link wait} would return at once (kernel: `completion_done()`). */
  get done(): boolean {
    return this.#all || this.#count > 0;
  }

  /** Signals one completion: wakes the longest waiter, or lets the next {@link wait} through. */
  complete(): void {
    if (this.#all) return;
    const waiter = this.#waiters.shift();
    if (waiter === undefined) {
      this.#count++;
      return;
    }
    waiter.granted = true;
    this.#sched.wake(waiter.task);
  }

  /** Signals completion for everyone, now and until {@link reinit} (kernel: `complete_all()`). */
  completeAll(): void {
    this.#all = true;
    for (const waiter of this.#waiters.splice(0)) {
      waiter.granted = true;
      this.#sched.wake(waiter.task);
    }
  }

  /** Returns at once if completed, else blocks until {@link complete} (kernel: `wait_for_completion()`). EDEADLK outside a task when it would block. */
  wait(): Promise<void> {
    if (this.#all) return Promise.resolve();
    if (this.#count > 0) {
      this.#count--;
      return Promise.resolve();
    }
    const task = this.#sched.current;
    if (task === null)
      return Promise.reject(new HmmError('EDEADLK', `${this.name}: ${OUTSIDE_TASK_MESSAGE}`));
    const waiter = { task, granted: false };
    this.#waiters.push(waiter);
    return this.#waitGranted(waiter);
  }

  async #waitGranted(waiter: { readonly granted: boolean }): Promise<void> {
    // Re-check after each wake-up, so a stray Scheduler.wake() cannot let the waiter through.
    do await this.#sched.block(`completion ${this.name}`);
    while (!waiter.granted);
  }

  /** Forgets past completions (kernel: `reinit_completion()`). */
  reinit(): void {
    this.#count = 0;
    this.#all = false;
  }
}
