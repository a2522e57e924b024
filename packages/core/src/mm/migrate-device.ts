/**
 * Migrating pages to and from device memory (mm/migrate_device.c, include/linux/migrate.h):
 * `migrate_vma_setup` / `migrate_vma_pages` / `migrate_vma_finalize` for a virtual range, and
 * `migrate_device_range` / `migrate_device_pages` / `migrate_device_finalize` for device frames
 * without a virtual address (eviction at driver unload).
 *
 * The protocol, as in the kernel:
 * 1. **setup** collects the range under a MIGRATE invalidation carrying `pgmapOwner`: each page that
 *    may move is referenced, locked, and its PTE replaced by a migration entry (CPU accesses wait).
 *    Every other mapping of a collected page is replaced too (after a CLEAR invalidation), then pages
 *    with references beyond their mappings (pinned, GUP-held) are restored and dropped. `src[i]` says
 *    what was collected; `cpages` counts entries still marked MIGRATE.
 * 2. The driver allocates a locked destination for each entry it wants to move, copies the data and
 *    sets `dst[i]`; it may skip any entry.
 * 3. **pages** commits: entries without a destination, page-cache pages, and empty slots that can no
 *    longer be filled lose MIGRATE.
 * 4. The driver updates its page tables, then **finalize** installs the new pages (or restores the
 *    old ones), unlocks everything and drops the references, freeing the pages that moved.
 *
 * Entries of `src` and `dst` are `pfn × 2^6 | flags` ({@link migratePfn}); see {@link MigratePfn}.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import { isDevicePrivateEntry, isMigrationEntry, notifyEnd, notifyStart } from './memory.js';
import { MemoryType, lockPage, pagemapOf, trylockPage, unlockPage } from './memremap.js';
import type { MmContext } from './mm-context.js';
import { RssCounter } from './mm-struct.js';
import type { MmStruct } from './mm-struct.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { PG } from './page-flags.js';
import { Pte, PteType, nonPresentFlags, pteType } from './pgtable.js';
import { ZERO_PFN } from './physmem.js';
import type { Vma } from './vma.js';
import { traceMigrate, traceResident } from './trace-events.js';

/** Flags of a migrate pfn entry (`MIGRATE_PFN_*`). */
export const MigratePfn = {
  /** The entry holds a frame number (`MIGRATE_PFN_VALID`). */
  VALID: 1 << 0,
  /** The page is to be migrated (`MIGRATE_PFN_MIGRATE`). */
  MIGRATE: 1 << 1,
  /** The source was mapped writable (`MIGRATE_PFN_WRITE`). */
  WRITE: 1 << 3,
  /** A large folio (`MIGRATE_PFN_COMPOUND`); not produced by the SDK, which has no THP. */
  COMPOUND: 1 << 4,
  /** Bits below the frame number (`MIGRATE_PFN_SHIFT`). */
  SHIFT: 6,
} as const;

const PFN_MUL = 1 << MigratePfn.SHIFT;

/** An entry for frame `pfn` with VALID set (`migrate_pfn`). */
export function migratePfn(pfn: number): number {
  return pfn * PFN_MUL + MigratePfn.VALID;
}

/** The frame of an entry, or -1 if it has no VALID frame (`migrate_pfn_to_page`). */
export function migratePfnToPfn(entry: number): number {
  return (entry & MigratePfn.VALID) === 0 ? -1 : Math.floor(entry / PFN_MUL);
}

/** The {@link MigratePfn} flag bits of an entry. */
export function migratePfnFlags(entry: number): number {
  return entry % PFN_MUL;
}

/** Which pages `migrate_vma_setup` collects (`MIGRATE_VMA_SELECT_*`). */
export const MigrateVmaSelect = {
  /** System memory pages, the zero page and empty anonymous slots. */
  SYSTEM: 1 << 0,
  /** Device-private pages of `pgmapOwner`. */
  DEVICE_PRIVATE: 1 << 1,
  /** Device-coherent pages of `pgmapOwner`. */
  DEVICE_COHERENT: 1 << 2,
  /** Whole large folios (no THP in the SDK: accepted, has no effect). */
  COMPOUND: 1 << 3,
} as const;
const SELECT_ALL = 0xf;

