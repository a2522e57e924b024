/**
 * A GPU's replayable fault buffer: the ring its MMU writes one entry into for every access that
 * found no usable translation, with GET/PUT pointers, an interrupt to the driver, and the REPLAY and
 * CANCEL operations by which the driver lets stalled accesses retry or fail.
 *
 * Hardware counterpart: the replayable MMU fault buffer of NVIDIA GPUs since Pascal (what nouveau's
 * `nouveau_svm_fault_buffer` drains in `nouveau_svm_fault`, and UVM's `uvm_gpu_replayable_faults.c`
 * fetches in batches): a ring of fixed-size entries (instance block of the faulting channel,
 * address, access type, valid bit), GET written by software and PUT by hardware.
 *
 * Model: every entry lives in typed arrays indexed by ring slot (no object per fault). An access
 * that faults writes an entry ({@link FaultBuffer.push}) and stalls until the next
 * {@link FaultBuffer.replay}, when it retries its translation and may fault again. When the ring is
 * full the entry is lost (an overflow, counted) but the access still stalls and refaults at the
 * next replay, as on hardware. {@link FaultBuffer.cancel} fails every stalled and later access of
 * one instance (the GPU kills the faulting channel) until {@link FaultBuffer.reset}.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from '../mm/constants.js';
import type { Scheduler } from '../sim/scheduler.js';
import { WaitQueue } from '../sim/wait.js';

/** Access type of a fault entry (the hardware's fault access-type field). */
export const FaultAccess = {
  READ: 0,
  WRITE: 1,
  ATOMIC: 2,
  /** A prefetch: no data moves; the driver may only map what is already present. */
  PREFETCH: 3,
} as const;
export type FaultAccessId = (typeof FaultAccess)[keyof typeof FaultAccess];

/** Names of the access types, by value. */
export const FAULT_ACCESS_NAMES: readonly string[] = ['read', 'write', 'atomic', 'prefetch'];

/** Default number of ring entries. */
export const FAULT_BUFFER_DEFAULT_ENTRIES = 1024;

/** Largest instance id an entry can carry. */
export const FAULT_INSTANCE_MAX = 0xffff;

/** Options of a {@link FaultBuffer}. */
export interface FaultBufferOptions {
  /** Ring entries (integer ≥ 1). Default {@link FAULT_BUFFER_DEFAULT_ENTRIES}. */
  readonly entries?: number;
  /** Name in wait reasons and messages. */
  readonly name?: string;
}

/**
 * Entries drained from a {@link FaultBuffer}, in struct-of-arrays form: entry `i` is
 * (`inst[i]`, `addr[i]`, `access[i]`), written at simulated time `time[i]`. Reusable across drains.
 */
export class FaultBatch {
  readonly inst: Uint32Array;
  /** Page-aligned fault addresses. */
  readonly addr: Float64Array;
  readonly access: Uint8Array;
  readonly time: Float64Array;
  /** Entries held, from index 0. */
  count = 0;

  constructor(readonly capacity: number) {
    if (!(Number.isInteger(capacity) && capacity >= 1)) {
      throw new HmmError('EINVAL', `FaultBatch: capacity must be an integer ≥ 1, got ${String(capacity)}`);
    }
    this.inst = new Uint32Array(capacity);
    this.addr = new Float64Array(capacity);
    this.access = new Uint8Array(capacity);
    this.time = new Float64Array(capacity);
  }
}

/** Counters of a fault buffer. */
export interface FaultBufferStats {
  /** Entries written. */
  readonly written: number;
  /** Entries lost because the ring was full. */
  readonly overflows: number;
  /** Entries drained by the driver. */
  readonly drained: number;
  /** Replays issued. */
  readonly replays: number;
  /** Instances cancelled. */
  readonly cancels: number;
}

