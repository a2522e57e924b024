/**
 * Device memory as a driver manages it: the SDK's `hmm_devmem` (the kernel's `hmm_devmem_add` of
 * 4.14–5.2, today each driver's own code around `memremap_pages`, e.g. dmirror's
 * `dmirror_allocate_chunk` or nouveau's `nouveau_dmem`).
 *
 * An {@link HmmDevmem} owns the pagemaps (chunks) of one device's memory of one type: it adds chunks
 * on demand up to a capacity, keeps the free frames, hands out locked pages for migration
 * destinations, and evicts everything to system memory on release. The driver supplies the part only
 * it knows, {@link HmmDevmemOps.migrateToRam} (the CPU touched one of its device-private pages), and
 * may be told when a page is freed.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from '../mm/constants.js';
import { memremapPages, memunmapPages, unlockPage, zoneDevicePageInit } from '../mm/memremap.js';
import type { DevPagemap, MemoryTypeId, MigrateToRamFault } from '../mm/memremap.js';
import { MemoryType } from '../mm/memremap.js';
import {
  MigratePfn,
  migrateDeviceFinalize,
  migrateDevicePages,
  migrateDeviceRange,
  migratePfn,
  migratePfnToPfn,
} from '../mm/migrate-device.js';
import type { MmContext } from '../mm/mm-context.js';
import { PG } from '../mm/page-flags.js';

/** What the driver implements for its memory (`struct dev_pagemap_ops`, seen from the driver). */
export interface HmmDevmemOps {
  /**
   * The CPU touched a device-private page of this memory: migrate it back to RAM (required for
   * device-private memory; see `DevPagemapOps.migrateToRam`).
   */
  migrateToRam?(fault: MigrateToRamFault): Promise<void>;
  /** A page's last reference went; it is back on the free list. Optional. */
  pageFree?(pfn: number): void;
}

/** Options of {@link HmmDevmem}. */
export interface HmmDevmemOptions {
  /** Device-private or device-coherent. */
  readonly type: MemoryTypeId;
  /** Owner of the pagemaps (normally the driver or device). */
  readonly owner: unknown;
  /** Most bytes of device memory (a whole number of chunks is not required; the last chunk is smaller). */
  readonly capacityBytes: number;
  /** Bytes per chunk (one pagemap each). Default 256 MiB (dmirror's `DEVMEM_CHUNK_SIZE`), at most the capacity. */
  readonly chunkBytes?: number;
  readonly name?: string;
}

/** Copies device pages to system pages during eviction: returns how many (a prefix) arrived. */
export type EvictCopy = (src: readonly number[], dst: readonly number[]) => Promise<number>;

/** One device's memory of one type. */
export class HmmDevmem {
  readonly type: MemoryTypeId;
  readonly owner: unknown;
  readonly name: string;
  readonly capacityPages: number;
  readonly chunkPages: number;
  /** Live chunks, oldest first. */
  chunks: DevPagemap[] = [];
  private free: number[] = [];
  private failAllocs = 0;
  private _allocated = 0;

  constructor(
    readonly ctx: MmContext,
    private readonly ops: HmmDevmemOps,
    opts: HmmDevmemOptions,
  ) {
    this.type = opts.type;
    this.owner = opts.owner;
    this.name = opts.name ?? 'devmem';
    const cap = opts.capacityBytes;
    if (!Number.isSafeInteger(cap) || cap <= 0 || cap % PAGE_SIZE !== 0) {
      throw new HmmError(
        'EINVAL',
        `${this.name}: capacity ${String(cap)} is not a positive whole number of pages`,
      );
    }
    const chunk = Math.min(opts.chunkBytes ?? 256 * 1024 * 1024, cap);
    if (!Number.isSafeInteger(chunk) || chunk <= 0 || chunk % PAGE_SIZE !== 0) {
      throw new HmmError(
        'EINVAL',
        `${this.name}: chunk size ${String(chunk)} is not a positive whole number of pages`,
      );
    }
    if (this.type === MemoryType.DEVICE_PRIVATE && typeof ops.migrateToRam !== 'function') {
      throw new HmmError('EINVAL', `${this.name}: device-private memory needs a migrateToRam op`);
    }
    this.capacityPages = cap / PAGE_SIZE;
    this.chunkPages = chunk / PAGE_SIZE;
  }

  /** Pages handed out and not yet freed. */
  get nrAllocated(): number {
    return this._allocated;
  }

  /** Pages of mapped chunks that are free. */
  get nrFree(): number {
    return this.free.length;
  }

  /** Pages of all live chunks. */
  get nrMapped(): number {
    return this.chunks.reduce((n, c) => n + (c.state === 'live' ? c.nrPages : 0), 0);
  }

  /** True if `pfn` is a frame of one of this memory's live chunks. */
  owns(pfn: number): boolean {
    return this.chunks.some((c) => c.state === 'live' && c.contains(pfn));
  }

  /** Makes the next `count` allocations fail with ENOMEM (dmirror's `HMM_DMIRROR_FLAGS` FAIL_ALLOC). */
  failNextAlloc(count = 1): void {
    if (!Number.isInteger(count) || count < 0) {
      throw new HmmError('EINVAL', `${this.name}: failNextAlloc(${String(count)}) needs a count ≥ 0`);
    }
    this.failAllocs = count;
  }

