/**
 * The deterministic scheduler: simulated CPU threads, kthreads and work items are async tasks
 * that take turns holding a single baton.
 *
 * @module
 */

import { HmmError } from '../errors/errno.js';
import { VirtualClock } from './clock.js';
import { SeededRandom } from './random.js';
import { TimerHeap } from './timer-heap.js';
import { TraceBus } from './trace.js';

/** Life cycle of a task: `ready` → `running` → (`blocked` → `ready` → `running`)* → `done` | `failed`. */
export type TaskState = 'ready' | 'running' | 'blocked' | 'done' | 'failed';

/**
 * A simulated thread of control. Kernel counterpart: `struct task_struct` (a kthread or a user
 * thread), or a work item run by a workqueue worker.
 */
export interface SimTask<T = unknown> {
  /** Unique per scheduler, counting from 1 in spawn order. */
  readonly id: number;
  /** Name given at spawn; used in traces and deadlock reports. */
  readonly name: string;
  /** Current state. */
  readonly state: TaskState;
  /** A daemon task may stay blocked forever without {@link Scheduler.run} reporting a deadlock (like a kthread idling in `wait_event`). */
  readonly daemon: boolean;
  /** Settles when the task ends: resolves with its return value or rejects with what it threw. Never an unhandled rejection by itself. */
  readonly result: Promise<T>;
  /** What the task threw, once `state` is `failed`; otherwise undefined. */
  readonly error: unknown;
  /** What the task waits on while `blocked`, otherwise null. */
  readonly waitingOn: string | null;
  /**
   * Waits for the task to end and returns its value (or rethrows its error). Called from inside
   * another task it blocks that task through the scheduler (kernel: `kthread_stop()` /
   * `flush_work()`); called from outside any task it is just {@link result}. EDEADLK if a task
   * joins itself.
   */
  join(): Promise<T>;
  /** `name#id`. */
  toString(): string;
}

/** Options of {@link Scheduler}. */
export interface SchedulerOptions {
  /** Seed of {@link Scheduler.random}, which picks among tasks ready at the same instant. Default 1. */
  seed?: number;
  /** Clock to drive; a new one starting at 0 by default. */
  clock?: VirtualClock;
  /** Bus for `sched.*` events; a new one by default. */
  trace?: TraceBus;
}

/** Options of {@link Scheduler.spawn}. */
export interface SpawnOptions {
  /** See {@link SimTask.daemon}. Default false. */
  daemon?: boolean;
}

/** Options of {@link Scheduler.run}. */
export interface RunOptions {
  /** Stop before the clock passes this time (ns); the clock is left at `until` if timers remain beyond it. */
  until?: number;
}

/** Why {@link Scheduler.run} returned: nothing left to do, or the `until` deadline was reached. */
export type RunOutcome = 'idle' | 'until';

/** Message of the EDEADLK thrown when a blocking primitive is called with no current task. */
export const OUTSIDE_TASK_MESSAGE =
  'would block outside a simulated task; call it inside scheduler.spawn() or runTask()';

type Reason = string | (() => string);

function reasonText(r: Reason | null): string {
  return r === null ? '' : typeof r === 'string' ? r : r();
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

class Task<T> implements SimTask<T> {
  readonly id: number;
  readonly name: string;
  readonly daemon: boolean;
  readonly result: Promise<T>;
  state: TaskState = 'ready';
  error: unknown = undefined;
  /** The body, until the task is first resumed. */
  fn: (() => Promise<T> | T) | null;
  /** Resolves the promise the task is parked on (set while ready-after-block or blocked). */
  resume: (() => void) | null = null;
  blockedOn: Reason | null = null;
  readonly joiners: Task<unknown>[] = [];
  readonly resolve: (value: T) => void;
  readonly reject: (error: unknown) => void;
  readonly #sched: Scheduler;

  constructor(sched: Scheduler, id: number, name: string, fn: () => Promise<T> | T, daemon: boolean) {
    this.#sched = sched;
    this.id = id;
    this.name = name;
    this.fn = fn;
    this.daemon = daemon;
    let resolve!: (value: T) => void;
    let reject!: (error: unknown) => void;
    this.result = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.result.catch(() => {}); // a failure nobody observes is recorded on the task, not an unhandled rejection
    this.resolve = resolve;
    this.reject = reject;
  }

  get waitingOn(): string | null {
    return this.state === 'blocked' ? reasonText(this.blockedOn) : null;
  }

  join(): Promise<T> {
    if (this.state === 'done' || this.state === 'failed') return this.result;
    const current = this.#sched.current as Task<unknown> | null;
    if (current === null) return this.result;
    if (current === this) {
      return Promise.reject(
        new HmmError('EDEADLK', `join: task ${this.toString()} cannot wait for itself to end`),
      );
    }
    this.joiners.push(current);
    return this.#waitEnd(current);
  }

  async #waitEnd(joiner: Task<unknown>): Promise<T> {
    // Re-check after every wake-up: a stray Scheduler.wake() must not let the joiner through early.
    while (this.state !== 'done' && this.state !== 'failed') {
      if (!this.joiners.includes(joiner)) this.joiners.push(joiner);
      await this.#sched.block(`join ${this.toString()}`);
    }
    return this.result;
  }

  toString(): string {
    return `${this.name}#${this.id}`;
  }
}

