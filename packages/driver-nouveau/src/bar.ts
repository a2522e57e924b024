/**
 * VRAM exported to peers through BAR1 (the p2p exporter of the GPU): drivers.md §1 (P2P) and §7.
 *
 * - {@link NouveauBar}: the GPU publishes its BAR1 window as peer memory (`pci_p2pdma_add_resource`
 *   then `pci_p2pmem_publish`), as NVIDIA's "GPU Direct RDMA for device-private pages" series does.
 * - {@link NouveauBarObject}: a GEM-BO-like object of N pages, kept in the BAR window or in system
 *   memory (the GTT fallback of drivers.md §7). A process maps it by `mmap` of the device file: a
 *   VM_PFNMAP mapping whose `fault` gives the CPU the current frame and whose `p2pMap` (the 2019
 *   linux-mm `p2p_map` proposal) gives an importer BAR frames when it has a peer path to the BAR
 *   and the object is, or can be moved, there, and system pages (`P2pMapType.NOT_SUPPORTED`)
 *   otherwise. The object moves when it must: into the BAR for a peer importer, out of it for an
 *   importer without a peer path. Every move revokes all mappings with `zapVmaPtes` first, then
 *   copies through the GPU copy engine, then frees the old place. Moves, `p2pMap` and teardown are
 *   serialized by the object's mutex.
 * - {@link nouveauP2pTarget} and {@link nouveauTopology}: the GPU as an exporter-only
 *   `@hmm/conformance` target.
 *
 * @module
 */
import {
  HmmError,
  MapFlag,
  Mutex,
  P2pMapType,
  PAGE_SIZE,
  PciTopology,
  Prot,
  p2pdmaAddResource,
  zapVmaPtes,
} from '@hmm/core';
import type {
  CopyPage,
  Machine,
  P2pImporterRef,
  P2pMapping,
  P2pdmaResource,
  PciEndpoint,
  PciHostBridge,
  PciSwitch,
  Process,
  Vma,
  VmOperations,
} from '@hmm/core';
import type { P2pExporterHandle, P2pPlace, P2pTarget } from '@hmm/conformance';
import type { NouveauGpu } from './gpu.js';

/** Where a {@link NouveauBarObject} lives: the BAR1 window (peer memory) or system memory. */
export type NouveauBarPlace = P2pPlace;

/**
 * What a {@link NouveauBar} and its objects use of their device: its machine, name, PCI position,
 * window size and copy engine. A {@link NouveauGpu} is one; another driver's device may supply them
 * to export its own window the same way.
 */
export type NouveauBarDevice = Pick<NouveauGpu, 'machine' | 'name' | 'pci' | 'barBytes' | 'copyEngine'>;

/** The PCI position of `gpu`; ENODEV if it was built without one. */
function pciOf(gpu: NouveauBarDevice): { topology: PciTopology; endpoint: PciEndpoint } {
  if (gpu.pci === null) {
    throw new HmmError(
      'ENODEV',
      `nouveau ${gpu.name}: the GPU has no PCI position (NouveauGpuOptions.pci), so it cannot export its BAR`,
    );
  }
  return gpu.pci;
}

/**
 * The GPU's BAR1 window published as peer memory (`pci_p2pdma_add_resource` of BAR 1 over
 * `gpu.barBytes`, then `pci_p2pmem_publish`). One per GPU. Objects are created with
 * {@link createObject}.
 */
export class NouveauBar {
  /** The p2pdma resource of the window. */
  readonly resource: P2pdmaResource;
  readonly topology: PciTopology;
  readonly endpoint: PciEndpoint;
  readonly #objects = new Set<NouveauBarObject>();
  readonly #hog: number[] = [];
  #nextId = 1;
  #removed = false;

  /** Publishes BAR1 of `gpu`. ENODEV without a PCI position, EINVAL for an empty BAR. */
  constructor(readonly gpu: NouveauBarDevice) {
    const { topology, endpoint } = pciOf(gpu);
    if (gpu.barBytes === 0) {
      throw new HmmError('EINVAL', `nouveau ${gpu.name}: BAR1 is empty (barBytes 0), nothing to export`);
    }
    this.topology = topology;
    this.endpoint = endpoint;
    this.resource = p2pdmaAddResource(gpu.machine.mm, topology, endpoint, { bar: 1, barBytes: gpu.barBytes });
    this.resource.published = true;
  }

