/**
 * VRAM BOs exported to peers (drivers.md §7; amdgpu_dma_buf.c, amdgpu_ttm.c, amdgpu_object.c).
 *
 * - {@link AmdgpuVram}: the CPU-visible part of the GPU's VRAM (the BAR aperture) published as peer
 *   memory (`pci_p2pdma_add_resource` + `pci_p2pmem_publish`), and the SDMA engine that moves BOs
 *   between VRAM and GTT (`amdgpu_ttm_copy_mem_to_mem`).
 * - {@link VramBo}: a BO whose allowed domains are VRAM and GTT. A process maps it by `mmap` of the
 *   device file: a VM_PFNMAP mapping whose `fault` gives the CPU the current frame and whose
 *   `p2pMap` gives an importer with a peer path BAR frames (`BUS_ADDR` / `THRU_HOST_BRIDGE`, from
 *   the topology distance), after placing the BO in VRAM if it is not there and the aperture has
 *   room. An importer without a peer path gets system pages (`NOT_SUPPORTED`): amdgpu's dma-buf
 *   attach clears `peer2peer` when `pci_p2pdma_distance` fails, and pinning the attachment then
 *   drops VRAM from the allowed domains, so the BO is moved to GTT and stays there while that
 *   importer holds its mapping. A full aperture is no error either: the BO stays in (or falls back
 *   to) GTT. Every move waits for the BO's fences (`ttm_bo_wait`), revokes every mapping with
 *   `zapVmaPtes` (CPU PTEs and importers), copies through SDMA and frees the old place.
 * - {@link VramBoExporter}: the `@hmm/conformance` {@link P2pExporterHandle} of one BO.
 *
 * The exporter mechanics (p2pdma window, per-object frames, VMA tracking, the `p2p_map` placement
 * rule, move with revocation, teardown) are @hmm/driver-nouveau's {@link NouveauBar} and
 * {@link NouveauBarObject}, driven here with amdgpu's device, aperture size and SDMA engine; this
 * module adds the amdgpu BO around them (domain, reservation fences, GEM_CLOSE).
 *
 * SIM: VRAM BOs are not bound into GPU VMs here (no job accesses them); only the visible aperture
 * is modelled, as one p2pdma window (labelled BAR 1 by the shared window code).
 *
 * @module
 */
import { CopyEngine, HmmError, PAGE_SIZE, Prot } from '@hmm/core';
import type { P2pdmaResource, PciEndpoint, PciTopology, Process, VmOperations } from '@hmm/core';
import type { P2pExporterHandle, P2pPlace } from '@hmm/conformance';
import { NouveauBar } from '@hmm/driver-nouveau';
import type { NouveauBarObject } from '@hmm/driver-nouveau';
import { AmdgpuBo } from './bo.js';
import type { BoDomain } from './bo.js';
import { DmaResvUsage } from './fence.js';
import type { AmdgpuDevice } from './gpu.js';

/** Default CPU-visible VRAM (the aperture exported to peers): 256 MiB, without resizable BAR. */
export const AMDGPU_DEFAULT_VISIBLE_VRAM_BYTES = 256 * 1024 * 1024;

/** The domains a {@link VramBo} lives in. */
export type VramBoDomain = Extract<BoDomain, 'VRAM' | 'GTT'>;

/** Options of an {@link AmdgpuVram}. */
export interface AmdgpuVramOptions {
  /** CPU-visible VRAM bytes (whole pages); default {@link AMDGPU_DEFAULT_VISIBLE_VRAM_BYTES}. */
  readonly visibleVramBytes?: number;
}

/** Options of {@link AmdgpuVram.createBo} (`DRM_IOCTL_AMDGPU_GEM_CREATE`). */
export interface VramBoCreateOptions {
  /**
   * Preferred initial domain: `'VRAM'` (default: placed in VRAM, GTT if the aperture is full) or
   * `'GTT'` (created in system memory; it enters VRAM when a peer maps it or on {@link VramBo.move}).
   */
  readonly domain?: VramBoDomain;
}

const toPlace = (d: VramBoDomain): P2pPlace => (d === 'VRAM' ? 'bar' : 'system');
const toDomain = (p: P2pPlace): VramBoDomain => (p === 'bar' ? 'VRAM' : 'GTT');