/**
 * A deterministic baton-passing scheduler of async tasks. Kernel counterpart: the CPU scheduler
 * (kernel/sched/core.c: `schedule()`, `wake_up_process()`), kthreads and workqueues, on one
 * simulated CPU.
 *
 * Exactly one task runs at a time. {@link run} picks a ready task, resumes it, and awaits until the
 * task hands the baton back, which happens only when it calls a blocking primitive
 * ({@link sleep}, {@link yield}, {@link block}, a wait queue, a completion, a contended lock, a
 * join) or ends. Among tasks ready at the same instant the pick is made by the seeded
 * {@link random}, so a seed selects one interleaving and the same seed always selects the same one.
 * When nothing is ready the clock jumps to the earliest timer. No wall-clock timer or macrotask is
 * ever used.
 *
 * Rules for task code:
 * - Awaiting already-settled promises, or async helpers that do not block, keeps running the same
 *   task (microtasks): only scheduler primitives switch tasks.
 * - Always `await` a primitive at once; a primitive called and not awaited leaves the task running
 *   while the scheduler believes it parked.
 * - Never await a promise the scheduler does not control (real I/O, a timer, a promise resolved by
 *   code outside the simulation): the baton is never handed back and {@link run} stalls forever.
 *   This cannot be detected without wall-clock timers, so it is a contract, not a check.
 * - Inside an atomic section ({@link enterAtomic}; e.g. a non-blockable notifier callback) nothing
 *   may sleep: the primitives fail at once with EDEADLK.
 */
export class Scheduler {
  readonly #clock: VirtualClock;
  readonly #trace: TraceBus;
  readonly #random: SeededRandom;
  readonly #ready: Task<unknown>[] = [];
  readonly #timers = new TimerHeap<Task<unknown>>();
  /** Tasks blocked on something other than a timer (wait queues, locks, joins, completions). */
  readonly #blocked = new Set<Task<unknown>>();
  #current: Task<unknown> | null = null;
  #handBack: (() => void) | null = null;
  #running = false;
  /** The last tasks that failed, for deadlock reports (a failed task often holds what others wait on). */
  readonly #recentFailures: string[] = [];
  /** Names of the atomic sections entered and not yet exited (innermost last). */
  readonly #atomic: string[] = [];
  /** Promises of code that slept in an atomic section, with the section's name, until they settle. */
  readonly #contained = new Map<PromiseLike<unknown>, string>();
  #nextId = 1;

  constructor(options: SchedulerOptions = {}) {
    this.#random = new SeededRandom(options.seed ?? 1);
    this.#clock = options.clock ?? new VirtualClock();
    this.#trace = options.trace ?? new TraceBus();
  }

  /** Current simulated time, ns. */
  get now(): number {
    return this.#clock.now;
  }

  /** The clock this scheduler drives. */
  get clock(): VirtualClock {
    return this.#clock;
  }

  /** The trace bus `sched.*` events go to. */
  get trace(): TraceBus {
    return this.#trace;
  }

  /** The seeded stream that orders same-instant tasks; other layers may draw from it too (same seed ⇒ same draws). */
  get random(): SeededRandom {
    return this.#random;
  }

  /** The task holding the baton, or null outside any task. Kernel: `current`. */
  get current(): SimTask | null {
    return this.#current;
  }

  /** True while {@link run} is in progress. */
  get running(): boolean {
    return this.#running;
  }

