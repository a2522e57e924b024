/**
 * A binary min-heap of timers, keyed by (time, sequence number) so that timers due at the same
 * instant pop in the order they were armed: a total, deterministic order.
 *
 * Kernel counterpart: the hrtimer timerqueue (`lib/timerqueue.c`, an rbtree keyed by expiry).
 *
 * @module
 */

/** One armed timer. */
export interface TimerEntry<T> {
  /** Expiry, in simulated ns. */
  readonly time: number;
  /** Arming order; breaks ties between equal times. */
  readonly seq: number;
  /** What the timer wakes. */
  readonly value: T;
}

function less<T>(a: TimerEntry<T>, b: TimerEntry<T>): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}

/** Min-heap of {@link TimerEntry}; `push` and `pop` are O(log n), `peek` O(1). */
export class TimerHeap<T> {
  readonly #a: TimerEntry<T>[] = [];
  #seq = 0;

  /** Number of armed timers. */
  get size(): number {
    return this.#a.length;
  }

  /** Arms a timer at `time`; it gets the next sequence number. */
  push(time: number, value: T): TimerEntry<T> {
    const entry: TimerEntry<T> = { time, seq: this.#seq++, value };
    const a = this.#a;
    let i = a.length;
    a.push(entry);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = a[parent] as TimerEntry<T>;
      if (!less(entry, p)) break;
      a[i] = p;
      i = parent;
    }
    a[i] = entry;
    return entry;
  }

  /** The earliest timer, or undefined when empty. */
  peek(): TimerEntry<T> | undefined {
    return this.#a[0];
  }

  /** Removes and returns the earliest timer, or undefined when empty. */
  pop(): TimerEntry<T> | undefined {
    const a = this.#a;
    const top = a[0];
    const last = a.pop();
    if (top === undefined || last === undefined || a.length === 0) return top;
    const n = a.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let c = l;
      if (r < n && less(a[r] as TimerEntry<T>, a[l] as TimerEntry<T>)) c = r;
      const child = a[c] as TimerEntry<T>;
      if (!less(child, last)) break;
      a[i] = child;
      i = c;
    }
    a[i] = last;
    return top;
  }
}
