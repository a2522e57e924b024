/**
 * Fences and reservation objects (`struct dma_fence`, `struct dma_resv`, drivers/dma-buf/): a job's
 * fence signals when the GPU finished it; a buffer object's reservation object holds the fences of
 * the jobs that use it, by usage, and lets a CPU path wait for them. The fence itself is core's
 * {@link Fence} (a `dma_fence`: `signal`, `wait`, `signaledAt`).
 *
 * @module
 */
import { Fence, HmmError, WaitQueue } from '@hmm/core';
import type { Scheduler } from '@hmm/core';

/** `enum dma_resv_usage`, in order: waiting for a usage waits for it and every lower one. */
export const DmaResvUsage = {
  KERNEL: 0,
  WRITE: 1,
  READ: 2,
  BOOKKEEP: 3,
} as const;

/** One of {@link DmaResvUsage}. */
export type DmaResvUsageId = (typeof DmaResvUsage)[keyof typeof DmaResvUsage];

/** A fence timeline (`dma_fence_context_alloc` + seqno): makes the fences of one ring or queue. */
export class FenceContext {
  #seqno = 0;

  constructor(
    readonly sched: Scheduler,
    readonly name: string,
  ) {}

  /** A new unsignaled fence, next on this timeline. */
  create(): Fence {
    return new Fence(this.sched, ++this.#seqno, this.name);
  }
}

/** A reservation object (`struct dma_resv`). */
export class DmaResv {
  readonly #fences: { fence: Fence; usage: DmaResvUsageId }[] = [];
  readonly #wq: WaitQueue;

  constructor(
    readonly sched: Scheduler,
    readonly name = 'resv',
  ) {
    this.#wq = new WaitQueue(sched, `${name}.wait`);
  }

  /** `dma_resv_add_fence`: adds `fence` with `usage` (signaled fences are dropped on the way). */
  add(fence: Fence, usage: DmaResvUsageId): void {
    this.#prune();
    this.#fences.push({ fence, usage });
    fence.onSignal(() => this.#wq.wakeAll());
  }

  #prune(): void {
    for (let i = this.#fences.length - 1; i >= 0; i--) {
      if (this.#fences[i]!.fence.signaled) this.#fences.splice(i, 1);
    }
  }

  /** The unsignaled fences of `usage` and below. */
  fences(usage: DmaResvUsageId = DmaResvUsage.BOOKKEEP): Fence[] {
    this.#prune();
    return this.#fences.filter((f) => f.usage <= usage).map((f) => f.fence);
  }

  /** `dma_resv_test_signaled`: true if every fence of `usage` and below signaled. */
  testSignaled(usage: DmaResvUsageId = DmaResvUsage.BOOKKEEP): boolean {
    return this.fences(usage).length === 0;
  }

  /**
   * `dma_resv_wait_timeout`: waits until every fence of `usage` and below (present now or added
   * while waiting) signaled, at most `timeoutNs` (Infinity = `MAX_SCHEDULE_TIMEOUT`). Resolves to
   * true if they all did, false on timeout. Runs inside a task.
   */
  async waitTimeout(usage: DmaResvUsageId, timeoutNs = Infinity): Promise<boolean> {
    if (!(timeoutNs >= 0))
      throw new HmmError('EINVAL', `dma_resv_wait_timeout: timeout ${String(timeoutNs)}`);
    if (this.testSignaled(usage)) return true;
    if (timeoutNs === Infinity) {
      await this.#wq.waitUntil(() => this.testSignaled(usage), `dma_resv ${this.name}`);
      return true;
    }
    // A bounded wait: a timer task wakes the waiter at the deadline.
    const deadline = this.sched.now + timeoutNs;
    let expired = false;
    this.sched.spawn(
      `${this.name}.timeout`,
      async () => {
        await this.sched.sleep(timeoutNs);
        expired = true;
        this.#wq.wakeAll();
      },
      { daemon: true },
    );
    await this.#wq.waitUntil(() => expired || this.testSignaled(usage), `dma_resv ${this.name}`);
    return this.testSignaled(usage) || this.sched.now < deadline;
  }
}