  /**
   * True inside an atomic section (kernel: `in_atomic()`), where code must not sleep: between
   * {@link enterAtomic} and {@link exitAtomic}, and while a promise given to {@link containAtomic}
   * is unsettled. There every sleeping primitive ({@link sleep}, {@link yield}, {@link block}, and
   * taking a `Mutex` or `RwSemaphore`, even uncontended, as `might_sleep()` warns) rejects at once
   * with EDEADLK instead of parking the current task.
   */
  get inAtomic(): boolean {
    return this.#atomic.length > 0 || this.#contained.size > 0;
  }

  /**
   * Enters an atomic section named `reason` (kernel: `preempt_disable()`), e.g. the call of a
   * notifier callback of a non-blockable invalidation. Sections nest; pair each with {@link exitAtomic}.
   */
  enterAtomic(reason: string): void {
    this.#atomic.push(reason);
  }

  /** Leaves the innermost atomic section (kernel: `preempt_enable()`). EINVAL if none was entered. */
  exitAtomic(): void {
    if (this.#atomic.length === 0) {
      throw new HmmError('EINVAL', 'exitAtomic: no atomic section was entered');
    }
    this.#atomic.pop();
  }

  /**
   * Contains `promise`, returned by an async function called inside the atomic section `reason`
   * (code that tried to sleep where it must not): its continuation runs on the current task's
   * stack, so letting it park would park a task that is still running. The atomic section lasts
   * until the promise settles, so every sleep of the continuation fails at once (EDEADLK) and it
   * ends within microtasks; {@link run} lets no task run before it has settled. Its outcome is
   * dropped: whoever called the function reports the violation.
   */
  containAtomic(promise: PromiseLike<unknown>, reason: string): void {
    if (this.#contained.has(promise)) return;
    this.#contained.set(promise, reason);
    const done = (): void => {
      this.#contained.delete(promise);
    };
    Promise.resolve(promise).then(done, done);
  }

  /**
   * The error a sleeping primitive raises for `what` (kernel: `might_sleep()`): EDEADLK naming the
   * atomic section when {@link inAtomic}, otherwise null (sleeping is allowed).
   */
  mightSleep(what: string): HmmError | null {
    if (!this.inAtomic) return null;
    const reason = this.#atomic[this.#atomic.length - 1] ?? [...this.#contained.values()][0]!;
    return new HmmError(
      'EDEADLK',
      `${what} would sleep inside an atomic section (${reason}), where sleeping is forbidden`,
    );
  }

  /**
   * Creates a task that becomes ready at the current instant; it starts when {@link run} picks it.
   * Kernel: `kthread_run()` / `queue_work()`.
   */
  spawn<T>(name: string, fn: () => Promise<T> | T, options: SpawnOptions = {}): SimTask<T> {
    if (typeof fn !== 'function') {
      throw new HmmError('EINVAL', `spawn('${name}'): the task body must be a function`);
    }
    const task = new Task<T>(this, this.#nextId++, name, fn, options.daemon ?? false);
    this.#ready.push(task as Task<unknown>);
    if (this.#trace.enabled('sched.spawn')) {
      this.#trace.emit({
        type: 'sched.spawn',
        ts: this.#clock.now,
        task: task.id,
        name,
        parent: this.#current?.id ?? null,
      });
    }
    return task;
  }