  /** Objects created and not torn down. */
  get objects(): readonly NouveauBarObject[] {
    return [...this.#objects];
  }

  /**
   * A new object of `pages` pages (zeroed system pages: it enters the BAR when a peer maps it or
   * on {@link NouveauBarObject.move}). EINVAL for a bad count, ENOMEM without system memory,
   * ENODEV after {@link remove}.
   */
  createObject(pages: number): NouveauBarObject {
    if (this.#removed)
      throw new HmmError('ENODEV', `nouveau ${this.gpu.name}: BAR1 object after the BAR was removed`);
    if (!(Number.isSafeInteger(pages) && pages > 0)) {
      throw new HmmError(
        'EINVAL',
        `nouveau ${this.gpu.name}: a BAR object needs a positive page count, got ${String(pages)}`,
      );
    }
    const obj = new NouveauBarObject(this, `${this.gpu.name}:bo${this.#nextId++}`, pages);
    this.#objects.add(obj);
    return obj;
  }

  /** @internal Called by {@link NouveauBarObject.teardown}. */
  forget(obj: NouveauBarObject): void {
    this.#objects.delete(obj);
  }

  /**
   * Takes every free page of the window (`pci_alloc_p2pmem` of all of it, largest runs first) so
   * that no object fits; {@link releaseBar} gives them back.
   */
  exhaustBar(): void {
    for (let size = this.resource.nrFree; size > 0; size = Math.min(size >> 1, this.resource.nrFree)) {
      for (let pfn = this.resource.alloc(size); pfn >= 0; pfn = this.resource.alloc(size))
        this.#hog.push(pfn);
    }
  }

  /** Frees what {@link exhaustBar} took. */
  releaseBar(): void {
    for (const pfn of this.#hog.splice(0)) this.resource.free(pfn);
  }

  /**
   * Driver unbind: tears down every live object (revoking their importers), gives back what
   * {@link exhaustBar} took and removes the p2pdma resource. Runs inside a task. EINVAL the second time.
   */
  async remove(): Promise<void> {
    if (this.#removed) throw new HmmError('EINVAL', `nouveau ${this.gpu.name}: BAR1 was already removed`);
    this.#removed = true;
    for (const obj of [...this.#objects]) await obj.teardown();
    this.releaseBar();
    this.resource.remove();
  }
}

/**
 * One exported object (a GEM BO) of a {@link NouveauBar}: see the module doc. Its device-file
 * operations are {@link ops}; CPU access and importers always see its current place.
 */
export class NouveauBarObject {
  /** The device-file operations (`vm_operations_struct`) of every mapping of the object. */
  readonly ops: VmOperations;
  /** Moves done (each one revoked every mapping first). */
  moves = 0;
  readonly #lock: Mutex;
  /** Every VMA mapping the object: from {@link mmap} and `vm_ops->open` (splits, mremap, fork). */
  readonly #vmas = new Set<Vma>();
  /** Mappings handed to importers and not given back, with whether the importer has a peer path. */
  readonly #handed = new Map<P2pMapping, boolean>();
  #frames: Int32Array;
  #place: NouveauBarPlace = 'system';
  #barRun = -1;
  /** CPU faults served: a move copies again when one happened while it copied. */
  #cpuFaults = 0;
  #torn = false;

  /** Use {@link NouveauBar.createObject}. */
  constructor(
    readonly bar: NouveauBar,
    readonly name: string,
    readonly pages: number,
  ) {
    this.#lock = new Mutex(bar.gpu.machine.sched, `${name}:lock`);
    this.#frames = new Int32Array(pages);
    for (let i = 0; i < pages; i++) this.#frames[i] = this.#allocSystem();
    this.ops = {
      name: `${name}-file`,
      fault: (vma, address) => {
        // vmf_insert_pfn of the current frame; SIGBUS once torn down.
        if (this.#torn) return -1;
        this.#cpuFaults++;
        return this.#frames[this.#index(vma, address)]!;
      },
      open: (vma) => {
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
  get place(): NouveauBarPlace {
    return this.#place;
  }

  /** Mappings handed to importers and not given back yet. */
  get outstanding(): number {
    return this.#handed.size;
  }

  /** True once {@link teardown} ran. */
  get torn(): boolean {
    return this.#torn;
  }

  /** The frames holding the object now (a copy). */
  frames(): Int32Array {
    return this.#frames.slice();
  }

  #gone(what: string): HmmError {
    return new HmmError('ENODEV', `nouveau ${this.name}: ${what} after the object was torn down`);
  }

  #allocSystem(): number {
    const pfn = this.bar.gpu.machine.mm.mem.alloc();
    if (pfn < 0) throw new HmmError('ENOMEM', `nouveau ${this.name}: no system page for the object`);
    return pfn;
  }

  #index(vma: Vma, address: number): number {
    return (address - vma.start) / PAGE_SIZE + vma.pgoff;
  }

  /**
   * `mmap` of the device file by `process`: the whole object, shared (read-write by default);
   * resolves to the address. ENODEV after {@link teardown}.
   */
  async mmap(process: Process, prot = Prot.READ | Prot.WRITE): Promise<number> {
    if (this.#torn) throw this.#gone('mmap');
    const a = await process.mmap({
      length: this.pages * PAGE_SIZE,
      prot,
      flags: MapFlag.SHARED,
      ops: this.ops,
    });
    const vma = process.mm.vmas.lookup(a);
    if (vma === undefined) throw new HmmError('EFAULT', `nouveau ${this.name}: mmap left no mapping`);
    this.#vmas.add(vma);
    return a;
  }

  /**
   * The `p2p_map` op: places the object for this importer (into the BAR for a peer when no importer
   * without a peer path holds a mapping and the BAR has room; out of it for an importer without a
   * peer path), then hands out its frames.
   */
  async #p2pMap(vma: Vma, start: number, end: number, importer: P2pImporterRef): Promise<P2pMapping> {
    await this.#lock.lock();
    try {
      if (this.#torn) throw this.#gone('p2p_map');
      const reach = this.bar.topology.distance(this.bar.endpoint, importer.pci).type;
      const peer = reach !== P2pMapType.NOT_SUPPORTED;
      const farHolders = [...this.#handed.values()].some((p) => !p);
      if (!peer && this.#place === 'bar') await this.#move('system');
      else if (peer && !farHolders && this.#place === 'system') await this.#move('bar');
      const n = (end - start) / PAGE_SIZE;
      const first = this.#index(vma, start);
      const pfns = this.#frames.slice(first, first + n);
      const inBar = this.#place === 'bar';
      const bus = new Float64Array(n).fill(-1);
      if (inBar) for (let i = 0; i < n; i++) bus[i] = this.bar.resource.toBus(pfns[i]!);
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

  /** Revokes every mapping of the object (`zap_vma_ptes` over each VMA): CPU PTEs and importers. */
  async #revokeAll(): Promise<void> {
    for (const vma of [...this.#vmas]) {
      if (vma.mm.state === 'live' && vma.mm.vmas.lookup(vma.start) === vma) {
        await zapVmaPtes(vma, vma.start, vma.end - vma.start);
      }
    }
  }

  /**
   * Moves the object to `to`: `'bar'` stays in (or falls back to) system memory when the window has
   * no room. Revokes every mapping, copies through the GPU copy engine, frees the old place.
   * Resolves to where the object is. ENODEV after {@link teardown}; EIO if the copy engine fails
   * (the object then stays where it was).
   */
  async move(to: NouveauBarPlace): Promise<NouveauBarPlace> {
    await this.#lock.lock();
    try {
      if (this.#torn) throw this.#gone('move');
      return await this.#move(to);
    } finally {
      this.#lock.unlock();
    }
  }

  async #move(to: NouveauBarPlace): Promise<NouveauBarPlace> {
    if (to === this.#place) return to;
    // The new place first: a full BAR is no error, the object stays in system memory.
    let run = -1;
    const next = new Int32Array(this.pages);
    if (to === 'bar') {
      run = this.bar.resource.alloc(this.pages); // pci_alloc_p2pmem
      if (run < 0) return this.#place;
      for (let i = 0; i < this.pages; i++) next[i] = run + i;
    } else {
      for (let i = 0; i < this.pages; i++) next[i] = this.#allocSystem();
    }
    const store = this.bar.gpu.machine.mm.mem.content;
    const src: CopyPage[] = Array.from(this.#frames, (pfn) => ({ store, index: pfn }));
    const dst: CopyPage[] = Array.from(next, (pfn) => ({ store, index: pfn }));
    // The fault op cannot wait for the move: a CPU fault during the copy maps (and may write) an
    // old frame. Revoke and copy again until a round saw no CPU fault, then switch with no await.
    for (;;) {
      const faults = this.#cpuFaults;
      await this.#revokeAll();
      const r = await this.bar.gpu.copyEngine.copy(src, dst, to === 'bar' ? 'h2d' : 'd2h');
      if (r.error !== null) {
        this.#free(to, run, next);
        throw new HmmError(
          'EIO',
          `nouveau ${this.name}: the copy engine failed moving the object to ${to}: ${r.error.message}`,
        );
      }
      if (this.#cpuFaults === faults) break;
    }
    this.#free(this.#place, this.#barRun, this.#frames);
    this.#frames = next;
    this.#place = to;
    this.#barRun = run;
    this.moves++;
    return to;
  }

  /** Frees a place: the BAR run (`pci_free_p2pmem`) or the system pages. */
  #free(place: NouveauBarPlace, run: number, frames: Int32Array): void {
    if (place === 'bar') this.bar.resource.free(run);
    else for (const pfn of frames) this.bar.gpu.machine.mm.putPage(pfn);
  }

  /**
   * Teardown of the object: revokes every mapping (importers drop theirs and give them back), then
   * frees its memory. Afterwards CPU access to its mappings raises SIGBUS and `p2pMap`, `move` and
   * `mmap` fail with ENODEV. EINVAL the second time.
   */
  async teardown(): Promise<void> {
    await this.#lock.lock();
    try {
      if (this.#torn) throw new HmmError('EINVAL', `nouveau ${this.name}: the object was already torn down`);
      this.#torn = true;
      await this.#revokeAll();
      this.#free(this.#place, this.#barRun, this.#frames);
      this.#frames = new Int32Array(0);
      this.#barRun = -1;
      this.#handed.clear();
      this.bar.forget(this);
    } finally {
      this.#lock.unlock();
    }
  }
}

/** {@link P2pExporterHandle} of `@hmm/conformance` over one {@link NouveauBarObject}. */
export class NouveauBarExporter implements P2pExporterHandle {
  #exhausted = false;

  constructor(readonly object: NouveauBarObject) {}

  get pages(): number {
    return this.object.pages;
  }

  get place(): P2pPlace {
    return this.object.place;
  }

  mmap(process: Process): Promise<number> {
    return this.object.mmap(process);
  }

  move(to: P2pPlace): Promise<P2pPlace> {
    return this.object.move(to);
  }

  exhaustBar(): void {
    this.#exhausted = true;
    this.object.bar.exhaustBar();
  }

  releaseBar(): void {
    this.#exhausted = false;
    this.object.bar.releaseBar();
  }

  /** Tears the object down, and gives back the BAR pages this handle's {@link exhaustBar} took. */
  async teardown(): Promise<void> {
    await this.object.teardown();
    if (this.#exhausted) this.releaseBar();
  }
}

/** Options of {@link nouveauP2pTarget}. */
export interface NouveauP2pTargetOptions {
  /** The GPU's published BAR, if already made; default a new {@link NouveauBar} of `gpu`. */
  readonly bar?: NouveauBar;
}

/**
 * The GPU as an exporter-only peer-to-peer target of `@hmm/conformance` (no `createImporter`: the
 * suite imports through its `ReferenceP2pImporter` next to {@link P2pTarget.exporterEndpoint}).
 * The GPU needs a PCI position below a switch (see {@link nouveauTopology}). `bar` is the published
 * window: call `bar.remove()` in the target's teardown.
 */
export function nouveauP2pTarget(
  machine: Machine,
  gpu: NouveauGpu,
  opts: NouveauP2pTargetOptions = {},
): P2pTarget & { readonly bar: NouveauBar } {
  if (gpu.machine !== machine) {
    throw new HmmError('EINVAL', `nouveau ${gpu.name}: the GPU belongs to another machine`);
  }
  const bar = opts.bar ?? new NouveauBar(gpu);
  if (bar.gpu !== gpu) throw new HmmError('EINVAL', `nouveau ${gpu.name}: the BAR belongs to another GPU`);
  return {
    topology: bar.topology,
    exporterEndpoint: bar.endpoint,
    bar,
    createExporter: (pages) => Promise.resolve(new NouveauBarExporter(bar.createObject(pages))),
  };
}

/** What {@link nouveauTopology} built. */
export interface NouveauTopology {
  readonly topology: PciTopology;
  /** `hb0`, a host bridge forwarding peer traffic between any roots. */
  readonly hostBridge: PciHostBridge;
  /** `sw0`, a switch without ACS redirect: endpoints below it reach each other by bus address. */
  readonly switch: PciSwitch;
  /** One endpoint per name, in order, on a PCIe 3.0 x16 link. */
  readonly endpoints: readonly PciEndpoint[];
  /** The endpoint called `name`; EINVAL for an unknown name. */
  endpoint(name: string): PciEndpoint;
}

/**
 * A PCI topology for GPUs: `hb0` (p2p `'any'`) → `sw0` → one endpoint per name on a PCIe 3.0 x16
 * link (`cost.link.pcie3PeakGBs`, the GTX 1080's). Build each GPU with `pci: {topology, endpoint}`.
 */
export function nouveauTopology(machine: Machine, names: readonly string[] = ['gpu0']): NouveauTopology {
  const topology = new PciTopology(machine.cost);
  const hostBridge = topology.addHostBridge('hb0', 'any');
  const sw = topology.addSwitch('sw0', hostBridge);
  const endpoints = names.map((n) => topology.addEndpoint(n, sw, machine.cost.link.pcie3PeakGBs));
  return {
    topology,
    hostBridge,
    switch: sw,
    endpoints,
    endpoint(name) {
      const ep = endpoints.find((e) => e.name === name);
      if (ep === undefined) throw new HmmError('EINVAL', `nouveauTopology: no endpoint '${name}'`);
      return ep;
    },
  };
}
