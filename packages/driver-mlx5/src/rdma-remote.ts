/**
 * The remote side of an RDMA conversation, for tests and scenarios: a process of its own with a
 * pinned bounce buffer, a protection domain on a requester HCA, and an RC QP connected to a
 * responder QP in the target's PD (on the same HCA for loopback, or another). {@link read} and
 * {@link write} are one-sided RDMA READ / WRITE against any rkey of the target's PD; a failed
 * request rejects with its completion's error and the QPs are recreated for the next one, as an
 * application reconnects after a QP error.
 *
 * @module
 */
import { HmmError, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import type { Process } from '@hmm/core';
import { Mlx5Cq, WcStatus } from './cq.js';
import type { IbWc } from './cq.js';
import type { Mlx5Hca } from './hca.js';
import { IbAccess } from './mr.js';
import type { Mlx5Mr } from './mr.js';
import type { Mlx5Pd } from './pd.js';
import type { Mlx5Qp } from './qp.js';

/** Options of {@link RdmaRemote.create}. */
export interface RdmaRemoteOptions {
  /** The HCA the remote requester uses (default: the target's, loopback). */
  readonly hca?: Mlx5Hca;
  /** `rnr_retry` of the requester QP (default 7, without limit). */
  readonly rnrRetry?: number;
  /** Bounce-buffer bytes at first (grows on demand); default 1 MiB. */
  readonly bufferBytes?: number;
  /** Name of the remote process. */
  readonly name?: string;
}

/** A remote requester driving a target PD's memory regions. */
export class RdmaRemote {
  readonly process: Process;
  readonly pd: Mlx5Pd;
  readonly cq: Mlx5Cq;
  #buf = 0;
  #bufBytes = 0;
  #mr: Mlx5Mr | null = null;
  #qp: Mlx5Qp | null = null;
  #responder: Mlx5Qp | null = null;
  #nextWr = 1;
  #closed = false;
  /** Completions seen, by status. */
  readonly completions = new Map<string, number>();

  private constructor(
    readonly target: Mlx5Pd,
    readonly hca: Mlx5Hca,
    readonly rnrRetry: number,
    name: string,
  ) {
    this.process = hca.machine.createProcess(name);
    this.pd = hca.allocPd(this.process);
    this.cq = new Mlx5Cq(hca.machine.sched, `${name}.cq`);
  }

  /** Creates the remote and connects it to `target`. Runs inside a task. */
  static async create(target: Mlx5Pd, opts: RdmaRemoteOptions = {}): Promise<RdmaRemote> {
    const r = new RdmaRemote(target, opts.hca ?? target.hca, opts.rnrRetry ?? 7, opts.name ?? 'rdma-remote');
    await r.#grow(opts.bufferBytes ?? 1024 * 1024);
    r.#connect();
    return r;
  }

  /** The requester QP now. */
  get qp(): Mlx5Qp {
    return this.#qp!;
  }

  /** The responder QP (in the target's PD) now. */
  get responder(): Mlx5Qp {
    return this.#responder!;
  }

  #connect(): void {
    this.#qp?.destroy();
    this.#responder?.destroy();
    this.#qp = this.pd.createQp({ sendCq: this.cq, rnrRetry: this.rnrRetry });
    const rcq = new Mlx5Cq(this.target.hca.machine.sched, 'responder.cq');
    this.#responder = this.target.createQp({ sendCq: rcq });
    this.#qp.connect(this.#responder);
  }

  /** Makes the pinned bounce buffer at least `bytes` long. */
  async #grow(bytes: number): Promise<void> {
    if (bytes <= this.#bufBytes) return;
    const len = Math.ceil(bytes / PAGE_SIZE) * PAGE_SIZE;
    if (this.#mr !== null) {
      await this.pd.deregMr(this.#mr);
      await this.process.munmap(this.#buf, this.#bufBytes);
    }
    this.#buf = await this.process.mmap({
      length: len,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    this.#bufBytes = len;
    this.#mr = await this.pd.regMr(this.#buf, len, IbAccess.LOCAL_WRITE);
  }

  async #post(opcode: 'RDMA_READ' | 'RDMA_WRITE', rkey: number, addr: number, len: number): Promise<IbWc> {
    if (this.#closed) throw new HmmError('EBADF', 'rdma remote: used after close');
    if (this.#qp!.state !== 'RTS' || this.#responder!.state !== 'RTS') this.#connect();
    const wrId = this.#nextWr++;
    this.#qp!.postSend({
      wrId,
      opcode,
      sge: { lkey: this.#mr!.lkey, addr: this.#buf, length: len },
      remote: { rkey, addr },
    });
    const wc = await this.cq.waitFor(wrId);
    this.completions.set(wc.status, (this.completions.get(wc.status) ?? 0) + 1);
    if (wc.status !== WcStatus.SUCCESS) {
      throw wc.error ?? new HmmError('EIO', `rdma remote: ${opcode} completed with ${wc.status}`);
    }
    return wc;
  }

  /**
   * RDMA READ of `len` bytes at `addr` through `rkey` (one message). Rejects with the failed
   * completion's error (EFAULT, EPERM, EACCES, ETIMEDOUT for an exhausted RNR budget, ...).
   */
  async read(rkey: number, addr: number, len: number): Promise<Uint8Array> {
    await this.#grow(len);
    await this.#post('RDMA_READ', rkey, addr, len);
    return this.process.read(this.#buf, len);
  }

  /** RDMA WRITE of `data` at `addr` through `rkey` (one message); errors as {@link read}. */
  async write(rkey: number, addr: number, data: Uint8Array): Promise<void> {
    await this.#grow(data.length);
    await this.process.write(this.#buf, data);
    await this.#post('RDMA_WRITE', rkey, addr, data.length);
  }

  /** Destroys the QPs, deregisters the buffer and ends the remote process. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#responder?.destroy();
    await this.pd.dealloc();
    await this.process.exit();
  }
}
