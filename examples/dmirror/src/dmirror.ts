/**
 * A third-party-style driver written only against the public API of `@hmm/core`: a simulated copy
 * of the kernel's HMM test device `dmirror` (lib/test_hmm.c). One {@link Dmirror} is one open file
 * of `/dev/hmm_dmirror<N>`: it binds the opener's address space, subscribes one interval notifier
 * over the whole user address space and mirrors pages into the device's page table (one ASID of a
 * {@link SimDevice}) on demand.
 *
 * Commands (the uapi's `struct hmm_dmirror_cmd`: addr, npages, out cpages, out faults):
 * - {@link Dmirror.read} (`HMM_DMIRROR_READ`): the device copies `npages` pages at `addr` out.
 * - {@link Dmirror.write} (`HMM_DMIRROR_WRITE`): the device copies a buffer in.
 * - {@link Dmirror.snapshot} (`HMM_DMIRROR_SNAPSHOT`): one byte per page describing the CPU page
 *   table, without faulting.
 *
 * Device page table: the device's MMU of this mirror's ASID plays dmirror's xarray (vpn → page,
 * tag none = read-only, WRITE = writable). It is only changed through the device's command queue.
 *
 * Locking (as dmirror): the mirror `mutex` is the driver lock of the sequence protocol. Faults
 * commit device entries under it after `mmuIntervalReadRetry`; the invalidate callback takes it,
 * calls `mmuIntervalSetSeq`, submits the unmap and **waits for the unmap's fence before unlocking
 * and returning**: so once the callback has returned the device cannot reach the old pages, and a
 * command that holds the mutex never sees an entry whose unmap is still in the queue.
 *
 * Not modelled (yet): device memory (MIGRATE_TO_DEV/SYS, RELEASE, the DEV_PRIVATE/COHERENT snapshot
 * values), EXCLUSIVE / CHECK_EXCLUSIVE, FLAGS, THP map orders (PMD/PUD bits).
 *
 * @module
 */
import {
  DevPerm,
  HmmError,
  HmmPfn,
  MMAP_MIN_ADDR,
  Mutex,
  NotifyEvent,
  PAGE_SIZE,
  TASK_SIZE,
  ZERO_PFN,
  hex,
  hmmPfnFlags,
  hmmPfnToPfn,
  hmmRangeFaultLoop,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
} from '@hmm/core';
import { SnapshotByte } from '@hmm/conformance';
import type {
  DeviceFault,
  HmmMirror,
  HmmRange,
  Machine,
  MmuIntervalNotifier,
  MmuIntervalNotifierOps,
  MmuNotifierRange,
  Process,
  SimDevice,
} from '@hmm/core';

/** What READ / WRITE report besides their return value (`cmd.cpages`, `cmd.faults`). */
export interface DmirrorCmdResult {
  /** Pages copied. */
  readonly cpages: number;
  /** Device fault rounds (`dmirror_fault` calls), normally 1 for a cold range. */
  readonly faults: number;
}

/** First byte the mirror's notifier covers (nothing can be mapped below `mmap_min_addr`). */
export const DMIRROR_NOTIFIER_START = MMAP_MIN_ADDR;
/** One past the last byte covered: the whole 47-bit user address space. */
export const DMIRROR_NOTIFIER_END = TASK_SIZE;
/** Pages faulted per `hmm_range_fault` call (dmirror's on-stack `pfns[64]`). */
export const DMIRROR_FAULT_CHUNK = 64;

/** Per device: the mirrors bound to each ASID, for the shared fault handler. */
const registry = new WeakMap<SimDevice, Map<number, Dmirror>>();

function mirrorsOf(device: SimDevice): Map<number, Dmirror> {
  let map = registry.get(device);
  if (map === undefined) {
    map = new Map();
    registry.set(device, map);
    const mirrors = map;
    // One handler per device (the fault-buffer interrupt), dispatching by ASID.
    device.setFaultHandler((fault: DeviceFault) => {
      const mirror = mirrors.get(fault.asid);
      if (mirror === undefined) {
        return Promise.reject(
          new HmmError('EFAULT', `dmirror: device fault on asid ${fault.asid}, which no open mirror owns`, {
            address: fault.address,
          }),
        );
      }
      return mirror.handleDeviceFault(fault);
    });
  }
  return map;
}

