/**
 * Fences: how a driver learns that a device command has completed.
 *
 * Kernel counterpart: `struct dma_fence` (drivers/dma-buf/dma-fence.c): `dma_fence_is_signaled()`,
 * `dma_fence_wait()`, `dma_fence_add_callback()`; `seqno` as in a fence context's timeline.
 *
 * @module
 */
import type { Scheduler } from '../sim/scheduler.js';
import { WaitQueue } from '../sim/wait.js';

/**
 * Completion of one command submitted to a `CommandQueue`. Signals exactly once, when the
 * device has executed the command (its effect on the device MMU is visible). Fences of one queue
 * signal in submission (`seqno`) order.
 */
export class Fence {
  /** Position on the queue's timeline, from 1, increasing in submission order. */
  readonly seqno: number;
  /** Name used in traces and deadlock reports. */
  readonly name: string;
  readonly #sched: Scheduler;
  #signaledAt = -1;
  #callbacks: (() => void)[] = [];
  #waiters: WaitQueue | null = null;
  #callbackError: unknown = undefined;

  /** @internal Created by `CommandQueue.submit`. */
  constructor(sched: Scheduler, seqno: number, name: string) {
    this.#sched = sched;
    this.seqno = seqno;
    this.name = name;
  }

  /** True once the command has completed. Kernel: `dma_fence_is_signaled()`. */
  get signaled(): boolean {
    return this.#signaledAt >= 0;
  }

  /** Simulated time (ns) at which it signalled, or null while pending. Kernel: `fence->timestamp`. */
  get signaledAt(): number | null {
    return this.#signaledAt >= 0 ? this.#signaledAt : null;
  }

  /** The first exception thrown by an {@link onSignal} callback, if any (callbacks must not throw). */
  get callbackError(): unknown {
    return this.#callbackError;
  }

  /**
   * Blocks the current simulated task until the fence signals; resolves at once if it already has.
   * Kernel: `dma_fence_wait(fence, false)`. Rejects with EDEADLK when it would block outside a task.
   */
  wait(): Promise<void> {
    if (this.signaled) return Promise.resolve();
    this.#waiters ??= new WaitQueue(this.#sched, `fence ${this.name}`);
    return this.#waiters.waitUntil(() => this.signaled, `fence ${this.name}`);
  }

  /**
   * Calls `cb` when the fence signals, or at once if it already has. Callbacks run in the
   * signalling context (the device's queue task, like a dma_fence callback in interrupt context), in
   * registration order: they must neither block nor throw. An exception is caught, the remaining
   * callbacks still run, and the first one is kept in {@link callbackError}.
   * Kernel: `dma_fence_add_callback()` (which instead returns -ENOENT when already signalled).
   */
  onSignal(cb: () => void): void {
    if (this.signaled) {
      this.#run(cb);
      return;
    }
    this.#callbacks.push(cb);
  }

  /**
   * Signals the fence at the current simulated time: wakes every waiter, then runs the callbacks.
   * Idempotent. Kernel: `dma_fence_signal()`.
   * @internal Called by the command processor only.
   */
  signal(): void {
    if (this.signaled) return;
    this.#signaledAt = this.#sched.now;
    this.#waiters?.wakeAll();
    const callbacks = this.#callbacks;
    this.#callbacks = [];
    for (const cb of callbacks) this.#run(cb);
  }

  #run(cb: () => void): void {
    try {
      cb();
    } catch (e) {
      if (this.#callbackError === undefined) this.#callbackError = e;
    }
  }

  /** `name#seqno`. */
  toString(): string {
    return `${this.name}#${this.seqno}`;
  }
}
