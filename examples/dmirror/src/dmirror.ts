/**
 * A third-party-style driver written only against the public API of `@hmm/core`: a simulated copy
 * of the kernel's HMM test device `dmirror` (lib/test_hmm.c). One {@link Dmirror} is one open file
 * of `/dev/hmm_dmirror<N>`: it binds the opener's address space, subscribes one interval notifier
 * over the whole user address space and mirrors pages into the device's page table (one ASID of a
 * {@link SimDevice}) on demand. The device itself, with its memory and copy engine, is a
 * {@link DmirrorDevice}.
 *
 * Commands (the uapi's `struct hmm_dmirror_cmd`: addr, npages, out cpages, out faults):
 * - {@link Dmirror.read} (`HMM_DMIRROR_READ`): the device copies `npages` pages at `addr` out.
 * - {@link Dmirror.write} (`HMM_DMIRROR_WRITE`): the device copies a buffer in.
 * - {@link Dmirror.migrateToDevice} (`HMM_DMIRROR_MIGRATE_TO_DEV`): moves the pages into the
 *   device's memory (`migrate_vma_*`), maps them, reads them back.
 * - {@link Dmirror.migrateToSystem} (`HMM_DMIRROR_MIGRATE_TO_SYS`): moves them back.
 * - {@link Dmirror.snapshot} (`HMM_DMIRROR_SNAPSHOT`): one byte per page describing the CPU page
 *   table, without faulting, device pages included (local / remote, private / coherent).
 * - {@link Dmirror.exclusive} (`HMM_DMIRROR_EXCLUSIVE`): `make_device_exclusive` on each page and an
 *   atomic mapping; {@link Dmirror.checkExclusive} (`HMM_DMIRROR_CHECK_EXCLUSIVE`): EPERM while one
 *   is left.
 * - {@link Dmirror.releaseDeviceMemory} (`HMM_DMIRROR_RELEASE`): the device evicts and frees all its memory;
 *   {@link Dmirror.failNextAlloc} (`HMM_DMIRROR_FLAGS` FAIL_ALLOC).
 *
 * Device page table: the device's MMU of this mirror's ASID plays dmirror's xarray (vpn → page,
 * tag none = read-only (READ), WRITE = writable (READ|WRITE), atomic = READ|ATOMIC). It is only
 * changed through the device's command queue. Pages in the device's own memory are mapped with
 * their device frame, which holds their data.
 *
 * Locking (as dmirror): the mirror `mutex` is the driver lock of the sequence protocol. Faults
 * commit device entries under it after `mmuIntervalReadRetry`; the invalidate callback takes it,
 * calls `mmuIntervalSetSeq`, submits the unmap and **waits for the unmap's fence before unlocking
 * and returning**: so once the callback has returned the device cannot reach the old pages, and a
 * command that holds the mutex never sees an entry whose unmap is still in the queue. The callback
 * skips the MIGRATE and EXCLUSIVE invalidations whose owner is this mirror's device: whoever
 * migrates or takes exclusive access for the device updates the device table itself.
 *
 * Closing a file evicts all of its device's memory to system memory, as the newest kernel's
 * `dmirror_fops_release` does.
 *
 * Not modelled: THP map orders (PMD/PUD snapshot bits, compound migration), `mmap` of the device
 * file (see the conformance suite's `mixedmap`), FAIL_ALLOC on the migrate-to-RAM side (the kernel's
 * flag also fails the next system-page allocation of a device-to-RAM migration; here it fails the
 * next device-page allocation only).
 *
 * @module
 */
import {
  DevPerm,
  Foll,
  hex,
  HmmError,
  HmmPfn,
  hmmPfnFlags,
  hmmPfnToPfn,
  hmmRangeFaultLoop,
  makeDeviceExclusive,
  MigratePfn,
  migratePfn,
  migratePfnToPfn,
  migrateVmaArgs,
  migrateVmaFinalize,
  migrateVmaPages,
  MigrateVmaSelect,
  migrateVmaSetup,
  MMAP_MIN_ADDR,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
  Mutex,
  NotifyEvent,
  PAGE_SIZE,
  pagemapOf,
  TASK_SIZE,
  unlockPage,
} from '@hmm/core';
import { snapshotRange } from '@hmm/conformance';
import type {
  DeviceFault,
  HmmMirror,
  HmmRange,
  Machine,
  MmContext,
  MmuIntervalNotifier,
  MmuIntervalNotifierOps,
  MmuNotifierRange,
  Process,
  SimDevice,
  Vma,
} from '@hmm/core';
import { DmirrorDevice, runsOf } from './dmirror-device.js';
import type { VpnRuns } from './dmirror-device.js';

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
/** Pages per `migrate_vma` call (`PTRS_PER_PTE`). */
export const DMIRROR_MIGRATE_CHUNK = 512;
/** Attempts at making one page exclusive before EBUSY (each retry follows a racing invalidation). */
export const DMIRROR_EXCLUSIVE_TRIES = 100;

