/**
 * One SVM client (`struct nouveau_svmm`, created by the SVM_INIT ioctl): a GPU VMM mirroring one
 * process's address space, its channels, one whole-mm notifier, and the mutex that orders GPU PTE
 * writes against invalidations.
 *
 * - **Whole-mm notifier** (`nouveau_svmm_invalidate_range_start`): declines a non-blockable
 *   invalidation; otherwise takes the mutex, skips the MIGRATE events its own device causes, and
 *   sends PFNCLR over the range (minus the unmanaged window) through the GPU's queue, sleeping until
 *   the command completes. The SDK subscribes it as an interval notifier over the whole address
 *   space; it never reads the sequence.
 * - **Per-fault notifier** (`nouveau_svm_range_invalidate`): inserted around each fault's window
 *   for the sequence loop; it only takes the mutex and sets the sequence (skipping the EXCLUSIVE
 *   events of its own atomics).
 * - **Fault service** (`nouveau_range_fault`, `nouveau_atomic_range_fault`): the sequence loop with
 *   a 1 s simulated budget; the PTE (PFNMAP) is written under the mutex: VRAM aperture for this
 *   GPU's own device-private pages, host memory otherwise, with read / write / atomic bits.
 *
 * @module
 */
import {
  DevPerm,
  HMM_RANGE_DEFAULT_TIMEOUT_NS,
  HmmError,
  HmmPfn,
  Mutex,
  NotifyEvent,
  PAGE_SIZE,
  TASK_SIZE,
  hex,
  hmmPfnFlags,
  hmmPfnToPfn,
  hmmRangeFault,
  makeDeviceExclusive,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
  unlockPage,
} from '@hmm/core';
import type {
  HmmRange,
  MmuIntervalNotifier,
  MmuIntervalNotifierOps,
  MmuNotifierRange,
  Process,
} from '@hmm/core';
import { FaultAccess } from '@hmm/core';
import type { NouveauChannel } from './gpu.js';
import type { NouveauSvm } from './svm.js';

/** Options of SVM_INIT. */
export interface SvmInitOptions {
  /**
   * The unmanaged window `[start, start + bytes)` kept for legacy buffer objects: invalidations do
   * not clear it and faults in it are not served. Default empty.
   */
  readonly unmanaged?: { readonly start: number; readonly bytes: number };
}

/** Counters of one client. */
export interface SvmmStats {
  /** Faults served (a PTE written). */
  readonly served: number;
  /** Sequence-loop retries (EBUSY from hmm_range_fault or a read_retry hit). */
  readonly retries: number;
  /** Whole-mm invalidations that sent a PFNCLR. */
  readonly invalidations: number;
  /** Non-blockable invalidations declined. */
  readonly declined: number;
}

/** One SVM client (see the module doc). */
export class NouveauSvmm {
  /** The VMM (device address-space context) mirroring the process. */
  readonly asid: number;
  /** `svmm->mutex`: held around PTE writes and by both notifiers. */
  readonly mutex: Mutex;
  /** The whole-mm notifier. */
  readonly notifier: MmuIntervalNotifier;
  readonly unmanagedStart: number;
  readonly unmanagedEnd: number;
  readonly #channels = new Set<NouveauChannel>();
  readonly #pendVpns: number[] = [];
  readonly #pendPfns: number[] = [];
  readonly #pendPerms: number[] = [];
  #closed = false;
  #served = 0;
  #retries = 0;
  #invalidations = 0;
  #declined = 0;

  constructor(
    readonly svm: NouveauSvm,
    readonly process: Process,
    opts: SvmInitOptions = {},
  ) {
    const gpu = svm.gpu;
    const u = opts.unmanaged ?? { start: 0, bytes: 0 };
    if (
      !(Number.isSafeInteger(u.start) && Number.isSafeInteger(u.bytes) && u.start >= 0 && u.bytes >= 0) ||
      u.start % PAGE_SIZE !== 0 ||
      u.bytes % PAGE_SIZE !== 0 ||
      u.start + u.bytes > TASK_SIZE
    ) {
      throw new HmmError(
        'EINVAL',
        `${gpu.name}: SVM_INIT unmanaged window [${String(u.start)}, +${String(u.bytes)}) is not a page-aligned range`,
      );
    }
    this.unmanagedStart = u.start;
    this.unmanagedEnd = u.start + u.bytes;
    this.asid = gpu.device.allocAsid();
    this.mutex = new Mutex(gpu.machine.sched, `${gpu.name}:svmm${this.asid}`);
    try {
      this.notifier = mmuIntervalNotifierInsert(process.mm, 0, TASK_SIZE, {
        invalidate: (_sub, range) => this.#invalidateRangeStart(range),
      });
    } catch (e) {
      gpu.device.freeAsid(this.asid);
      throw e;
    }
  }

  /** True once {@link fini} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Counters. */
  stats(): SvmmStats {
    return {
      served: this.#served,
      retries: this.#retries,
      invalidations: this.#invalidations,
      declined: this.#declined,
    };
  }

