/**
 * VRAM as device-private memory (`nouveau_dmem.c`): 2 MiB chunks, each one pagemap, mapped on
 * demand; explicit migration of a range to VRAM (the SVM_BIND MIGRATE analogue, best effort);
 * `migrate_to_ram` of a single page when the CPU touches one; eviction of everything at teardown
 * through `migrate_device_range`. Every copy goes through the GPU's copy engine.
 *
 * nouveau keeps VRAM chunks pinned (TTM BOs pinned in VRAM) and never evicts under memory pressure;
 * neither does this model.
 *
 * @module
 */
import {
  HmmDevmem,
  HmmError,
  MemoryType,
  MigratePfn,
  MigrateVmaSelect,
  PAGE_SIZE,
  PG,
  hex,
  migratePfn,
  migratePfnToPfn,
  migrateVmaArgs,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
  unlockPage,
} from '@hmm/core';
import type { MigrateToRamFault, MmContext, MmStruct, Vma } from '@hmm/core';
import type { NouveauGpu } from './gpu.js';

/** nouveau's `DMEM_CHUNK_SIZE`: 2 MiB per chunk. */
export const NOUVEAU_DMEM_CHUNK_BYTES = 2 * 1024 * 1024;

/** Pages moved per `migrate_vma` batch (nouveau migrates per VMA in batches). */
export const NOUVEAU_MIGRATE_BATCH_PAGES = 512;

/** What the memory needs from the SVM side: unmap and map migrated pages in every client's VMM. */
export interface DmemClients {
  /** Clears the GPU PTEs of `[start, end)` of `mm` in every client VMM (waits for the PFNCLR). */
  unmap(mm: MmStruct, start: number, end: number): Promise<void>;
  /** A number that changes whenever an invalidation clears PTEs of `mm` in some client. */
  generation(mm: MmStruct): number;
  /**
   * Maps the pages that landed in VRAM (`vpns[i]` → `pfns[i]`, writable where `writable[i]`) unless
   * {@link generation} moved past `gen` (then the GPU refaults them).
   */
  mapMigrated(
    mm: MmStruct,
    gen: number,
    vpns: readonly number[],
    pfns: readonly number[],
    writable: readonly boolean[],
  ): void;
}

/** Result of {@link NouveauDmem.migrateToVram}. */
export interface MigrateResult {
  /** Pages now in this GPU's VRAM. */
  readonly migrated: number;
  /** Pages `migrate_vma_setup` collected but that stayed where they were (allocation or copy failure, busy). */
  readonly failed: number;
}

/** One GPU's VRAM. */
export class NouveauDmem {
  readonly devmem: HmmDevmem;
  /** Pages migrated to VRAM so far, and back to RAM (by CPU fault or eviction). */
  toVram = 0;
  toRam = 0;
  #clients: DmemClients | null = null;
  /**
   * Told of every page this memory moved, after the move (for policies such as thrashing
   * detection): `toVram` true for pages that came in, false for pages the CPU pulled back.
   */
  onMigrated: ((mm: MmStruct, vpns: readonly number[], toVram: boolean) => void) | null = null;

  constructor(
    readonly gpu: NouveauGpu,
    /** The `pgmap->owner` (nouveau: the `drm_device`); its own MIGRATE invalidations are skipped. */
    readonly owner: unknown,
  ) {
    this.devmem = new HmmDevmem(
      gpu.machine.mm,
      { migrateToRam: (f) => this.migrateToRam(f) },
      {
        type: MemoryType.DEVICE_PRIVATE,
        owner,
        capacityBytes: gpu.vramBytes,
        chunkBytes: NOUVEAU_DMEM_CHUNK_BYTES,
        name: `${gpu.name}:vram`,
      },
    );
  }

  /** Connects the SVM side (set once by `NouveauSvm`). */
  attach(clients: DmemClients): void {
    this.#clients = clients;
  }

  /** True if `pfn` is a frame of this VRAM. */
  owns(pfn: number): boolean {
    return this.devmem.owns(pfn);
  }

