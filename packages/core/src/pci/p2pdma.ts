/**
 * Peer-to-peer DMA memory (drivers/pci/p2pdma.c, include/linux/pci-p2pdma.h): a device exposes part
 * of its memory through a BAR window; other devices reach it by bus address.
 *
 * `p2pdmaAddResource` (`pci_p2pdma_add_resource`) maps the window as ZONE_DEVICE frames of type
 * `PCI_P2PDMA`, so peer memory has frame numbers and storage like any memory, and hands it to an
 * allocator (the kernel's `gen_pool`). Allocation failure is an ordinary condition: the allocator
 * returns -1 and the caller falls back (to system memory, in the p2p_map contract).
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from '../mm/constants.js';
import { MemoryType, memremapPages, memunmapPages, pagemapOf } from '../mm/memremap.js';
import type { DevPagemap } from '../mm/memremap.js';
import type { MmContext } from '../mm/mm-context.js';
import { PG } from '../mm/page-flags.js';
import type { PciEndpoint, PciTopology } from './topology.js';
import { P2pMapType } from './topology.js';

/** Arguments of {@link p2pdmaAddResource}. */
export interface P2pdmaResourceDesc {
  /** BAR number (0–5), for messages. */
  readonly bar: number;
  /** Size of the BAR in bytes. */
  readonly barBytes: number;
  /** Bytes of the BAR given to p2pdma (0 = the rest after `offset`). */
  readonly size?: number;
  /** Offset inside the BAR. */
  readonly offset?: number;
  /** Bus address of the BAR's first byte. Default: a distinct address per resource. */
  readonly busBase?: number;
}

/** Where default BAR bus addresses start (512 GiB). */
const FIRST_BUS_BASE = 0x80_0000_0000;

/** One device's BAR window given to p2pdma. */
export class P2pdmaResource {
  /** Published for other drivers' `findP2pmem` (`pci_p2pmem_publish`). */
  published = false;
  /** Allocated runs: first pfn → pages. */
  private readonly runs = new Map<number, number>();
  /** One byte per frame: 1 = allocated. */
  private readonly used: Uint8Array;
  private nrUsed = 0;
  private removed = false;

  /** @internal */
  constructor(
    readonly ctx: MmContext,
    readonly topology: PciTopology,
    /** The providing device. */
    readonly provider: PciEndpoint,
    readonly bar: number,
    /** Bus address of the window's first byte. */
    readonly busBase: number,
    /** The window's frames. */
    readonly pgmap: DevPagemap,
  ) {
    this.used = new Uint8Array(pgmap.nrPages);
  }

  /** Pages in the window. */
  get nrPages(): number {
    return this.pgmap.nrPages;
  }

  /** Pages not allocated. */
  get nrFree(): number {
    return this.pgmap.nrPages - this.nrUsed;
  }

  /**
   * Allocates `pages` contiguous pages of peer memory (`pci_alloc_p2pmem`) and returns the first
   * frame, or -1 when the window has no such run (BAR exhaustion: fall back). EINVAL for a bad count.
   */
  alloc(pages: number): number {
    if (!Number.isSafeInteger(pages) || pages <= 0) {
      throw new HmmError('EINVAL', `pci_alloc_p2pmem: ${String(pages)} is not a positive page count`);
    }
    if (this.removed)
      throw new HmmError(
        'ENODEV',
        `pci_alloc_p2pmem: the p2pdma resource of ${this.provider.name} was removed`,
      );
    const n = this.pgmap.nrPages;
    let run = 0;
    for (let i = 0; i < n; i++) {
      run = this.used[i] === 0 ? run + 1 : 0;
      if (run === pages) {
        const first = i - pages + 1;
        this.used.fill(1, first, i + 1);
        this.nrUsed += pages;
        const pfn = this.pgmap.basePfn + first;
        for (let p = pfn; p < pfn + pages; p++) {
          this.ctx.mem.initDeviceFrame(p);
        }
        this.runs.set(pfn, pages);
        return pfn;
      }
    }
    return -1;
  }

  /**
   * Frees a run returned by {@link alloc} (`pci_free_p2pmem`). EINVAL, with nothing changed, for a
   * frame that does not start an allocated run (a double free), EBUSY if a frame is still referenced
   * beyond the allocation.
   */
  free(pfn: number): void {
    const pages = this.runs.get(pfn);
    if (pages === undefined) {
      throw new HmmError(
        'EINVAL',
        `pci_free_p2pmem: frame ${hex(pfn)} does not start an allocated run of ${this.provider.name}'s BAR (double free?)`,
      );
    }
    const mem = this.ctx.mem;
    for (let p = pfn; p < pfn + pages; p++) {
      if (mem.refcount[p] !== 1 || mem.mapcount[p] !== 0) {
        throw new HmmError(
          'EBUSY',
          `pci_free_p2pmem: frame ${hex(p)} is still in use (refcount ${mem.refcount[p]}, mapcount ${mem.mapcount[p]})`,
        );
      }
    }
    this.runs.delete(pfn);
    for (let p = pfn; p < pfn + pages; p++) mem.put(p);
  }

  /** True if `pfn` is allocated peer memory of this window. */
  isAllocated(pfn: number): boolean {
    const i = pfn - this.pgmap.basePfn;
    return (
      i >= 0 &&
      i < this.pgmap.nrPages &&
      this.used[i] === 1 &&
      (this.ctx.mem.flags[pfn]! & PG.ALLOCATED) !== 0
    );
  }

  /** Bus address of a frame of the window (`pci_p2pmem_virt_to_bus`). EINVAL outside the window. */
  toBus(pfn: number): number {
    if (!this.pgmap.contains(pfn)) {
      throw new HmmError(
        'EINVAL',
        `pci_p2pmem_virt_to_bus: frame ${hex(pfn)} is not in ${this.provider.name}'s BAR ${this.bar}`,
      );
    }
    return this.busBase + (pfn - this.pgmap.basePfn) * PAGE_SIZE;
  }

