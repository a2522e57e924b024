/**
 * Physical memory: the frame table (`struct page` / `struct folio` as a struct of arrays) and the
 * page allocator's free list (mm/page_alloc.c).
 *
 * Every per-frame field is a typed array indexed by frame number (pfn); 0 means empty. A resident
 * frame costs {@link FRAME_METADATA_BYTES} bytes of metadata. Frame 0 is the shared zero page.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import { PG } from './page-flags.js';
import { PageStore } from './page-store.js';

/** Zone of a frame (`enum zone_type`): normal RAM, or device memory (ZONE_DEVICE, see memremap). */
export const Zone = { NORMAL: 0, DEVICE: 1 } as const;

/** A contiguous range of device frames added to the frame table by {@link PhysMem.addDeviceArena}. */
export interface DeviceArena {
  /** First pfn. */
  readonly basePfn: number;
  /** Frames in the arena. */
  readonly nrFrames: number;
}

/** Pfn of the shared zero page (`ZERO_PAGE(0)`): reserved, read-only, never freed. */
export const ZERO_PFN = 0;

/**
 * Bytes of metadata per frame: refcount 4 + mapcount 2 + pincount 2 + flags 2 + owner 2 +
 * LRU prev 4 + LRU next 4 (also the free-list link) + rmap/index 4 + content-presence 1. The zone is
 * per arena.
 */
export const FRAME_METADATA_BYTES = 25;

/** Largest map count a frame may reach (the SDK's mapcount is 16-bit; fork fails with ENOMEM beyond). */
export const MAX_MAPCOUNT = 0xffff;
/** Largest pin count a frame may reach (`try_grab_folio` fails with ENOMEM beyond). */
export const MAX_PINCOUNT = 0xffff;

/**
 * The frame table of the machine and the RAM page allocator.
 *
 * RAM is frames `[0, nrRamFrames)`; device memory (ZONE_DEVICE, `memremap_pages`) is appended as
 * further arenas of frames above it, each frame flagged {@link PG.ZONE_DEVICE} for its whole life.
 * Device frames are never on the RAM free list: their owner (the pagemap's driver) hands them out,
 * and when their last reference goes the frame table calls {@link PhysMem.onDeviceFrameFree}
 * (`free_zone_device_folio` → `pgmap->ops->folio_free`).
 *
 * Adding an arena replaces the typed arrays with longer ones. It happens only inside the synchronous
 * {@link PhysMem.addDeviceArena}, so code must read the arrays through this object and never keep a
 * reference to one across an `await`.
 */
export class PhysMem {
  /** Frames in the table: RAM (with the zero page) and every device arena. */
  nrFrames: number;
  /** RAM frames, including the zero page. */
  readonly nrRamFrames: number;
  /** References (`page_ref_count`): one per PTE mapping, per page-cache entry, per GUP get and per pin. */
  refcount: Int32Array;
  /** PTE mappings (`folio_mapcount`). */
  mapcount: Uint16Array;
  /** FOLL_PIN pins (`folio_maybe_dma_pinned` made exact). */
  pincount: Uint16Array;
  /** {@link PG} bits. */
  flags: Uint16Array;
  /** Owner: file id for page-cache pages, pagemap id for device frames (for life), 0 otherwise. */
  owner: Uint16Array;
  /** LRU list links (`folio->lru`), -1 = none. */
  lruPrev: Int32Array;
  lruNext: Int32Array;
  /** Anon: primary PTE slot mapping the page (reverse map); page cache: index in the file. */
  rmap: Uint32Array;
  /** Page contents, RAM and device frames alike. */
  readonly content: PageStore;
  /**
   * Called when a device frame's last reference is dropped, after its state is reset
   * (`pgmap->ops->folio_free`). Installed by the memremap layer.
   */
  onDeviceFrameFree: (pfn: number) => void = (pfn) => {
    throw new Error(`internal: device frame ${hex(pfn)} freed with no pagemap layer installed`);
  };
  private readonly arenas: DeviceArena[] = [];
  /** Device frames in use per pagemap id (the frames' `owner`); see {@link deviceFramesInUse}. */
  private readonly deviceInUse: number[] = [];

  /** Head of the free list, linked through `lruNext` as the buddy allocator links through `page->lru`. */
  private freeHead = -1;
  private nrFreeFrames = 0;