/** `struct migrate_vma`: the arguments and results of one migration of a virtual range. */
export interface MigrateVma {
  /** The VMA holding the range; the caller holds its mm's mmap lock (read) from setup to finalize. */
  readonly vma: Vma;
  /** First byte, page aligned. */
  readonly start: number;
  /** One past the last byte, page aligned, inside the VMA. */
  readonly end: number;
  /** One entry per page: filled by setup, read by the driver. */
  readonly src: Float64Array;
  /** One entry per page: set by the driver (locked destination pages). */
  readonly dst: Float64Array;
  /** Owner of the device pages to select, and the MIGRATE notifier's `owner`. */
  readonly pgmapOwner: unknown;
  /** {@link MigrateVmaSelect} bits. */
  readonly flags: number;
  /** The device-private page a CPU fault is migrating (`fault_page`): locked by the fault; -1 if none. */
  readonly faultPage?: number;
  /** Out: entries marked MIGRATE after setup. */
  cpages: number;
  /** Out: entries filled (pages in the range). */
  npages: number;
}

/** What {@link migrateVmaArgs} needs: the range, the owner and the select flags. */
export interface MigrateVmaRequest {
  readonly vma: Vma;
  readonly start: number;
  readonly end: number;
  readonly pgmapOwner: unknown;
  readonly flags: number;
  readonly faultPage?: number;
}

/**
 * A {@link MigrateVma} for `[start, end)` with fresh `src` and `dst` arrays of one entry per page
 * (what a driver fills on its stack before `migrate_vma_setup`). EINVAL for an empty or unaligned
 * range.
 */
export function migrateVmaArgs(req: MigrateVmaRequest): MigrateVma {
  const n = (req.end - req.start) / PAGE_SIZE;
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw einval(
      'migrate_vma',
      `[${String(req.start)}, ${String(req.end)}) is not a non-empty page-aligned range`,
    );
  }
  return {
    vma: req.vma,
    start: req.start,
    end: req.end,
    src: new Float64Array(n),
    dst: new Float64Array(n),
    pgmapOwner: req.pgmapOwner,
    flags: req.flags,
    ...(req.faultPage !== undefined && req.faultPage >= 0 ? { faultPage: req.faultPage } : {}),
    cpages: 0,
    npages: 0,
  };
}

/** Called for each page whose migration commits, with the source and destination frames. */
export type MigrateObserver = (srcPfn: number, dstPfn: number) => void;

function einval(fn: string, why: string): HmmError {
  return new HmmError('EINVAL', `${fn}: ${why}`, { kernelRef: `mm/migrate_device.c:${fn}` });
}

/** Charges the CPU cost of migrating `pages` pages to the running task (nothing outside a task). */
async function chargeCpu(ctx: MmContext, pages: number): Promise<void> {
  const ns = pages * ctx.cost.migrate.cpuPerPageNs;
  if (ns > 0 && ctx.sched.current !== null) await ctx.sched.sleep(ns);
}

/** A migration entry standing for a mapping of `pfn` as the given entry did. */
function migrationEntryFor(flags: number): number {
  const t = pteType(flags);
  const write = (flags & Pte.PRESENT) !== 0 ? (flags & Pte.WRITE) !== 0 : t === PteType.DEVICE_PRIVATE_WRITE;
  return nonPresentFlags(write ? PteType.MIGRATION_WRITE : PteType.MIGRATION_READ);
}

/**
 * Collects a range for migration (`migrate_vma_setup`). The caller holds the mmap lock of
 * `args.vma.mm` (read). EINVAL, with nothing changed, for: no VMA or a VMA no longer mapped there,
 * an empty, unaligned or out-of-VMA range, a VM_IO/VM_PFNMAP VMA, `src`/`dst` shorter than the
 * range, unknown select flags, or a `faultPage` that is not a locked device-private page. Returns
 * normally even when nothing was collected.
 */
