/**
 * Reliable-connected queue pairs (`ibv_qp` of type RC) and the HCA's transport engine: a requester
 * executes its send queue in order, one message at a time, one packet (at most an MTU, within one
 * page on both sides) at a time, each packet taking its wire time (and its PCIe time when a side is
 * a peer device's BAR). Translation is per packet through the MRs' tables, so an invalidation can
 * land between two packets of a message and the next packet faults instead of reading stale memory.
 *
 * - **Local miss** (the requester's own SGE, an ODP MR): a WQE page fault; the QP stalls until the
 *   driver resumes it.
 * - **Responder miss** (the target MR of an RDMA READ / WRITE, or the RECV buffer of a SEND): the
 *   responder raises a page fault and answers **RNR NAK**; so does a SEND that finds no RECV posted.
 *   The requester waits the responder's minimum RNR timer and retransmits from that packet, at most
 *   `rnrRetry` times in a row (7 = without limit, as in the IB spec); past the budget the request
 *   completes with RNR_RETRY_EXC_ERR (ETIMEDOUT) and the QP goes to the error state.
 * - **Failed fault** (the driver resumed with an error): the stalled side's QP goes to the error
 *   state; the request completes with LOC_PROT_ERR or REM_ACCESS_ERR carrying the fault's errno.
 * - A QP in the error state flushes every queued and later request (WR_FLUSH_ERR).
 *
 * Simplification: real HCAs answer an RDMA READ that faults at the responder with silence (the
 * requester retransmits after its ACK timeout), not RNR NAK; the simulation uses the RNR path and
 * budget for every opcode.
 *
 * @module
 */
import { HmmError, PAGE_SIZE, hex, isHmmError } from '@hmm/core';
import type { Mlx5Cq, WcOpcode, WcStatusName } from './cq.js';
import { WcStatus } from './cq.js';
import { PfFlag, PfKind } from './eq.js';
import type { Mlx5Hca } from './hca.js';
import { IbAccess } from './mr.js';
import type { Mlx5Mr } from './mr.js';
import type { IbSge } from './odp.js';
import type { Mlx5Pd } from './pd.js';

/** Operations of a send work request. */
export type IbWrOpcode = 'RDMA_WRITE' | 'RDMA_READ' | 'SEND';

/** `struct ibv_send_wr` with one SGE. */
export interface IbSendWr {
  readonly wrId: number;
  readonly opcode: IbWrOpcode;
  /** Local buffer: the payload (WRITE, SEND) or the destination (READ). */
  readonly sge: IbSge;
  /** Remote buffer of RDMA READ / WRITE. */
  readonly remote?: { readonly rkey: number; readonly addr: number };
}

/** `struct ibv_recv_wr` with one SGE. */
export interface IbRecvWr {
  readonly wrId: number;
  readonly sge: IbSge;
}

/** `rnr_retry` value meaning "retry without limit". */
export const RNR_RETRY_INFINITE = 7;

/** Local page-fault rounds one packet may take before the request fails (a livelock guard). */
export const MLX5_MAX_LOCAL_FAULT_ROUNDS = 16;

/** Options of {@link Mlx5Pd.createQp}. */
export interface QpOptions {
  /** Completions of send requests. */
  readonly sendCq: Mlx5Cq;
  /** Completions of receives; default `sendCq`. */
  readonly recvCq?: Mlx5Cq;
  /** RNR NAKs tolerated in a row, 0–6, or 7 = without limit (default 7). */
  readonly rnrRetry?: number;
}

/** QP states the simulation uses. */
export type QpState = 'RESET' | 'RTS' | 'ERR';

/** Counters of one QP. */
export interface QpStats {
  /** RNR NAKs this QP received as requester. */
  rnrNaksReceived: number;
  /** Page faults this QP stalled on (as requester or responder). */
  pageFaultStalls: number;
  /** Packets sent as requester. */
  packets: number;
}

/** A transport failure of one request: the completion status and why. */
class TransportError {
  constructor(
    readonly status: WcStatusName,
    readonly error: HmmError,
    /** The responder's QP goes to the error state too. */
    readonly remote: boolean,
  ) {}
}

const RNR = -2;

/** One RC queue pair. */
export class Mlx5Qp {
  readonly qpn: number;
  readonly sendCq: Mlx5Cq;
  readonly recvCq: Mlx5Cq;
  readonly rnrRetry: number;
  readonly stats: QpStats = { rnrNaksReceived: 0, pageFaultStalls: 0, packets: 0 };
  #state: QpState = 'RESET';
  #remote: Mlx5Qp | null = null;
  #error: HmmError | null = null;
  readonly #sq: IbSendWr[] = [];
  readonly #rq: IbRecvWr[] = [];
  #running = false;
  /** Responder side: the page fault it stalls on, or -1. */
  #pfToken = -1;
  readonly #scratch = new Uint8Array(PAGE_SIZE);