  /**
   * `SVM_BIND` with MIGRATE to GPU VRAM of `[start, end)` of `mm` (the caller holds its mmap lock
   * for read): per VMA, in batches of {@link NOUVEAU_MIGRATE_BATCH_PAGES}: `migrate_vma_setup`
   * selecting system memory, VRAM pages allocated, the GPU's PTEs of the batch cleared, a copy-engine
   * DMA, `migrate_vma_pages`, the new pages mapped on the GPU, `migrate_vma_finalize`. Best effort
   * as nouveau's: pages that cannot move stay, and are counted in `failed`. EINVAL for an unaligned
   * or empty range; EFAULT for a hole (no VMA) in it.
   */
  async migrateToVram(mm: MmStruct, start: number, end: number): Promise<MigrateResult> {
    if (!(
      Number.isSafeInteger(start) &&
      Number.isSafeInteger(end) &&
      start % PAGE_SIZE === 0 &&
      end % PAGE_SIZE === 0 &&
      start < end
    )) {
      throw new HmmError(
        'EINVAL',
        `${this.gpu.name}: migrate [${hex(start)}, ${hex(end)}) is not a page-aligned range`,
      );
    }
    let migrated = 0;
    let failed = 0;
    for (let addr = start; addr < end;) {
      const vma = mm.vmas.lookup(addr);
      if (vma === undefined) {
        throw new HmmError('EFAULT', `${this.gpu.name}: migrate to VRAM: no mapping at ${hex(addr)}`, {
          address: addr,
        });
      }
      const vend = Math.min(end, vma.end);
      for (let b = addr; b < vend; b += NOUVEAU_MIGRATE_BATCH_PAGES * PAGE_SIZE) {
        const r = await this.#migrateBatch(
          vma,
          b,
          Math.min(vend, b + NOUVEAU_MIGRATE_BATCH_PAGES * PAGE_SIZE),
        );
        migrated += r.migrated;
        failed += r.failed;
      }
      addr = vend;
    }
    // The new PTEs are in place when SVM_BIND returns (nouveau_pfns_map is synchronous).
    if (migrated > 0 && !this.gpu.device.removed) await this.gpu.device.queue.submit({ op: 'nop' }).wait();
    return { migrated, failed };
  }

  async #migrateBatch(vma: Vma, start: number, end: number): Promise<MigrateResult> {
    const ctx = this.gpu.machine.mm;
    const args = migrateVmaArgs({ vma, start, end, pgmapOwner: this.owner, flags: MigrateVmaSelect.SYSTEM });
    const gen = this.#clients?.generation(vma.mm) ?? 0;
    await migrateVmaSetup(args);
    const n = args.npages;
    const idx: number[] = [];
    const src: number[] = [];
    const dst: number[] = [];
    let failed = 0;
    try {
      for (let i = 0; i < n; i++) {
        const e = args.src[i]!;
        if ((e & MigratePfn.MIGRATE) === 0) continue;
        let d: number;
        try {
          d = this.devmem.allocPage();
        } catch (err) {
          if (err instanceof HmmError && err.code === 'ENOMEM') {
            failed++;
            continue; // best effort: this page stays in system memory
          }
          throw err;
        }
        idx.push(i);
        src.push(migratePfnToPfn(e));
        dst.push(d);
      }
      if (idx.length > 0) await this.#clients?.unmap(vma.mm, start, end);
      // Empty slots (never touched, or the zero page) need no copy: the VRAM page is zeroed.
      const copySrc: number[] = [];
      const copyDst: number[] = [];
      for (let k = 0; k < idx.length; k++) {
        if (src[k]! >= 0) {
          copySrc.push(src[k]!);
          copyDst.push(dst[k]!);
        } else {
          ctx.mem.content.clear(dst[k]!);
        }
      }
      let copied = copySrc.length;
      if (copySrc.length > 0) {
        const store = ctx.mem.content;
        const r = await this.gpu.copyEngine.copy(
          copySrc.map((index) => ({ store, index })),
          copyDst.map((index) => ({ store, index })),
          'h2d',
        );
        copied = r.copied;
      }
      // Pages whose copy did not arrive keep their system page; their VRAM page is given back.
      const arrived = new Set(copyDst.slice(0, copied));
      for (let k = 0; k < idx.length; k++) {
        const ok = src[k]! < 0 || arrived.has(dst[k]!);
        if (ok) {
          args.dst[idx[k]!] = migratePfn(dst[k]!);
        } else {
          releaseLocked(ctx, dst[k]!);
          failed++;
        }
      }
      await migrateVmaPages(args);
      const vpns: number[] = [];
      const pfns: number[] = [];
      const writable: boolean[] = [];
      let migrated = 0;
      for (let k = 0; k < idx.length; k++) {
        const i = idx[k]!;
        const d = migratePfnToPfn(args.dst[i]!);
        if (d < 0) continue;
        if ((args.src[i]! & MigratePfn.MIGRATE) !== 0) {
          migrated++;
          vpns.push(start / PAGE_SIZE + i);
          pfns.push(d);
          writable.push((args.src[i]! & MigratePfn.WRITE) !== 0);
        } else {
          failed++;
        }
      }
      this.#clients?.mapMigrated(vma.mm, gen, vpns, pfns, writable);
      this.onMigrated?.(vma.mm, vpns, true);
      this.toVram += migrated;
      return { migrated, failed };
    } finally {
      migrateVmaFinalize(args);
    }
  }

  /**
   * `migrate_to_ram` (`nouveau_dmem_migrate_to_ram`): the CPU touched one of this VRAM's pages;
   * exactly that page moves back (nouveau has a FIXME wanting neighbours too). Throws on failure, so
   * the CPU access fails (ENOMEM when RAM is exhausted, SIGBUS otherwise).
   */
  async migrateToRam(fault: MigrateToRamFault): Promise<void> {
    const ctx = this.gpu.machine.mm;
    const { vma, address } = fault;
    const args = migrateVmaArgs({
      vma,
      start: address,
      end: address + PAGE_SIZE,
      pgmapOwner: this.owner,
      flags: MigrateVmaSelect.DEVICE_PRIVATE,
      faultPage: fault.page,
    });
    await migrateVmaSetup(args);
    let d = -1;
    try {
      const e = args.src[0]!;
      if ((e & MigratePfn.MIGRATE) === 0) return; // someone else moved it already
      await this.#clients?.unmap(vma.mm, address, address + PAGE_SIZE);
      d = await ctx.allocPage();
      ctx.mem.flags[d]! |= PG.LOCKED;
      const store = ctx.mem.content;
      const r = await this.gpu.copyEngine.copy(
        [{ store, index: migratePfnToPfn(e) }],
        [{ store, index: d }],
        'd2h',
      );
      if (r.copied !== 1) {
        throw new HmmError(
          'EIO',
          `${this.gpu.name}: copy of ${hex(address)} back to RAM failed: ${r.error?.message ?? 'no page arrived'}`,
          {
            address,
          },
        );
      }
      args.dst[0] = migratePfn(d) | (e & MigratePfn.WRITE);
      d = -1;
      await migrateVmaPages(args);
      this.toRam++;
      this.onMigrated?.(vma.mm, [address / PAGE_SIZE], false);
    } finally {
      if (d >= 0) releaseLocked(ctx, d);
      migrateVmaFinalize(args);
    }
  }

  /**
   * Moves this VRAM's pages of `[start, end)` of `mm` back to system memory (`migrate_vma_*`
   * selecting this owner's device-private pages, in batches of {@link NOUVEAU_MIGRATE_BATCH_PAGES}
   * per VMA); the caller holds the mmap lock for read. nouveau has no ioctl for it (the conformance
   * suite's MIGRATE_TO_SYS uses it). Resolves to the pages moved. EFAULT for a hole, ENOMEM when RAM
   * runs out, EIO when a copy fails.
   */
  async migrateRangeToRam(mm: MmStruct, start: number, end: number): Promise<number> {
    let moved = 0;
    for (let addr = start; addr < end;) {
      const vma = mm.vmas.lookup(addr);
      if (vma === undefined) {
        throw new HmmError('EFAULT', `${this.gpu.name}: migrate to RAM: no mapping at ${hex(addr)}`, {
          address: addr,
        });
      }
      const vend = Math.min(end, vma.end);
      for (let b = addr; b < vend; b += NOUVEAU_MIGRATE_BATCH_PAGES * PAGE_SIZE) {
        moved += await this.#batchToRam(vma, b, Math.min(vend, b + NOUVEAU_MIGRATE_BATCH_PAGES * PAGE_SIZE));
      }
      addr = vend;
    }
    return moved;
  }

  async #batchToRam(vma: Vma, start: number, end: number): Promise<number> {
    const ctx = this.gpu.machine.mm;
    const args = migrateVmaArgs({
      vma,
      start,
      end,
      pgmapOwner: this.owner,
      flags: MigrateVmaSelect.DEVICE_PRIVATE,
    });
    await migrateVmaSetup(args);
    const allocated: number[] = [];
    try {
      const idx: number[] = [];
      for (let i = 0; i < args.npages; i++) {
        const s = migratePfnToPfn(args.src[i]!);
        if ((args.src[i]! & MigratePfn.MIGRATE) !== 0 && s >= 0 && this.owns(s)) idx.push(i);
      }
      if (idx.length === 0) return 0;
      await this.#clients?.unmap(vma.mm, start, end);
      for (let k = 0; k < idx.length; k++) {
        const d = await ctx.allocPage();
        ctx.mem.flags[d]! |= PG.LOCKED;
        allocated.push(d);
      }
      const store = ctx.mem.content;
      const r = await this.gpu.copyEngine.copy(
        idx.map((i) => ({ store, index: migratePfnToPfn(args.src[i]!) })),
        allocated.map((index) => ({ store, index })),
        'd2h',
      );
      if (r.copied !== idx.length) {
        throw new HmmError(
          'EIO',
          `${this.gpu.name}: copy of [${hex(start)}, ${hex(end)}) back to RAM failed after ${r.copied} of ${idx.length} pages: ${r.error?.message ?? 'no page arrived'}`,
          { address: start },
        );
      }
      idx.forEach((i, k) => {
        args.dst[i] = migratePfn(allocated[k]!) | (args.src[i]! & MigratePfn.WRITE);
      });
      allocated.length = 0;
      await migrateVmaPages(args);
      const vpns: number[] = [];
      for (const i of idx) if ((args.src[i]! & MigratePfn.MIGRATE) !== 0) vpns.push(start / PAGE_SIZE + i);
      this.toRam += vpns.length;
      this.onMigrated?.(vma.mm, vpns, false);
      return vpns.length;
    } finally {
      for (const d of allocated) releaseLocked(ctx, d);
      migrateVmaFinalize(args);
    }
  }

  /**
   * Teardown eviction (`nouveau_dmem_evict_chunk` for every chunk, with `migrate_device_range`):
   * every VRAM page goes back to system memory through the copy engine and the chunks are unmapped.
   * EBUSY, naming the frames, if a page could not be evicted.
   */
  async release(): Promise<void> {
    const before = this.devmem.nrAllocated;
    const ctx = this.gpu.machine.mm;
    await this.devmem.release(async (s, d) => {
      const store = ctx.mem.content;
      const r = await this.gpu.copyEngine.copy(
        s.map((index) => ({ store, index })),
        d.map((index) => ({ store, index })),
        'd2h',
      );
      return r.copied;
    });
    this.toRam += before - this.devmem.nrAllocated;
  }
}

function releaseLocked(ctx: MmContext, pfn: number): void {
  unlockPage(ctx, pfn);
  ctx.putPage(pfn);
}