  /**
   * Runs tasks until nothing is ready and no timer is pending (`'idle'`), or until the next event
   * would pass `options.until` (`'until'`). A task that throws fails alone: its error goes to its
   * `result`, and the run goes on.
   *
   * Rejects with EDEADLK, naming each task and what it waits on, if non-daemon tasks remain blocked
   * with nothing that could wake them; EBUSY if a run is already in progress; EINVAL if `until` is
   * not a finite time ≥ now.
   */
  async run(options: RunOptions = {}): Promise<RunOutcome> {
    const until = options.until;
    if (until !== undefined && !(Number.isFinite(until) && until >= this.#clock.now)) {
      throw new HmmError(
        'EINVAL',
        `run({ until }): until must be a finite time ≥ now (${this.#clock.now} ns), got ${String(until)}`,
      );
    }
    if (this.#running) {
      throw new HmmError(
        'EBUSY',
        'run: the scheduler is already running; inside a task use spawn() and join() instead',
      );
    }
    this.#running = true;
    try {
      for (;;) {
        if (this.#contained.size > 0) {
          // Code that slept in an atomic section finishes (it cannot park) before any task runs.
          await Promise.allSettled([...this.#contained.keys()]);
          continue;
        }
        if (this.#ready.length > 0) {
          await this.#switchTo(this.#pick());
          continue;
        }
        const next = this.#timers.peek();
        if (next === undefined) break;
        if (until !== undefined && next.time > until) {
          this.#advance(until);
          return 'until';
        }
        this.#advance(next.time);
        for (
          let e = this.#timers.peek();
          e !== undefined && e.time <= this.#clock.now;
          e = this.#timers.peek()
        ) {
          this.#timers.pop();
          this.#makeReady(e.value, null);
        }
      }
      const stuck = [...this.#blocked].filter((t) => !t.daemon);
      if (stuck.length > 0) {
        const list = stuck.map((t) => `${t.toString()} waiting on ${reasonText(t.blockedOn)}`).join('; ');
        const failed =
          this.#recentFailures.length > 0
            ? `; tasks that failed earlier: ${this.#recentFailures.join('; ')}`
            : '';
        throw new HmmError(
          'EDEADLK',
          `deadlock: no task can run and no timer is pending, but ${stuck.length} task(s) are blocked: ${list}${failed}`,
        );
      }
      return 'idle';
    } finally {
      this.#running = false;
    }
  }

  /**
   * Spawns `fn` as a task, runs the scheduler until idle, and returns the task's value (or throws
   * its error). The usual entry point for tests and callers. EBUSY if a run is already in progress.
   */
  async runTask<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
    if (this.#running) {
      throw new HmmError(
        'EBUSY',
        `runTask('${name}'): the scheduler is already running; inside a task use spawn() and join() instead`,
      );
    }
    const task = this.spawn(name, fn);
    await this.run();
    return task.result;
  }

  /**
   * Parks the current task for `ns` ≥ 0 simulated ns (kernel: `schedule_timeout()`, `msleep()`);
   * `sleep(0)` is {@link yield}. Also how a task charges the cost of work it does. EINVAL for a
   * negative or non-finite `ns`; EDEADLK outside a task.
   */
  sleep(ns: number): Promise<void> {
    if (!(Number.isFinite(ns) && ns >= 0)) {
      return Promise.reject(
        new HmmError('EINVAL', `sleep(ns): ns must be a finite number ≥ 0, got ${String(ns)}`),
      );
    }
    if (ns === 0) return this.yield();
    const atomic = this.mightSleep('sleep');
    if (atomic !== null) return Promise.reject(atomic);
    const task = this.#current;
    if (task === null) return Promise.reject(new HmmError('EDEADLK', OUTSIDE_TASK_MESSAGE));
    const until = this.#clock.now + ns;
    this.#timers.push(until, task);
    return this.#park(task, `sleep until ${until} ns`);
  }

  /** Puts the current task back among the ready tasks at the same instant (kernel: `cond_resched()` / `yield()`). EDEADLK outside a task. */
  yield(): Promise<void> {
    const atomic = this.mightSleep('yield');
    if (atomic !== null) return Promise.reject(atomic);
    const task = this.#current;
    if (task === null) return Promise.reject(new HmmError('EDEADLK', OUTSIDE_TASK_MESSAGE));
    task.state = 'ready';
    this.#ready.push(task);
    const parked = new Promise<void>((resolve) => {
      task.resume = resolve;
    });
    this.#release();
    return parked;
  }

  /**
   * Blocks the current task until some code calls {@link wake} on it: the primitive that wait
   * queues, completions and locks are built on (kernel: `set_current_state(TASK_UNINTERRUPTIBLE);
   * schedule()`). `reason` (or a function giving it, evaluated when reported) says what the task
   * waits on, for traces and deadlock reports. EDEADLK outside a task.
   */
  block(reason: string | (() => string) = 'block'): Promise<void> {
    if (this.inAtomic) return Promise.reject(this.mightSleep(`wait on ${reasonText(reason)}`));
    const task = this.#current;
    if (task === null) return Promise.reject(new HmmError('EDEADLK', OUTSIDE_TASK_MESSAGE));
    this.#blocked.add(task);
    return this.#park(task, reason);
  }

  /**
   * Makes a task parked by {@link block} ready at the current instant (kernel: `wake_up_process()`).
   * Does not pass the baton: the caller keeps running. Returns false (and does nothing) if the task
   * is not blocked in {@link block}, e.g. already woken, sleeping on a timer, or ended.
   *
   * As in the kernel, a wake-up is only a hint: code that blocks must re-check its condition when it
   * resumes. The primitives of this layer (joins, wait queues' `waitUntil`, completions, mutexes,
   * rw-semaphores) all do, so a stray `wake()` cannot let a task through early.
   */
  wake(task: SimTask): boolean {
    const t = task as Task<unknown>;
    if (!this.#blocked.delete(t)) return false;
    this.#makeReady(t, this.#current?.id ?? null);
    return true;
  }

  #park(task: Task<unknown>, reason: Reason): Promise<void> {
    task.state = 'blocked';
    task.blockedOn = reason;
    if (this.#trace.enabled('sched.block')) {
      this.#trace.emit({
        type: 'sched.block',
        ts: this.#clock.now,
        task: task.id,
        name: task.name,
        on: reasonText(reason),
      });
    }
    const parked = new Promise<void>((resolve) => {
      task.resume = resolve;
    });
    this.#release();
    return parked;
  }

  #makeReady(task: Task<unknown>, by: number | null): void {
    task.state = 'ready';
    task.blockedOn = null;
    this.#ready.push(task);
    if (this.#trace.enabled('sched.wake')) {
      this.#trace.emit({ type: 'sched.wake', ts: this.#clock.now, task: task.id, name: task.name, by });
    }
  }