  /** A new channel in this client's VMM, registered with the SVM (its faults resolve to this client). */
  channelNew(): NouveauChannel {
    if (this.#closed) throw new HmmError('EINVAL', `${this.svm.gpu.name}: channel on a closed SVM client`);
    const ch = this.svm.gpu.channelNew(this.asid);
    this.#channels.add(ch);
    this.svm.bindChannel(ch, this);
    return ch;
  }

  /** This client's channels. */
  channels(): NouveauChannel[] {
    return [...this.#channels];
  }

  /** `nouveau_svmm_invalidate_range_start`. */
  #invalidateRangeStart(range: MmuNotifierRange): boolean | Promise<boolean> {
    if (!range.blockable) {
      this.#declined++;
      return false;
    }
    return this.#invalidateLocked(range);
  }

  async #invalidateLocked(range: MmuNotifierRange): Promise<boolean> {
    await this.mutex.lock();
    try {
      if (range.event === NotifyEvent.MIGRATE && range.owner === this.svm.owner) return true;
      this.svm.bumpGeneration(this);
      const end = range.end;
      let start = range.start;
      // Leave the unmanaged window alone (nouveau clips the range around it).
      if (start < this.unmanagedEnd && this.unmanagedStart < end) {
        if (start < this.unmanagedStart) await this.pfnClear(start, this.unmanagedStart);
        start = this.unmanagedEnd;
      }
      if (start < end) await this.pfnClear(start, end);
      this.#invalidations++;
      return true;
    } finally {
      this.mutex.unlock();
    }
  }

  /**
   * PFNCLR: clears the GPU PTEs of `[start, end)` and waits for the command (and its TLB
   * invalidate). Call it under {@link mutex}: PTE writes still pending are queued first, so the
   * clear lands after them.
   */
  async pfnClear(start: number, end: number): Promise<void> {
    const dev = this.svm.gpu.device;
    if (dev.removed) return;
    this.flushPtes();
    await dev.queue
      .submit({
        op: 'unmap',
        asid: this.asid,
        startVpn: Math.floor(start / PAGE_SIZE),
        endVpn: Math.ceil(end / PAGE_SIZE),
      })
      .wait();
  }

  /**
   * PFNMAP of one page, under {@link mutex}. The write is batched: it reaches the GPU's queue at
   * {@link flushPtes} (end of the fault batch) or before any PFNCLR, whichever comes first, so an
   * invalidation, which needs the mutex, always clears after it. (nouveau pushes each PFNMAP at
   * once; batching them changes no ordering the driver relies on, only the number of commands.)
   */
  mapPte(vpn: number, pfn: number, perm: number): void {
    this.#pendVpns.push(vpn);
    this.#pendPfns.push(pfn);
    this.#pendPerms.push(perm);
  }

  /** PFNMAP of several pages (migrated VRAM pages), queued as one command after any pending writes. */
  mapPtes(vpns: readonly number[], pfns: readonly number[], perms: readonly number[]): void {
    this.flushPtes();
    this.svm.gpu.device.queue.submit({ op: 'map', asid: this.asid, vpns, pfns, perms });
  }

  /** Queues the pending PTE writes as one map command (a no-op when none are pending). */
  flushPtes(): void {
    if (this.#pendVpns.length === 0) return;
    const dev = this.svm.gpu.device;
    if (!dev.removed && !this.#closed) {
      dev.queue.submit({
        op: 'map',
        asid: this.asid,
        vpns: this.#pendVpns,
        pfns: this.#pendPfns,
        perms: this.#pendPerms,
      });
    }
    this.#pendVpns.length = 0;
    this.#pendPfns.length = 0;
    this.#pendPerms.length = 0;
  }

  /** Per-fault notifier ops (`nouveau_svm_range_invalidate`). */
  readonly #faultOps: MmuIntervalNotifierOps = {
    invalidate: (sub, range, seq) => {
      if (range.event === NotifyEvent.EXCLUSIVE && range.owner === this.svm.owner) return true;
      if (!range.blockable) {
        if (!this.mutex.tryLock()) return false;
        mmuIntervalSetSeq(sub, seq);
        this.mutex.unlock();
        return true;
      }
      return this.mutex.lock().then(() => {
        mmuIntervalSetSeq(sub, seq);
        this.mutex.unlock();
        return true;
      });
    },
  };