/** A replayable fault buffer (see the module doc). */
export class FaultBuffer {
  readonly name: string;
  /** Ring entries. */
  readonly entries: number;
  readonly #inst: Uint32Array;
  readonly #addr: Float64Array;
  readonly #access: Uint8Array;
  readonly #time: Float64Array;
  /** Valid bit of each slot: set by the hardware on write, cleared by the driver on drain. */
  readonly #valid: Uint8Array;
  #get = 0;
  #put = 0;
  #replaySeq = 0;
  readonly #irq: WaitQueue;
  readonly #replayWq: WaitQueue;
  readonly #cancelled = new Map<number, HmmError>();
  #aborted: HmmError | null = null;
  #written = 0;
  #overflows = 0;
  #drained = 0;
  #replays = 0;
  #cancels = 0;

  constructor(
    readonly sched: Scheduler,
    opts: FaultBufferOptions = {},
  ) {
    const n = opts.entries ?? FAULT_BUFFER_DEFAULT_ENTRIES;
    if (!(Number.isInteger(n) && n >= 1 && n <= 1 << 20)) {
      throw new HmmError('EINVAL', `FaultBuffer: entries must be an integer in [1, 2^20], got ${String(n)}`);
    }
    this.entries = n;
    this.name = opts.name ?? 'fault-buffer';
    this.#inst = new Uint32Array(n);
    this.#addr = new Float64Array(n);
    this.#access = new Uint8Array(n);
    this.#time = new Float64Array(n);
    this.#valid = new Uint8Array(n);
    this.#irq = new WaitQueue(sched, `${this.name}:irq`);
    this.#replayWq = new WaitQueue(sched, `${this.name}:replay`);
  }

  /** The GET pointer (next slot software reads), in [0, entries). */
  get getPtr(): number {
    return this.#get % this.entries;
  }

  /** The PUT pointer (next slot hardware writes), in [0, entries). */
  get putPtr(): number {
    return this.#put % this.entries;
  }

  /** Entries written and not yet drained. */
  get pending(): number {
    return this.#put - this.#get;
  }

  /** Replays issued so far (the generation stalled accesses wait to change). */
  get replaySeq(): number {
    return this.#replaySeq;
  }

  /** Accesses stalled waiting for a replay. */
  get stalled(): number {
    return this.#replayWq.waiters;
  }

  /** The error an instance was cancelled with, or undefined. */
  cancelledWith(inst: number): HmmError | undefined {
    return this.#cancelled.get(inst);
  }

  /** A snapshot of the counters. */
  stats(): FaultBufferStats {
    return {
      written: this.#written,
      overflows: this.#overflows,
      drained: this.#drained,
      replays: this.#replays,
      cancels: this.#cancels,
    };
  }

