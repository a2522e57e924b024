/**
 * ZONE_DEVICE memory (mm/memremap.c, include/linux/memremap.h): `dev_pagemap`, `memremap_pages`,
 * `memunmap_pages`, `zone_device_page_init`, and the folio lock that migration holds.
 *
 * A pagemap gives a range of device memory frames in the machine's frame table (a device arena,
 * see {@link PhysMem.addDeviceArena}), so device pages have the same per-frame metadata as RAM:
 * reference and map counts, flags, reverse map. Two types are simulated:
 *
 * - {@link MemoryType.DEVICE_PRIVATE}: not addressable by the CPU. A page migrated there leaves a
 *   device-private entry in the CPU page table; a CPU access calls the pagemap's
 *   {@link DevPagemapOps.migrateToRam} and retries.
 * - {@link MemoryType.DEVICE_COHERENT}: addressable by the CPU (CXL-like). Pages are mapped by normal
 *   PTEs and never faulted back; they must not be pinned long-term, so FOLL_LONGTERM migrates them.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import type { MmContext } from './mm-context.js';
import { PG } from './page-flags.js';
import type { Vma } from './vma.js';

/** `enum memory_type`: the kinds of device memory the SDK simulates. */
export const MemoryType = {
  /** `MEMORY_DEVICE_PRIVATE`: device memory the CPU cannot address. */
  DEVICE_PRIVATE: 1,
  /** `MEMORY_DEVICE_COHERENT`: device memory the CPU can address coherently. */
  DEVICE_COHERENT: 2,
  /** `MEMORY_DEVICE_PCI_P2PDMA`: device memory exposed through a PCI BAR for peer DMA (see pci/p2pdma). */
  PCI_P2PDMA: 3,
} as const;
/** One of {@link MemoryType}. */
export type MemoryTypeId = (typeof MemoryType)[keyof typeof MemoryType];

/** A CPU fault on a device-private entry, as handed to `migrate_to_ram` (`struct vm_fault`). */
export interface MigrateToRamFault {
  /** The faulting VMA; the mmap lock of its mm is held for read. */
  readonly vma: Vma;
  /** The faulting address, page aligned. */
  readonly address: number;
  /** The device-private frame the entry refers to; it is locked and referenced by the fault. */
  readonly page: number;
  /** Whether the access is a write. */
  readonly write: boolean;
}

/** `struct dev_pagemap_ops`. */
export interface DevPagemapOps {
  /**
   * The last reference to a frame of this pagemap was dropped (`folio_free`, formerly `page_free`):
   * the frame is free again and its owner may reuse it. Must not throw.
   */
  pageFree(pfn: number): void;
  /**
   * Migrates the device-private page of `fault` back to system memory (`migrate_to_ram`), normally
   * with `migrateVmaSetup` on the fault address and `faultPage` set. Required for device-private
   * memory. Throwing an {@link HmmError} fails the CPU access: ENOMEM as an out-of-memory fault,
   * anything else as SIGBUS. Returning without migrating makes the CPU retry.
   */
  migrateToRam?(fault: MigrateToRamFault): Promise<void>;
}

/** What a driver asks {@link memremapPages} for (`struct dev_pagemap` before it is mapped). */
export interface DevPagemapDesc {
  /** The memory type. */
  readonly type: MemoryTypeId;
  /** Size in bytes (a whole number of pages). */
  readonly bytes: number;
  /**
   * The owner (`pgmap->owner`): an opaque identity, normally the driver or device. `migrate_vma`
   * selects device pages by it, `hmm_range_fault` reports pages of `devPrivateOwner` rather than
   * faulting them, and the MIGRATE notifier carries it so a driver can skip its own migrations.
   */
  readonly owner: unknown;
  readonly ops: DevPagemapOps;
  /** Name for messages. */
  readonly name?: string;
}

/** A mapped pagemap (`struct dev_pagemap`). */
export class DevPagemap {
  /** Live until {@link memunmapPages}. */
  state: 'live' | 'removed' = 'live';

