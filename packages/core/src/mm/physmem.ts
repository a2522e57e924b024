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

/** Zone of a frame (`enum zone_type`): normal RAM, or device memory (ZONE_DEVICE, later issues). */
export const Zone = { NORMAL: 0, DEVICE: 1 } as const;

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

/** The frames of one memory arena and their allocator. */
export class PhysMem {
  /** Total frames, including the zero page. */
  readonly nrFrames: number;
  /** References (`page_ref_count`): one per PTE mapping, per page-cache entry, per GUP get and per pin. */
  readonly refcount: Int32Array;
  /** PTE mappings (`folio_mapcount`). */
  readonly mapcount: Uint16Array;
  /** FOLL_PIN pins (`folio_maybe_dma_pinned` made exact). */
  readonly pincount: Uint16Array;
  /** {@link PG} bits. */
  readonly flags: Uint16Array;
  /** Owner: file id for page-cache pages, pagemap id for device frames, 0 otherwise. */
  readonly owner: Uint16Array;
  /**
   * {@link Zone} of every frame of this arena: an arena is one zone, so the zone follows from the pfn
   * (as the kernel derives `page_zonenum` from bits of `page->flags` rather than storing a field).
   */
  readonly zone: number;
  /** LRU list links (`folio->lru`), -1 = none. */
  readonly lruPrev: Int32Array;
  readonly lruNext: Int32Array;
  /** Anon: primary PTE slot mapping the page (reverse map); page cache: index in the file. */
  readonly rmap: Uint32Array;
  /** Page contents. */
  readonly content: PageStore;

  /** Head of the free list, linked through `lruNext` as the buddy allocator links through `page->lru`. */
  private freeHead = -1;
  private nrFreeFrames = 0;

  constructor(bytes: number, zone: number = Zone.NORMAL) {
    if (!Number.isSafeInteger(bytes) || bytes < PAGE_SIZE * 16 || bytes % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', `memory size ${bytes} must be a whole number of pages, at least 16 pages`);
    }
    const n = bytes / PAGE_SIZE;
    if (n > 0x7fffffff) throw new HmmError('EINVAL', `memory size ${bytes} exceeds 2^31 frames`);
    this.nrFrames = n;
    this.refcount = new Int32Array(n);
    this.mapcount = new Uint16Array(n);
    this.pincount = new Uint16Array(n);
    this.flags = new Uint16Array(n);
    this.owner = new Uint16Array(n);
    this.zone = zone;
    this.lruPrev = new Int32Array(n).fill(-1);
    this.lruNext = new Int32Array(n).fill(-1);
    this.rmap = new Uint32Array(n);
    this.content = new PageStore(n);
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

  /** Frames allocated (excluding the zero page). */
  get nrUsed(): number {
    return this.nrFrames - 1 - this.nrFreeFrames;
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
    this.flags[pfn] = 0;
    this.refcount[pfn] = 0;
    this.owner[pfn] = 0;
    this.rmap[pfn] = 0;
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

  /** Frames allocated and still referenced (for leak checks). */
  allocatedFrames(): number[] {
    const out: number[] = [];
    for (let pfn = 1; pfn < this.nrFrames; pfn++) if ((this.flags[pfn]! & PG.ALLOCATED) !== 0) out.push(pfn);
    return out;
  }

  /** Bytes of frame metadata held by this arena's typed arrays, per frame. */
  static metadataBytesPerFrame(): number {
    return FRAME_METADATA_BYTES;
  }
}