export async function migrateVmaSetup(args: MigrateVma): Promise<void> {
  const fn = 'migrate_vma_setup';
  const { vma, start, end, src, dst, flags } = args;
  if (vma === null || vma === undefined) throw einval(fn, 'no VMA given');
  const mm = vma.mm;
  const ctx = mm.ctx;
  const began = ctx.sched.now;
  if (
    !Number.isSafeInteger(start) ||
    !Number.isSafeInteger(end) ||
    start % PAGE_SIZE !== 0 ||
    end % PAGE_SIZE !== 0
  ) {
    throw einval(fn, `[${String(start)}, ${String(end)}) is not page aligned`);
  }
  if (end <= start) throw einval(fn, `empty range [${hex(start)}, ${hex(end)})`);
  if (start < vma.start || end > vma.end) {
    throw einval(fn, `[${hex(start)}, ${hex(end)}) is not inside ${vma.toString()}`);
  }
  if (mm.state !== 'live' || mm.vmas.lookup(start) !== vma) {
    throw einval(fn, `${vma.toString()} is no longer mapped`);
  }
  if (vma.isSpecial) throw einval(fn, `${vma.toString()} is a VM_IO/VM_PFNMAP mapping`);
  const n = (end - start) / PAGE_SIZE;
  if (!(src instanceof Float64Array) || !(dst instanceof Float64Array) || src.length < n || dst.length < n) {
    throw einval(fn, `src and dst must be Float64Arrays of at least ${n} entries`);
  }
  if (!Number.isInteger(flags) || (flags & ~SELECT_ALL) !== 0) {
    throw einval(fn, `unknown select flags ${String(flags)}`);
  }
  const faultPage = args.faultPage ?? -1;
  if (faultPage !== -1) {
    const pg = pagemapOf(ctx, faultPage);
    if (pg?.type !== MemoryType.DEVICE_PRIVATE || (ctx.mem.flags[faultPage]! & PG.LOCKED) === 0) {
      throw einval(fn, `faultPage ${String(faultPage)} is not a locked device-private page`);
    }
  }
  if (!mm.mmapLock.heldByCurrent()) {
    throw einval(fn, 'the caller must hold the mmap lock of the mm');
  }
  src.fill(0, 0, n);
  dst.fill(0, 0, n);
  args.cpages = 0;
  args.npages = 0;

  const mem = ctx.mem;
  const arena = ctx.arena;
  const anonVma = vma.file === null;
  const range = await notifyStart(mm, start, end, NotifyEvent.MIGRATE, args.pgmapOwner);
  for (let i = 0; i < n; i++) {
    const vpn = start / PAGE_SIZE + i;
    const slot = mm.pgtable.lookup(vpn);
    const f = slot < 0 ? 0 : arena.pteFlags[slot]!;
    const pv = slot < 0 ? 0 : arena.pteVal[slot]!;
    args.npages++;
    if (f === 0) {
      // An empty anonymous slot: the driver may fill it (with zeros).
      if (anonVma) {
        src[i] = MigratePfn.MIGRATE;
        args.cpages++;
      }
      continue;
    }
    let write: boolean;
    if ((f & Pte.PRESENT) !== 0) {
      if ((f & Pte.SPECIAL) !== 0) {
        if (pv === ZERO_PFN && (flags & MigrateVmaSelect.SYSTEM) !== 0) {
          src[i] = MigratePfn.MIGRATE;
          args.cpages++;
        }
        continue;
      }
      const pg = pagemapOf(ctx, pv);
      if (pg === undefined) {
        if ((flags & MigrateVmaSelect.SYSTEM) === 0) continue;
      } else if (
        pg.type !== MemoryType.DEVICE_COHERENT ||
        (flags & MigrateVmaSelect.DEVICE_COHERENT) === 0 ||
        pg.owner !== args.pgmapOwner
      ) {
        continue;
      }
      write = (f & Pte.WRITE) !== 0;
    } else {
      const t = pteType(f);
      if (!isDevicePrivateEntry(t)) continue; // swap, migration, device-exclusive: not collected
      const pg = pagemapOf(ctx, pv);
      if ((flags & MigrateVmaSelect.DEVICE_PRIVATE) === 0 || pg?.owner !== args.pgmapOwner) continue;
      write = t === PteType.DEVICE_PRIVATE_WRITE;
    }
    const pgFlags = mem.flags[pv]!;
    const anon = (pgFlags & PG.ANON) !== 0;
    // folio_try_share_anon_rmap_pte fails for a possibly pinned page: it is not collected.
    if (anon && mem.pincount[pv]! > 0) continue;
    if (pv !== faultPage && !trylockPage(ctx, pv)) continue;
    mem.refcount[pv]!++;
    if (anon) {
      if ((f & Pte.DIRTY) !== 0) mem.flags[pv]! |= PG.DIRTY;
      if ((mem.flags[pv]! & PG.LRU) !== 0) ctx.lru.del(pv);
      arena.setPte(slot, pv, migrationEntryFor(f));
    }
    src[i] = migratePfn(pv) | MigratePfn.MIGRATE | (write ? MigratePfn.WRITE : 0);
    args.cpages++;
  }
  notifyEnd(mm, range);
  args.cpages -= await unmapCollected(ctx, src, n, faultPage);
  traceMigrate(ctx, mm.id, start, end, 'setup', args.cpages, 0, src, dst, n, began);
  await chargeCpu(ctx, args.cpages);
}