  constructor(bytes: number) {
    if (!Number.isSafeInteger(bytes) || bytes < PAGE_SIZE * 16 || bytes % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', `memory size ${bytes} must be a whole number of pages, at least 16 pages`);
    }
    const n = bytes / PAGE_SIZE;
    if (n > 0x7fffffff) throw new HmmError('EINVAL', `memory size ${bytes} exceeds 2^31 frames`);
    this.nrFrames = n;
    this.nrRamFrames = n;
    this.refcount = new Int32Array(n);
    this.mapcount = new Uint16Array(n);
    this.pincount = new Uint16Array(n);
    this.flags = new Uint16Array(n);
    this.owner = new Uint16Array(n);
    this.lruPrev = new Int32Array(n).fill(-1);
    this.lruNext = new Int32Array(n).fill(-1);
    this.rmap = new Uint32Array(n);
    this.content = new PageStore(n, true);
    // Frame 0 is the zero page; hand out low frames first.
    for (let pfn = n - 1; pfn >= 1; pfn--) {
      this.lruNext[pfn] = this.freeHead;
      this.freeHead = pfn;
    }
    this.nrFreeFrames = n - 1;
    this.flags[ZERO_PFN] = PG.RESERVED | PG.ALLOCATED;
    this.refcount[ZERO_PFN] = 1;
  }

  /** Frames on the free list. */
  get nrFree(): number {
    return this.nrFreeFrames;
  }

  /** RAM frames allocated (excluding the zero page). */
  get nrUsed(): number {
    return this.nrRamFrames - 1 - this.nrFreeFrames;
  }

  /** {@link Zone} of a frame (`page_zonenum`). */
  zoneOf(pfn: number): number {
    return (this.flags[pfn]! & PG.ZONE_DEVICE) !== 0 ? Zone.DEVICE : Zone.NORMAL;
  }

  /** Device arenas added so far, in pfn order. */
  get deviceArenas(): readonly DeviceArena[] {
    return this.arenas;
  }

  /**
   * Appends `nrFrames` device frames to the frame table and returns the arena (the frame-table half
   * of `memremap_pages`). The frames start free (refcount 0), flagged {@link PG.ZONE_DEVICE}, with
   * `owner` = `ownerId` (the pagemap id).
   */
  addDeviceArena(nrFrames: number, ownerId: number): DeviceArena {
    if (!Number.isSafeInteger(nrFrames) || nrFrames <= 0) {
      throw new HmmError(
        'EINVAL',
        `device arena of ${String(nrFrames)} frames: need a positive whole number`,
      );
    }
    const base = this.nrFrames;
    const n = base + nrFrames;
    if (n > 0x7fffffff)
      throw new HmmError('ENOMEM', `device arena of ${nrFrames} frames exceeds 2^31 frames`);
    this.refcount = grow(this.refcount, n) as Int32Array;
    this.mapcount = grow(this.mapcount, n) as Uint16Array;
    this.pincount = grow(this.pincount, n) as Uint16Array;
    this.flags = grow(this.flags, n) as Uint16Array;
    this.owner = grow(this.owner, n) as Uint16Array;
    this.lruPrev = grow(this.lruPrev, n, -1) as Int32Array;
    this.lruNext = grow(this.lruNext, n, -1) as Int32Array;
    this.rmap = grow(this.rmap, n) as Uint32Array;
    this.content.grow(n);
    this.flags.fill(PG.ZONE_DEVICE, base, n);
    this.owner.fill(ownerId, base, n);
    this.nrFrames = n;
    const arena = { basePfn: base, nrFrames };
    this.arenas.push(arena);
    return arena;
  }

  /**
   * Hands out a free device frame with refcount 1 (`zone_device_page_init`). The owner of the
   * arena decides which frame; EBUSY if it is in use, EINVAL if it is not a device frame.
   */
  initDeviceFrame(pfn: number): void {
    const f = this.flags[pfn];
    if (f === undefined || (f & PG.ZONE_DEVICE) === 0) {
      throw new HmmError('EINVAL', `frame ${hex(pfn)} is not a device frame`);
    }
    if ((f & PG.ALLOCATED) !== 0 || this.refcount[pfn] !== 0) {
      throw new HmmError(
        'EBUSY',
        `device frame ${hex(pfn)} is already in use (refcount ${this.refcount[pfn]})`,
      );
    }
    this.flags[pfn] = PG.ZONE_DEVICE | PG.ALLOCATED;
    this.refcount[pfn] = 1;
    const id = this.owner[pfn]!;
    this.deviceInUse[id] = (this.deviceInUse[id] ?? 0) + 1;
  }

