/**
 * Peer-to-peer for the dmirror example, written only against `@hmm/core`: a dmirror device as an
 * **exporter** of one object behind its device file, and as an **importer** of another device's
 * file mapping (the 2019 linux-mm `p2p_map` / `p2p_unmap` proposal on `vm_operations_struct`).
 *
 * - {@link DmirrorP2pExporter}: one object of `pages` pages, kept in the device's BAR window (peer
 *   memory from `p2pdmaAddResource`, drivers/pci/p2pdma.c) or in system memory. `mmap` of the device
 *   file gives a VM_PFNMAP mapping whose `fault` returns the object's frame for the CPU and whose
 *   `p2pMap` returns the object's frames for an importer: in the BAR when the importer has a peer
 *   path to it (the object moves there if it can), in system memory when it has none, when the BAR
 *   is full, or while an importer without a peer path holds a mapping. Every relocation revokes all
 *   mappings first with `zapVmaPtes`. Moves are serialized by the exporter's mutex.
 * - {@link DmirrorP2pImporter}: a context (ASID) of a dmirror device bound to one range of a process.
 *   Its device faults call `p2pMap` (not `hmm_range_fault`: the range is a device-file mapping)
 *   under the interval-notifier sequence protocol; its invalidate callback unmaps the device entries,
 *   waits for the unmap's fence, and gives the mapping back with `p2pUnmap`.
 *
 * @module
 */
import {
  DevPerm,
  HmmError,
  MapFlag,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
  Mutex,
  P2pMapType,
  p2pMapLoop,
  p2pUnmap,
  PAGE_SIZE,
  Prot,
  zapVmaPtes,
} from '@hmm/core';
import type {
  Machine,
  MmuIntervalNotifier,
  P2pdmaResource,
  P2pImporterRef,
  P2pMapping,
  PciEndpoint,
  PciTopology,
  Process,
  SimDevice,
  Vma,
  VmOperations,
} from '@hmm/core';
import type { DmirrorDevice } from './dmirror-device.js';

/** Where the exported object lives. */
export type DmirrorObjectPlace = 'bar' | 'system';

/** The PCI position of a dmirror device (`DmirrorDeviceOptions.pci`); ENODEV if it has none. */
function pciOf(dev: DmirrorDevice): { topology: PciTopology; endpoint: PciEndpoint } {
  const pci = dev.device.pci;
  if (pci === null) {
    throw new HmmError(
      'ENODEV',
      `dmirror ${dev.device.name}: the device has no PCI position for peer-to-peer`,
    );
  }
  return pci;
}

/** A dmirror device exporting one object through its device file. */
export class DmirrorP2pExporter {
  /** The device-file operations (`vm_operations_struct`) of every mapping of the object. */
  readonly ops: VmOperations;
  readonly #machine: Machine;
  readonly #topology: PciTopology;
  readonly #endpoint: PciEndpoint;
  readonly #bar: P2pdmaResource;
  readonly #lock: Mutex;
  readonly #vmas = new Set<Vma>();
  /** Live mappings handed to importers, with whether the importer has a peer path. */
  readonly #handed = new Map<P2pMapping, boolean>();
  #frames: Int32Array;
  #place: DmirrorObjectPlace = 'system';
  #barRun = -1;
  #hog = -1;
  #torn = false;

