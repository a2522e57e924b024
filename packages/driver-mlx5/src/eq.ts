/**
 * The page-fault event queue of the HCA (`mlx5_ib_pf_eq`, drivers/infiniband/hw/mlx5/odp.c): the
 * device writes one event queue entry (EQE) per page fault, an interrupt wakes the driver's work
 * item, which consumes the entries in order. Entries live in typed arrays (struct of arrays); the
 * ring holds `capacity` entries (4096 on real HCAs). A full ring refuses the entry: the faulting
 * side treats it as not yet reported and raises it again on its next attempt.
 *
 * @module
 */
import { HmmError, WaitQueue } from '@hmm/core';
import type { Scheduler } from '@hmm/core';

/** Entries of the real HCA's page-fault EQ. */
export const MLX5_PF_EQ_ENTRIES = 4096;

/** What faulted (the EQE subtype). */
export const PfKind = {
  /** The requester's own WQE: a local SGE (send payload, RDMA READ destination) missed. */
  WQE: 1,
  /** An incoming RDMA READ / WRITE / SEND at the responder missed (`MLX5_PFAULT_SUBTYPE_RDMA`). */
  RDMA: 2,
} as const;

/** One of {@link PfKind}. */
export type PfKindId = (typeof PfKind)[keyof typeof PfKind];

/** Bits of an EQE's `flags`. */
export const PfFlag = {
  /** The access writes memory (`MLX5_PFAULT_WRITE`). */
  WRITE: 1,
  /**
   * The HCA cannot tell the message length (RDMA WRITE / SEND at the responder): the driver faults
   * the demanded packet, resumes, then prefetches ahead.
   */
  LENGTH_UNKNOWN: 2,
} as const;

/** One EQE as {@link PageFaultEq.pop} returns it (a view on the ring; copy what you keep). */
export interface PageFaultEqe {
  /** Resume token: identifies the stalled queue pair and fault. */
  token: number;
  kind: PfKindId;
  /** Memory key the access used (lkey or rkey). */
  mkey: number;
  /** Faulting virtual address. */
  va: number;
  /** Bytes demanded from `va` (0 with {@link PfFlag.LENGTH_UNKNOWN}: one packet). */
  bytes: number;
  /** {@link PfFlag} bits. */
  flags: number;
}

/** The page-fault EQ: a ring of {@link PageFaultEqe}s and the interrupt that wakes the work item. */
export class PageFaultEq {
  readonly #token: Float64Array;
  readonly #kind: Uint8Array;
  readonly #mkey: Uint32Array;
  readonly #va: Float64Array;
  readonly #bytes: Float64Array;
  readonly #flags: Uint8Array;
  readonly #irq: WaitQueue;
  #get = 0;
  #put = 0;
  #overflows = 0;
  #posted = 0;
  #stopped = false;

  constructor(
    sched: Scheduler,
    readonly capacity: number = MLX5_PF_EQ_ENTRIES,
    name = 'mlx5-pf-eq',
  ) {
    if (!(Number.isInteger(capacity) && capacity > 0)) {
      throw new HmmError('EINVAL', `${name}: capacity ${String(capacity)} is not a positive integer`);
    }
    this.#token = new Float64Array(capacity);
    this.#kind = new Uint8Array(capacity);
    this.#mkey = new Uint32Array(capacity);
    this.#va = new Float64Array(capacity);
    this.#bytes = new Float64Array(capacity);
    this.#flags = new Uint8Array(capacity);
    this.#irq = new WaitQueue(sched, `${name}.irq`);
  }

  /** Entries waiting. */
  get length(): number {
    return this.#put - this.#get;
  }

  /** Entries refused because the ring was full. */
  get overflows(): number {
    return this.#overflows;
  }

  /** Entries accepted so far. */
  get posted(): number {
    return this.#posted;
  }

  /** The device writes an EQE and raises the interrupt. False (and counted) when the ring is full. */
  post(token: number, kind: PfKindId, mkey: number, va: number, bytes: number, flags: number): boolean {
    if (this.#stopped) return false;
    if (this.#put - this.#get >= this.capacity) {
      this.#overflows++;
      return false;
    }
    const i = this.#put % this.capacity;
    this.#token[i] = token;
    this.#kind[i] = kind;
    this.#mkey[i] = mkey >>> 0;
    this.#va[i] = va;
    this.#bytes[i] = bytes;
    this.#flags[i] = flags;
    this.#put++;
    this.#posted++;
    this.#irq.wakeAll();
    return true;
  }

  /** Consumes the oldest EQE into `out`; false when the ring is empty. */
  pop(out: PageFaultEqe): boolean {
    if (this.#get === this.#put) return false;
    const i = this.#get % this.capacity;
    out.token = this.#token[i]!;
    out.kind = this.#kind[i]! as PfKindId;
    out.mkey = this.#mkey[i]!;
    out.va = this.#va[i]!;
    out.bytes = this.#bytes[i]!;
    out.flags = this.#flags[i]!;
    this.#get++;
    return true;
  }

  /** Blocks the work item until an EQE arrives or the queue stops; false once stopped. */
  async waitInterrupt(): Promise<boolean> {
    await this.#irq.waitUntil(() => this.#stopped || this.#get !== this.#put, 'mlx5 page-fault EQ');
    return !this.#stopped;
  }

  /** Stops the queue (device removal): later posts are refused, the work item returns. */
  stop(): void {
    this.#stopped = true;
    this.#irq.wakeAll();
  }
}
