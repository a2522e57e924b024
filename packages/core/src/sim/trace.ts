/**
 * The typed trace bus: every significant event of the simulation, stamped with simulated time, plus
 * named counters. Other layers add their own event types by declaration merging into
 * {@link TraceEventMap}:
 *
 * ```ts
 * declare module '../sim/trace.js' {
 *   interface TraceEventMap {
 *     'mm.fault': { address: number; write: boolean };
 *   }
 * }
 * ```
 *
 * Kernel counterpart: tracepoints (`include/trace/events/`, `TRACE_EVENT()`) and vmstat counters
 * (`count_vm_event()`, mm/vmstat.c).
 *
 * @module
 */

import { EventEmitter } from 'eventemitter3';
import { HmmError } from '../errors/errno.js';

/**
 * Payload of each trace event type, keyed by the event's `type`. Extend it by declaration merging
 * (see the module doc). Payloads must be JSON-safe (no `undefined`, `bigint` or functions), so that
 * {@link TraceRecorder.toJSONL} is a faithful and stable serialization.
 */
export interface TraceEventMap {
  /** A task was created (`parent`: the spawning task's id, or null from outside any task). Kernel: `sched_process_fork`. */
  'sched.spawn': { task: number; name: string; parent: number | null };
  /** The scheduler handed the CPU to a task. Kernel: `sched_switch`. */
  'sched.run': { task: number; name: string };
  /** A task blocked; `on` says on what (a wait queue, a lock, a sleep, a join). */
  'sched.block': { task: number; name: string; on: string };
  /** A blocked task became ready; `by` is the waking task's id, or null (timer or outside any task). Kernel: `sched_wakeup`. */
  'sched.wake': { task: number; name: string; by: number | null };
  /** A task ended; `error` is the failure's message when `ok` is false. Kernel: `sched_process_exit`. */
  'sched.end': { task: number; name: string; ok: boolean; error: string | null };
  /** The scheduler advanced the virtual clock from `from` to `ts`. */
  'sched.clock': { from: number };
  /** A task had to wait for a lock; `holder` is the holding task's id, or null (readers, or held outside any task). Kernel: `contention_begin`. */
  'lock.contended': { lock: string; kind: 'mutex' | 'read' | 'write'; task: number; holder: number | null };
}

/** Name of a trace event type. */
export type TraceEventType = keyof TraceEventMap;

/** The event of type `K`: `type`, `ts` (simulated ns), then the payload fields. */
export type TraceEventOf<K extends TraceEventType> = { readonly type: K; readonly ts: number } & Readonly<
  TraceEventMap[K]
>;

/** Any trace event: a union discriminated on `type`. */
export type TraceEvent = { [K in TraceEventType]: TraceEventOf<K> }[TraceEventType];

/** Listener of one event type. */
export type TraceListener<K extends TraceEventType> = (event: TraceEventOf<K>) => void;

/** Listener of every event. */
export type AnyTraceListener = (event: TraceEvent) => void;

const ANY = Symbol('trace.any');

/**
 * Typed event bus (on eventemitter3) with named counters.
 *
 * Emitting is the caller's cost: build the event object only when {@link enabled} says someone
 * listens, so an idle bus costs one check per event site:
 *
 * ```ts
 * if (bus.enabled('mm.fault')) bus.emit({ type: 'mm.fault', ts: clock.now, address, write });
 * ```
 */
export class TraceBus {
  readonly #ee = new EventEmitter<string | symbol>();
  readonly #counters = new Map<string, number>();

  /** True if any listener would receive an event of `type` (a listener of that type, or an any-listener). */
  enabled(type: TraceEventType): boolean {
    return this.#ee.listenerCount(ANY) > 0 || this.#ee.listenerCount(type) > 0;
  }

  /** True if any listener at all is subscribed. */
  get hasListeners(): boolean {
    return this.#ee.eventNames().length > 0;
  }

  /** Delivers `event` synchronously to the listeners of its type, then to the any-listeners, in subscription order. */
  emit(event: TraceEvent): void {
    this.#ee.emit(event.type, event);
    this.#ee.emit(ANY, event);
  }

  /** Subscribes to one event type; returns a function that unsubscribes. */
  on<K extends TraceEventType>(type: K, listener: TraceListener<K>): () => void {
    this.#ee.on(type, listener);
    return () => this.off(type, listener);
  }

  /** Unsubscribes a listener given to {@link on}. */
  off<K extends TraceEventType>(type: K, listener: TraceListener<K>): void {
    this.#ee.off(type, listener);
  }

  /** Subscribes to every event; returns a function that unsubscribes. */
  onAny(listener: AnyTraceListener): () => void {
    this.#ee.on(ANY, listener);
    return () => this.offAny(listener);
  }

  /** Unsubscribes a listener given to {@link onAny}. */
  offAny(listener: AnyTraceListener): void {
    this.#ee.off(ANY, listener);
  }

  /** Adds `delta` (default 1, any finite number) to the counter `name`. Kernel: `count_vm_event()`. */
  count(name: string, delta = 1): void {
    if (!Number.isFinite(delta)) {
      throw new HmmError(
        'EINVAL',
        `TraceBus.count('${name}'): delta must be a finite number, got ${String(delta)}`,
      );
    }
    this.#counters.set(name, (this.#counters.get(name) ?? 0) + delta);
  }

  /** Value of counter `name` (0 if never counted). */
  counter(name: string): number {
    return this.#counters.get(name) ?? 0;
  }

  /** A snapshot of every counter as a plain object, keys sorted. Kernel: `/proc/vmstat`. */
  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const name of [...this.#counters.keys()].sort()) out[name] = this.#counters.get(name) as number;
    return out;
  }

  /** Sets every counter back to zero (forgets them). */
  resetCounters(): void {
    this.#counters.clear();
  }
}

/**
 * Records every event of a bus, in order, for tests and export. `toJSONL()` is a stable
 * serialization: same seed and scenario ⇒ the same string, byte for byte.
 */
export class TraceRecorder {
  /** The recorded events, oldest first. */
  readonly events: TraceEvent[] = [];
  #unsubscribe: (() => void) | null;

  /** Starts recording `bus` at once; `filter`, if given, keeps only the events it accepts. */
  constructor(bus: TraceBus, filter?: (event: TraceEvent) => boolean) {
    this.#unsubscribe = bus.onAny(
      filter === undefined
        ? (e) => {
            this.events.push(e);
          }
        : (e) => {
            if (filter(e)) this.events.push(e);
          },
    );
  }

  /** The recorded events of one type. */
  ofType<K extends TraceEventType>(type: K): TraceEventOf<K>[] {
    return this.events.filter((e): e is TraceEventOf<K> & TraceEvent => e.type === type);
  }

  /** Stops recording (the events stay). Idempotent. */
  stop(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  /** Forgets the recorded events. */
  clear(): void {
    this.events.length = 0;
  }

  /**
   * One JSON object per line, each line ending in `\n`. Field order is the order in which the
   * emitter built the event (`type`, `ts`, then the payload), so it is stable for a given scenario.
   */
  toJSONL(): string {
    let out = '';
    for (const e of this.events) out += JSON.stringify(e) + '\n';
    return out;
  }
}