  /**
   * An object of `pages` pages (zeroed system pages at first) exported by `dev` from the BAR window
   * `bar` (a resource of `dev`'s endpoint). ENOMEM if system memory cannot hold it.
   */
  constructor(
    machine: Machine,
    readonly dev: DmirrorDevice,
    bar: P2pdmaResource,
    readonly pages: number,
  ) {
    const { topology, endpoint } = pciOf(dev);
    if (bar.provider !== endpoint) {
      throw new HmmError('EINVAL', `dmirror ${dev.device.name}: the BAR resource belongs to another device`);
    }
    this.#machine = machine;
    this.#topology = topology;
    this.#endpoint = endpoint;
    this.#bar = bar;
    this.#lock = new Mutex(machine.sched, `dmirror:${dev.device.name}:export`);
    this.#frames = new Int32Array(pages);
    for (let i = 0; i < pages; i++) this.#frames[i] = this.#allocSystem();
    this.ops = {
      name: `${dev.device.name}-file`,
      fault: (vma, address) => {
        this.#checkLive('fault');
        return this.#frames[this.#index(vma, address)]!;
      },
      open: (vma) => {
        // mprotect / munmap / mremap made a new piece of the mapping: revoke it too on moves.
        this.#vmas.add(vma);
      },
      close: (vma) => {
        this.#vmas.delete(vma);
      },
      p2pMap: (vma, start, end, importer) => this.#p2pMap(vma, start, end, importer),
      p2pUnmap: (_vma, mapping) => {
        this.#handed.delete(mapping);
      },
    };
  }

  /** Where the object is now. */
  get place(): DmirrorObjectPlace {
    return this.#place;
  }

  /** Mappings handed to importers and not given back yet. */
  get outstanding(): number {
    return this.#handed.size;
  }

