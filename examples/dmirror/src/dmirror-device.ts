/**
 * The device side of the simulated dmirror (`struct dmirror_device` of lib/test_hmm.c): one
 * {@link SimDevice} with its memory, its copy engine, and the mirrors (open files) bound to it.
 *
 * - **Memory**: an {@link HmmDevmem} of device-private memory (`hmm_dmirror0/1`) or of
 *   device-coherent memory (`hmm_dmirror2/3`, the kernel's emulation over special-purpose RAM), with
 *   the device itself as owner (`pgmap->owner = mdevice`), so every mirror of one device shares it.
 *   Chunks are mapped on demand, 256 MiB each as dmirror's `DEVMEM_CHUNK_SIZE` but at most the
 *   capacity (default {@link DMIRROR_DEVMEM_CAPACITY}).
 * - **Copies** between system and device memory go through the device's {@link CopyEngine}, so
 *   migrations take simulated time.
 * - **CPU faults** on its device-private pages (`dmirror_devmem_fault`): {@link migrateToRam}.
 *
 * Deliberate difference from the kernel's test module: the kernel's dmirror has no memory of its
 * own, so it backs each device-private page with a system page (`zone_device_data`) that holds the
 * data and that its page table points at. The SDK's device arenas have storage, so here the data of
 * a device page lives in the device frame itself, and the device page table maps device frames.
 *
 * @module
 */
import {
  CopyEngine,
  hex,
  HmmDevmem,
  HmmError,
  MemoryType,
  MigratePfn,
  migratePfn,
  migratePfnToPfn,
  migrateVmaArgs,
  migrateVmaFinalize,
  migrateVmaPages,
  MigrateVmaSelect,
  migrateVmaSetup,
  PAGE_SIZE,
  PG,
  SimDevice,
  unlockPage,
} from '@hmm/core';
import type {
  DeviceFault,
  Machine,
  MemoryTypeId,
  MigrateToRamFault,
  MmContext,
  MmStruct,
  PciEndpoint,
  PciTopology,
  Vma,
} from '@hmm/core';
import type { Dmirror } from './dmirror.js';

/** Default bytes of device memory per device. */
export const DMIRROR_DEVMEM_CAPACITY = 64 * 1024 * 1024;
/** dmirror's `DEVMEM_CHUNK_SIZE`: bytes per pagemap (capped at the capacity). */
export const DMIRROR_DEVMEM_CHUNK = 256 * 1024 * 1024;

/** Kind of device memory: `hmm_dmirror0/1` have device-private memory, `hmm_dmirror2/3` coherent. */
export type DmirrorMemoryKind = 'private' | 'coherent';

/** Options of a dmirror device. */
export interface DmirrorDeviceOptions {
  /** Device memory type; default `'private'`. */
  readonly memory?: DmirrorMemoryKind;
  /** Bytes of device memory; default {@link DMIRROR_DEVMEM_CAPACITY}. */
  readonly capacityBytes?: number;
  /** Bytes per chunk; default {@link DMIRROR_DEVMEM_CHUNK}, at most the capacity. */
  readonly chunkBytes?: number;
  /** Bus bandwidth of the copy engine, GB/s (default: the cost model's PCIe 4 peak). */
  readonly linkGBs?: number;
  /** Where the device sits on the PCI bus (needed to export or import peer-to-peer memory). */
  readonly pci?: { readonly topology: PciTopology; readonly endpoint: PciEndpoint };
}

/** `[startVpn, endVpn)` runs of virtual page numbers. */
export type VpnRuns = readonly (readonly [number, number])[];

const registry = new WeakMap<SimDevice, DmirrorDevice>();

/** One dmirror device: a {@link SimDevice}, its memory, its copy engine and its open mirrors. */
export class DmirrorDevice {
  /** The device memory (device-private or device-coherent), owned by {@link device}. */
  readonly devmem: HmmDevmem;
  /** The DMA engine used for every copy between system and device memory. */
  readonly copyEngine: CopyEngine;
  /** The device memory type. */
  readonly memoryType: MemoryTypeId;
  /** Open mirrors by ASID (the fault handler dispatches by ASID). */
  readonly mirrors = new Map<number, Dmirror>();
  #removed = false;