function allocateAsid(device: SimDevice, mirrors: Map<number, Dmirror>): number {
  const used = new Set(device.asids());
  for (let asid = 1; ; asid++) if (!mirrors.has(asid) && !used.has(asid)) return asid;
}

/** The fault loop a mirror runs (`hmmRangeFaultLoop` unless a test swaps in a broken one). */
export type FaultLoop = typeof hmmRangeFaultLoop;

/**
 * Deliberate bugs a mirror can be opened with (only tests use them, to prove the conformance suite
 * catches each broken obligation: see broken.ts). Every flag is off by default; with none set the
 * driver behaves exactly as without this object.
 */
export interface DmirrorBreakage {
  /** The invalidate callback never calls `mmuIntervalSetSeq`. */
  readonly skipSetSeq?: boolean;
  /** The invalidate callback moves the sequence but never unmaps device entries. */
  readonly ignoreInvalidations?: boolean;
  /** A non-blockable invalidation is served as a blockable one (takes the mutex, waits: sleeps). */
  readonly ignoreBlockable?: boolean;
  /** A read fault maps every page READ|WRITE, even when the CPU page is read-only. */
  readonly writableOnRead?: boolean;
  /** Each device fault pins the faulted pages (`pin_user_pages`) and never unpins them. */
  readonly pinFaulted?: boolean;
  /** MIGRATE_TO_DEV leaves the device table on the old (system) frames instead of the new ones. */
  readonly mapOldFrameOnMigrate?: boolean;
  /** The invalidate callback skips every MIGRATE invalidation, whoever causes it. */
  readonly skipAllMigrate?: boolean;
}

/** Options of {@link Dmirror.open}. */
export interface DmirrorOptions {
  /** Replaces the sequence-protocol loop; only tests use it, to build deliberately broken copies. */
  readonly faultLoop?: FaultLoop;
  /** Deliberate bugs (tests only); default none. */
  readonly broken?: DmirrorBreakage;
}

const NOT_BROKEN: DmirrorBreakage = {};

/** One open mirror: a process's address space bound to a device ASID. */
export class Dmirror implements HmmMirror {
  /** The mirror mutex (`dmirror->mutex`): the driver lock of the sequence protocol. */
  readonly mutex: Mutex;
  /** The whole-address-space subscription (`dmirror->notifier`). */
  readonly notifier: MmuIntervalNotifier;
  #faultLoop: FaultLoop = hmmRangeFaultLoop;
  #broken: DmirrorBreakage = NOT_BROKEN;
  #lowVpn = Infinity;
  #highVpn = -Infinity;
  #closed = false;
  /** The device was removed under the open file: no notifier, no device entries. */
  #stopped = false;