/**
 * Replaces the remaining mappings of every collected anon page by migration entries (`try_to_migrate`,
 * one CLEAR invalidation per mapping), then restores and drops the pages that hold references beyond
 * their mappings (`migrate_vma_check_page`). Returns how many entries lost MIGRATE.
 */
async function unmapCollected(
  ctx: MmContext,
  src: Float64Array,
  n: number,
  faultPage: number,
): Promise<number> {
  const mem = ctx.mem;
  const arena = ctx.arena;
  let dropped = 0;
  for (let i = 0; i < n; i++) {
    const pfn = migratePfnToPfn(src[i]!);
    if (pfn < 0 || (src[i]! & MigratePfn.MIGRATE) === 0) continue;
    if ((mem.flags[pfn]! & PG.ANON) !== 0 && !soleMigrationEntry(ctx, pfn)) {
      for (;;) {
        let other = -1;
        let otherMm: MmStruct | undefined;
        ctx.rmap.walk(pfn, (m, slot) => {
          if (isMigrationEntry(pteType(arena.pteFlags[slot]!))) return true;
          other = slot;
          otherMm = m;
          return false;
        });
        if (other < 0 || otherMm === undefined) break;
        const addr = arena.slotAddress(other);
        const range = await notifyStart(otherMm, addr, addr + PAGE_SIZE, NotifyEvent.CLEAR);
        const f = arena.pteFlags[other]!;
        if (f !== 0 && arena.pteVal[other] === pfn && !isMigrationEntry(pteType(f))) {
          if ((f & Pte.PRESENT) !== 0 && (f & Pte.DIRTY) !== 0) mem.flags[pfn]! |= PG.DIRTY;
          arena.setPte(other, pfn, migrationEntryFor(f));
        }
        notifyEnd(otherMm, range);
      }
    }
    const expected =
      mem.mapcount[pfn]! + 1 + (pfn === faultPage ? 1 : 0) + ((mem.flags[pfn]! & PG.PAGECACHE) !== 0 ? 1 : 0);
    if (mem.refcount[pfn]! > expected || mem.pincount[pfn]! > 0) {
      // Pinned or otherwise held: put it back as it was, and forget it (finalize must not restore it again).
      src[i] = 0;
      restorePage(ctx, pfn, faultPage);
      dropped++;
    }
  }
  return dropped;
}

/** True if anon `pfn` has one mapping and it is a migration entry already (the rmap then holds only it). */
function soleMigrationEntry(ctx: MmContext, pfn: number): boolean {
  const slot = ctx.mem.rmap[pfn]!;
  return ctx.mem.mapcount[pfn] === 1 && slot !== 0 && isMigrationEntry(pteType(ctx.arena.pteFlags[slot]!));
}

/** Turns every migration entry of `src` into a mapping of `to` (`remove_migration_ptes`). */
function removeMigrationPtes(ctx: MmContext, src: number, to: number): void {
  const mem = ctx.mem;
  if ((mem.flags[src]! & PG.ANON) === 0) return;
  const arena = ctx.arena;
  const toPrivate = pagemapOf(ctx, to)?.type === MemoryType.DEVICE_PRIVATE;
  const only = mem.rmap[src]!;
  if (mem.mapcount[src] === 1 && only !== 0) {
    // One mapping, so the rmap holds exactly `only`: no walk needed.
    if (isMigrationEntry(pteType(arena.pteFlags[only]!)) && arena.pteVal[only] === src) {
      replaceMigrationPte(ctx, only, src, to, toPrivate);
    }
    return;
  }
  const slots: number[] = [];
  ctx.rmap.walk(src, (_m, slot) => {
    if (isMigrationEntry(pteType(arena.pteFlags[slot]!)) && arena.pteVal[slot] === src) slots.push(slot);
  });
  for (const slot of slots) replaceMigrationPte(ctx, slot, src, to, toPrivate);
}

