/**
 * MMU interval notifiers (mm/mmu_notifier.c, include/linux/mmu_notifier.h): a driver subscribes to a
 * range of an address space and is told, before the CPU page tables of that range change, to stop
 * using it. The sequence protocol lets the driver detect that an invalidation raced with its own
 * `hmm_range_fault`:
 *
 * ```text
 * seq = await readBegin(sub)        // mmu_interval_read_begin: waits out a running invalidation
 * ... hmmRangeFault(range) ...      // under the mmap read lock
 * driver lock
 * if (readRetry(sub, seq)) retry    // mmu_interval_read_retry: an invalidation hit meanwhile
 * program the device
 * driver unlock
 * ```
 *
 * and the invalidate callback, under the same driver lock, calls `setSeq(sub, curSeq)` and removes
 * the device's mappings of the range before returning.
 *
 * The per-mm sequence is even while no invalidation covering a subscribed interval runs and odd while
 * one does. Inserts and removals during an invalidation take effect when it ends; `remove` waits for a
 * running invalidation, and no callback runs for a removed subscription.
 *
 * A kernel callback returns a bool and cannot throw; a simulated one can. The contract for a callback
 * that breaks the rules (see {@link NotifierCallbackFailure}):
 * - **blockable** invalidation: a callback that throws (or rejects) or returns false is contained.
 *   Every other subscriber is still called, the invalidation completes and the memory operation
 *   goes on (as `mn_itree_invalidate` warns and continues when a blockable callback fails); the
 *   failure is recorded, never thrown at the caller of munmap, mprotect, a migration, reclaim or exit;
 * - **non-blockable** invalidation (the OOM reaper): each callback runs inside an atomic section of
 *   the scheduler, where every sleeping primitive fails at once. A callback that throws is taken as
 *   declining (the caller skips the range: nothing is freed under a device that may still use it)
 *   and recorded. A callback that returns a promise slept: the promise is contained by the scheduler
 *   (its continuation cannot park a task and ends before any other task runs), the failure is
 *   recorded, and the caller gets EINVAL at once.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE, TASK_SIZE } from '../mm/constants.js';
import type { MmStruct } from '../mm/mm-struct.js';
import type { MmuNotifierHooks, MmuNotifierRange } from '../mm/mmu-notifier-hooks.js';
import { NOTIFY_EVENT_NAMES, NotifyEvent } from '../mm/mmu-notifier-hooks.js';
import { WaitQueue } from '../sim/wait.js';

const RESOLVED: Promise<void> = Promise.resolve();

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

/** A driver's callbacks for one interval (`struct mmu_interval_notifier_ops`). */
export interface MmuIntervalNotifierOps {
  /**
   * The range is about to change (`ops->invalidate`). Call {@link mmuIntervalSetSeq} with `curSeq`
   * under the driver lock and stop all device access to the range before returning (or before the
   * returned promise settles). When `range.blockable` is false the callback must not sleep: it
   * returns `false` (synchronously) if it would have to, and the caller retries later. It must not
   * throw, and must not return false for a blockable range: such failures are contained and
   * recorded (see the module doc), and the invalidation goes on as if it had succeeded.
   */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean | Promise<boolean>;
}

/**
 * A callback that broke the invalidate contract, contained by the dispatcher (see the module doc):
 * recorded in {@link MmuNotifierSubscriptions.callbackFailures} and told to
 * {@link MmuNotifierSubscriptions.failureObservers}.
 */
export interface NotifierCallbackFailure {
  /** The subscription whose callback failed. */
  readonly sub: MmuIntervalNotifier;
  /** The invalidation it was called for. */
  readonly range: MmuNotifierRange;
  /**
   * What went wrong, as a typed error: the callback's own `HmmError` if it threw one (its errno
   * kept, the message saying it was contained), else EINVAL naming the broken rule.
   */
  readonly error: HmmError;
  /** What the callback threw or rejected with, or null when it returned a wrong value. */
  readonly thrown: unknown;
}

/** Failures kept in {@link MmuNotifierSubscriptions.callbackFailures} (the oldest are dropped). */
const MAX_RECORDED_FAILURES = 64;