  private constructor(
    readonly machine: Machine,
    /** The dmirror device: memory, copy engine, sibling mirrors. */
    readonly dmirrorDevice: DmirrorDevice,
    readonly process: Process,
    /** The device address-space context of this mirror. */
    readonly asid: number,
  ) {
    this.mutex = new Mutex(machine.sched, `dmirror:${dmirrorDevice.device.name}:asid${asid}`);
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
   * `device` (a {@link DmirrorDevice}, or a bare {@link SimDevice}, which then gets device-private
   * memory). ESRCH (from the notifier insert) if the process has exited.
   */
  static async open(
    machine: Machine,
    device: SimDevice | DmirrorDevice,
    process: Process,
    opts: DmirrorOptions = {},
  ): Promise<Dmirror> {
    const dd = device instanceof DmirrorDevice ? device : DmirrorDevice.of(machine, device);
    const asid = allocateAsid(dd.device, dd.mirrors);
    const mirror = new Dmirror(machine, dd, process, asid);
    if (opts.faultLoop !== undefined) mirror.#faultLoop = opts.faultLoop;
    if (opts.broken !== undefined) mirror.#broken = opts.broken;
    dd.mirrors.set(asid, mirror);
    return mirror;
  }

  /** The device this mirror programs; also the owner of its device memory. */
  get device(): SimDevice {
    return this.dmirrorDevice.device;
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
   * `HMM_DMIRROR_MIGRATE_TO_DEV` (`dmirror_migrate_to_device`): under the mmap read lock, VMA by VMA
   * in chunks of up to {@link DMIRROR_MIGRATE_CHUNK} pages, `migrate_vma_setup` (system pages, owner
   * this device) → device pages allocated and filled through the copy engine (empty slots zeroed;
   * an allocation failure leaves the page where it is) → `migrate_vma_pages` → the new pages mapped
   * in the device (writable where the source was) → `migrate_vma_finalize`. Then the range is read
   * back through the device: ENOENT, with nothing returned, as soon as a page is not mapped to this
   * device's memory. EINVAL for a hole or a VMA without read permission.
   */
  async migrateToDevice(addr: number, npages: number): Promise<DmirrorCmdResult & { data: Uint8Array }> {
    this.#checkCmd('MIGRATE_TO_DEV', addr, npages);
    await this.#forEachVmaChunk('MIGRATE_TO_DEV', addr, npages, (vma, start, end) =>
      this.#migrateChunkToDevice(vma, start, end),
    );
    return this.#readBack('MIGRATE_TO_DEV', addr, npages, true);
  }

  /**
   * `HMM_DMIRROR_MIGRATE_TO_SYS` (`dmirror_migrate_to_system`): moves this device's pages of the range
   * back to system memory, VMA by VMA in chunks; `cpages` counts the pages moved. EINVAL for a hole
   * or a VMA without read permission, ENOMEM when no system page is left.
   */
  async migrateToSystem(addr: number, npages: number): Promise<DmirrorCmdResult> {
    this.#checkCmd('MIGRATE_TO_SYS', addr, npages);
    let cpages = 0;
    await this.#forEachVmaChunk('MIGRATE_TO_SYS', addr, npages, async (vma, start, end) => {
      cpages += await this.dmirrorDevice.migrateRangeToRam(vma, start, end);
    });
    return { cpages, faults: 0 };
  }

  /**
   * `HMM_DMIRROR_SNAPSHOT`: one {@link SnapshotByte} byte per page from `hmm_range_fault` without
   * fault flags, each chunk under its own temporary interval notifier (`dmirror_snapshot`).
   */
  async snapshot(addr: number, npages: number): Promise<Uint8Array> {
    this.#checkCmd('SNAPSHOT', addr, npages);
    // Below DMIRROR_NOTIFIER_START (mmap_min_addr) nothing can be mapped: the helper reports ERROR.
    return snapshotRange(this.process.mm, addr, npages, this.device, {
      driverLock: this.mutex,
      chunkPages: DMIRROR_FAULT_CHUNK,
    });
  }

  /**
   * `HMM_DMIRROR_EXCLUSIVE` (`dmirror_exclusive`): page by page, `make_device_exclusive` (owner this
   * device) under the mmap read lock, and the page mapped READ|ATOMIC in the device inside the
   * sequence protocol's critical section; then the range is read back through the device. Errors of
   * `make_device_exclusive` pass through (EFAULT for a hole or a read-only mapping, EOPNOTSUPP for a
   * page that is not anonymous).
   */
  async exclusive(addr: number, npages: number): Promise<DmirrorCmdResult & { data: Uint8Array }> {
    this.#checkCmd('EXCLUSIVE', addr, npages);
    for (let i = 0; i < npages; i++) await this.#makeExclusive(addr + i * PAGE_SIZE);
    return this.#readBack('EXCLUSIVE', addr, npages, false);
  }

  /**
   * `HMM_DMIRROR_CHECK_EXCLUSIVE` (`dmirror_check_atomic`): EPERM if the device still maps a page of
   * the range for atomics.
   */
  async checkExclusive(addr: number, npages: number): Promise<void> {
    this.#checkCmd('CHECK_EXCLUSIVE', addr, npages);
    const first = addr / PAGE_SIZE;
    let atomic = -1;
    this.device.findMmu(this.asid)?.forEachEntry(first, first + npages, (vpn, _pfn, perm) => {
      if (atomic < 0 && (perm & DevPerm.ATOMIC) !== 0) atomic = vpn;
    });
    if (atomic >= 0) {
      throw new HmmError(
        'EPERM',
        `dmirror CHECK_EXCLUSIVE: the device still maps ${hex(atomic * PAGE_SIZE)} for atomics`,
        { address: atomic * PAGE_SIZE },
      );
    }
  }

  /**
   * `HMM_DMIRROR_RELEASE`: the device evicts all its memory to system memory and removes it
   * (`dmirror_device_remove_chunks`); later migrations map new chunks.
   */
  async releaseDeviceMemory(): Promise<void> {
    if (this.#closed) throw new HmmError('EBADF', 'dmirror RELEASE: the mirror is closed');
    if (this.dmirrorDevice.removed) throw new HmmError('ENODEV', 'dmirror RELEASE: the device was removed');
    await this.dmirrorDevice.release();
  }

  /** `HMM_DMIRROR_FLAGS` with `HMM_DMIRROR_FLAG_FAIL_ALLOC`: the next device-page allocation fails. */
  failNextAlloc(): void {
    if (this.#closed) throw new HmmError('EBADF', 'dmirror FLAGS: the mirror is closed');
    if (this.dmirrorDevice.removed) throw new HmmError('ENODEV', 'dmirror FLAGS: the device was removed');
    this.dmirrorDevice.failNextAlloc();
  }

  /**
   * Fault injection (tests): the next transfer of the device's copy engine stops after `afterPages`
   * pages (`CopyEngine.failNext`).
   */
  failNextCopy(afterPages: number): void {
    if (this.#closed) throw new HmmError('EBADF', 'dmirror: the mirror is closed');
    this.dmirrorDevice.copyEngine.failNext(afterPages);
  }

  /**
   * `release()` of the file: removes the notifier (waiting out a running invalidation), clears every
   * device entry of the ASID, then evicts the device's memory to system memory as the newest
   * kernel's `dmirror_fops_release` does. Idempotent; after the device was removed only the file goes.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.stop();
    this.dmirrorDevice.mirrors.delete(this.asid);
    await this.dmirrorDevice.evictAll();
  }

  /**
   * Stops mirroring: removes the notifier and clears every device entry of the ASID. Idempotent.
   * @internal Called by {@link close} and by {@link DmirrorDevice.remove} (the device goes away under
   * the open file, whose later commands then fail with ENODEV).
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await mmuIntervalNotifierRemove(this.notifier);
    await this.mutex.lock();
    try {
      if (!this.device.removed) await this.device.queue.submit({ op: 'unmap-all', asid: this.asid }).wait();
      this.#lowVpn = Infinity;
      this.#highVpn = -Infinity;
    } finally {
      this.mutex.unlock();
    }
  }

  /** {@link HmmMirror.handleFault}: serves a device fault of this mirror's ASID. */
  handleFault(fault: DeviceFault): Promise<void> {
    return this.handleDeviceFault(fault);
  }

  /** {@link HmmMirror.invalidate}: the interval notifier's callback. */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean | Promise<boolean> {
    return this.#invalidate(sub, range, curSeq);
  }

  /** {@link HmmMirror.release}: the same as {@link close} (not RELEASE; see {@link releaseDeviceMemory}). */
  release(): Promise<void> {
    return this.close();
  }

  /**
   * The device's fault handler for this ASID: read and write faults go through the same path as
   * READ / WRITE; an atomic fault takes exclusive access to the page, as EXCLUSIVE does.
   * @internal Called by the per-device dispatcher.
   */
  async handleDeviceFault(fault: DeviceFault): Promise<void> {
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
    if (fault.access === 'atomic') {
      await this.#makeExclusive(fault.address);
      return;
    }
    await this.#fault(fault.address, fault.address + PAGE_SIZE, fault.access === 'write');
  }

  /**
   * Removes `[start, end)` vpn runs from this mirror's device table, under the mutex, waiting for the
   * unmaps (runs with no entry cost nothing).
   * @internal Called by {@link DmirrorDevice} before it moves the data of pages this device maps.
   */
  async unmapRuns(runs: VpnRuns): Promise<void> {
    await this.mutex.lock();
    try {
      let fence: ReturnType<SimDevice['queue']['submit']> | null = null;
      for (const [start, end] of runs) {
        const lo = Math.max(start, this.#lowVpn);
        const hi = Math.min(end, this.#highVpn + 1);
        if (lo >= hi || this.device.removed || !this.#hasEntries(lo, hi)) continue;
        fence = this.device.queue.submit({ op: 'unmap', asid: this.asid, startVpn: lo, endVpn: hi });
      }
      await fence?.wait();
    } finally {
      this.mutex.unlock();
    }
  }

  // ---------------------------------------------------------------------------------------------

  /** dmirror_ioctl's checks: page-aligned addr, npages > 0, no overflow; the mm must be alive. */
  #checkCmd(what: string, addr: number, npages: number): void {
    if (this.#closed) throw new HmmError('EBADF', `dmirror ${what}: the mirror is closed`);
    if (this.dmirrorDevice.removed) {
      throw new HmmError('ENODEV', `dmirror ${what}: the device ${this.device.name} was removed`);
    }
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
   * Calls `body` for each chunk of up to {@link DMIRROR_MIGRATE_CHUNK} pages of the range inside one
   * VMA, under the mmap read lock held throughout; EINVAL at the first page with no VMA or in a VMA
   * without read permission (chunks before it stay done, as in the kernel).
   */
  async #forEachVmaChunk(
    what: string,
    addr: number,
    npages: number,
    body: (vma: Vma, start: number, end: number) => Promise<void>,
  ): Promise<void> {
    const mm = this.process.mm;
    const end = addr + npages * PAGE_SIZE;
    await mm.mmapLock.read();
    try {
      for (let a = addr; a < end;) {
        const vma = mm.vmas.lookup(a);
        if (vma === undefined || !vma.readable) {
          throw new HmmError(
            'EINVAL',
            `dmirror ${what}: ${hex(a)} is ${vma === undefined ? 'not mapped' : `in ${vma.toString()}, which cannot be read`}`,
            { address: a },
          );
        }
        const next = Math.min(end, a + DMIRROR_MIGRATE_CHUNK * PAGE_SIZE, vma.end);
        await body(vma, a, next);
        a = next;
      }
    } finally {
      mm.mmapLock.readUnlock();
    }
  }

  /**
   * One chunk of MIGRATE_TO_DEV: `dmirror_migrate_alloc_and_copy`, `migrate_vma_pages`,
   * `dmirror_migrate_finalize_and_map`, `migrate_vma_finalize`. The caller holds the mmap read lock.
   */
  async #migrateChunkToDevice(vma: Vma, start: number, end: number): Promise<void> {
    const dd = this.dmirrorDevice;
    const ctx = this.machine.mm;
    const n = (end - start) / PAGE_SIZE;
    const firstVpn = start / PAGE_SIZE;
    const args = migrateVmaArgs({
      vma,
      start,
      end,
      pgmapOwner: this.device,
      flags: MigrateVmaSelect.SYSTEM | MigrateVmaSelect.COMPOUND,
    });
    await migrateVmaSetup(args);
    const allocated: number[] = [];
    let committed = false;
    try {
      const idx: number[] = [];
      for (let i = 0; i < n; i++) {
        const e = args.src[i]!;
        if ((e & MigratePfn.MIGRATE) === 0) continue;
        const s = migratePfnToPfn(e);
        // Already device memory: nothing to do (the kernel WARNs; SELECT_SYSTEM never collects it).
        if (s >= 0 && pagemapOf(ctx, s) !== undefined) continue;
        idx.push(i);
      }
      // This device skips its own MIGRATE invalidation: its mirrors of this mm drop their entries
      // of the pages about to move (a system page, the zero page) before the copy; the new pages
      // are mapped below.
      if (this.#broken.mapOldFrameOnMigrate !== true) await dd.unmapInMirrors(vma.mm, runsOf(firstVpn, idx));
      const from: number[] = [];
      const to: number[] = [];
      const dstOf = new Map<number, number>();
      for (const i of idx) {
        let d: number;
        try {
          d = dd.devmem.allocPage();
        } catch (e) {
          if (e instanceof HmmError && e.code === 'ENOMEM') continue; // the page stays in RAM
          throw e;
        }
        allocated.push(d);
        dstOf.set(i, d);
        const s = migratePfnToPfn(args.src[i]!);
        if (s >= 0) {
          from.push(s);
          to.push(d);
        } else {
          ctx.mem.content.clear(d); // an empty slot or the zero page: zero-fill on the device
        }
      }
      const copied = await dd.copy(from, to, 'h2d');
      const failed = new Set(to.slice(copied));
      for (const [i, d] of dstOf) {
        if (failed.has(d)) continue; // not copied: the page stays in RAM
        args.dst[i] = migratePfn(d) | (args.src[i]! & MigratePfn.WRITE);
      }
      for (const d of failed) releaseLocked(ctx, d);
      allocated.length = 0;
      committed = true;
      await migrateVmaPages(args);
      // dmirror_migrate_finalize_and_map: the pages that moved are mapped in this mirror.
      const vpns: number[] = [];
      const pfns: number[] = [];
      const perms: number[] = [];
      for (let i = 0; i < n; i++) {
        const e = args.src[i]!;
        const d = migratePfnToPfn(args.dst[i]!);
        if ((e & MigratePfn.MIGRATE) === 0 || d < 0) continue;
        // Broken on purpose (tests only): the old frame stays mapped (a zero-filled slot has none).
        const old = this.#broken.mapOldFrameOnMigrate === true ? migratePfnToPfn(e) : d;
        if (old < 0) continue;
        vpns.push(firstVpn + i);
        pfns.push(old);
        perms.push(DevPerm.READ | ((e & MigratePfn.WRITE) !== 0 ? DevPerm.WRITE : 0));
      }
      await this.mutex.lock();
      try {
        await this.#map(vpns, pfns, perms);
      } finally {
        this.mutex.unlock();
      }
    } finally {
      if (!committed) for (const d of allocated) releaseLocked(ctx, d);
      migrateVmaFinalize(args);
    }
  }

  /**
   * The read-back of MIGRATE_TO_DEV and EXCLUSIVE (`dmirror_do_read` under the mutex, no faulting):
   * ENOENT at the first page the device does not map (with `deviceOnly`, does not map to its own
   * memory).
   */
  async #readBack(
    what: string,
    addr: number,
    npages: number,
    deviceOnly: boolean,
  ): Promise<DmirrorCmdResult & { data: Uint8Array }> {
    const data = new Uint8Array(npages * PAGE_SIZE);
    await this.mutex.lock();
    try {
      const mmu = this.device.mmu(this.asid);
      for (let i = 0; i < npages; i++) {
        const a = addr + i * PAGE_SIZE;
        const vpn = a / PAGE_SIZE;
        if (
          (mmu.lookup(vpn) & DevPerm.READ) === 0 ||
          (deviceOnly && !this.dmirrorDevice.owns(mmu.pfnOf(vpn)))
        ) {
          throw new HmmError(
            'ENOENT',
            `dmirror ${what}: ${hex(a)} is not ${deviceOnly ? `in the memory of ${this.device.name}` : 'mapped by the device'} (${i} of ${npages} pages read back)`,
            { address: a },
          );
        }
        data.set(await this.device.read(this.asid, a, PAGE_SIZE), i * PAGE_SIZE);
      }
    } finally {
      this.mutex.unlock();
    }
    return { data, cpages: npages, faults: 0 };
  }

  /**
   * Exclusive access to one page for the device: the sequence is sampled, `make_device_exclusive`
   * runs under the mmap read lock, and the atomic mapping is written under the mutex only if no
   * invalidation hit the range meanwhile; the page is then unlocked and put. A retry first faults
   * the page in writable (outside the sequence), so that the retry itself does not invalidate it.
   */
  async #makeExclusive(addr: number): Promise<void> {
    const mm = this.process.mm;
    const ctx = this.machine.mm;
    for (let attempt = 0; attempt < DMIRROR_EXCLUSIVE_TRIES; attempt++) {
      if (attempt > 0) {
        const got = await this.process.getUserPages(addr, 1, Foll.WRITE);
        this.process.putUserPages(got);
      }
      const seq = await mmuIntervalReadBegin(this.notifier);
      await mm.mmapLock.read();
      try {
        const pfn = await makeDeviceExclusive(mm, addr, this.device);
        try {
          await this.mutex.lock();
          try {
            if (mmuIntervalReadRetry(this.notifier, seq)) continue;
            await this.#map([addr / PAGE_SIZE], [pfn], [DevPerm.READ | DevPerm.ATOMIC]);
            return;
          } finally {
            this.mutex.unlock();
          }
        } finally {
          unlockPage(ctx, pfn);
          ctx.putPage(pfn);
        }
      } finally {
        mm.mmapLock.readUnlock();
      }
    }
    throw new HmmError(
      'EBUSY',
      `dmirror EXCLUSIVE: ${hex(addr)} was invalidated on each of ${DMIRROR_EXCLUSIVE_TRIES} attempts`,
      { address: addr },
    );
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
   * Pages in this device's private memory are reported by `hmm_range_fault` (owner = the device) and
   * mapped with their device frame.
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
      // Broken on purpose (tests only): pins that nothing ever unpins.
      if (this.#broken.pinFaulted === true) {
        await this.process.pinUserPages(a, (next - a) / PAGE_SIZE, write ? Foll.WRITE : 0);
      }
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
      perms[i] = DevPerm.READ | (writable || this.#broken.writableOnRead === true ? DevPerm.WRITE : 0);
    }
    await this.#map(vpns, pfns, perms);
  }

  /** Writes device entries through the queue and waits for them; the caller holds the mutex. */
  async #map(vpns: ArrayLike<number>, pfns: ArrayLike<number>, perms: ArrayLike<number>): Promise<void> {
    const n = vpns.length;
    if (n === 0) return;
    for (let i = 0; i < n; i++) {
      this.#lowVpn = Math.min(this.#lowVpn, vpns[i]!);
      this.#highVpn = Math.max(this.#highVpn, vpns[i]!);
    }
    await this.device.queue.submit({ op: 'map', asid: this.asid, vpns, pfns, perms }).wait();
  }

  /**
   * dmirror_interval_invalidate. The MIGRATE and EXCLUSIVE invalidations this device causes itself
   * leave the device table alone (the migration or exclusive path updates it). Unlike the kernel's
   * dmirror, which returns at once for its own MIGRATE, the sequence is still moved for it (under
   * the mutex): otherwise a device fault that walked the page before the migration could commit
   * the page's old frame after it, a frame the migration frees. Its own EXCLUSIVE does not move the
   * sequence: the frame stays the same, and EXCLUSIVE's own sequence check would never pass.
   *
   * Anything else, blockable: lock, set the sequence, unmap the overlap of the range with the mapped
   * span, wait for the unmap's fence, unlock. Non-blockable (OOM reaper): never sleeps: false if the
   * mutex is held; and, unlike the kernel's dmirror whose xarray erase needs no sleep, false too if
   * device entries must go, since a device unmap completes only through a fence (sleeping). With
   * nothing mapped in the range it succeeds at once.
   */
  #invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean | Promise<boolean> {
    if (range.owner === this.device && range.event === NotifyEvent.EXCLUSIVE) return true;
    // Broken on purpose (tests only): every MIGRATE is taken for this device's own.
    if (this.#broken.skipAllMigrate === true && range.event === NotifyEvent.MIGRATE) return true;
    if (range.owner === this.device && range.event === NotifyEvent.MIGRATE) {
      if (!range.blockable) {
        if (!this.mutex.tryLock()) return false;
        mmuIntervalSetSeq(sub, curSeq);
        this.mutex.unlock();
        return true;
      }
      return this.mutex.lock().then(() => {
        mmuIntervalSetSeq(sub, curSeq);
        this.mutex.unlock();
        return true;
      });
    }
    const lo = Math.max(Math.floor(range.start / PAGE_SIZE), this.#lowVpn);
    const hi = Math.min(Math.ceil(range.end / PAGE_SIZE), this.#highVpn + 1);
    if (!range.blockable && this.#broken.ignoreBlockable !== true) {
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
      if (this.#broken.skipSetSeq !== true) mmuIntervalSetSeq(sub, curSeq);
      if (this.#broken.ignoreInvalidations === true) return true;
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

/** Unlocks and frees a destination page that was not used. */
function releaseLocked(ctx: MmContext, pfn: number): void {
  unlockPage(ctx, pfn);
  ctx.putPage(pfn);
}