function allocateAsid(device: SimDevice, mirrors: Map<number, Dmirror>): number {
  const used = new Set(device.asids());
  for (let asid = 1; ; asid++) if (!mirrors.has(asid) && !used.has(asid)) return asid;
}

/** One open mirror: a process's address space bound to a device ASID. */
/** The fault loop a mirror runs (`hmmRangeFaultLoop` unless a test swaps in a broken one). */
export type FaultLoop = typeof hmmRangeFaultLoop;

/** Options of {@link Dmirror.open}. */
export interface DmirrorOptions {
  /** Replaces the sequence-protocol loop; only tests use it, to build deliberately broken copies. */
  readonly faultLoop?: FaultLoop;
}

export class Dmirror implements HmmMirror {
  /** The mirror mutex (`dmirror->mutex`): the driver lock of the sequence protocol. */
  readonly mutex: Mutex;
  /** The whole-address-space subscription (`dmirror->notifier`). */
  readonly notifier: MmuIntervalNotifier;
  #faultLoop: FaultLoop = hmmRangeFaultLoop;
  #lowVpn = Infinity;
  #highVpn = -Infinity;
  #closed = false;

  private constructor(
    readonly machine: Machine,
    readonly device: SimDevice,
    readonly process: Process,
    /** The device address-space context of this mirror. */
    readonly asid: number,
  ) {
    this.mutex = new Mutex(machine.sched, `dmirror:${device.name}:asid${asid}`);
    const ops: MmuIntervalNotifierOps = {
      invalidate: (sub, range, curSeq) => this.#invalidate(sub, range, curSeq),
    };
    this.notifier = mmuIntervalNotifierInsert(
      process.mm,
      DMIRROR_NOTIFIER_START,
      DMIRROR_NOTIFIER_END - DMIRROR_NOTIFIER_START,
      ops,
    );
  }