  /** Device frames of pagemap `id` in use (allocated), kept as a count: O(1), for traces. */
  deviceFramesInUse(id: number): number {
    return this.deviceInUse[id] ?? 0;
  }

  /**
   * Takes a frame off the free list with refcount 1 and no other state (`alloc_page`), or returns -1
   * when none is free. Contents read as zeros. Reclaim is the caller's job (see vmscan).
   */
  alloc(): number {
    const pfn = this.freeHead;
    if (pfn < 0) return -1;
    this.freeHead = this.lruNext[pfn]!;
    this.lruNext[pfn] = -1;
    this.nrFreeFrames--;
    this.flags[pfn] = PG.ALLOCATED;
    this.refcount[pfn] = 1;
    return pfn;
  }

  /**
   * Returns a frame whose last reference is gone to the free list (`free_unref_page`). Its contents
   * are dropped. The frame must be unmapped, unpinned, off the LRU and out of the page cache.
   */
  free(pfn: number): void {
    const f = this.flags[pfn]!;
    if ((f & PG.ALLOCATED) === 0 || (f & PG.RESERVED) !== 0) {
      throw new HmmError('EINVAL', `free of frame ${hex(pfn)} that is not allocated (double free?)`);
    }
    if (this.mapcount[pfn] !== 0 || this.pincount[pfn] !== 0 || (f & (PG.LRU | PG.PAGECACHE)) !== 0) {
      throw new HmmError(
        'EBUSY',
        `free of frame ${hex(pfn)} still in use (mapcount ${this.mapcount[pfn]}, pincount ${this.pincount[pfn]}, flags ${hex(f)})`,
      );
    }
    this.content.clear(pfn);
    this.refcount[pfn] = 0;
    this.rmap[pfn] = 0;
    if ((f & PG.ZONE_DEVICE) !== 0) {
      // free_zone_device_folio: the frame stays in its arena; the pagemap's owner takes it back.
      this.flags[pfn] = PG.ZONE_DEVICE;
      this.deviceInUse[this.owner[pfn]!]!--;
      this.onDeviceFrameFree(pfn);
      return;
    }
    this.flags[pfn] = 0;
    this.owner[pfn] = 0;
    this.lruNext[pfn] = this.freeHead;
    this.freeHead = pfn;
    this.nrFreeFrames++;
  }

  /** Drops one reference (`put_page`); frees the frame when it was the last. Returns true if freed. */
  put(pfn: number): boolean {
    const r = --this.refcount[pfn]!;
    if (r < 0) {
      this.refcount[pfn] = 0;
      throw new HmmError('EINVAL', `put of frame ${hex(pfn)} with no references left`);
    }
    if (r === 0) {
      this.free(pfn);
      return true;
    }
    return false;
  }

  /** Copies a whole frame's contents to another frame (`copy_highpage`). */
  copyFrame(dst: number, src: number): void {
    this.content.copyPageFrom(this.content, src, dst);
  }

  /** RAM frames allocated and still referenced (for leak checks). */
  allocatedFrames(): number[] {
    const out: number[] = [];
    for (let pfn = 1; pfn < this.nrRamFrames; pfn++)
      if ((this.flags[pfn]! & PG.ALLOCATED) !== 0) out.push(pfn);
    return out;
  }

  /** Device frames in use (referenced), in pfn order (for leak checks). */
  allocatedDeviceFrames(): number[] {
    const out: number[] = [];
    for (let pfn = this.nrRamFrames; pfn < this.nrFrames; pfn++) {
      if ((this.flags[pfn]! & PG.ALLOCATED) !== 0) out.push(pfn);
    }
    return out;
  }

  /** Bytes of frame metadata held by this arena's typed arrays, per frame. */
  static metadataBytesPerFrame(): number {
    return FRAME_METADATA_BYTES;
  }
}

/** `a`, or a copy with room for at least `n` elements (new elements set to `fill`). */
function grow(
  a: Int32Array | Uint16Array | Uint32Array,
  n: number,
  fill = 0,
): Int32Array | Uint16Array | Uint32Array {
  if (a.length >= n) return a;
  // Geometric growth: a driver that maps its memory chunk by chunk (nouveau's 2 MiB chunks) must
  // not copy the whole frame table per chunk. Slots past `nrFrames` stay unused until an arena
  // covers them.
  const cap = Math.min(0x7fffffff, Math.max(n, Math.ceil(a.length * 1.5)));
  const b = new (a.constructor as new (n: number) => typeof a)(cap);
  b.set(a);
  if (fill !== 0) b.fill(fill, a.length);
  return b;
}