/** One subscription (`struct mmu_interval_notifier`). */
export class MmuIntervalNotifier {
  /** Sequence last set by the driver (`interval_sub->invalidate_seq`). */
  invalidateSeq: number;
  /** In the interval tree (false while an insert is deferred and after removal). */
  active = false;
  /** Removed (or removal pending): receives no more callbacks. */
  removed = false;

  constructor(
    /** The subscribed address space. */
    readonly mm: MmStruct,
    /** First byte. */
    readonly start: number,
    /** One past the last byte. */
    readonly end: number,
    readonly ops: MmuIntervalNotifierOps,
    initialSeq: number,
  ) {
    this.invalidateSeq = initialSeq;
  }

  /** True if [start, end) overlaps this interval. */
  overlaps(start: number, end: number): boolean {
    return start < this.end && this.start < end;
  }
}

/**
 * The notifier state of one mm (`struct mmu_notifier_subscriptions`), installed as the mm's
 * {@link MmuNotifierHooks}: the interval list, the sequence, the count of running invalidations and
 * the deferred inserts and removals.
 */
export class MmuNotifierSubscriptions implements MmuNotifierHooks {
  /** Even: no invalidation of a subscribed range runs; odd: one does. */
  invalidateSeq = 2;
  /** Invalidations started and not yet ended (`active_invalidate_ranges`). */
  activeInvalidateRanges = 0;
  private readonly intervals: MmuIntervalNotifier[] = [];
  private readonly deferred: { sub: MmuIntervalNotifier; insert: boolean }[] = [];
  /** Woken when an invalidation of a subscribed range ends (`subscriptions->wq`). */
  readonly wq: WaitQueue;
  /**
   * Observers told when an invalidation has completed (after every callback returned and the CPU
   * page tables changed): the hook the sanitizer checks device mappings from. SDK-only.
   */
  readonly completedObservers = new Set<(range: MmuNotifierRange) => void>();
  /** Traced invalidations so far (`seq` of `mm.invalidate`), and the open ones by range. */
  #traceSeq = 0;
  readonly #traced = new WeakMap<MmuNotifierRange, number>();
  /**
   * The last callback failures (at most 64, oldest first): callbacks that threw, rejected, declined a
   * blockable invalidation or slept in a non-blockable one. SDK-only; the kernel would WARN.
   */
  readonly callbackFailures: NotifierCallbackFailure[] = [];
  /** Callback failures so far, including those dropped from {@link callbackFailures}. */
  callbackFailureCount = 0;
  /** Observers told of each callback failure as it is contained. SDK-only. */
  readonly failureObservers = new Set<(failure: NotifierCallbackFailure) => void>();

  constructor(readonly mm: MmStruct) {
    this.wq = new WaitQueue(mm.ctx.sched, `mmu_notifier:mm${mm.id}`);
  }

  /** The subscriptions of `mm`, created and installed on first use (`__mmu_notifier_register`). */
  static of(mm: MmStruct): MmuNotifierSubscriptions {
    const n = mm.notifier;
    if (n instanceof MmuNotifierSubscriptions) return n;
    if (n !== null) throw new HmmError('EBUSY', `mm ${mm.id} already has foreign notifier hooks installed`);
    const subs = new MmuNotifierSubscriptions(mm);
    mm.notifier = subs;
    return subs;
  }

  /** Live subscriptions (in the tree), in insertion order. */
  subscriptions(): readonly MmuIntervalNotifier[] {
    return this.intervals;
  }

  /** True while an invalidation that overlapped a subscribed interval runs. */
  get invalidating(): boolean {
    return (this.invalidateSeq & 1) === 1;
  }