/** Turns the migration entry at `slot` (of `src`) into a mapping of `to`, moving the map count and rmap. */
function replaceMigrationPte(
  ctx: MmContext,
  slot: number,
  src: number,
  to: number,
  toPrivate: boolean,
): void {
  const mem = ctx.mem;
  const arena = ctx.arena;
  const write = pteType(arena.pteFlags[slot]!) === PteType.MIGRATION_WRITE;
  const flags = toPrivate
    ? nonPresentFlags(write ? PteType.DEVICE_PRIVATE_WRITE : PteType.DEVICE_PRIVATE_READ)
    : Pte.PRESENT | (write ? Pte.WRITE | Pte.DIRTY : 0);
  if (to !== src) {
    mem.mapcount[src]!--;
    mem.refcount[src]!--; // never the last: the migration holds one
    ctx.rmap.removeAnon(src, slot);
    mem.mapcount[to]!++;
    mem.refcount[to]!++;
    ctx.rmap.addAnon(to, slot);
  }
  arena.setPte(slot, to, flags);
}

/** Puts a collected page back: restores its mappings, unlocks it and drops the migration's reference. */
function restorePage(ctx: MmContext, pfn: number, faultPage: number): void {
  const mem = ctx.mem;
  removeMigrationPtes(ctx, pfn, pfn);
  if ((mem.flags[pfn]! & (PG.ANON | PG.ZONE_DEVICE | PG.LRU)) === PG.ANON && mem.mapcount[pfn]! > 0)
    ctx.lru.add(pfn);
  if (pfn !== faultPage) unlockPage(ctx, pfn);
  ctx.putPage(pfn);
}

/** Checks that every destination the driver set is a locked, otherwise unused page. */
function checkDestinations(
  ctx: MmContext,
  fn: string,
  src: Float64Array,
  dst: Float64Array,
  n: number,
): void {
  const mem = ctx.mem;
  for (let i = 0; i < n; i++) {
    const d = migratePfnToPfn(dst[i]!);
    if (d < 0) continue;
    const f = mem.flags[d];
    if (
      f === undefined ||
      (f & PG.ALLOCATED) === 0 ||
      (f & PG.LOCKED) === 0 ||
      (f & (PG.ANON | PG.PAGECACHE | PG.LRU)) !== 0 ||
      mem.refcount[d] !== 1 ||
      mem.mapcount[d] !== 0
    ) {
      throw einval(
        fn,
        `dst[${i}] = frame ${hex(d)} is not a freshly allocated, locked page (flags ${hex(f ?? 0)}, refcount ${String(mem.refcount[d])})`,
      );
    }
    if (migratePfnToPfn(src[i]!) === d) throw einval(fn, `dst[${i}] is the source page itself`);
  }
}

/** Moves the page state of a committed migration from `s` to `d` (`folio_migrate_flags`). */
function migrateFlags(ctx: MmContext, s: number, d: number): void {
  const mem = ctx.mem;
  const keep = PG.ANON | PG.SWAPBACKED | PG.ANON_EXCLUSIVE | PG.DIRTY | PG.REFERENCED;
  mem.flags[d]! |= mem.flags[s]! & keep;
  ctx.onMigratePage?.(s, d);
}

/**
 * Commits the collected entries that have a destination (`migrate_vma_pages`): empty slots and zero
 * pages are filled with the destination (after a MIGRATE invalidation), and page state moves to the
 * destinations. Entries lose MIGRATE when they have no destination, when their slot changed since
 * setup, or when a page-cache page would move (the kernel refuses file pages to device memory; the
 * SDK does not move page-cache pages between RAM frames either). EINVAL, with nothing changed, if a
 * destination is not a freshly allocated locked page.
 */