  /** Frame of a bus address in the window, or -1 outside it. */
  busToPfn(bus: number): number {
    const off = bus - this.busBase;
    if (!Number.isSafeInteger(off) || off < 0 || off >= this.pgmap.nrPages * PAGE_SIZE) return -1;
    return this.pgmap.basePfn + Math.floor(off / PAGE_SIZE);
  }

  /** @internal */
  markFree(pfn: number): void {
    const i = pfn - this.pgmap.basePfn;
    if (this.used[i] === 1) {
      this.used[i] = 0;
      this.nrUsed--;
    }
  }

  /**
   * Removes the resource (the provider's driver unbinds). EBUSY, listing what is allocated, while any
   * run is allocated; EINVAL the second time.
   */
  remove(): void {
    if (this.removed)
      throw new HmmError('EINVAL', `p2pdma: the resource of ${this.provider.name} was already removed`);
    if (this.runs.size > 0) {
      throw new HmmError(
        'EBUSY',
        `p2pdma: ${this.nrUsed} page(s) of ${this.provider.name}'s BAR are still allocated`,
      );
    }
    memunmapPages(this.ctx, this.pgmap);
    this.removed = true;
    this.published = false;
    registry.get(this.ctx)?.delete(this);
  }
}

const registry = new WeakMap<MmContext, Set<P2pdmaResource>>();

/**
 * Gives `[offset, offset + size)` of `provider`'s BAR to p2pdma (`pci_p2pdma_add_resource`). EINVAL,
 * with nothing added, for a window that does not fit the BAR or is not a whole number of pages.
 */
export function p2pdmaAddResource(
  ctx: MmContext,
  topology: PciTopology,
  provider: PciEndpoint,
  desc: P2pdmaResourceDesc,
): P2pdmaResource {
  const offset = desc.offset ?? 0;
  const bar = desc.barBytes;
  const size = desc.size === undefined || desc.size === 0 ? bar - offset : desc.size;
  const fn = `pci_p2pdma_add_resource(${provider.name}, bar ${desc.bar})`;
  if (!Number.isInteger(desc.bar) || desc.bar < 0 || desc.bar > 5)
    throw new HmmError('EINVAL', `${fn}: BAR ${String(desc.bar)} is not 0..5`);
  for (const [k, v] of [
    ['BAR size', bar],
    ['offset', offset],
    ['size', size],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0 || v % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', `${fn}: ${k} ${String(v)} is not a whole number of pages`);
    }
  }
  if (size <= 0 || offset + size > bar) {
    throw new HmmError(
      'EINVAL',
      `${fn}: [${hex(offset)}, ${hex(offset + size)}) does not fit a BAR of ${hex(bar)} bytes`,
    );
  }
  // Default bus addresses: each BAR above the highest one given out so far on this machine.
  let top = FIRST_BUS_BASE;
  for (const r of registry.get(ctx) ?? []) top = Math.max(top, r.busBase + r.nrPages * PAGE_SIZE);
  const busBase = desc.busBase ?? top;
  const holder: { res?: P2pdmaResource } = {};
  const pgmap = memremapPages(ctx, {
    type: MemoryType.PCI_P2PDMA,
    bytes: size,
    owner: provider,
    name: `${provider.name}:bar${desc.bar}`,
    ops: { pageFree: (pfn) => holder.res?.markFree(pfn) },
  });
  const res = new P2pdmaResource(ctx, topology, provider, desc.bar, busBase + offset, pgmap);
  holder.res = res;
  let set = registry.get(ctx);
  if (set === undefined) registry.set(ctx, (set = new Set()));
  set.add(res);
  return res;
}

/** The p2pdma resource a frame belongs to, if any. */
export function p2pdmaResourceOf(ctx: MmContext, pfn: number): P2pdmaResource | undefined {
  const pg = pagemapOf(ctx, pfn);
  if (pg?.type !== MemoryType.PCI_P2PDMA) return undefined;
  for (const r of registry.get(ctx) ?? []) if (r.pgmap === pg) return r;
  return undefined;
}

/** True if `provider` has p2pdma memory (`pci_has_p2pmem`). */
export function hasP2pmem(ctx: MmContext, provider: PciEndpoint): boolean {
  for (const r of registry.get(ctx) ?? []) if (r.provider === provider) return true;
  return false;
}

/**
 * The published resource nearest to all `clients` with at least `pages` free pages
 * (`pci_p2pmem_find_many`), or undefined if none can serve them all. Ties go to the resource added first
 * (the kernel picks at random among the closest).
 */
export function findP2pmem(
  ctx: MmContext,
  topology: PciTopology,
  clients: readonly PciEndpoint[],
  pages = 1,
): P2pdmaResource | undefined {
  let best: P2pdmaResource | undefined;
  let bestDist = Infinity;
  for (const r of registry.get(ctx) ?? []) {
    if (!r.published || r.nrFree < pages) continue;
    const d = topology.distanceMany(r.provider, clients);
    if (d < 0 || d >= bestDist) continue;
    best = r;
    bestDist = d;
  }
  return best;
}

/** Simulated ns for `client` to read `bytes` of `provider`'s memory by the best path, or of system memory when there is none. */
export function p2pTransferNs(
  topology: PciTopology,
  provider: PciEndpoint | null,
  client: PciEndpoint,
  bytes: number,
): number {
  const gbs =
    provider === null || topology.distance(provider, client).type === P2pMapType.NOT_SUPPORTED
      ? topology.systemGBs(client)
      : topology.pathGBs(provider, client);
  return bytes / gbs;
}