/**
 * The GPU's CPU-visible VRAM published as peer memory, and its SDMA engine. One per GPU; needs the
 * GPU's PCI position. Call {@link remove} before `gpu.remove()`.
 */
export class AmdgpuVram {
  /** The published window and its objects (shared with @hmm/driver-nouveau). */
  readonly bar: NouveauBar;
  /** SDMA: moves BOs between VRAM and GTT over the GPU's link. */
  readonly sdma: CopyEngine;
  readonly #bos = new Set<VramBo>();
  #removed = false;

  /** ENODEV without a PCI position; EINVAL for a size that is not a positive number of pages. */
  constructor(
    readonly gpu: AmdgpuDevice,
    opts: AmdgpuVramOptions = {},
  ) {
    const m = gpu.machine;
    const bytes = opts.visibleVramBytes ?? AMDGPU_DEFAULT_VISIBLE_VRAM_BYTES;
    if (!(Number.isSafeInteger(bytes) && bytes > 0 && bytes % PAGE_SIZE === 0)) {
      throw new HmmError(
        'EINVAL',
        `amdgpu ${gpu.name}: visible VRAM ${String(bytes)} is not a whole number of pages`,
      );
    }
    if (gpu.pci === null) {
      throw new HmmError(
        'ENODEV',
        `amdgpu ${gpu.name}: the GPU has no PCI position (AmdgpuDeviceOptions.pci), so it cannot export VRAM`,
      );
    }
    this.sdma = new CopyEngine(m.sched, m.cost, {
      name: `${gpu.name}.sdma0`,
      linkGBs: gpu.systemGBs / m.cost.link.pcieEfficiency,
    });
    this.bar = new NouveauBar({
      machine: m,
      name: gpu.name,
      pci: gpu.pci,
      barBytes: bytes,
      copyEngine: this.sdma,
    });
  }

  /** The p2pdma resource of the aperture. */
  get resource(): P2pdmaResource {
    return this.bar.resource;
  }

  get topology(): PciTopology {
    return this.bar.topology;
  }

  get endpoint(): PciEndpoint {
    return this.bar.endpoint;
  }