  /**
   * Allocates one page, locked with one reference, as a migration destination
   * (`zone_device_page_init` + lock). Maps a new chunk when none is free. ENOMEM when the capacity is
   * used up or a failure was injected.
   */
  allocPage(): number {
    if (this.failAllocs > 0) {
      this.failAllocs--;
      throw new HmmError('ENOMEM', `${this.name}: injected allocation failure`);
    }
    if (this.free.length === 0) this.addChunk();
    const pfn = this.free.pop()!;
    zoneDevicePageInit(this.ctx, pfn, true);
    this._allocated++;
    return pfn;
  }

  /**
   * Maps chunks until at least `pages` pages are mapped (or the capacity is reached), as a driver
   * maps its memory at probe time rather than on the first migration. Returns the pages mapped.
   */
  mapPages(pages: number): number {
    if (!Number.isSafeInteger(pages) || pages < 0) {
      throw new HmmError('EINVAL', `${this.name}: mapPages(${String(pages)}) needs a page count ≥ 0`);
    }
    while (this.nrMapped < Math.min(pages, this.capacityPages)) this.addChunk();
    return this.nrMapped;
  }

  private addChunk(): void {
    const mapped = this.nrMapped;
    const pages = Math.min(this.chunkPages, this.capacityPages - mapped);
    if (pages <= 0) {
      throw new HmmError(
        'ENOMEM',
        `${this.name}: device memory exhausted (${this.capacityPages} pages, all in use)`,
      );
    }
    const pgmap = memremapPages(this.ctx, {
      type: this.type,
      bytes: pages * PAGE_SIZE,
      owner: this.owner,
      name: `${this.name}#${this.chunks.length}`,
      ops: {
        pageFree: (pfn) => {
          this._allocated--;
          this.free.push(pfn);
          this.ops.pageFree?.(pfn);
        },
        ...(this.ops.migrateToRam !== undefined
          ? { migrateToRam: (f: MigrateToRamFault) => this.ops.migrateToRam!(f) }
          : {}),
      },
    });
    this.chunks.push(pgmap);
    // Hand out low frames first.
    for (let p = pgmap.basePfn + pgmap.nrPages - 1; p >= pgmap.basePfn; p--) this.free.push(p);
  }

  /**
   * Moves every page in use back to system memory (`migrate_device_range` → copy →
   * `migrate_device_pages` → `migrate_device_finalize`) with `copy` (default: a CPU copy), retrying
   * pages that could not move (busy or a failed copy) up to `maxRounds` times. Returns the frames
   * still in use afterwards (pinned or still busy), which is empty on success.
   */
  async evictAll(copy?: EvictCopy, maxRounds = 8): Promise<number[]> {
    const ctx = this.ctx;
    const mem = ctx.mem;
    const doCopy: EvictCopy =
      copy ??
      ((s, d) => {
        for (let i = 0; i < s.length; i++) mem.copyFrame(d[i]!, s[i]!);
        return Promise.resolve(s.length);
      });
    for (let round = 0; round < maxRounds; round++) {
      let left = 0;
      for (const c of this.chunks) {
        if (c.state !== 'live') continue;
        const src = new Float64Array(c.nrPages);
        const dst = new Float64Array(c.nrPages);
        await migrateDeviceRange(ctx, src, c.basePfn, c.nrPages);
        const from: number[] = [];
        const to: number[] = [];
        const idx: number[] = [];
        // Destinations count only once their copy has arrived: on any failure (no RAM, a failed
        // copy) the ones not copied are given back and their pages stay for the next round.
        let copied = 0;
        try {
          for (let i = 0; i < c.nrPages; i++) {
            if ((src[i]! & MigratePfn.MIGRATE) === 0) continue;
            let d = mem.alloc(); // no await while a frame is free
            if (d < 0) d = await ctx.allocPage();
            mem.flags[d]! |= PG.LOCKED;
            dst[i] = migratePfn(d);
            from.push(migratePfnToPfn(src[i]!));
            to.push(d);
            idx.push(i);
          }
          copied = from.length === 0 ? 0 : await doCopy(from, to);
        } finally {
          for (let k = copied; k < idx.length; k++) {
            const i = idx[k]!;
            const d = migratePfnToPfn(dst[i]!);
            dst[i] = 0;
            unlockPage(ctx, d);
            ctx.putPage(d);
          }
          migrateDevicePages(ctx, src, dst, c.nrPages);
          migrateDeviceFinalize(ctx, src, dst, c.nrPages);
        }
        for (let p = c.basePfn; p < c.basePfn + c.nrPages; p++)
          if ((mem.flags[p]! & PG.ALLOCATED) !== 0) left++;
      }
      if (left === 0) break;
    }
    return this.framesInUse();
  }

  /** Frames of live chunks still in use. */
  framesInUse(): number[] {
    const out: number[] = [];
    const flags = this.ctx.mem.flags;
    for (const c of this.chunks) {
      if (c.state !== 'live') continue;
      for (let p = c.basePfn; p < c.basePfn + c.nrPages; p++)
        if ((flags[p]! & PG.ALLOCATED) !== 0) out.push(p);
    }
    return out;
  }

  /**
   * Releases the memory (`HMM_DMIRROR_RELEASE`, driver unload): evicts every page to RAM, then
   * removes the chunks (`memunmap_pages`). Later allocations map new chunks. EBUSY, naming the
   * frames, if pages could not be evicted; the memory then stays as it is and usable.
   */
  async release(copy?: EvictCopy): Promise<void> {
    const busy = await this.evictAll(copy);
    if (busy.length > 0) {
      throw new HmmError(
        'EBUSY',
        `${this.name}: ${busy.length} device page(s) could not be evicted: ${busy.slice(0, 8).map(hex).join(', ')}`,
      );
    }
    for (const c of this.chunks) memunmapPages(this.ctx, c);
    this.chunks = [];
    this.free = [];
  }
}