  /** @internal */
  constructor(
    /** Pagemap id (the frame table's `owner` of its frames). */
    readonly id: number,
    readonly type: MemoryTypeId,
    readonly owner: unknown,
    readonly ops: DevPagemapOps,
    /** First frame. */
    readonly basePfn: number,
    /** Number of frames. */
    readonly nrPages: number,
    readonly name: string,
  ) {}

  /** True if `pfn` is one of this pagemap's frames. */
  contains(pfn: number): boolean {
    return pfn >= this.basePfn && pfn < this.basePfn + this.nrPages;
  }

  toString(): string {
    const t =
      this.type === MemoryType.DEVICE_PRIVATE
        ? 'device-private'
        : this.type === MemoryType.DEVICE_COHERENT
          ? 'device-coherent'
          : 'p2pdma';
    return `pagemap ${this.name} (${t}, frames ${hex(this.basePfn)}..${hex(this.basePfn + this.nrPages - 1)})`;
  }
}

/**
 * Maps device memory into the frame table (`memremap_pages`). EINVAL for a size that is not a
 * positive whole number of pages, an unknown type, a missing owner or `pageFree` op, or a
 * device-private pagemap without `migrateToRam`. Frames of a pagemap removed earlier with the same
 * size are reused, so repeated add/remove does not grow the frame table.
 */
export function memremapPages(ctx: MmContext, desc: DevPagemapDesc): DevPagemap {
  const name = desc.name ?? 'pgmap';
  const bad = (why: string): HmmError =>
    new HmmError('EINVAL', `memremap_pages(${name}): ${why}`, { kernelRef: 'mm/memremap.c:memremap_pages' });
  if (
    desc.type !== MemoryType.DEVICE_PRIVATE &&
    desc.type !== MemoryType.DEVICE_COHERENT &&
    desc.type !== MemoryType.PCI_P2PDMA
  ) {
    throw bad(`unknown memory type ${String(desc.type)}`);
  }
  const { bytes } = desc;
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE_SIZE !== 0) {
    throw bad(`size ${String(bytes)} is not a positive whole number of pages`);
  }
  if (desc.owner === null || desc.owner === undefined) throw bad('a device pagemap needs an owner');
  if (typeof desc.ops?.pageFree !== 'function') throw bad('a device pagemap needs a pageFree op');
  if (desc.type === MemoryType.DEVICE_PRIVATE && typeof desc.ops.migrateToRam !== 'function') {
    throw bad('a device-private pagemap needs a migrateToRam op');
  }
  const nr = bytes / PAGE_SIZE;
  const mem = ctx.mem;
  let id = ctx.pagemaps.findIndex(
    (p, i) => i > 0 && p !== undefined && p.state === 'removed' && p.nrPages === nr,
  );
  let base: number;
  if (id > 0) {
    base = ctx.pagemaps[id]!.basePfn;
  } else {
    id = ctx.pagemaps.length;
    if (id > 0xffff) throw new HmmError('ENOMEM', `memremap_pages(${name}): no pagemap ids left`);
    base = mem.addDeviceArena(nr, id).basePfn;
  }
  const pgmap = new DevPagemap(id, desc.type, desc.owner, desc.ops, base, nr, name);
  ctx.pagemaps[id] = pgmap;
  mem.owner.fill(id, base, base + nr);
  return pgmap;
}

/**
 * Removes a pagemap (`memunmap_pages`). The kernel waits until every frame's last reference is
 * gone; the SDK refuses instead: EBUSY, naming the frames still in use, and nothing changes. A
 * driver evicts its pages first (`migrateDeviceRange`). EINVAL if the pagemap was already removed.
 */
export function memunmapPages(ctx: MmContext, pgmap: DevPagemap): void {
  if (pgmap.state !== 'live' || ctx.pagemaps[pgmap.id] !== pgmap) {
    throw new HmmError('EINVAL', `memunmap_pages: ${pgmap.toString()} was already removed`, {
      kernelRef: 'mm/memremap.c:memunmap_pages',
    });
  }
  const busy = framesInUse(ctx, pgmap);
  if (busy.length > 0) {
    ctx.onMemunmapBusy?.(pgmap, busy);
    const mem = ctx.mem;
    const list = busy
      .slice(0, 8)
      .map((p) => `${hex(p)} (refcount ${mem.refcount[p]}, mapcount ${mem.mapcount[p]})`)
      .join(', ');
    throw new HmmError(
      'EBUSY',
      `memunmap_pages: ${busy.length} frame(s) of ${pgmap.toString()} are still referenced: ${list}${busy.length > 8 ? ', …' : ''}; evict them first (migrate_device_range)`,
      { kernelRef: 'mm/memremap.c:memunmap_pages' },
    );
  }
  pgmap.state = 'removed';
}