  /** Live BOs. */
  get bos(): readonly VramBo[] {
    return [...this.#bos];
  }

  /**
   * `GEM_CREATE` of a BO of `size` bytes (whole pages), zeroed, allowed in VRAM and GTT, placed per
   * `opts.domain`. EINVAL for a bad size, ENOMEM without system memory, ENODEV after {@link remove}
   * or once the GPU is removed. Runs inside a task.
   */
  async createBo(size: number, opts: VramBoCreateOptions = {}): Promise<VramBo> {
    this.gpu.checkAlive('GEM_CREATE');
    if (this.#removed)
      throw new HmmError('ENODEV', `amdgpu ${this.gpu.name}: GEM_CREATE after VRAM was removed`);
    if (!(Number.isSafeInteger(size) && size > 0 && size % PAGE_SIZE === 0)) {
      throw new HmmError(
        'EINVAL',
        `amdgpu ${this.gpu.name}: GEM_CREATE size ${String(size)} is not whole pages`,
      );
    }
    const domain = opts.domain ?? 'VRAM';
    if (domain !== 'VRAM' && domain !== 'GTT') {
      throw new HmmError(
        'EINVAL',
        `amdgpu ${this.gpu.name}: GEM_CREATE domain ${String(domain)} is not VRAM or GTT`,
      );
    }
    const bo = new VramBo(this, this.bar.createObject(size / PAGE_SIZE), size);
    this.#bos.add(bo);
    if (domain === 'VRAM') await bo.move('VRAM');
    return bo;
  }

  /** @internal Called by {@link VramBo.free}. */
  forget(bo: VramBo): void {
    this.#bos.delete(bo);
  }

  /** Takes every free page of the aperture so no BO fits (`pci_alloc_p2pmem` of all of it). */
  exhaust(): void {
    this.bar.exhaustBar();
  }

  /** Gives back what {@link exhaust} took. */
  release(): void {
    this.bar.releaseBar();
  }

  /**
   * Driver unload: frees every live BO (revoking its importers), then unpublishes the aperture.
   * EINVAL the second time. Runs inside a task.
   */
  async remove(): Promise<void> {
    if (this.#removed) throw new HmmError('EINVAL', `amdgpu ${this.gpu.name}: VRAM was already removed`);
    this.#removed = true;
    for (const bo of [...this.#bos]) await bo.free();
    await this.bar.remove();
  }
}

/**
 * A BO allowed in VRAM and GTT, exported through the device file (see the module doc). Its
 * {@link domain} always tells where its pages are now (read-only: it changes by {@link move} and
 * by `p2pMap`).
 */
export class VramBo extends AmdgpuBo {
  /** Use {@link AmdgpuVram.createBo}. */
  constructor(
    readonly vram: AmdgpuVram,
    /** The exported object holding the pages. */
    readonly object: NouveauBarObject,
    size: number,
  ) {
    super(vram.gpu, size, 'GTT');
    Object.defineProperty(this, 'domain', {
      enumerable: true,
      get: (): VramBoDomain => toDomain(object.place),
      set: () => {
        throw new HmmError('EINVAL', `amdgpu BO ${this.handle}: a VRAM BO's domain changes by moving it`);
      },
    });
  }

  /** Pages of the BO. */
  get pages(): number {
    return this.object.pages;
  }

  /** The device-file operations of every mapping of the BO (fault, p2pMap, p2pUnmap). */
  get ops(): VmOperations {
    return this.object.ops;
  }

  /** Moves done (each revoked every mapping first). */
  get moves(): number {
    return this.object.moves;
  }

  /** Peer mappings handed to importers and not given back. */
  get outstanding(): number {
    return this.object.outstanding;
  }

  /** The frames holding the BO now (a copy). */
  frames(): Int32Array {
    return this.object.frames();
  }

  /**
   * `mmap` of the device file (the BO's fake offset) by `process`: the whole BO, shared; resolves to
   * the address. EINVAL once freed.
   */
  mmap(process: Process, prot = Prot.READ | Prot.WRITE): Promise<number> {
    if (this.freed) return Promise.reject(new HmmError('EINVAL', `amdgpu: mmap of freed BO ${this.handle}`));
    return this.object.mmap(process, prot);
  }

  /**
   * `ttm_bo_validate` into `to`: waits for the BO's fences, then moves it (revoking every mapping,
   * copying through SDMA). `'VRAM'` stays in GTT when the aperture is full. Resolves to the domain
   * it is in. EINVAL once freed; EIO if SDMA fails (the BO stays where it was).
   */
  async move(to: VramBoDomain): Promise<VramBoDomain> {
    if (this.freed) throw new HmmError('EINVAL', `amdgpu: move of freed BO ${this.handle}`);
    if (to !== 'VRAM' && to !== 'GTT') {
      throw new HmmError('EINVAL', `amdgpu BO ${this.handle}: cannot move to ${String(to)}`);
    }
    await this.resv.waitTimeout(DmaResvUsage.BOOKKEEP, Infinity);
    return toDomain(await this.object.move(toPlace(to)));
  }

  /**
   * `GEM_CLOSE`: waits for the BO's jobs, revokes every mapping (importers give theirs back), frees
   * its pages; CPU access to its mappings then raises SIGBUS, `p2pMap` fails with ENODEV. EINVAL the
   * second time.
   */
  async free(): Promise<void> {
    this.markFreed('amdgpu GEM_CLOSE');
    await this.resv.waitTimeout(DmaResvUsage.BOOKKEEP, Infinity);
    await this.object.teardown();
    this.vram.forget(this);
  }
}

/** The {@link P2pExporterHandle} of `@hmm/conformance` over one {@link VramBo}. */
export class VramBoExporter implements P2pExporterHandle {
  #exhausted = false;

  constructor(readonly bo: VramBo) {}

  get pages(): number {
    return this.bo.pages;
  }

  get place(): P2pPlace {
    return toPlace(this.bo.domain as VramBoDomain);
  }

  mmap(process: Process): Promise<number> {
    return this.bo.mmap(process);
  }

  async move(to: P2pPlace): Promise<P2pPlace> {
    return toPlace(await this.bo.move(toDomain(to)));
  }

  exhaustBar(): void {
    this.#exhausted = true;
    this.bo.vram.exhaust();
  }

  releaseBar(): void {
    this.#exhausted = false;
    this.bo.vram.release();
  }

  /** Frees the BO, and gives back the aperture pages this handle's {@link exhaustBar} took. */
  async teardown(): Promise<void> {
    await this.bo.free();
    if (this.#exhausted) this.releaseBar();
  }
}
