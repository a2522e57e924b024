/**
 * Simulated time. Nothing in the simulator reads the wall clock.
 *
 * @module
 */

import { HmmError } from '../errors/errno.js';

/**
 * A monotonic virtual clock in nanoseconds (plain `number`, starts at 0). Only moves forward, and
 * only when told to: usually by the {@link Scheduler} when every task is waiting for a timer.
 *
 * Kernel counterpart: `ktime_get()` / `sched_clock()` (kernel/time), here under program control.
 */
export class VirtualClock {
  #now = 0;

  /** Current simulated time, in ns. */
  get now(): number {
    return this.#now;
  }

  /** Moves the clock to `t` ns. EINVAL if `t` is not finite or lies before {@link now} (time never runs back). */
  advanceTo(t: number): void {
    if (!Number.isFinite(t)) {
      throw new HmmError(
        'EINVAL',
        `VirtualClock.advanceTo: time must be a finite number of ns, got ${String(t)}`,
      );
    }
    if (t < this.#now) {
      throw new HmmError(
        'EINVAL',
        `VirtualClock.advanceTo: cannot go back in time from ${this.#now} ns to ${t} ns`,
      );
    }
    this.#now = t;
  }

  /** Moves the clock forward by `dt` ns. EINVAL unless `dt` is finite and ≥ 0. */
  advanceBy(dt: number): void {
    if (!Number.isFinite(dt) || dt < 0) {
      throw new HmmError(
        'EINVAL',
        `VirtualClock.advanceBy: delta must be a finite, non-negative number of ns, got ${String(dt)}`,
      );
    }
    this.#now += dt;
  }
}
