/**
 * Completion queues (`ibv_cq`): each finished work request leaves one work completion, polled in
 * order. Statuses are the `IBV_WC_*` ones the simulation produces; a failed completion also
 * carries the typed error that says why.
 *
 * @module
 */
import { WaitQueue } from '@hmm/core';
import type { HmmError, Scheduler } from '@hmm/core';

/** `enum ibv_wc_status`, the subset the simulation produces. */
export const WcStatus = {
  SUCCESS: 'SUCCESS',
  /** The local SGE's key, PD or rights were wrong, or its page fault failed. */
  LOC_PROT_ERR: 'LOC_PROT_ERR',
  /** A RECV buffer too small for the SEND (at the receiver). */
  LOC_LEN_ERR: 'LOC_LEN_ERR',
  /** The responder refused the rkey, range or rights, or its page fault failed. */
  REM_ACCESS_ERR: 'REM_ACCESS_ERR',
  /** The responder could not take the request (a SEND longer than the posted RECV). */
  REM_INV_REQ_ERR: 'REM_INV_REQ_ERR',
  /** The responder failed the request on its side (its RECV buffer's key or rights were wrong). */
  REM_OP_ERR: 'REM_OP_ERR',
  /** The responder answered RNR NAK more often than the QP's `rnrRetry` allows. */
  RNR_RETRY_EXC_ERR: 'RNR_RETRY_EXC_ERR',
  /** The QP was in (or went to) the error state before this request ran. */
  WR_FLUSH_ERR: 'WR_FLUSH_ERR',
} as const;

/** One of {@link WcStatus}. */
export type WcStatusName = (typeof WcStatus)[keyof typeof WcStatus];

/** What a work completion reports. */
export type WcOpcode = 'RDMA_WRITE' | 'RDMA_READ' | 'SEND' | 'RECV';

/** `struct ibv_wc`. */
export interface IbWc {
  readonly wrId: number;
  readonly qpn: number;
  readonly opcode: WcOpcode;
  readonly status: WcStatusName;
  /** Bytes transferred (RECV: bytes received). */
  readonly byteLen: number;
  /** Why it failed (null on success). */
  readonly error: HmmError | null;
  /** Simulated time of completion, ns. */
  readonly at: number;
}

/** A completion queue. */
export class Mlx5Cq {
  readonly #entries: IbWc[] = [];
  readonly #wq: WaitQueue;
  #total = 0;

  constructor(
    readonly sched: Scheduler,
    readonly name = 'cq',
  ) {
    this.#wq = new WaitQueue(sched, name);
  }

  /** Completions not yet polled. */
  get length(): number {
    return this.#entries.length;
  }

  /** Completions delivered so far. */
  get total(): number {
    return this.#total;
  }

  /** @internal The HCA writes a completion. */
  push(wc: IbWc): void {
    this.#entries.push(wc);
    this.#total++;
    this.#wq.wakeAll();
  }

  /** `ibv_poll_cq`: up to `max` completions, oldest first. */
  poll(max = 16): IbWc[] {
    return this.#entries.splice(0, Math.max(0, max));
  }

  /** Waits for the next completion and takes it (a blocking `ibv_get_cq_event` + poll). */
  async next(): Promise<IbWc> {
    await this.#wq.waitUntil(() => this.#entries.length > 0, `cq ${this.name}`);
    return this.#entries.shift()!;
  }

  /** Waits for the completion of `wrId` and takes it, leaving the others queued. */
  async waitFor(wrId: number): Promise<IbWc> {
    const find = (): number => this.#entries.findIndex((wc) => wc.wrId === wrId);
    await this.#wq.waitUntil(() => find() >= 0, `cq ${this.name} wr ${wrId}`);
    return this.#entries.splice(find(), 1)[0]!;
  }
}
