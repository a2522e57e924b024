/**
 * The mlx5-like RDMA NIC (the HCA, `struct mlx5_ib_dev`): a {@link SimDevice} whose device MMU
 * contexts are the translation tables of memory keys (one ASID per MR: its MTT, or for the implicit
 * MR the KSM and its children collapsed), the page-fault event queue, the memory-key table
 * (`odp_mkeys`), the queue pairs, and the wire. drivers.md §2.
 *
 * Defaults model a ConnectX-5 on 100 Gb/s EDR InfiniBand: 4096-byte MTU, 12.5 GB/s line rate, a
 * 4096-entry page-fault EQ, and a 0.64 ms minimum RNR NAK timer (the IB encoding 12 most
 * applications set; the value is an estimate of common practice, [E]).
 *
 * @module
 */
import { Completion, HmmError, SimDevice, hex } from '@hmm/core';
import type { Machine, PciEndpoint, PciTopology, Process } from '@hmm/core';
import { MLX5_PF_EQ_ENTRIES, PageFaultEq } from './eq.js';
import type { PfKindId } from './eq.js';
import type { Mlx5Mr } from './mr.js';
import { startPageFaultWork } from './odp.js';
import { Mlx5Pd } from './pd.js';
import type { Mlx5Qp } from './qp.js';

/** Default line rate, GB/s: 100 Gb/s EDR InfiniBand (ConnectX-5). */
export const MLX5_DEFAULT_WIRE_GBS = 12.5;

/** Default path MTU, bytes (IB MTU 4096). */
export const MLX5_DEFAULT_MTU = 4096;

/** Default minimum RNR NAK timer, ns: IB encoding 12 = 0.64 ms ([E]: what perftest-style apps set). */
export const MLX5_DEFAULT_MIN_RNR_TIMER_NS = 640_000;

/** One-way wire and HCA pipeline latency of a message, ns ([E]: ~1 µs RDMA latency class). */
export const MLX5_DEFAULT_MESSAGE_LATENCY_NS = 1000;

/**
 * Added time per translation entry a UMR writes, ns: an 8-byte MTT entry fetched by the HCA over
 * PCIe at about 12 GB/s, rounded up ([E]); the command's fixed cost is the device default.
 */
export const MLX5_UMR_PER_ENTRY_NS = 1;

/** Options of an {@link Mlx5Hca}. */
export interface Mlx5HcaOptions {
  /** Device name; default `mlx5_<id>`. */
  readonly name?: string;
  /** Line rate, GB/s; default {@link MLX5_DEFAULT_WIRE_GBS}. */
  readonly wireGBs?: number;
  /** Path MTU, bytes (a power of two from 256 to 4096); default {@link MLX5_DEFAULT_MTU}. */
  readonly mtu?: number;
  /** Minimum RNR NAK timer of this HCA's responders, ns; default {@link MLX5_DEFAULT_MIN_RNR_TIMER_NS}. */
  readonly minRnrTimerNs?: number;
  /** Per-message latency, ns; default {@link MLX5_DEFAULT_MESSAGE_LATENCY_NS}. */
  readonly messageLatencyNs?: number;
  /** Page-fault EQ entries; default 4096. */
  readonly eqEntries?: number;
  /** Place on a PCI bus (needed to import peer memory: the p2p distance is computed from it). */
  readonly pci?: { readonly topology: PciTopology; readonly endpoint: PciEndpoint };
}

function positive(name: string, what: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) {
    throw new HmmError('EINVAL', `mlx5 ${name}: ${what} ${String(v)} is not a positive number`);
  }
  return v;
}

/** Counters of an HCA (the `rdma statistic` device-wide ODP counters). */
export interface Mlx5HcaStats {
  /** Page-fault EQEs posted by the device. */
  readonly pageFaultEvents: number;
  /** Page-fault EQEs the driver resolved (resumed without error). */
  readonly pageFaultsResolved: number;
  /** Page faults resumed with an error (the QP went to the error state). */
  readonly pageFaultErrors: number;
  /** EQEs refused because the EQ was full. */
  readonly eqOverflows: number;
  /** RNR NAKs this HCA's responders sent. */
  readonly rnrNaksSent: number;
  /** Bytes its requesters moved on the wire (both directions). */
  readonly wireBytes: number;
}

/** A page fault waiting for its `PAGE_FAULT_RESUME`. */
interface PendingFault {
  resolved: boolean;
  /** Nobody will take the outcome: forget the fault once resumed. */
  dropped: boolean;
  error: HmmError | null;
  readonly done: Completion;
}