  /**
   * `open("/dev/hmm_dmirror<N>")` by `process`: binds its address space and allocates an ASID on
   * `device`. ESRCH (from the notifier insert) if the process has exited.
   */
  static async open(
    machine: Machine,
    device: SimDevice,
    process: Process,
    opts: DmirrorOptions = {},
  ): Promise<Dmirror> {
    const mirrors = mirrorsOf(device);
    const asid = allocateAsid(device, mirrors);
    const mirror = new Dmirror(machine, device, process, asid);
    if (opts.faultLoop !== undefined) mirror.#faultLoop = opts.faultLoop;
    mirrors.set(asid, mirror);
    return mirror;
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /** `[low, high)` vpns that may hold device entries (empty: low ≥ high). */
  get mappedSpan(): readonly [number, number] {
    return this.#lowVpn > this.#highVpn ? [0, 0] : [this.#lowVpn, this.#highVpn + 1];
  }

  /**
   * `HMM_DMIRROR_READ`: the device reads `npages` pages at `addr` (`dmirror_read`). Missing device
   * entries are faulted in from the first missing page to the end, one round per miss.
   */
  async read(addr: number, npages: number): Promise<DmirrorCmdResult & { data: Uint8Array }> {
    this.#checkCmd('READ', addr, npages);
    const end = addr + npages * PAGE_SIZE;
    const data = new Uint8Array(npages * PAGE_SIZE);
    let cpages = 0;
    let faults = 0;
    for (;;) {
      await this.mutex.lock();
      try {
        cpages = await this.#doCopy(addr, end, cpages, data, 'read');
      } finally {
        this.mutex.unlock();
      }
      if (cpages === npages) return { data, cpages, faults };
      await this.#fault(addr + cpages * PAGE_SIZE, end, false);
      faults++;
    }
  }

  /** `HMM_DMIRROR_WRITE`: the device writes `data` (whole pages) at `addr` (`dmirror_write`). */
  async write(addr: number, data: Uint8Array): Promise<DmirrorCmdResult> {
    if (!(data instanceof Uint8Array) || data.length % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', 'dmirror WRITE: the buffer must be a Uint8Array of whole pages');
    }
    const npages = data.length / PAGE_SIZE;
    this.#checkCmd('WRITE', addr, npages);
    const end = addr + data.length;
    let cpages = 0;
    let faults = 0;
    for (;;) {
      await this.mutex.lock();
      try {
        cpages = await this.#doCopy(addr, end, cpages, data, 'write');
      } finally {
        this.mutex.unlock();
      }
      if (cpages === npages) return { cpages, faults };
      await this.#fault(addr + cpages * PAGE_SIZE, end, true);
      faults++;
    }
  }

  /**
   * `HMM_DMIRROR_SNAPSHOT`: one {@link SnapshotByte} byte per page from `hmm_range_fault` without
   * fault flags, each chunk under its own temporary interval notifier (`dmirror_snapshot`).
   */
  async snapshot(addr: number, npages: number): Promise<Uint8Array> {
    this.#checkCmd('SNAPSHOT', addr, npages);
    const end = addr + npages * PAGE_SIZE;
    const out = new Uint8Array(npages);
    for (let a = addr; a < end;) {
      const next = Math.min(end, a + DMIRROR_FAULT_CHUNK * PAGE_SIZE);
      const base = (a - addr) / PAGE_SIZE;
      if (a < DMIRROR_NOTIFIER_START) {
        // Nothing can be mapped below mmap_min_addr: a hole.
        const holeEnd = Math.min(next, DMIRROR_NOTIFIER_START);
        out.fill(SnapshotByte.ERROR, base, base + (holeEnd - a) / PAGE_SIZE);
        a = holeEnd;
        continue;
      }
      await this.#snapshotChunk(a, next, out, base);
      a = next;
    }
    return out;
  }

  /**
   * `release()` of the file: removes the notifier (waiting out a running invalidation), then clears
   * every device entry of the ASID. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await mmuIntervalNotifierRemove(this.notifier);
    await this.mutex.lock();
    try {
      if (!this.device.removed) await this.device.queue.submit({ op: 'unmap-all', asid: this.asid }).wait();
      this.#lowVpn = Infinity;
      this.#highVpn = -Infinity;
    } finally {
      this.mutex.unlock();
    }
    registry.get(this.device)?.delete(this.asid);
  }

  /**
   * The device's fault handler for this ASID: faults the page in through the same path as READ /
   * WRITE. Atomic accesses need EXCLUSIVE, which is not modelled: EFAULT.
   * @internal Called by the per-device dispatcher.
   */
  /** {@link HmmMirror.handleFault}: serves a device fault of this mirror's ASID. */
  handleFault(fault: DeviceFault): Promise<void> {
    return this.handleDeviceFault(fault);
  }

  /** {@link HmmMirror.invalidate}: the interval notifier's callback. */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean | Promise<boolean> {
    return this.#invalidate(sub, range, curSeq);
  }

  /** {@link HmmMirror.release}: the same as {@link close}. */
  release(): Promise<void> {
    return this.close();
  }

  async handleDeviceFault(fault: DeviceFault): Promise<void> {
    if (fault.access === 'atomic') {
      throw new HmmError(
        'EFAULT',
        `dmirror: atomic device access at ${hex(fault.address)} needs an exclusive mapping (not modelled)`,
        { address: fault.address },
      );
    }
    if (this.#closed) {
      throw new HmmError('EFAULT', `dmirror: device fault at ${hex(fault.address)} after close`, {
        address: fault.address,
      });
    }
    if (fault.address < DMIRROR_NOTIFIER_START) {
      throw new HmmError('EFAULT', `dmirror: device fault at ${hex(fault.address)} below mmap_min_addr`, {
        address: fault.address,
      });
    }
    await this.#fault(fault.address, fault.address + PAGE_SIZE, fault.access === 'write');
  }

  // ---------------------------------------------------------------------------------------------

  /** dmirror_ioctl's checks: page-aligned addr, npages > 0, no overflow; the mm must be alive. */
  #checkCmd(what: string, addr: number, npages: number): void {
    if (this.#closed) throw new HmmError('EBADF', `dmirror ${what}: the mirror is closed`);
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', `dmirror ${what}: address ${String(addr)} is not page aligned`);
    }
    if (!Number.isSafeInteger(npages) || npages <= 0 || addr + npages * PAGE_SIZE > TASK_SIZE) {
      throw new HmmError(
        'EINVAL',
        `dmirror ${what}: ${String(npages)} pages at ${hex(addr)} is empty or overflows the address space`,
      );
    }
    // mmget_not_zero failed: the process is exiting or gone.
    if (this.process.exited) throw new HmmError('EINVAL', `dmirror ${what}: the mm has exited`);
  }