  /** Starts an invalidation: marks the sequence odd if any interval overlaps (`mn_itree_inv_start_range`). */
  private beginRange(range: MmuNotifierRange): MmuIntervalNotifier[] {
    this.activeInvalidateRanges++;
    const hit = this.intervals.filter((s) => !s.removed && s.overlaps(range.start, range.end));
    if (hit.length > 0) this.invalidateSeq |= 1;
    const bus = this.mm.ctx.trace;
    if (bus.enabled('mm.invalidate') && hit.length > 0) {
      const seq = ++this.#traceSeq;
      this.#traced.set(range, seq);
      bus.emit({
        type: 'mm.invalidate',
        ts: this.mm.ctx.sched.now,
        mm: this.mm.id,
        start: range.start,
        end: range.end,
        event: NOTIFY_EVENT_NAMES[range.event]!,
        blockable: range.blockable,
        seq,
      });
    }
    return hit;
  }

  /** Emits `mm.invalidate_end` for a range whose start was traced. */
  private traceEnd(range: MmuNotifierRange, declined: boolean): void {
    if (this.#traceSeq === 0) return; // nothing ever traced: no lookup
    const seq = this.#traced.get(range);
    if (seq === undefined) return;
    this.#traced.delete(range);
    const bus = this.mm.ctx.trace;
    if (!bus.enabled('mm.invalidate_end')) return;
    bus.emit({
      type: 'mm.invalidate_end',
      ts: this.mm.ctx.sched.now,
      mm: this.mm.id,
      start: range.start,
      end: range.end,
      event: NOTIFY_EVENT_NAMES[range.event]!,
      seq,
      declined,
    });
  }

  /**
   * Before CPU entries in the range change (`mmu_notifier_invalidate_range_start`); may sleep. Every
   * subscriber is called in turn; one that throws, rejects or returns false is recorded (see
   * {@link NotifierCallbackFailure}) and the invalidation goes on: it never rejects because of a
   * callback.
   */
  async invalidateRangeStart(range: MmuNotifierRange): Promise<void> {
    const hit = this.beginRange(range);
    const seq = this.invalidateSeq;
    for (const sub of hit) {
      if (sub.removed) continue;
      let ok: boolean;
      try {
        ok = await sub.ops.invalidate(sub, range, seq);
      } catch (e) {
        this.recordFailure(sub, range, e, 'threw in a blockable invalidation');
        continue;
      }
      if (ok !== true) {
        this.recordFailure(
          sub,
          range,
          null,
          `returned ${String(ok)} from a blockable invalidation: only a non-blockable invalidation may be declined`,
        );
      }
    }
  }

  /**
   * Non-blockable start (`mmu_notifier_invalidate_range_start_nonblock`): returns false if a
   * subscriber would have to sleep; the caller then skips the range and retries later. Each callback
   * runs in an atomic section of the scheduler. One that throws is recorded and counts as declining
   * (false). One that returns a promise slept: the promise is contained (`Scheduler.containAtomic`),
   * the failure recorded, the invalidation undone, and EINVAL thrown.
   */
  invalidateRangeStartNonblock(range: MmuNotifierRange): boolean {
    const hit = this.beginRange(range);
    const seq = this.invalidateSeq;
    const sched = this.mm.ctx.sched;
    for (const sub of hit) {
      if (sub.removed) continue;
      const section = `non-blockable ${NOTIFY_EVENT_NAMES[range.event]} invalidation of interval notifier [${hex(sub.start)}-${hex(sub.end)})`;
      let ok: boolean | Promise<boolean>;
      sched.enterAtomic(section);
      try {
        ok = sub.ops.invalidate(sub, range, seq);
      } catch (e) {
        this.recordFailure(sub, range, e, 'threw in a non-blockable invalidation (taken as declining it)');
        this.traceEnd(range, true);
        this.endRange();
        return false;
      } finally {
        sched.exitAtomic();
      }
      if (isThenable(ok)) {
        // The callback slept. Its continuation would run on this task's stack: contain it.
        sched.containAtomic(ok, section);
        const error = this.recordFailure(
          sub,
          range,
          null,
          'slept (returned a promise) in a non-blockable invalidation: it must return false instead',
        );
        this.traceEnd(range, true);
        this.endRange();
        throw error;
      }
      if (ok !== true) {
        // mn_itree_invalidate: undo the start and report -EAGAIN to the caller.
        this.traceEnd(range, true);
        this.endRange();
        return false;
      }
    }
    return true;
  }

  /** Records a contained callback failure, tells the observers and the trace; returns its error. */
  private recordFailure(
    sub: MmuIntervalNotifier,
    range: MmuNotifierRange,
    thrown: unknown,
    what: string,
  ): HmmError {
    const head = `interval notifier [${hex(sub.start)}-${hex(sub.end)}) ${what}`;
    const detail = { kernelRef: 'mm/mmu_notifier.c:mn_itree_invalidate' };
    let error: HmmError;
    if (thrown === null) {
      error = new HmmError('EINVAL', head, {
        kernelRef: range.blockable
          ? detail.kernelRef
          : 'include/linux/mmu_notifier.h:mmu_notifier_range_blockable',
      });
    } else {
      const msg = thrown instanceof Error ? thrown.message : String(thrown);
      const code = thrown instanceof HmmError ? thrown.code : 'EINVAL';
      error = new HmmError(code, `${head}; the dispatcher contained it: ${msg}`, detail);
    }
    const failure: NotifierCallbackFailure = { sub, range, error, thrown };
    this.callbackFailureCount++;
    this.callbackFailures.push(failure);
    if (this.callbackFailures.length > MAX_RECORDED_FAILURES) this.callbackFailures.shift();
    const bus = this.mm.ctx.trace;
    if (bus.enabled('mm.notifier_error')) {
      bus.emit({
        type: 'mm.notifier_error',
        ts: this.mm.ctx.sched.now,
        mm: this.mm.id,
        start: range.start,
        end: range.end,
        event: NOTIFY_EVENT_NAMES[range.event]!,
        blockable: range.blockable,
        error: error.message,
      });
    }
    for (const obs of this.failureObservers) obs(failure);
    return error;
  }

  /** {@inheritDoc MmuNotifierHooks.invalidateRangeEnd} */
  invalidateRangeEnd(range: MmuNotifierRange): void {
    for (const obs of this.completedObservers) obs(range);
    this.traceEnd(range, false);
    this.endRange();
  }

  /** Ends an invalidation (`mn_itree_inv_end`): the last one makes the sequence even and applies deferred changes. */
  private endRange(): void {
    if (this.activeInvalidateRanges === 0) {
      throw new HmmError('EINVAL', `mm ${this.mm.id}: invalidate_range_end without a start`);
    }
    if (--this.activeInvalidateRanges > 0) return;
    if (!this.invalidating) return;
    this.invalidateSeq++;
    for (const d of this.deferred.splice(0)) {
      if (d.insert) {
        if (!d.sub.removed) {
          this.intervals.push(d.sub);
          d.sub.active = true;
        }
      } else {
        this.unlinkNow(d.sub);
      }
    }
    this.wq.wakeAll();
  }

  /** The mm is exiting: every interval gets a RELEASE invalidation of the whole address space (`mn_itree_release`). */
  async release(mm: MmStruct): Promise<void> {
    const range: MmuNotifierRange = {
      mm,
      start: 0,
      end: TASK_SIZE,
      event: NotifyEvent.RELEASE,
      blockable: true,
      owner: null,
    };
    await this.invalidateRangeStart(range);
    this.invalidateRangeEnd(range);
  }

  /** @internal */
  insert(sub: MmuIntervalNotifier): void {
    if (this.activeInvalidateRanges > 0 && this.invalidating) {
      // Deferred: read_begin on it waits for the running invalidation to end.
      sub.invalidateSeq = this.invalidateSeq;
      this.deferred.push({ sub, insert: true });
    } else {
      sub.invalidateSeq = this.invalidateSeq - 1;
      this.intervals.push(sub);
      sub.active = true;
    }
  }

  /** @internal Resolves at once (no promise machinery) when no invalidation runs. */
  remove(sub: MmuIntervalNotifier): Promise<void> {
    if (sub.removed) {
      return Promise.reject(
        new HmmError('EINVAL', `interval notifier [${hex(sub.start)}-${hex(sub.end)}) removed twice`, {
          kernelRef: 'mm/mmu_notifier.c:mmu_interval_notifier_remove',
        }),
      );
    }
    sub.removed = true;
    if (this.activeInvalidateRanges > 0 && this.invalidating) {
      const seq = this.invalidateSeq;
      this.deferred.push({ sub, insert: false });
      // Wait for the running invalidation: no callback can reach the driver after we return.
      return this.wq.waitUntil(() => this.invalidateSeq !== seq, 'mmu_interval_notifier_remove');
    }
    this.unlinkNow(sub);
    return RESOLVED;
  }

  private unlinkNow(sub: MmuIntervalNotifier): void {
    const i = this.intervals.indexOf(sub);
    if (i >= 0) this.intervals.splice(i, 1);
    sub.active = false;
  }
}

/**
 * Subscribes `ops` to [start, start+length) of `mm` (`mmu_interval_notifier_insert`). EINVAL for an
 * empty, unaligned or overflowing range; ESRCH for an exited mm.
 */
export function mmuIntervalNotifierInsert(
  mm: MmStruct,
  start: number,
  length: number,
  ops: MmuIntervalNotifierOps,
): MmuIntervalNotifier {
  mm.assertLive('mmu_interval_notifier_insert');
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length <= 0) {
    throw new HmmError(
      'EINVAL',
      `mmu_interval_notifier_insert: [${String(start)}, +${String(length)}) is not a range`,
    );
  }
  if (start + length > TASK_SIZE || start % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) {
    throw new HmmError(
      'EINVAL',
      `mmu_interval_notifier_insert: [${hex(start)}, +${hex(length)}) must be page aligned and inside the address space`,
    );
  }
  const subs = MmuNotifierSubscriptions.of(mm);
  const sub = new MmuIntervalNotifier(mm, start, start + length, ops, 0);
  subs.insert(sub);
  return sub;
}