  /** @internal Use {@link Mlx5Pd.createQp}. */
  constructor(
    readonly pd: Mlx5Pd,
    opts: QpOptions,
  ) {
    const r = opts.rnrRetry ?? RNR_RETRY_INFINITE;
    if (!(Number.isInteger(r) && r >= 0 && r <= 7)) {
      throw new HmmError('EINVAL', `ibv_create_qp: rnr_retry ${String(r)} is not an integer in [0, 7]`);
    }
    this.rnrRetry = r;
    this.sendCq = opts.sendCq;
    this.recvCq = opts.recvCq ?? opts.sendCq;
    this.qpn = pd.hca.addQp(this);
  }

  get hca(): Mlx5Hca {
    return this.pd.hca;
  }

  get state(): QpState {
    return this.#state;
  }

  /** Why the QP went to the error state, or null. */
  get error(): HmmError | null {
    return this.#error;
  }

  /** The connected peer QP, or null. */
  get remote(): Mlx5Qp | null {
    return this.#remote;
  }

  /**
   * Connects this QP and `remote` (INIT → RTR → RTS on both; `remote` may be on another HCA, or be
   * this very QP for loopback). EINVAL unless both are in RESET.
   */
  connect(remote: Mlx5Qp): void {
    if (this.#state !== 'RESET' || remote.#state !== 'RESET') {
      throw new HmmError(
        'EINVAL',
        `ibv_modify_qp: QP ${hex(this.qpn)} (${this.#state}) and ${hex(remote.qpn)} (${remote.#state}) must both be in RESET to connect`,
      );
    }
    this.#remote = remote;
    remote.#remote = this;
    this.#state = 'RTS';
    remote.#state = 'RTS';
  }