  /**
   * dmirror_do_read / dmirror_do_write, under the mutex: copies page by page from page `from`
   * through the device, stopping at the first page without the needed device entry. Returns the
   * number of pages copied so far. A mapped page never faults, so this never sleeps.
   */
  async #doCopy(
    addr: number,
    end: number,
    from: number,
    buf: Uint8Array,
    kind: 'read' | 'write',
  ): Promise<number> {
    const mmu = this.device.mmu(this.asid);
    const need = kind === 'read' ? DevPerm.READ : DevPerm.WRITE;
    let done = from;
    for (let a = addr + from * PAGE_SIZE; a < end; a += PAGE_SIZE, done++) {
      if ((mmu.lookup(a / PAGE_SIZE) & need) === 0) break;
      const off = done * PAGE_SIZE;
      if (kind === 'read') buf.set(await this.device.read(this.asid, a, PAGE_SIZE), off);
      else await this.device.write(this.asid, a, buf.subarray(off, off + PAGE_SIZE));
    }
    return done;
  }

  /**
   * dmirror_fault: faults [start, end) into the device table in chunks of up to 64 pages, each with
   * the sequence-protocol loop (1 s budget, EBUSY after it). Errors of hmm_range_fault pass through.
   */
  async #fault(start: number, end: number, write: boolean): Promise<void> {
    if (start < DMIRROR_NOTIFIER_START) {
      throw new HmmError('EFAULT', `dmirror: ${hex(start)} is below mmap_min_addr`, { address: start });
    }
    const defaultFlags = HmmPfn.REQ_FAULT | (write ? HmmPfn.REQ_WRITE : 0);
    for (let a = start; a < end;) {
      const next = Math.min(end, a + DMIRROR_FAULT_CHUNK * PAGE_SIZE);
      await this.#faultLoop({
        notifier: this.notifier,
        start: a,
        end: next,
        defaultFlags,
        devPrivateOwner: this.device,
        driverLock: this.mutex,
        commit: (range) => this.#commit(range, write),
      });
      a = next;
    }
  }

  /** dmirror_do_fault, under the mutex: programs the device from `range.hmmPfns`. */
  async #commit(range: HmmRange, write: boolean): Promise<void> {
    const n = range.hmmPfns.length;
    const vpns = new Float64Array(n);
    const pfns = new Uint32Array(n);
    const perms = new Uint8Array(n);
    const firstVpn = range.start / PAGE_SIZE;
    for (let i = 0; i < n; i++) {
      const word = range.hmmPfns[i]!;
      const flags = hmmPfnFlags(word);
      if ((flags & HmmPfn.ERROR) !== 0 || (flags & HmmPfn.VALID) === 0) {
        // hmm_range_fault with REQ_FAULT returns only valid words; the kernel WARNs here.
        throw new HmmError(
          'EFAULT',
          `dmirror: hmm_range_fault left ${hex(range.start + i * PAGE_SIZE)} invalid`,
        );
      }
      const writable = (flags & HmmPfn.WRITE) !== 0;
      if (write && !writable) {
        throw new HmmError(
          'EFAULT',
          `dmirror: write fault left ${hex(range.start + i * PAGE_SIZE)} read-only`,
        );
      }
      vpns[i] = firstVpn + i;
      pfns[i] = hmmPfnToPfn(word);
      perms[i] = DevPerm.READ | (writable ? DevPerm.WRITE : 0);
    }
    if (n === 0) return;
    this.#lowVpn = Math.min(this.#lowVpn, firstVpn);
    this.#highVpn = Math.max(this.#highVpn, firstVpn + n - 1);
    await this.device.queue.submit({ op: 'map', asid: this.asid, vpns, pfns, perms }).wait();
  }

  /** dmirror_range_snapshot: one chunk under a temporary notifier that only bumps its sequence. */
  async #snapshotChunk(start: number, end: number, out: Uint8Array, base: number): Promise<void> {
    const temp = mmuIntervalNotifierInsert(this.process.mm, start, end - start, {
      invalidate: (sub, range, curSeq) => {
        if (range.blockable) {
          return this.mutex.lock().then(() => {
            mmuIntervalSetSeq(sub, curSeq);
            this.mutex.unlock();
            return true;
          });
        }
        if (!this.mutex.tryLock()) return false;
        mmuIntervalSetSeq(sub, curSeq);
        this.mutex.unlock();
        return true;
      },
    });
    try {
      await hmmRangeFaultLoop({
        notifier: temp,
        start,
        end,
        defaultFlags: 0,
        devPrivateOwner: this.device,
        driverLock: this.mutex,
        commit: (range) => {
          for (let i = 0; i < range.hmmPfns.length; i++) out[base + i] = mkentry(range.hmmPfns[i]!);
        },
      });
    } finally {
      await mmuIntervalNotifierRemove(temp);
    }
  }

  /**
   * dmirror_interval_invalidate. Blockable: lock, set the sequence, unmap the overlap of the range
   * with the mapped span, wait for the unmap's fence, unlock. Non-blockable (OOM reaper): never
   * sleeps: false if the mutex is held; and, unlike the kernel's dmirror whose xarray erase needs
   * no sleep, false too if device entries must go, since a device unmap completes only through a
   * fence (sleeping). With nothing mapped in the range it succeeds at once.
   */
  #invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean | Promise<boolean> {
    if (range.event === NotifyEvent.MIGRATE && range.owner === this.device) return true;
    const lo = Math.max(Math.floor(range.start / PAGE_SIZE), this.#lowVpn);
    const hi = Math.min(Math.ceil(range.end / PAGE_SIZE), this.#highVpn + 1);
    if (!range.blockable) {
      if (!this.mutex.tryLock()) return false;
      try {
        if (lo < hi && this.#hasEntries(lo, hi)) return false;
        mmuIntervalSetSeq(sub, curSeq);
        return true;
      } finally {
        this.mutex.unlock();
      }
    }
    return this.#invalidateBlocking(sub, range, curSeq);
  }

  async #invalidateBlocking(
    sub: MmuIntervalNotifier,
    range: MmuNotifierRange,
    curSeq: number,
  ): Promise<boolean> {
    await this.mutex.lock();
    try {
      mmuIntervalSetSeq(sub, curSeq);
      // Recompute under the lock: a commit may have widened the span while we waited.
      const lo = Math.max(Math.floor(range.start / PAGE_SIZE), this.#lowVpn);
      const hi = Math.min(Math.ceil(range.end / PAGE_SIZE), this.#highVpn + 1);
      if (lo < hi && !this.device.removed) {
        const fence = this.device.queue.submit({ op: 'unmap', asid: this.asid, startVpn: lo, endVpn: hi });
        if (lo <= this.#lowVpn && hi > this.#highVpn) {
          this.#lowVpn = Infinity;
          this.#highVpn = -Infinity;
        }
        // Before unlocking: no command holding the mutex may see an entry whose unmap is queued.
        await fence.wait();
      }
      return true;
    } finally {
      this.mutex.unlock();
    }
  }

  #hasEntries(lo: number, hi: number): boolean {
    const mmu = this.device.findMmu(this.asid);
    if (mmu === undefined) return false;
    let any = false;
    mmu.forEachEntry(lo, hi, () => {
      any = true;
    });
    return any;
  }
}

/** dmirror_mkentry: the snapshot byte of one hmm word (no device memory yet, map order 0). */
export function mkentry(word: number): number {
  const flags = hmmPfnFlags(word);
  if ((flags & HmmPfn.ERROR) !== 0) return SnapshotByte.ERROR;
  if ((flags & HmmPfn.VALID) === 0) return SnapshotByte.NONE;
  const kind = hmmPfnToPfn(word) === ZERO_PFN ? SnapshotByte.ZERO : SnapshotByte.NONE;
  return kind | ((flags & HmmPfn.WRITE) !== 0 ? SnapshotByte.WRITE : SnapshotByte.READ);
}