/** Frames of a pagemap that are in use (allocated), in pfn order. */
export function framesInUse(ctx: MmContext, pgmap: DevPagemap): number[] {
  const out: number[] = [];
  const flags = ctx.mem.flags;
  for (let p = pgmap.basePfn; p < pgmap.basePfn + pgmap.nrPages; p++) {
    if ((flags[p]! & PG.ALLOCATED) !== 0) out.push(p);
  }
  return out;
}

/** The pagemap of a device frame (`page_pgmap`), or undefined for a RAM frame. */
export function pagemapOf(ctx: MmContext, pfn: number): DevPagemap | undefined {
  const mem = ctx.mem;
  if (pfn < mem.nrRamFrames || pfn >= mem.nrFrames) return undefined;
  return ctx.pagemaps[mem.owner[pfn]!];
}

/** True for a frame of device-private memory (`is_device_private_page`). */
export function isDevicePrivatePage(ctx: MmContext, pfn: number): boolean {
  return pagemapOf(ctx, pfn)?.type === MemoryType.DEVICE_PRIVATE;
}

/** True for a frame of device-coherent memory (`is_device_coherent_page`). */
export function isDeviceCoherentPage(ctx: MmContext, pfn: number): boolean {
  return pagemapOf(ctx, pfn)?.type === MemoryType.DEVICE_COHERENT;
}

/**
 * Hands out a free frame of a live pagemap with refcount 1 (`zone_device_page_init`), locked when
 * `locked` (drivers allocate migration destinations locked). EINVAL for a frame of no live pagemap,
 * EBUSY for a frame in use.
 */
export function zoneDevicePageInit(ctx: MmContext, pfn: number, locked = false): void {
  const pgmap = pagemapOf(ctx, pfn);
  if (pgmap === undefined || pgmap.state !== 'live') {
    throw new HmmError(
      'EINVAL',
      `zone_device_page_init: frame ${hex(pfn)} belongs to no live device pagemap`,
    );
  }
  ctx.mem.initDeviceFrame(pfn);
  if (locked) ctx.mem.flags[pfn]! |= PG.LOCKED;
}

/** Takes a frame's lock if it is free (`folio_trylock`). */
export function trylockPage(ctx: MmContext, pfn: number): boolean {
  const f = ctx.mem.flags[pfn]!;
  if ((f & PG.LOCKED) !== 0) return false;
  ctx.mem.flags[pfn] = f | PG.LOCKED;
  return true;
}

/** Takes a frame's lock, sleeping while another task holds it (`folio_lock`). */
export async function lockPage(ctx: MmContext, pfn: number): Promise<void> {
  while (!trylockPage(ctx, pfn)) await ctx.pageLockWait.wait(`folio lock ${hex(pfn)}`);
}

/** Releases a frame's lock and wakes its waiters (`folio_unlock`). */
export function unlockPage(ctx: MmContext, pfn: number): void {
  const f = ctx.mem.flags[pfn]!;
  if ((f & PG.LOCKED) === 0) throw new Error(`internal: unlock of frame ${hex(pfn)} that is not locked`);
  ctx.mem.flags[pfn] = f & ~PG.LOCKED;
  ctx.pageLockWait.wakeAll();
}

/** Sleeps until a frame is unlocked (`folio_wait_locked`, what `migration_entry_wait` does). */
export async function waitOnPageLocked(ctx: MmContext, pfn: number): Promise<void> {
  while ((ctx.mem.flags[pfn]! & PG.LOCKED) !== 0) await ctx.pageLockWait.wait(`folio lock ${hex(pfn)}`);
}