  private constructor(
    readonly machine: Machine,
    readonly device: SimDevice,
    opts: DmirrorDeviceOptions,
  ) {
    const kind = opts.memory ?? 'private';
    if (kind !== 'private' && kind !== 'coherent') {
      throw new HmmError('EINVAL', `dmirror: unknown device memory kind ${JSON.stringify(kind)}`);
    }
    this.memoryType = kind === 'private' ? MemoryType.DEVICE_PRIVATE : MemoryType.DEVICE_COHERENT;
    const capacityBytes = opts.capacityBytes ?? DMIRROR_DEVMEM_CAPACITY;
    this.devmem = new HmmDevmem(
      machine.mm,
      kind === 'private' ? { migrateToRam: (f) => this.migrateToRam(f) } : {},
      {
        type: this.memoryType,
        owner: device,
        capacityBytes,
        chunkBytes: opts.chunkBytes ?? DMIRROR_DEVMEM_CHUNK,
        name: `${device.name}:devmem`,
      },
    );
    this.copyEngine = new CopyEngine(machine.sched, machine.cost, {
      name: `${device.name}:copy`,
      ...(opts.linkGBs !== undefined ? { linkGBs: opts.linkGBs } : {}),
    });
    // One handler per device (the fault-buffer interrupt), dispatching by ASID.
    device.setFaultHandler((fault: DeviceFault) => {
      const mirror = this.mirrors.get(fault.asid);
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

  /**
   * Creates the device `name` on `machine` with its memory (`dmirror_device_init`). EEXIST / EINVAL
   * as {@link SimDevice}'s constructor.
   */
  static create(machine: Machine, name: string, opts: DmirrorDeviceOptions = {}): DmirrorDevice {
    const device = new SimDevice(machine.mm, opts.pci === undefined ? { name } : { name, pci: opts.pci });
    return DmirrorDevice.attach(machine, device, opts);
  }

  /** Makes an existing {@link SimDevice} a dmirror device. EEXIST if it already is one. */
  static attach(machine: Machine, device: SimDevice, opts: DmirrorDeviceOptions = {}): DmirrorDevice {
    if (registry.has(device)) {
      throw new HmmError('EEXIST', `dmirror: device ${device.name} already has its dmirror memory`);
    }
    const d = new DmirrorDevice(machine, device, opts);
    registry.set(device, d);
    return d;
  }

  /** The dmirror device of `device`, attached with device-private memory on first use. */
  static of(machine: Machine, device: SimDevice): DmirrorDevice {
    return registry.get(device) ?? DmirrorDevice.attach(machine, device);
  }

  /** True once {@link remove} has started: the device is going or gone. */
  get removed(): boolean {
    return this.#removed;
  }

  /** True for device-private memory. */
  get isPrivate(): boolean {
    return this.memoryType === MemoryType.DEVICE_PRIVATE;
  }

  /** The `migrate_vma` select flag of this device's pages (`dmirror_select_device`). */
  get selectDevice(): number {
    return this.isPrivate ? MigrateVmaSelect.DEVICE_PRIVATE : MigrateVmaSelect.DEVICE_COHERENT;
  }

  /** True if `pfn` is a frame of this device's memory. */
  owns(pfn: number): boolean {
    return this.devmem.owns(pfn);
  }

  /**
   * Copies frames `src[i]` → `dst[i]` through the copy engine (`dir` `'h2d'` to the device, `'d2h'`
   * back); returns how many arrived (a prefix).
   */
  async copy(src: readonly number[], dst: readonly number[], dir: 'h2d' | 'd2h'): Promise<number> {
    if (src.length === 0) return 0;
    const store = this.machine.mm.mem.content;
    const r = await this.copyEngine.copy(
      src.map((index) => ({ store, index })),
      dst.map((index) => ({ store, index })),
      dir,
    );
    return r.copied;
  }

  /**
   * Removes `runs` from the device page table of every open mirror of `mm` on this device. The
   * mirrors skip the MIGRATE invalidations this device causes itself, so whoever migrates calls this
   * before copying, so that no device access reaches a page whose data is being moved.
   */
  async unmapInMirrors(mm: MmStruct, runs: VpnRuns): Promise<void> {
    if (runs.length === 0) return;
    for (const m of [...this.mirrors.values()]) {
      if (m.process.mm === mm) await m.unmapRuns(runs);
    }
  }

  /**
   * Migrates this device's pages of `[start, end)` (inside `vma`, whose mm's mmap lock the caller
   * holds for read) back to new system pages: `migrate_vma_setup` selecting this device's pages, the
   * device unmaps them, copy back, `migrate_vma_pages`, `migrate_vma_finalize`. With `faultPage` (a
   * CPU fault) every page must move or it throws (EIO for a failed copy, ENOMEM when no RAM is
   * left). Returns how many pages moved (`dmirror_successful_migrated_pages`).
   */
  async migrateRangeToRam(vma: Vma, start: number, end: number, faultPage = -1): Promise<number> {
    const ctx = this.machine.mm;
    const mem = ctx.mem;
    const n = (end - start) / PAGE_SIZE;
    const args = migrateVmaArgs({
      vma,
      start,
      end,
      pgmapOwner: this.device,
      flags: this.selectDevice,
      faultPage,
    });
    await migrateVmaSetup(args);
    const idx: number[] = [];
    const from: number[] = [];
    const to: number[] = [];
    let committed = false;
    try {
      for (let i = 0; i < n; i++) {
        const s = migratePfnToPfn(args.src[i]!);
        if (s >= 0 && (args.src[i]! & MigratePfn.MIGRATE) !== 0) {
          idx.push(i);
          from.push(s);
        }
      }
      // The device must not touch the pages while their data moves (its own MIGRATE was skipped).
      await this.unmapInMirrors(vma.mm, runsOf(start / PAGE_SIZE, idx));
      for (let k = 0; k < idx.length; k++) {
        let d: number;
        try {
          d = await ctx.allocPage();
        } catch (e) {
          throw new HmmError(
            'ENOMEM',
            `dmirror ${this.device.name}: no system page to migrate ${hex(start + idx[k]! * PAGE_SIZE)} back to: ${e instanceof Error ? e.message : String(e)}`,
            { address: start + idx[k]! * PAGE_SIZE },
          );
        }
        mem.flags[d]! |= PG.LOCKED;
        to.push(d);
      }
      const copied = await this.copy(from, to, 'd2h');
      if (copied < idx.length && faultPage >= 0) {
        throw new HmmError(
          'EIO',
          `dmirror ${this.device.name}: the copy engine moved ${copied} of ${idx.length} pages back`,
          { address: start },
        );
      }
      for (let k = 0; k < copied; k++) {
        args.dst[idx[k]!] = migratePfn(to[k]!) | (args.src[idx[k]!]! & MigratePfn.WRITE);
      }
      // Destinations that received nothing are given back; those pages stay in device memory.
      for (const d of to.splice(copied)) releaseLocked(ctx, d);
      to.length = 0;
      committed = true;
      await migrateVmaPages(args);
      let moved = 0;
      for (let i = 0; i < n; i++) {
        const e = args.src[i]!;
        if ((e & MigratePfn.VALID) !== 0 && (e & MigratePfn.MIGRATE) !== 0) moved++;
      }
      return moved;
    } finally {
      if (!committed) for (const d of to) releaseLocked(ctx, d);
      migrateVmaFinalize(args);
    }
  }

  /**
   * `migrate_to_ram` of this device's private memory (`dmirror_devmem_fault`): the CPU touched
   * `fault.page`; it moves back to RAM with `faultPage` set. A failure throws (the CPU access then
   * fails: ENOMEM as out of memory, anything else as SIGBUS).
   */
  async migrateToRam(fault: MigrateToRamFault): Promise<void> {
    await this.migrateRangeToRam(fault.vma, fault.address, fault.address + PAGE_SIZE, fault.page);
  }

  /**
   * Evicts every page of this device's memory to system memory (`dmirror_device_evict_chunk` for
   * each chunk), copying through the copy engine; chunks stay mapped. Returns the frames that could
   * not be evicted (pinned or busy).
   */
  evictAll(): Promise<number[]> {
    if (this.#removed) return Promise.resolve([]);
    return this.devmem.evictAll((src, dst) => this.copy(src, dst, 'd2h'));
  }

  /**
   * `HMM_DMIRROR_RELEASE` (`dmirror_device_remove_chunks`): evicts everything and removes the chunks;
   * later allocations map new ones. EBUSY, naming the frames, if some page could not be evicted.
   * Nothing to do once the device is removed (its memory went with it).
   */
  release(): Promise<void> {
    if (this.#removed) return Promise.resolve();
    return this.devmem.release((src, dst) => this.copy(src, dst, 'd2h'));
  }

  /**
   * Hot-removal of the device (`dmirror_device_remove`): every page of its memory is evicted to
   * system memory and its pagemaps unregistered (`dmirror_device_remove_chunks`), every open mirror
   * stops (notifier removed, device entries dropped; its later commands fail with ENODEV, closing its
   * file still works), then the device itself goes away. ENODEV, changing nothing, if the device is
   * already removed; EBUSY, naming the frames, if a page could not be evicted (the device then stays).
   */
  async remove(): Promise<void> {
    if (this.#removed) {
      throw new HmmError('ENODEV', `dmirror ${this.device.name}: the device was already removed`);
    }
    // From here on new commands fail with ENODEV, so nothing allocates device memory any more.
    this.#removed = true;
    try {
      await this.devmem.release((src, dst) => this.copy(src, dst, 'd2h'));
    } catch (e) {
      this.#removed = false;
      throw e;
    }
    for (const m of [...this.mirrors.values()]) await m.stop();
    await this.device.remove();
  }

  /** `HMM_DMIRROR_FLAGS` with `HMM_DMIRROR_FLAG_FAIL_ALLOC`: the next device-page allocation fails. */
  failNextAlloc(): void {
    this.devmem.failNextAlloc(1);
  }
}

/** Unlocks and frees a destination page that was not used. */
function releaseLocked(ctx: MmContext, pfn: number): void {
  unlockPage(ctx, pfn);
  ctx.putPage(pfn);
}

/** `[startVpn, endVpn)` runs covering `firstVpn + i` for the ascending indexes `idx`. */
export function runsOf(firstVpn: number, idx: readonly number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (const i of idx) {
    const v = firstVpn + i;
    const last = runs[runs.length - 1];
    if (last !== undefined && last[1] === v) last[1] = v + 1;
    else runs.push([v, v + 1]);
  }
  return runs;
}