/** One RDMA NIC. Create MRs and QPs through a protection domain ({@link Mlx5Hca.allocPd}). */
export class Mlx5Hca {
  readonly name: string;
  /** The device: MMU contexts are memory-key translation tables, written by UMR (map/unmap commands). */
  readonly device: SimDevice;
  readonly eq: PageFaultEq;
  readonly wireGBs: number;
  readonly mtu: number;
  readonly minRnrTimerNs: number;
  readonly messageLatencyNs: number;
  readonly pci: { readonly topology: PciTopology; readonly endpoint: PciEndpoint } | null;
  /** Memory keys by key (`odp_mkeys` and the plain mkeys alike). */
  readonly #mkeys = new Map<number, Mlx5Mr>();
  readonly #qps = new Map<number, Mlx5Qp>();
  #nextMkeyIndex = 1;
  #mkeyVariant = 0;
  #nextQpn = 0x100;
  readonly #faults = new Map<number, PendingFault>();
  #nextToken = 1;
  #removed = false;
  /** @internal counters written by the fault path and the QPs. */
  readonly counters = {
    pageFaultsResolved: 0,
    pageFaultErrors: 0,
    rnrNaksSent: 0,
    wireBytes: 0,
  };

  constructor(
    readonly machine: Machine,
    opts: Mlx5HcaOptions = {},
  ) {
    this.device = new SimDevice(machine.mm, {
      latency: { mapPerEntryNs: MLX5_UMR_PER_ENTRY_NS },
      ...(opts.name === undefined ? {} : { name: opts.name }),
      ...(opts.pci === undefined ? {} : { pci: opts.pci }),
    });
    this.name = opts.name ?? `mlx5_${this.device.id}`;
    this.pci = opts.pci ?? null;
    this.wireGBs = positive(this.name, 'wireGBs', opts.wireGBs ?? MLX5_DEFAULT_WIRE_GBS);
    const mtu = opts.mtu ?? MLX5_DEFAULT_MTU;
    if (![256, 512, 1024, 2048, 4096].includes(mtu)) {
      throw new HmmError('EINVAL', `mlx5 ${this.name}: MTU ${String(mtu)} is not an IB MTU (256…4096)`);
    }
    this.mtu = mtu;
    this.minRnrTimerNs = positive(
      this.name,
      'minRnrTimerNs',
      opts.minRnrTimerNs ?? MLX5_DEFAULT_MIN_RNR_TIMER_NS,
    );
    const lat = opts.messageLatencyNs ?? MLX5_DEFAULT_MESSAGE_LATENCY_NS;
    if (!(Number.isFinite(lat) && lat >= 0)) {
      throw new HmmError('EINVAL', `mlx5 ${this.name}: messageLatencyNs ${String(lat)} is negative`);
    }
    this.messageLatencyNs = lat;
    this.eq = new PageFaultEq(machine.sched, opts.eqEntries ?? MLX5_PF_EQ_ENTRIES, `${this.name}.pf_eq`);
    startPageFaultWork(this);
  }

  /** `ibv_alloc_pd` for `process`: MRs and QPs are created through it. ENODEV once removed. */
  allocPd(process: Process): Mlx5Pd {
    return new Mlx5Pd(this, process);
  }

  /** True once {@link remove} ran. */
  get removed(): boolean {
    return this.#removed;
  }