  /**
   * Serves one fault of this client at page `addr` (see the module doc): read → REQ_FAULT, write →
   * REQ_FAULT|REQ_WRITE, prefetch → a snapshot that maps only what is present, atomic → device
   * exclusive. Throws what the fault cannot get past (EFAULT for no mapping or PROT_NONE, EPERM for
   * a write to read-only memory, EBUSY when the 1 s budget runs out, ...): the caller cancels it.
   */
  async serveFault(addr: number, access: number): Promise<void> {
    const gpu = this.svm.gpu;
    if (addr >= this.unmanagedStart && addr < this.unmanagedEnd) {
      throw new HmmError('EFAULT', `${gpu.name}: fault at ${hex(addr)} in the unmanaged window`, {
        address: addr,
      });
    }
    const mm = this.process.mm;
    const sub = mmuIntervalNotifierInsert(mm, addr, PAGE_SIZE, this.#faultOps);
    try {
      if (access === FaultAccess.ATOMIC) await this.#atomicFault(sub, addr);
      else await this.#rangeFault(sub, addr, access);
      this.#served++;
    } finally {
      await mmuIntervalNotifierRemove(sub);
    }
  }

  /** `nouveau_range_fault`. */
  async #rangeFault(sub: MmuIntervalNotifier, addr: number, access: number): Promise<void> {
    const sched = this.svm.gpu.machine.sched;
    const mm = this.process.mm;
    const flags =
      access === FaultAccess.PREFETCH
        ? 0
        : access === FaultAccess.WRITE
          ? HmmPfn.REQ_FAULT | HmmPfn.REQ_WRITE
          : HmmPfn.REQ_FAULT;
    const range: HmmRange = {
      notifier: sub,
      notifierSeq: 0,
      start: addr,
      end: addr + PAGE_SIZE,
      hmmPfns: new Float64Array(1),
      defaultFlags: flags,
      pfnFlagsMask: 0,
      devPrivateOwner: this.svm.owner,
    };
    const deadline = sched.now + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    for (;;) {
      if (sched.now > deadline) {
        throw new HmmError(
          'EBUSY',
          `${this.svm.gpu.name}: fault at ${hex(addr)} kept racing invalidations for 1 s`,
          {
            address: addr,
          },
        );
      }
      range.notifierSeq = await mmuIntervalReadBegin(sub);
      await mm.mmapLock.read();
      try {
        await hmmRangeFault(range);
      } catch (e) {
        if (e instanceof HmmError && e.code === 'EBUSY') {
          this.#retries++;
          continue;
        }
        throw e;
      } finally {
        mm.mmapLock.readUnlock();
      }
      await this.mutex.lock();
      if (mmuIntervalReadRetry(sub, range.notifierSeq)) {
        this.mutex.unlock();
        this.#retries++;
        continue;
      }
      const word = range.hmmPfns[0]!;
      const f = hmmPfnFlags(word);
      if ((f & HmmPfn.VALID) !== 0) {
        // VRAM aperture for this GPU's own device-private pages, host memory otherwise: the
        // device MMU maps both by frame.
        this.mapPte(
          addr / PAGE_SIZE,
          hmmPfnToPfn(word),
          DevPerm.READ | ((f & HmmPfn.WRITE) !== 0 ? DevPerm.WRITE : 0),
        );
      }
      this.mutex.unlock();
      return;
    }
  }

  /** `nouveau_atomic_range_fault`: make the page exclusive to the GPU and map it for atomics. */
  async #atomicFault(sub: MmuIntervalNotifier, addr: number): Promise<void> {
    const sched = this.svm.gpu.machine.sched;
    const mm = this.process.mm;
    const ctx = mm.ctx;
    const deadline = sched.now + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    for (;;) {
      if (sched.now > deadline) {
        throw new HmmError(
          'EBUSY',
          `${this.svm.gpu.name}: atomic fault at ${hex(addr)} kept racing invalidations for 1 s`,
          {
            address: addr,
          },
        );
      }
      const seq = await mmuIntervalReadBegin(sub);
      await mm.mmapLock.read();
      let pfn: number;
      try {
        pfn = await makeDeviceExclusive(mm, addr, this.svm.owner);
      } finally {
        mm.mmapLock.readUnlock();
      }
      await this.mutex.lock();
      if (mmuIntervalReadRetry(sub, seq)) {
        this.mutex.unlock();
        unlockPage(ctx, pfn);
        ctx.putPage(pfn);
        this.#retries++;
        continue;
      }
      this.mapPte(addr / PAGE_SIZE, pfn, DevPerm.READ | DevPerm.WRITE | DevPerm.ATOMIC);
      this.mutex.unlock();
      unlockPage(ctx, pfn);
      ctx.putPage(pfn);
      return;
    }
  }

  /**
   * Tears the client down (`nouveau_svmm_fini`): channels destroyed, the notifier removed, every
   * GPU PTE cleared, the VMM freed. EINVAL the second time.
   */
  async fini(): Promise<void> {
    if (this.#closed)
      throw new HmmError('EINVAL', `${this.svm.gpu.name}: SVM client ${this.asid} closed twice`);
    this.#closed = true;
    const gpu = this.svm.gpu;
    for (const ch of this.#channels) {
      this.svm.unbindChannel(ch);
      if (gpu.channel(ch.inst) === ch) gpu.channelDel(ch);
    }
    this.#channels.clear();
    await mmuIntervalNotifierRemove(this.notifier);
    await this.mutex.lock();
    try {
      if (!gpu.device.removed) {
        await gpu.device.queue.submit({ op: 'unmap-all', asid: this.asid }).wait();
        gpu.device.freeAsid(this.asid);
      }
    } finally {
      this.mutex.unlock();
    }
    this.svm.forget(this);
  }
}