/**
 * Removes a subscription (`mmu_interval_notifier_remove`). Waits for a running invalidation; once it
 * returns, no callback of `sub` runs again. EINVAL if removed twice. Must not be called from the
 * subscription's own invalidate callback (it would wait for itself).
 */
export function mmuIntervalNotifierRemove(sub: MmuIntervalNotifier): Promise<void> {
  return MmuNotifierSubscriptions.of(sub.mm).remove(sub);
}

/**
 * Starts a read section (`mmu_interval_read_begin`): returns the sequence to pass to
 * {@link mmuIntervalReadRetry}, first sleeping until a running invalidation of this interval ends.
 */
export function mmuIntervalReadBegin(sub: MmuIntervalNotifier): Promise<number> {
  const subs = MmuNotifierSubscriptions.of(sub.mm);
  const seq = sub.invalidateSeq;
  if (seq !== subs.invalidateSeq) return Promise.resolve(seq);
  return subs.wq.waitUntil(() => subs.invalidateSeq !== seq, 'mmu_interval_read_begin').then(() => seq);
}

/**
 * True if an invalidation hit the interval since {@link mmuIntervalReadBegin} returned `seq`
 * (`mmu_interval_read_retry`). Call it under the driver lock that the invalidate callback takes.
 */
export function mmuIntervalReadRetry(sub: MmuIntervalNotifier, seq: number): boolean {
  return sub.invalidateSeq !== seq;
}

/** Lockless hint of {@link mmuIntervalReadRetry} (`mmu_interval_check_retry`): may be stale. */
export function mmuIntervalCheckRetry(sub: MmuIntervalNotifier, seq: number): boolean {
  return sub.invalidateSeq !== seq;
}

/**
 * Records the invalidation's sequence on the subscription (`mmu_interval_set_seq`). Call it from the
 * invalidate callback, under the driver lock, with the `curSeq` it was given.
 */
export function mmuIntervalSetSeq(sub: MmuIntervalNotifier, curSeq: number): void {
  if ((curSeq & 1) !== 1) {
    throw new HmmError(
      'EINVAL',
      `mmu_interval_set_seq: ${curSeq} is not the odd sequence of a running invalidation`,
    );
  }
  sub.invalidateSeq = curSeq;
}