  /**
   * `ibv_post_send`: queues `wr`; its completion arrives on {@link sendCq}. EINVAL for a malformed
   * request (nothing queued). On a QP in the error state it completes with WR_FLUSH_ERR.
   */
  postSend(wr: IbSendWr): void {
    const what = `ibv_post_send on QP ${hex(this.qpn)}`;
    if (this.#state === 'RESET') throw new HmmError('EINVAL', `${what}: the QP is not connected`);
    if (wr.opcode !== 'RDMA_WRITE' && wr.opcode !== 'RDMA_READ' && wr.opcode !== 'SEND') {
      throw new HmmError('EINVAL', `${what}: unknown opcode ${String(wr.opcode)}`);
    }
    checkSge(what, wr.sge);
    if (wr.opcode !== 'SEND' && (wr.remote === undefined || !Number.isSafeInteger(wr.remote.addr))) {
      throw new HmmError('EINVAL', `${what}: ${wr.opcode} needs a remote address and rkey`);
    }
    if (this.#state === 'ERR') {
      this.#complete(wr, WcStatus.WR_FLUSH_ERR, 0, this.#flushError());
      return;
    }
    this.#sq.push(wr);
    if (!this.#running) {
      this.#running = true;
      this.hca.machine.sched.spawn(`${this.hca.name}:qp${hex(this.qpn)}`, () => this.#requester());
    }
  }

  /** `ibv_post_recv`: a buffer for an incoming SEND. EINVAL for a malformed request. */
  postRecv(wr: IbRecvWr): void {
    const what = `ibv_post_recv on QP ${hex(this.qpn)}`;
    checkSge(what, wr.sge);
    if (this.#state === 'ERR') {
      this.recvCq.push(this.#wc(wr.wrId, 'RECV', WcStatus.WR_FLUSH_ERR, 0, this.#flushError()));
      return;
    }
    this.#rq.push(wr);
  }

  /** `ibv_destroy_qp`: moves to the error state (flushing what is queued) and forgets the QP. */
  destroy(): void {
    this.#toError(new HmmError('EINVAL', `QP ${hex(this.qpn)} was destroyed`));
    this.hca.removeQp(this.qpn);
  }

  #flushError(): HmmError {
    return new HmmError(
      'EIO',
      `QP ${hex(this.qpn)} is in the error state${this.#error === null ? '' : ` (${this.#error.message})`}`,
    );
  }

  #wc(wrId: number, opcode: WcOpcode, status: WcStatusName, byteLen: number, error: HmmError | null) {
    return { wrId, qpn: this.qpn, opcode, status, byteLen, error, at: this.hca.machine.sched.now };
  }

  #complete(wr: IbSendWr, status: WcStatusName, byteLen: number, error: HmmError | null): void {
    this.sendCq.push(this.#wc(wr.wrId, wr.opcode, status, byteLen, error));
  }

  /** Moves to the error state: queued sends and receives complete with WR_FLUSH_ERR. */
  #toError(why: HmmError): void {
    if (this.#state === 'ERR') return;
    this.#state = 'ERR';
    this.#error = why;
    if (this.#pfToken >= 0) {
      // No packet will ask for this fault's outcome any more.
      this.hca.dropFault(this.#pfToken);
      this.#pfToken = -1;
    }
    const flush = this.#flushError();
    for (const wr of this.#sq.splice(0)) this.#complete(wr, WcStatus.WR_FLUSH_ERR, 0, flush);
    for (const wr of this.#rq.splice(0))
      this.recvCq.push(this.#wc(wr.wrId, 'RECV', WcStatus.WR_FLUSH_ERR, 0, flush));
  }

  /** The requester: runs the send queue in order. */
  async #requester(): Promise<void> {
    try {
      for (let wr = this.#sq.shift(); wr !== undefined; wr = this.#sq.shift()) {
        try {
          const n = await this.#execute(wr);
          this.#complete(wr, WcStatus.SUCCESS, n, null);
        } catch (e) {
          const te =
            e instanceof TransportError
              ? e
              : isHmmError(e)
                ? new TransportError(WcStatus.LOC_PROT_ERR, e, false)
                : null;
          if (te === null) throw e;
          this.#complete(wr, te.status, 0, te.error);
          this.#toError(te.error);
          if (te.remote && this.#remote !== null) this.#remote.#toError(te.error);
        }
      }
    } finally {
      this.#running = false;
    }
  }

  /** Executes one request; resolves to the bytes moved or throws a {@link TransportError}. */
  async #execute(wr: IbSendWr): Promise<number> {
    const hca = this.hca;
    const peer = this.#remote!;
    const len = wr.sge.length;
    const read = wr.opcode === 'RDMA_READ';
    const lmr = hca.mkey(wr.sge.lkey);
    if (lmr === undefined || lmr.pd !== this.pd) {
      throw new TransportError(
        WcStatus.LOC_PROT_ERR,
        new HmmError(
          'EINVAL',
          `QP ${hex(this.qpn)}: lkey ${hex(wr.sge.lkey)} is not an MR of the QP's protection domain`,
        ),
        false,
      );
    }
    const lerr = lmr.accessError(
      wr.sge.addr,
      len,
      read ? IbAccess.LOCAL_WRITE : 0,
      `QP ${hex(this.qpn)} local SGE`,
    );
    if (lerr !== null) throw new TransportError(WcStatus.LOC_PROT_ERR, lerr, false);
    await hca.machine.sched.sleep(hca.messageLatencyNs);
    this.#checkRunning();

    // The responder's buffer: the rkey's MR, or (SEND) the first posted RECV, waited for with RNR.
    let rmr: Mlx5Mr;
    let raddr: number;
    let recv: IbRecvWr | null = null;
    let rnrLeft = this.rnrRetry;
    if (wr.opcode === 'SEND') {
      while (peer.#state === 'RTS' && peer.#rq.length === 0) {
        peer.hca.counters.rnrNaksSent++; // the responder NAKs the SEND it has no RECV for
        rnrLeft = await this.#rnr(peer, rnrLeft, 'no RECV posted');
      }
      this.#checkPeer(peer);
      recv = peer.#rq.shift()!;
      const m = peer.hca.mkey(recv.sge.lkey);
      if (recv.sge.length < len) {
        const short = new HmmError(
          'EINVAL',
          `QP ${hex(peer.qpn)}: a ${len}-byte SEND does not fit the ${recv.sge.length}-byte RECV`,
        );
        peer.recvCq.push(peer.#wc(recv.wrId, 'RECV', WcStatus.LOC_LEN_ERR, 0, short));
        throw new TransportError(WcStatus.REM_INV_REQ_ERR, short, true);
      }
      // The RECV buffer's key and rights: a local protection error at the receiver.
      const bad =
        m === undefined || m.pd !== peer.pd
          ? new HmmError(
              'EINVAL',
              `QP ${hex(peer.qpn)}: RECV lkey ${hex(recv.sge.lkey)} is not an MR of its PD`,
            )
          : m.accessError(recv.sge.addr, len, IbAccess.LOCAL_WRITE, `QP ${hex(peer.qpn)} RECV SGE`);
      if (bad !== null) {
        peer.recvCq.push(peer.#wc(recv.wrId, 'RECV', WcStatus.LOC_PROT_ERR, 0, bad));
        throw new TransportError(WcStatus.REM_OP_ERR, bad, true);
      }
      rmr = m!;
      raddr = recv.sge.addr;
    } else {
      const m = peer.hca.mkey(wr.remote!.rkey);
      raddr = wr.remote!.addr;
      const bad =
        m === undefined || m.pd !== peer.pd
          ? new HmmError(
              'EACCES',
              `QP ${hex(peer.qpn)}: rkey ${hex(wr.remote!.rkey)} is not an MR of the responder's PD`,
            )
          : m.accessError(
              raddr,
              len,
              read ? IbAccess.REMOTE_READ : IbAccess.REMOTE_WRITE,
              `QP ${hex(peer.qpn)} rkey`,
            );
      if (bad !== null) throw new TransportError(WcStatus.REM_ACCESS_ERR, bad, true);
      rmr = m!;
    }

    // Packets. READ: responder memory → local; WRITE / SEND: local → responder memory.
    const content = hca.machine.mm.mem.content;
    const unknownLength = !read; // the responder cannot tell a WRITE's or SEND's length
    for (let off = 0; off < len;) {
      this.#checkRunning();
      const la = wr.sge.addr + off;
      const ra = raddr + off;
      const chunk = Math.min(hca.mtu, len - off, PAGE_SIZE - (la % PAGE_SIZE), PAGE_SIZE - (ra % PAGE_SIZE));
      const lvpn = Math.floor(la / PAGE_SIZE);
      const rvpn = Math.floor(ra / PAGE_SIZE);
      // Hit: no await. Miss: the WQE page fault.
      let lpfn = lmr.translate(lvpn, read);
      if (lpfn < 0) lpfn = await this.#localTranslate(lmr, lvpn, la, read, len - off);
      const rpfn = peer.#responderTranslate(rmr, rvpn, ra, !read, len - off, unknownLength);
      if (rpfn === RNR) {
        rnrLeft = await this.#rnr(peer, rnrLeft, 'page fault at the responder');
        continue;
      }
      rnrLeft = this.rnrRetry;
      try {
        hca.device.noteAccess(lmr.asid, lvpn, lpfn, read ? 'write' : 'read', chunk);
      } catch (e) {
        if (!isHmmError(e)) throw e;
        throw new TransportError(WcStatus.LOC_PROT_ERR, e, false);
      }
      try {
        peer.hca.device.noteAccess(rmr.asid, rvpn, rpfn, read ? 'read' : 'write', chunk);
      } catch (e) {
        if (!isHmmError(e)) throw e;
        throw new TransportError(WcStatus.REM_ACCESS_ERR, e, true);
      }
      const [src, srcOff, dst, dstOff] = read
        ? [rpfn, ra % PAGE_SIZE, lpfn, la % PAGE_SIZE]
        : [lpfn, la % PAGE_SIZE, rpfn, ra % PAGE_SIZE];
      content.read(src, srcOff, this.#scratch, 0, chunk);
      content.write(dst, dstOff, this.#scratch, 0, chunk);
      this.stats.packets++;
      hca.counters.wireBytes += chunk;
      off += chunk;
      const ns = Math.max(
        chunk / hca.wireGBs,
        hca.device.busNs(lpfn, chunk),
        peer.hca.device.busNs(rpfn, chunk),
      );
      await hca.machine.sched.sleep(ns);
    }
    if (recv !== null) peer.recvCq.push(peer.#wc(recv.wrId, 'RECV', WcStatus.SUCCESS, len, null));
    return len;
  }

  /** Throws WR_FLUSH_ERR if this QP left RTS meanwhile (destroyed, or its peer failed it). */
  #checkRunning(): void {
    if (this.#state !== 'RTS') throw new TransportError(WcStatus.WR_FLUSH_ERR, this.#flushError(), false);
  }

  /** Throws REM_ACCESS_ERR if the responder is in the error state. */
  #checkPeer(peer: Mlx5Qp): void {
    if (peer.#state !== 'RTS') {
      throw new TransportError(
        WcStatus.REM_ACCESS_ERR,
        peer.#error ?? new HmmError('EIO', `responder QP ${hex(peer.qpn)} is not ready to receive`),
        true,
      );
    }
  }

  /** One RNR NAK received: counts it, fails past the budget, else waits the responder's RNR timer. */
  async #rnr(peer: Mlx5Qp, left: number, why: string): Promise<number> {
    this.stats.rnrNaksReceived++;
    if (this.rnrRetry !== RNR_RETRY_INFINITE) {
      if (left <= 0) {
        throw new TransportError(
          WcStatus.RNR_RETRY_EXC_ERR,
          new HmmError(
            'ETIMEDOUT',
            `QP ${hex(this.qpn)}: the responder QP ${hex(peer.qpn)} answered RNR NAK ${this.rnrRetry + 1} times in a row (${why}); rnr_retry ${this.rnrRetry} exhausted`,
          ),
          false,
        );
      }
      left--;
    }
    await this.hca.machine.sched.sleep(peer.hca.minRnrTimerNs);
    this.#checkRunning();
    return left;
  }

  /**
   * The requester's own SGE page: its frame, faulting it in through a WQE page fault (the QP
   * stalls until resumed) when missing. LOC_PROT_ERR when the fault fails.
   */
  async #localTranslate(
    mr: Mlx5Mr,
    vpn: number,
    va: number,
    write: boolean,
    remaining: number,
  ): Promise<number> {
    const hca = this.hca;
    for (let round = 0; ; round++) {
      const pfn = mr.translate(vpn, write);
      if (pfn >= 0) return pfn;
      const miss = (why: string): TransportError =>
        new TransportError(
          WcStatus.LOC_PROT_ERR,
          new HmmError('EFAULT', `QP ${hex(this.qpn)}: local MR ${hex(mr.lkey)} ${why} at ${hex(va)}`, {
            address: va,
          }),
          false,
        );
      if (!mr.onDemand) throw miss('has no translation');
      if (round >= MLX5_MAX_LOCAL_FAULT_ROUNDS) throw miss(`still missed after ${round} page faults`);
      const token = hca.raisePageFault(PfKind.WQE, mr.lkey, va, remaining, write ? PfFlag.WRITE : 0);
      if (token < 0) {
        await hca.machine.sched.sleep(hca.messageLatencyNs); // EQ full: raise it again shortly
        continue;
      }
      this.stats.pageFaultStalls++;
      const err = await hca.waitResume(token);
      if (err !== null) throw new TransportError(WcStatus.LOC_PROT_ERR, err, false);
      this.#checkRunning();
    }
  }

  /**
   * Responder side of one packet: the frame of the target page, or {@link RNR} after raising a page
   * fault (or while one is pending). Throws REM_ACCESS_ERR when a fault failed or the MR cannot
   * fault.
   */
  #responderTranslate(
    mr: Mlx5Mr,
    vpn: number,
    va: number,
    write: boolean,
    remaining: number,
    unknownLength: boolean,
  ): number {
    const hca = this.hca;
    if (this.#state !== 'RTS') {
      throw new TransportError(
        WcStatus.REM_ACCESS_ERR,
        this.#error ?? new HmmError('EIO', `responder QP ${hex(this.qpn)} is not ready`),
        true,
      );
    }
    if (this.#pfToken >= 0) {
      const r = hca.takeResume(this.#pfToken);
      if (r === null) {
        hca.counters.rnrNaksSent++;
        return RNR;
      }
      this.#pfToken = -1;
      if (r.error !== null) throw new TransportError(WcStatus.REM_ACCESS_ERR, r.error, true);
    }
    const pfn = mr.translate(vpn, write);
    if (pfn >= 0) return pfn;
    if (!mr.onDemand) {
      throw new TransportError(
        WcStatus.REM_ACCESS_ERR,
        new HmmError('EFAULT', `responder MR ${hex(mr.lkey)} has no translation at ${hex(va)}`, {
          address: va,
        }),
        true,
      );
    }
    const token = hca.raisePageFault(
      PfKind.RDMA,
      mr.lkey,
      va,
      unknownLength ? 0 : remaining,
      (write ? PfFlag.WRITE : 0) | (unknownLength ? PfFlag.LENGTH_UNKNOWN : 0),
    );
    if (token >= 0) {
      this.#pfToken = token;
      this.stats.pageFaultStalls++;
    }
    hca.counters.rnrNaksSent++;
    return RNR;
  }
}

function checkSge(what: string, sge: IbSge | undefined): void {
  if (
    sge === undefined ||
    !Number.isSafeInteger(sge.addr) ||
    !(Number.isSafeInteger(sge.length) && sge.length > 0) ||
    !Number.isInteger(sge.lkey)
  ) {
    throw new HmmError('EINVAL', `${what}: the SGE needs an integer lkey, address and a positive length`);
  }
}