  #checkLive(what: string): void {
    if (this.#torn) {
      throw new HmmError(
        'ENODEV',
        `dmirror ${this.dev.device.name}: ${what} after the exporter was torn down`,
      );
    }
  }

  #allocSystem(): number {
    const pfn = this.#machine.mm.mem.alloc();
    if (pfn < 0)
      throw new HmmError('ENOMEM', `dmirror ${this.dev.device.name}: no system page for the object`);
    return pfn;
  }

  #index(vma: Vma, address: number): number {
    return (address - vma.start) / PAGE_SIZE + vma.pgoff;
  }

  /** `mmap` of the device file by `process`: the whole object, shared; resolves to the address. */
  async mmap(process: Process, prot = Prot.READ | Prot.WRITE): Promise<number> {
    this.#checkLive('mmap');
    const a = await process.mmap({
      length: this.pages * PAGE_SIZE,
      prot,
      flags: MapFlag.SHARED,
      ops: this.ops,
    });
    const vma = process.mm.vmas.lookup(a);
    if (vma === undefined)
      throw new HmmError('EFAULT', `dmirror ${this.dev.device.name}: mmap left no mapping`);
    this.#vmas.add(vma);
    return a;
  }

  /** The `p2p_map` op: places the object for this importer, then hands out its frames. */
  async #p2pMap(vma: Vma, start: number, end: number, importer: P2pImporterRef): Promise<P2pMapping> {
    await this.#lock.lock();
    try {
      this.#checkLive('p2p_map');
      const reach = this.#topology.distance(this.#endpoint, importer.pci).type;
      const peer = reach !== P2pMapType.NOT_SUPPORTED;
      const farHolders = [...this.#handed.values()].some((p) => !p);
      if (!peer && this.#place === 'bar') await this.#move('system');
      else if (peer && !farHolders && this.#place === 'system') await this.#move('bar');
      const n = (end - start) / PAGE_SIZE;
      const first = this.#index(vma, start);
      const inBar = this.#place === 'bar';
      const bus = new Float64Array(n).fill(-1);
      const pfns = this.#frames.slice(first, first + n);
      if (inBar) for (let i = 0; i < n; i++) bus[i] = this.#bar.toBus(pfns[i]!);
      const mapping: P2pMapping = {
        start,
        end,
        pfns,
        bus,
        type: inBar ? reach : P2pMapType.NOT_SUPPORTED,
        writable: vma.writable,
      };
      this.#handed.set(mapping, peer);
      return mapping;
    } finally {
      this.#lock.unlock();
    }
  }

  /** Revokes every mapping of the object (`zap_vma_ptes`): CPU PTEs and importers. */
  async #revokeAll(): Promise<void> {
    for (const vma of [...this.#vmas]) {
      if (vma.mm.state === 'live' && vma.mm.vmas.lookup(vma.start) === vma) {
        await zapVmaPtes(vma, vma.start, vma.end - vma.start);
      }
    }
  }

  /**
   * Moves the object to `to` (`'bar'` stays in or falls back to system memory when the BAR has no
   * room): revoke every mapping, copy, free the old place. Resolves to where it is.
   */
  async move(to: DmirrorObjectPlace): Promise<DmirrorObjectPlace> {
    await this.#lock.lock();
    try {
      this.#checkLive('move');
      return await this.#move(to);
    } finally {
      this.#lock.unlock();
    }
  }

  async #move(to: DmirrorObjectPlace): Promise<DmirrorObjectPlace> {
    if (to === this.#place) return to;
    let run = -1;
    if (to === 'bar') {
      run = this.#bar.alloc(this.pages); // pci_alloc_p2pmem; -1 when the BAR is full
      if (run < 0) return this.#place;
    }
    await this.#revokeAll();
    const mem = this.#machine.mm.mem;
    const next = new Int32Array(this.pages);
    for (let i = 0; i < this.pages; i++) {
      next[i] = to === 'bar' ? run + i : this.#allocSystem();
      mem.copyFrame(next[i]!, this.#frames[i]!);
    }
    this.#freePlace();
    this.#frames = next;
    this.#place = to;
    this.#barRun = run;
    return to;
  }

  #freePlace(): void {
    if (this.#place === 'bar')
      this.#bar.free(this.#barRun); // pci_free_p2pmem
    else for (const pfn of this.#frames) this.#machine.mm.putPage(pfn);
    this.#barRun = -1;
    this.#frames = new Int32Array(0);
  }

  /** Takes every free page of the BAR (so nothing more fits); {@link releaseBar} gives them back. */
  exhaustBar(): void {
    if (this.#hog >= 0 || this.#bar.nrFree === 0) return;
    this.#hog = this.#bar.alloc(this.#bar.nrFree);
  }

  /** Frees what {@link exhaustBar} took. */
  releaseBar(): void {
    if (this.#hog >= 0) this.#bar.free(this.#hog);
    this.#hog = -1;
  }

  /** Exporter teardown: revokes every importer (`zapVmaPtes`), then frees the object's memory. */
  async teardown(): Promise<void> {
    await this.#lock.lock();
    try {
      if (this.#torn) return;
      this.#torn = true;
      await this.#revokeAll();
      this.#freePlace();
      this.releaseBar();
    } finally {
      this.#lock.unlock();
    }
  }
}

/** Options of {@link DmirrorP2pImporter}. */
export interface DmirrorP2pImporterOptions {
  /**
   * Only tests use it, to build a deliberately broken importer: its invalidate callback returns
   * without removing device entries or giving the mapping back.
   */
  readonly ignoreInvalidations?: boolean;
}

/** A dmirror device importing one range (a device-file mapping) of one process through `p2pMap`. */
export class DmirrorP2pImporter {
  /** The device context (ASID) of this importer on the dmirror device. */
  readonly asid: number;
  /** The mapping held now, or null. */
  mapping: P2pMapping | null = null;
  /** `p2pMap` calls made. */
  maps = 0;
  readonly #lock: Mutex;
  readonly #sub: MmuIntervalNotifier;
  readonly #ref: P2pImporterRef;
  #closed = false;

  /** An importer on `dev` of the `pages` pages at `start` of `process`. */
  constructor(
    machine: Machine,
    readonly dev: DmirrorDevice,
    readonly process: Process,
    readonly start: number,
    readonly pages: number,
    opts: DmirrorP2pImporterOptions = {},
  ) {
    const device = dev.device;
    this.#ref = { name: device.name, pci: pciOf(dev).endpoint };
    const used = new Set(device.asids());
    let asid = 1;
    while (used.has(asid) || dev.mirrors.has(asid)) asid++;
    this.asid = asid;
    device.mmu(asid);
    this.#lock = new Mutex(machine.sched, `dmirror:${device.name}:p2p${asid}`);
    const end = start + pages * PAGE_SIZE;
    this.#sub = mmuIntervalNotifierInsert(process.mm, start, pages * PAGE_SIZE, {
      invalidate: async (sub, range, seq) => {
        if (opts.ignoreInvalidations === true) return true;
        await this.#lock.lock();
        try {
          mmuIntervalSetSeq(sub, seq);
          const lo = Math.max(range.start, start) / PAGE_SIZE;
          const hi = Math.min(range.end, end) / PAGE_SIZE;
          if (lo < hi) {
            await device.queue.submit({ op: 'unmap', asid, startVpn: lo, endVpn: hi }).wait();
          }
          this.#giveBack();
        } finally {
          this.#lock.unlock();
        }
        return true;
      },
    });
    device.setFaultHandler((f) => this.#fault(f.access !== 'read'), asid);
  }

  /** The device this importer programs. */
  get device(): SimDevice {
    return this.dev.device;
  }

  #giveBack(): void {
    if (this.mapping !== null) {
      p2pUnmap(this.mapping);
      this.mapping = null;
    }
  }

  /** The device fault: `p2pMap` of the whole range, committed under the sequence protocol. */
  async #fault(write: boolean): Promise<void> {
    await p2pMapLoop({
      notifier: this.#sub,
      start: this.start,
      end: this.start + this.pages * PAGE_SIZE,
      importer: this.#ref,
      write,
      driverLock: this.#lock,
      onMap: () => {
        this.maps++;
      },
      commit: async (m) => {
        this.#giveBack();
        this.mapping = m;
        const perm = m.writable ? DevPerm.READ | DevPerm.WRITE : DevPerm.READ;
        const vpns = Array.from({ length: this.pages }, (_, i) => this.start / PAGE_SIZE + i);
        await this.device.queue
          .submit({ op: 'map', asid: this.asid, vpns, pfns: Array.from(m.pfns), perms: vpns.map(() => perm) })
          .wait();
      },
    });
  }

  #checkRange(addr: number, len: number): void {
    if (this.#closed) throw new HmmError('EBADF', `dmirror ${this.device.name}: importer used after close`);
    if (!(len > 0) || addr < this.start || addr + len > this.start + this.pages * PAGE_SIZE) {
      throw new HmmError('EINVAL', `dmirror ${this.device.name}: access outside the imported range`, {
        address: addr,
      });
    }
  }

  /** The device reads `len` bytes at `addr`, one page at a time over the bus. */
  async read(addr: number, len: number): Promise<Uint8Array> {
    this.#checkRange(addr, len);
    const out = new Uint8Array(len);
    for (let pos = addr; pos < addr + len;) {
      const n = Math.min(PAGE_SIZE - (pos % PAGE_SIZE), addr + len - pos);
      out.set(await this.device.read(this.asid, pos, n), pos - addr);
      pos += n;
    }
    return out;
  }

  /** The device writes `data` at `addr`, one page at a time. */
  async write(addr: number, data: Uint8Array): Promise<void> {
    this.#checkRange(addr, data.length);
    for (let pos = addr; pos < addr + data.length;) {
      const n = Math.min(PAGE_SIZE - (pos % PAGE_SIZE), addr + data.length - pos);
      await this.device.write(this.asid, pos, data.subarray(pos - addr, pos - addr + n));
      pos += n;
    }
  }

  /** Device page-table entries over the range now. */
  devicePages(): number {
    let n = 0;
    const first = this.start / PAGE_SIZE;
    this.device.findMmu(this.asid)?.forEachEntry(first, first + this.pages, () => {
      n++;
    });
    return n;
  }

  /** Importer teardown: drop every device entry, give the mapping back, remove the notifier. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#lock.lock();
    try {
      await this.device.queue.submit({ op: 'unmap-all', asid: this.asid }).wait();
      this.#giveBack();
    } finally {
      this.#lock.unlock();
    }
    await mmuIntervalNotifierRemove(this.#sub);
    this.device.setFaultHandler(null, this.asid);
    this.device.freeAsid(this.asid);
  }
}