export async function migrateVmaPages(args: MigrateVma): Promise<void> {
  const { vma, start, end, src, dst } = args;
  const n = (end - start) / PAGE_SIZE;
  const ctx = vma.mm.ctx;
  checkDestinations(ctx, 'migrate_vma_pages', src, dst, n);
  const mm = vma.mm;
  const mem = ctx.mem;
  const arena = ctx.arena;
  let range: Awaited<ReturnType<typeof notifyStart>> = null;
  let notified = false;
  for (let i = 0; i < n; i++) {
    const e = src[i]!;
    if ((e & MigratePfn.MIGRATE) === 0) continue;
    const d = migratePfnToPfn(dst[i]!);
    if (d < 0) {
      src[i] = e - MigratePfn.MIGRATE;
      continue;
    }
    const s = migratePfnToPfn(e);
    if (s >= 0) {
      if ((mem.flags[s]! & PG.ANON) === 0) src[i] = e - MigratePfn.MIGRATE;
      else migrateFlags(ctx, s, d);
      continue;
    }
    // migrate_vma_insert_page: fill an empty slot or replace the zero page.
    const addr = start + i * PAGE_SIZE;
    if (!notified) {
      notified = true;
      range = await notifyStart(mm, addr, end, NotifyEvent.MIGRATE, args.pgmapOwner);
    }
    const slot =
      mm.state === 'live' && mm.vmas.lookup(addr) === vma && vma.file === null
        ? mm.pgtable.ensure(addr / PAGE_SIZE)
        : -1;
    const f = slot < 0 ? -1 : arena.pteFlags[slot]!;
    if (f !== 0 && !(f === (f | Pte.PRESENT | Pte.SPECIAL) && arena.pteVal[slot] === ZERO_PFN)) {
      src[i] = e - MigratePfn.MIGRATE;
      continue;
    }
    const writable = vma.writable;
    const flags =
      pagemapOf(ctx, d)?.type === MemoryType.DEVICE_PRIVATE
        ? nonPresentFlags(writable ? PteType.DEVICE_PRIVATE_WRITE : PteType.DEVICE_PRIVATE_READ)
        : Pte.PRESENT | Pte.ACCESSED | (writable ? Pte.WRITE | Pte.DIRTY : 0);
    mem.flags[d]! |= PG.ANON | PG.SWAPBACKED | PG.ANON_EXCLUSIVE;
    mem.mapcount[d] = 1;
    mem.refcount[d]!++;
    arena.setPte(slot, d, flags);
    ctx.rmap.addAnon(d, slot);
    mm.rss[RssCounter.ANON]!++;
    ctx.onMigratePage?.(-1, d);
  }
  notifyEnd(mm, range);
}

/**
 * Ends a migration (`migrate_vma_finalize`): committed pages replace their sources in every mapping,
 * the others are restored; all pages are unlocked, the migration's references dropped, sources that
 * moved and unused destinations freed.
 */
export function migrateVmaFinalize(args: MigrateVma): void {
  const n = (args.end - args.start) / PAGE_SIZE;
  const ctx = args.vma.mm.ctx;
  const [moved, restored] = finalize(ctx, args.src, args.dst, n, args.faultPage ?? -1);
  const now = ctx.sched.now;
  traceMigrate(
    ctx,
    args.vma.mm.id,
    args.start,
    args.end,
    'finalize',
    moved,
    restored,
    args.src,
    args.dst,
    n,
    now,
  );
  traceResident(ctx);
}

/** Ends a migration; returns [pages moved, collected pages restored]. */
function finalize(
  ctx: MmContext,
  src: Float64Array,
  dst: Float64Array,
  n: number,
  faultPage: number,
): [number, number] {
  const mem = ctx.mem;
  let nMoved = 0;
  let nRestored = 0;
  for (let i = 0; i < n; i++) {
    const e = src[i]!;
    const s = migratePfnToPfn(e);
    const d = migratePfnToPfn(dst[i]!);
    const moved = (e & MigratePfn.MIGRATE) !== 0 && d >= 0;
    if (moved) nMoved++;
    if (s >= 0) {
      if (moved) {
        removeMigrationPtes(ctx, s, d);
        if (s !== faultPage) unlockPage(ctx, s);
        ctx.putPage(s);
      } else {
        restorePage(ctx, s, faultPage);
        nRestored++;
      }
    }
    if (d >= 0) {
      unlockPage(ctx, d);
      if (moved && mem.mapcount[d]! > 0 && (mem.flags[d]! & (PG.ZONE_DEVICE | PG.LRU)) === 0) ctx.lru.add(d);
      ctx.putPage(d);
    }
  }
  return [nMoved, nRestored];
}

/**
 * Collects device frames `[startPfn, startPfn + npages)` for eviction without a virtual range
 * (`migrate_device_range`): each frame in use is referenced, locked and all its mappings replaced
 * by migration entries (CLEAR invalidations). Charges `migrate.cpuPerPageNs` per collected frame,
 * as setup does. `src[i]` gets MIGRATE for each collected frame and 0
 * for free or busy ones. EINVAL, with nothing changed, if a frame is not a device frame.
 */