  #pick(): Task<unknown> {
    const ready = this.#ready;
    const last = ready.length - 1;
    const i = last === 0 ? 0 : this.#random.nextInt(ready.length);
    const task = ready[i] as Task<unknown>;
    ready[i] = ready[last] as Task<unknown>;
    ready.pop();
    return task;
  }

  #advance(t: number): void {
    const from = this.#clock.now;
    if (t <= from) return;
    this.#clock.advanceTo(t);
    if (this.#trace.enabled('sched.clock')) this.#trace.emit({ type: 'sched.clock', ts: t, from });
  }

  /** Gives the baton to `task` and waits until it comes back. */
  async #switchTo(task: Task<unknown>): Promise<void> {
    this.#current = task;
    task.state = 'running';
    if (this.#trace.enabled('sched.run')) {
      this.#trace.emit({ type: 'sched.run', ts: this.#clock.now, task: task.id, name: task.name });
    }
    const baton = new Promise<void>((resolve) => {
      this.#handBack = resolve;
    });
    const fn = task.fn;
    if (fn !== null) {
      task.fn = null;
      this.#start(task, fn);
    } else {
      const resume = task.resume;
      task.resume = null;
      resume?.();
    }
    await baton;
  }

  #start(task: Task<unknown>, fn: () => unknown): void {
    let ret: unknown;
    try {
      ret = fn();
    } catch (e) {
      this.#finish(task, false, e);
      return;
    }
    if (ret !== null && typeof ret === 'object' && typeof (ret as { then?: unknown }).then === 'function') {
      Promise.resolve(ret).then(
        (v) => this.#finish(task, true, v),
        (e: unknown) => this.#finish(task, false, e),
      );
    } else {
      this.#finish(task, true, ret);
    }
  }

  #finish(task: Task<unknown>, ok: boolean, value: unknown): void {
    if (task.state === 'done' || task.state === 'failed') return;
    task.state = ok ? 'done' : 'failed';
    task.blockedOn = null;
    if (ok) {
      task.resolve(value);
    } else {
      task.error = value;
      task.reject(value);
      this.#recentFailures.push(`${task.toString()}: ${errorText(value)}`);
      if (this.#recentFailures.length > 4) this.#recentFailures.shift();
    }
    if (this.#trace.enabled('sched.end')) {
      this.#trace.emit({
        type: 'sched.end',
        ts: this.#clock.now,
        task: task.id,
        name: task.name,
        ok,
        error: ok ? null : errorText(value),
      });
    }
    for (const joiner of task.joiners) this.wake(joiner);
    task.joiners.length = 0;
    if (this.#current === task) this.#release();
  }

  /** The current task gives the baton back to the run loop. */
  #release(): void {
    const handBack = this.#handBack;
    this.#handBack = null;
    this.#current = null;
    handBack?.();
  }
}