  /**
   * Hardware side: writes one entry for a faulting access of instance `inst` at `address` (rounded
   * down to its page) and raises the interrupt. Returns false, writing nothing, when the ring is
   * full (an overflow: the access refaults after the next replay). EINVAL for a bad argument;
   * ENODEV after {@link abort}.
   */
  push(inst: number, address: number, access: FaultAccessId): boolean {
    if (this.#aborted !== null) throw this.#aborted;
    if (!(Number.isInteger(inst) && inst >= 0 && inst <= FAULT_INSTANCE_MAX)) {
      throw new HmmError(
        'EINVAL',
        `${this.name}: instance ${String(inst)} is not in [0, ${FAULT_INSTANCE_MAX}]`,
      );
    }
    if (!(Number.isSafeInteger(address) && address >= 0)) {
      throw new HmmError('EINVAL', `${this.name}: fault address ${String(address)} is not an address`);
    }
    if (!(access === 0 || access === 1 || access === 2 || access === 3)) {
      throw new HmmError('EINVAL', `${this.name}: unknown fault access type ${String(access)}`);
    }
    if (this.#put - this.#get >= this.entries) {
      this.#overflows++;
      this.#irq.wakeAll();
      return false;
    }
    const slot = this.#put % this.entries;
    this.#inst[slot] = inst;
    this.#addr[slot] = address - (address % PAGE_SIZE);
    this.#access[slot] = access;
    this.#time[slot] = this.sched.now;
    this.#valid[slot] = 1;
    this.#put++;
    this.#written++;
    this.#irq.wakeAll();
    return true;
  }

  /**
   * Hardware side: stalls the current task's access of instance `inst` until the next replay.
   * Rejects with the instance's cancel error (at once if it is already cancelled), or with the
   * abort error. EDEADLK outside a task.
   */
  async waitReplay(inst: number): Promise<void> {
    const gen = this.#replaySeq;
    const cancelled = this.#cancelled.get(inst);
    if (cancelled !== undefined) throw cancelled;
    await this.#replayWq.waitUntil(
      () => this.#replaySeq !== gen || this.#aborted !== null || this.#cancelled.has(inst),
      `${this.name}: replay (instance ${inst})`,
    );
    if (this.#aborted !== null) throw this.#aborted;
    const err = this.#cancelled.get(inst);
    if (err !== undefined) throw err;
  }

  /**
   * Driver side: waits inside a task for the interrupt, i.e. until some entry is pending or an
   * overflow happened since the last drain. Resolves at once if entries are pending; rejects after
   * {@link abort}.
   */
  async waitInterrupt(): Promise<void> {
    const overflows = this.#overflows;
    await this.#irq.waitUntil(
      () => this.#put !== this.#get || this.#overflows !== overflows || this.#aborted !== null,
      `${this.name}: interrupt`,
    );
    if (this.#aborted !== null) throw this.#aborted;
  }

  /**
   * Driver side: copies up to `max` (default: the batch's capacity) pending entries, oldest first,
   * into `out` (from index 0; `out.count` is set), clears their valid bits and advances GET.
   * Returns the number drained.
   */
  drain(out: FaultBatch, max = out.capacity): number {
    const n = Math.min(this.#put - this.#get, max, out.capacity);
    for (let i = 0; i < n; i++) {
      const slot = (this.#get + i) % this.entries;
      out.inst[i] = this.#inst[slot]!;
      out.addr[i] = this.#addr[slot]!;
      out.access[i] = this.#access[slot]!;
      out.time[i] = this.#time[slot]!;
      this.#valid[slot] = 0;
    }
    this.#get += n;
    this.#drained += n;
    out.count = n;
    return n;
  }

  /** Driver side: every stalled access retries its translation (the REPLAY method). */
  replay(): void {
    this.#replaySeq++;
    this.#replays++;
    this.#replayWq.wakeAll();
  }

  /**
   * Driver side: cancels instance `inst` (the CANCEL method: the engine resets and the channel is
   * killed): its stalled accesses and every later fault of it fail with `error` until
   * {@link reset}. EINVAL for a bad instance or error.
   */
  cancel(inst: number, error: HmmError): void {
    if (!(Number.isInteger(inst) && inst >= 0 && inst <= FAULT_INSTANCE_MAX)) {
      throw new HmmError(
        'EINVAL',
        `${this.name}: cancel of instance ${String(inst)}, not in [0, ${FAULT_INSTANCE_MAX}]`,
      );
    }
    if (!(error instanceof HmmError)) {
      throw new HmmError('EINVAL', `${this.name}: cancel of instance ${inst} needs an HmmError to report`);
    }
    if (!this.#cancelled.has(inst)) this.#cancels++;
    this.#cancelled.set(inst, error);
    this.#replayWq.wakeAll();
  }

  /** Forgets the cancellation of `inst` (a new channel took the instance). */
  reset(inst: number): void {
    this.#cancelled.delete(inst);
  }

  /**
   * The device is going away: every stalled access and every later call fails with `error`
   * (ENODEV by default). Idempotent.
   */
  abort(error?: HmmError): void {
    if (this.#aborted !== null) return;
    this.#aborted = error ?? new HmmError('ENODEV', `${this.name}: the device was removed`);
    this.#replayWq.wakeAll();
    this.#irq.wakeAll();
  }

  /** True once {@link abort} was called. */
  get aborted(): boolean {
    return this.#aborted !== null;
  }

  /** The slot's entry as text (for messages). */
  describe(inst: number, address: number, access: number): string {
    return `instance ${inst} ${FAULT_ACCESS_NAMES[access] ?? `access ${access}`} at ${hex(address)}`;
  }
}