export async function migrateDeviceRange(
  ctx: MmContext,
  src: Float64Array,
  startPfn: number,
  npages: number,
): Promise<void> {
  const fn = 'migrate_device_range';
  if (!Number.isSafeInteger(startPfn) || !Number.isSafeInteger(npages) || npages <= 0) {
    throw einval(fn, `frames ${String(startPfn)}+${String(npages)} is not a range`);
  }
  if (!(src instanceof Float64Array) || src.length < npages) {
    throw einval(fn, `src must be a Float64Array of at least ${npages} entries`);
  }
  for (let p = startPfn; p < startPfn + npages; p++) {
    if (pagemapOf(ctx, p) === undefined) throw einval(fn, `frame ${hex(p)} is not a device frame`);
  }
  const mem = ctx.mem;
  const began = ctx.sched.now;
  for (let i = 0; i < npages; i++) {
    const pfn = startPfn + i;
    src[i] = 0;
    if ((mem.flags[pfn]! & PG.ALLOCATED) === 0 || !trylockPage(ctx, pfn)) continue;
    mem.refcount[pfn]!++;
    src[i] = migratePfn(pfn) | MigratePfn.MIGRATE;
  }
  await unmapCollected(ctx, src, npages, -1);
  let collected = 0;
  for (let i = 0; i < npages; i++) if ((src[i]! & MigratePfn.MIGRATE) !== 0) collected++;
  traceMigrate(ctx, -1, 0, 0, 'setup', collected, 0, src, src, npages, began);
  await chargeCpu(ctx, collected);
}

/** Commits an eviction started by {@link migrateDeviceRange} (`migrate_device_pages`). */
export function migrateDevicePages(
  ctx: MmContext,
  src: Float64Array,
  dst: Float64Array,
  npages: number,
): void {
  checkDestinations(ctx, 'migrate_device_pages', src, dst, npages);
  const mem = ctx.mem;
  for (let i = 0; i < npages; i++) {
    const e = src[i]!;
    if ((e & MigratePfn.MIGRATE) === 0) continue;
    const s = migratePfnToPfn(e);
    const d = migratePfnToPfn(dst[i]!);
    if (d < 0 || s < 0 || (mem.flags[s]! & PG.ANON) === 0) {
      src[i] = e - MigratePfn.MIGRATE;
      continue;
    }
    migrateFlags(ctx, s, d);
  }
}

/** Ends an eviction (`migrate_device_finalize`), as {@link migrateVmaFinalize} does. */
export function migrateDeviceFinalize(
  ctx: MmContext,
  src: Float64Array,
  dst: Float64Array,
  npages: number,
): void {
  const [moved, restored] = finalize(ctx, src, dst, npages, -1);
  traceMigrate(ctx, -1, 0, 0, 'finalize', moved, restored, src, dst, npages, ctx.sched.now);
  traceResident(ctx);
}

/**
 * Moves one device-coherent page to a new RAM page with a CPU copy, so that it can be pinned
 * long-term (`migrate_device_coherent_folio`). Returns false if the page could not move (pinned,
 * held, or freed meanwhile).
 */
export async function migrateDeviceCoherentPage(ctx: MmContext, pfn: number): Promise<boolean> {
  const mem = ctx.mem;
  if (pagemapOf(ctx, pfn)?.type !== MemoryType.DEVICE_COHERENT) return false;
  await lockPage(ctx, pfn);
  if ((mem.flags[pfn]! & PG.ALLOCATED) === 0) {
    unlockPage(ctx, pfn);
    return false;
  }
  mem.refcount[pfn]!++;
  const src = new Float64Array([migratePfn(pfn) | MigratePfn.MIGRATE]);
  const dst = new Float64Array(1);
  if ((await unmapCollected(ctx, src, 1, -1)) > 0) return false;
  let d = -1;
  try {
    d = await ctx.allocPage();
  } catch {
    finalize(ctx, src, dst, 1, -1);
    return false;
  }
  mem.flags[d]! |= PG.LOCKED;
  mem.copyFrame(d, pfn);
  dst[0] = migratePfn(d);
  migrateDevicePages(ctx, src, dst, 1);
  finalize(ctx, src, dst, 1, -1);
  return (src[0]! & MigratePfn.MIGRATE) !== 0;
}