  /** Throws ENODEV once removed. */
  checkAlive(what: string): void {
    if (this.#removed)
      throw new HmmError('ENODEV', `mlx5 ${this.name}: ${what} after the device was removed`);
  }

  /** The MR of `key` (an lkey or rkey), or undefined (`xa_load(&dev->odp_mkeys, ...)`). */
  mkey(key: number): Mlx5Mr | undefined {
    return this.#mkeys.get(key >>> 0);
  }

  /** @internal A fresh memory key (index in the upper 24 bits, a variant byte below). */
  allocMkey(mr: Mlx5Mr): number {
    const key = ((this.#nextMkeyIndex++ << 8) | (this.#mkeyVariant++ & 0xff)) >>> 0;
    this.#mkeys.set(key, mr);
    return key;
  }

  /** @internal Drops a memory key; EINVAL if it is not live (destroyed twice). */
  freeMkey(key: number): void {
    if (!this.#mkeys.delete(key >>> 0)) {
      throw new HmmError('EINVAL', `mlx5 ${this.name}: mkey ${hex(key)} is not live (destroyed twice?)`);
    }
  }

  /** Live memory keys. */
  get mkeyCount(): number {
    return this.#mkeys.size;
  }

  /** @internal Registers a QP and returns its number. */
  addQp(qp: Mlx5Qp): number {
    const qpn = this.#nextQpn++;
    this.#qps.set(qpn, qp);
    return qpn;
  }

  /** @internal */
  removeQp(qpn: number): void {
    this.#qps.delete(qpn);
  }

  /** The QP numbered `qpn`, or undefined. */
  qp(qpn: number): Mlx5Qp | undefined {
    return this.#qps.get(qpn);
  }

  /**
   * The device raises a page fault: writes the EQE and returns its resume token, or -1 when the EQ
   * is full (the caller raises it again later). ENODEV once removed.
   */
  raisePageFault(kind: PfKindId, mkey: number, va: number, bytes: number, flags: number): number {
    this.checkAlive('page fault');
    const token = this.#nextToken++;
    if (!this.eq.post(token, kind, mkey, va, bytes, flags)) return -1;
    this.#faults.set(token, {
      resolved: false,
      dropped: false,
      error: null,
      done: new Completion(this.machine.sched, `${this.name}.pf${token}`),
    });
    return token;
  }

  /**
   * `PAGE_FAULT_RESUME` (`mlx5_ib_page_fault_resume`): the driver ends fault `token`, with an error
   * when it could not map the pages (the stalled queue pair then goes to the error state).
   */
  resume(token: number, error: HmmError | null): void {
    const f = this.#faults.get(token);
    if (f === undefined || f.resolved) {
      throw new HmmError(
        'EINVAL',
        `mlx5 ${this.name}: PAGE_FAULT_RESUME of unknown or resumed token ${token}`,
      );
    }
    f.resolved = true;
    f.error = error;
    if (error === null) this.counters.pageFaultsResolved++;
    else this.counters.pageFaultErrors++;
    f.done.completeAll();
    if (f.dropped) this.#faults.delete(token);
  }

  /**
   * The stalled side gave up on fault `token` (its QP went to the error state): its outcome is
   * forgotten once the driver resumes it (at once if it already has).
   */
  dropFault(token: number): void {
    const f = this.#faults.get(token);
    if (f === undefined) return;
    if (f.resolved) this.#faults.delete(token);
    else f.dropped = true;
  }

  /** Page-fault tokens the HCA still tracks (pending, or resumed and not yet taken). */
  get trackedFaults(): number {
    return this.#faults.size;
  }

  /** The state of fault `token`: null while unresolved, else `{ error }` (and the token is retired). */
  takeResume(token: number): { readonly error: HmmError | null } | null {
    const f = this.#faults.get(token);
    if (f === undefined) throw new HmmError('EINVAL', `mlx5 ${this.name}: unknown page-fault token ${token}`);
    if (!f.resolved) return null;
    this.#faults.delete(token);
    return { error: f.error };
  }

  /** Waits until fault `token` is resumed; returns its error (null on success) and retires it. */
  async waitResume(token: number): Promise<HmmError | null> {
    const f = this.#faults.get(token);
    if (f === undefined) throw new HmmError('EINVAL', `mlx5 ${this.name}: unknown page-fault token ${token}`);
    await f.done.wait();
    this.#faults.delete(token);
    return f.error;
  }

  /** Faults raised and not yet resumed. */
  get pendingFaults(): number {
    let n = 0;
    for (const f of this.#faults.values()) if (!f.resolved) n++;
    return n;
  }

  /** Device-wide counters. */
  stats(): Mlx5HcaStats {
    return {
      pageFaultEvents: this.eq.posted,
      pageFaultsResolved: this.counters.pageFaultsResolved,
      pageFaultErrors: this.counters.pageFaultErrors,
      eqOverflows: this.eq.overflows,
      rnrNaksSent: this.counters.rnrNaksSent,
      wireBytes: this.counters.wireBytes,
    };
  }

  /**
   * Hot unplug: every QP goes to the error state (outstanding work flushed), every MR is
   * deregistered (ODP notifiers removed, pins dropped, peer mappings given back), the fault EQ stops
   * and the device is removed. Idempotent. Runs inside a task.
   */
  async remove(): Promise<void> {
    if (this.#removed) return;
    for (const qp of [...this.#qps.values()]) qp.destroy();
    for (const mr of [...new Set(this.#mkeys.values())]) {
      if (!mr.destroyed) await mr.dereg();
    }
    this.#removed = true;
    this.eq.stop();
    const gone = new HmmError('ENODEV', `mlx5 ${this.name}: device removed with the page fault pending`);
    for (const [token, f] of this.#faults) if (!f.resolved) this.resume(token, gone);
    await this.device.remove();
  }
}
