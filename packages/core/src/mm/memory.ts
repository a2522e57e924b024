/**
 * Page faults and page-table teardown (mm/memory.c): `handle_mm_fault` with its demand-zero,
 * zero-page, file, swap-in and copy-on-write paths, and `zap_pte_range`.
 *
 * Every path that needs a new frame allocates first (which may reclaim and so let other tasks run),
 * then re-checks the PTE it started from in one synchronous step, as the kernel re-checks under the
 * page-table lock (`pte_same`), and retries if it changed.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE, VmFlag } from './constants.js';
import type { MmContext } from './mm-context.js';
import { RssCounter } from './mm-struct.js';
import type { MmStruct } from './mm-struct.js';
import type { MmuNotifierRange, NotifyEventId } from './mmu-notifier-hooks.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { PG } from './page-flags.js';
import { Pte, PteType, pteType } from './pgtable.js';
import { lockPage, pagemapOf, trylockPage, unlockPage, waitOnPageLocked } from './memremap.js';
import { ZERO_PFN } from './physmem.js';
import type { Vma } from './vma.js';
import { traceFault } from './trace-events.js';
import type { FaultKind } from './trace-events.js';

/** Fault flags (`FAULT_FLAG_*`). */
export const FaultFlag = {
  /** Write access (`FAULT_FLAG_WRITE`). */
  WRITE: 1,
  /** Make an anon page exclusive without writing (`FAULT_FLAG_UNSHARE`, used by FOLL_PIN). */
  UNSHARE: 2,
  /** Fault on behalf of GUP (`FAULT_FLAG_REMOTE`). */
  REMOTE: 4,
} as const;

/** Outcome of one fault step. */
const DONE = 0;
const RETRY = 1;
/** Path taken by the last completed fault step (set just before returning DONE). */
let lastKind: FaultKind = 'spurious';

/** Retries of one fault before it is reported as a livelock (the kernel would loop; the SDK says why). */
const MAX_FAULT_RETRIES = 10_000;

/** Starts an invalidation (`mmu_notifier_invalidate_range_start`), or returns null when none is subscribed. */
export async function notifyStart(
  mm: MmStruct,
  start: number,
  end: number,
  event: NotifyEventId,
  owner: unknown = null,
): Promise<MmuNotifierRange | null> {
  const hooks = mm.notifier;
  if (hooks === null) return null;
  const range: MmuNotifierRange = { mm, start, end, event, blockable: true, owner };
  await hooks.invalidateRangeStart(range);
  return range;
}

/** Ends an invalidation started by {@link notifyStart}. */
export function notifyEnd(mm: MmStruct, range: MmuNotifierRange | null): void {
  if (range !== null && mm.notifier !== null) mm.notifier.invalidateRangeEnd(range);
}

/** RSS counter charged for a mapped frame. */
function rssCounterOf(ctx: MmContext, pfn: number): number {
  const f = ctx.mem.flags[pfn]!;
  if ((f & PG.ANON) !== 0) return RssCounter.ANON;
  return (f & PG.SWAPBACKED) !== 0 ? RssCounter.SHMEM : RssCounter.FILE;
}

/**
 * Clears one PTE and releases what it held (the body of `zap_pte_range`): a page's mapping and
 * reference (moving the PTE's dirty bit to the page), or a swap slot's use. No notifier is called.
 */
export function zapPte(ctx: MmContext, mm: MmStruct, slot: number): void {
  const arena = ctx.arena;
  const pf = arena.pteFlags[slot]!;
  const pv = arena.pteVal[slot]!;
  if (pf === 0) return;
  arena.setPte(slot, 0, 0);
  if ((pf & Pte.PRESENT) !== 0) {
    if ((pf & Pte.SPECIAL) !== 0) return;
    const mem = ctx.mem;
    mem.mapcount[pv]!--;
    mm.rss[rssCounterOf(ctx, pv)]!--;
    if ((mem.flags[pv]! & PG.ANON) !== 0) ctx.rmap.removeAnon(pv, slot);
    if ((pf & Pte.DIRTY) !== 0) mem.flags[pv]! |= PG.DIRTY;
    ctx.putPage(pv);
    return;
  }
  const type = pteType(pf);
  if (type === PteType.SWAP) {
    ctx.swap.free(pv);
    mm.rss[RssCounter.SWAP]!--;
    return;
  }
  if (isMappingEntry(type)) {
    // Device-private, migration and device-exclusive entries stand for a mapping of their frame.
    const mem = ctx.mem;
    mem.mapcount[pv]!--;
    mm.rss[rssCounterOf(ctx, pv)]!--;
    if ((mem.flags[pv]! & PG.ANON) !== 0) ctx.rmap.removeAnon(pv, slot);
    ctx.putPage(pv);
    return;
  }
  throw new Error(`internal: zap of unknown non-present entry type ${type} at slot ${slot}`);
}

/**
 * True for the non-present entry types that refer to a frame and count as one of its mappings
 * (map count, reference, reverse map and RSS): device-private, migration and device-exclusive.
 */
export function isMappingEntry(type: number): boolean {
  return type >= PteType.MIGRATION_READ && type <= PteType.DEVICE_EXCLUSIVE;
}

/** True for a device-private entry type (`is_device_private_entry`). */
export function isDevicePrivateEntry(type: number): boolean {
  return type === PteType.DEVICE_PRIVATE_READ || type === PteType.DEVICE_PRIVATE_WRITE;
}

/** True for a migration entry type (`is_migration_entry`). */
export function isMigrationEntry(type: number): boolean {
  return type === PteType.MIGRATION_READ || type === PteType.MIGRATION_WRITE;
}

/** Zaps every entry in [start, end) of `mm` and frees emptied tables (`unmap_page_range` + `free_pgtables`). */
export function zapRange(ctx: MmContext, mm: MmStruct, start: number, end: number): void {
  const s = start / PAGE_SIZE;
  const e = end / PAGE_SIZE;
  mm.pgtable.forEachPte(s, e, (slot) => zapPte(ctx, mm, slot));
  mm.pgtable.freeEmptyTables(s, e);
}

/** Zaps a range with notifiers around it (`zap_page_range_single` with an mmu_notifier range). */
export async function zapRangeNotify(
  ctx: MmContext,
  mm: MmStruct,
  start: number,
  end: number,
  event: NotifyEventId,
): Promise<void> {
  const range = await notifyStart(mm, start, end, event);
  zapRange(ctx, mm, start, end);
  notifyEnd(mm, range);
}

/**
 * Revokes the CPU and importer mappings of `[addr, addr + size)` of a special mapping
 * (`zap_vma_ptes`): a CLEAR invalidation (every importer drops its device mapping), then the PTEs go.
 * The exporter calls it before moving or freeing the object. The kernel silently does nothing for a
 * VMA that is not VM_PFNMAP or a range not fully inside it; the SDK says EINVAL, with nothing changed.
 */
export async function zapVmaPtes(vma: Vma, addr: number, size: number): Promise<void> {
  const fn = 'zap_vma_ptes';
  if (
    !Number.isSafeInteger(addr) ||
    !Number.isSafeInteger(size) ||
    addr % PAGE_SIZE !== 0 ||
    size % PAGE_SIZE !== 0 ||
    size <= 0
  ) {
    throw new HmmError(
      'EINVAL',
      `${fn}: [${String(addr)}, +${String(size)}) is not a non-empty page-aligned range`,
      {
        kernelRef: 'mm/memory.c:zap_vma_ptes',
      },
    );
  }
  if ((vma.flags & VmFlag.PFNMAP) === 0) {
    throw new HmmError('EINVAL', `${fn}: ${vma.toString()} is not a VM_PFNMAP mapping`, {
      kernelRef: 'mm/memory.c:zap_vma_ptes',
    });
  }
  if (addr < vma.start || addr + size > vma.end) {
    throw new HmmError(
      'EINVAL',
      `${fn}: [${hex(addr)}, ${hex(addr + size)}) is not inside ${vma.toString()}`,
      {
        kernelRef: 'mm/memory.c:zap_vma_ptes',
      },
    );
  }
  const mm = vma.mm;
  if (mm.state !== 'live') return;
  await zapRangeNotify(mm.ctx, mm, addr, addr + size, NotifyEvent.CLEAR);
}

/** Maps a new exclusive anon frame at `slot` (`folio_add_new_anon_rmap` + `set_pte_at`). */
function mapNewAnon(ctx: MmContext, mm: MmStruct, slot: number, pfn: number, pteFlags: number): void {
  const mem = ctx.mem;
  mem.flags[pfn]! |= PG.ANON | PG.SWAPBACKED | PG.ANON_EXCLUSIVE;
  mem.mapcount[pfn] = 1;
  ctx.arena.setPte(slot, pfn, pteFlags);
  ctx.rmap.addAnon(pfn, slot);
  ctx.lru.add(pfn);
  mm.rss[RssCounter.ANON]!++;
}

/** Returns the page-cache frame of `file` at `index`, reading it from the backing store if absent. */
export async function findOrReadPage(
  ctx: MmContext,
  file: import('./filemap.js').SimFile,
  index: number,
): Promise<number> {
  for (;;) {
    const cached = file.pageCache.get(index);
    if (cached !== undefined) return cached;
    const fast = ctx.mem.alloc(); // no await while a frame is free
    const pfn = fast >= 0 ? fast : await ctx.allocPage();
    if (file.pageCache.has(index)) {
      ctx.putPage(pfn);
      continue;
    }
    addToPageCache(ctx, file, index, pfn);
    ctx.mem.content.copyPageFrom(file.backing, index, pfn);
    return pfn;
  }
}

/** Inserts a fresh frame into a file's page cache (`filemap_add_folio`); the cache holds its reference. */
export function addToPageCache(
  ctx: MmContext,
  file: import('./filemap.js').SimFile,
  index: number,
  pfn: number,
): void {
  const mem = ctx.mem;
  mem.flags[pfn]! |= PG.PAGECACHE | (file.shmem ? PG.SWAPBACKED : 0);
  mem.owner[pfn] = file.id;
  mem.rmap[pfn] = index;
  file.pageCache.set(index, pfn);
  ctx.lru.add(pfn);
}

function sigbus(vma: Vma, addr: number, why: string): HmmError {
  return new HmmError('EFAULT', `SIGBUS at ${hex(addr)} in ${vma.toString()}: ${why}`, {
    address: addr,
    signal: 'SIGBUS',
    sigCode: 'ADRERR',
    kernelRef: 'mm/memory.c:do_fault',
  });
}

/**
 * Resolves one fault at `addr` in `vma` (`handle_mm_fault`). The caller holds `mmap_lock` for read
 * and has checked that the VMA permits the access. Throws a SIGBUS-like {@link HmmError} for a file
 * page beyond end of file or a special mapping that cannot supply the page, and ENOMEM when no frame
 * can be had.
 */
export async function handleMmFault(ctx: MmContext, vma: Vma, addr: number, flags: number): Promise<void> {
  const mm = vma.mm;
  const vpn = Math.floor(addr / PAGE_SIZE);
  const arena = ctx.arena;
  for (let attempt = 0; attempt < MAX_FAULT_RETRIES; attempt++) {
    const slot = mm.pgtable.lookup(vpn);
    const pf = slot < 0 ? 0 : arena.pteFlags[slot]!;
    const pv = slot < 0 ? 0 : arena.pteVal[slot]!;
    let r: number;
    if (pf === 0) {
      r = await doFaultNone(ctx, vma, vpn, flags);
    } else if ((pf & Pte.PRESENT) === 0) {
      const type = pteType(pf);
      if (type === PteType.SWAP) {
        r = await doSwapPage(ctx, vma, vpn, slot, pv, flags);
      } else if (isMigrationEntry(type)) {
        // migration_entry_wait: the page is locked until the migration ends; then look again.
        await waitOnPageLocked(ctx, pv);
        r = RETRY;
      } else if (isDevicePrivateEntry(type)) {
        r = await doDevicePrivateFault(ctx, vma, addr, slot, pv, flags);
      } else if (type === PteType.DEVICE_EXCLUSIVE) {
        r = await restoreExclusivePte(ctx, vma, slot, pv);
      } else {
        throw new Error(`internal: fault at ${hex(addr)} on unknown non-present entry type ${type}`);
      }
    } else if (
      ((flags & FaultFlag.WRITE) !== 0 && (pf & Pte.WRITE) === 0) ||
      ((flags & FaultFlag.UNSHARE) !== 0 && needsUnshare(ctx, vma, pf, pv))
    ) {
      r = await doWpPage(ctx, vma, vpn, slot, pv, pf, flags);
    } else {
      arena.pteFlags[slot] = pf | Pte.ACCESSED | ((flags & FaultFlag.WRITE) !== 0 ? Pte.DIRTY : 0);
      lastKind = 'spurious';
      r = DONE;
    }
    if (r === DONE) {
      traceFault(ctx, mm.id, addr, (flags & FaultFlag.WRITE) !== 0, lastKind);
      return;
    }
  }
  throw new HmmError(
    'EAGAIN',
    `fault at ${hex(addr)} kept racing with other tasks (${MAX_FAULT_RETRIES} retries)`,
    {
      address: addr,
    },
  );
}

/**
 * CPU access to a device-private entry (`do_swap_page` → `pgmap->ops->migrate_to_ram`): lock and
 * reference the device page, let its owner migrate it to RAM, then retry the access. A page already
 * locked (being migrated) is waited for. The owner's ENOMEM fails the access as out of memory; any
 * other failure is a SIGBUS.
 */
async function doDevicePrivateFault(
  ctx: MmContext,
  vma: Vma,
  addr: number,
  slot: number,
  pv: number,
  flags: number,
): Promise<number> {
  if (!trylockPage(ctx, pv)) {
    await waitOnPageLocked(ctx, pv);
    return RETRY;
  }
  const mem = ctx.mem;
  // Still the same entry? (nothing awaited since the caller read it, but be explicit)
  if (ctx.arena.pteVal[slot] !== pv || !isDevicePrivateEntry(pteType(ctx.arena.pteFlags[slot]!))) {
    unlockPage(ctx, pv);
    return RETRY;
  }
  const pgmap = pagemapOf(ctx, pv);
  if (pgmap?.ops.migrateToRam === undefined) {
    unlockPage(ctx, pv);
    throw new Error(
      `internal: device-private entry at ${hex(addr)} refers to frame ${hex(pv)} of no device-private pagemap`,
    );
  }
  mem.refcount[pv]!++;
  const bus = ctx.trace;
  const write = (flags & FaultFlag.WRITE) !== 0;
  if (bus.enabled('mm.migrate_to_ram')) {
    bus.emit({ type: 'mm.migrate_to_ram', ts: ctx.sched.now, mm: vma.mm.id, address: addr, pfn: pv, write });
  }
  bus.count('mm.fault.device-private');
  try {
    // vmf->address: the page-aligned faulting address, as the op's contract says.
    await pgmap.ops.migrateToRam({ vma, address: addr - (addr % PAGE_SIZE), page: pv, write });
  } catch (e) {
    if (e instanceof HmmError && e.code === 'ENOMEM') throw e;
    throw new HmmError(
      'EFAULT',
      `SIGBUS at ${hex(addr)}: ${pgmap.toString()} could not migrate the page to RAM: ${e instanceof Error ? e.message : String(e)}`,
      {
        address: addr,
        signal: 'SIGBUS',
        sigCode: 'ADRERR',
        kernelRef: 'mm/memory.c:do_swap_page (migrate_to_ram)',
      },
    );
  } finally {
    unlockPage(ctx, pv);
    ctx.putPage(pv);
  }
  return RETRY;
}

/**
 * Ends device-exclusive access to a page because the CPU touched it (`restore_exclusive_pte` via
 * `remove_device_exclusive_entry`): a CLEAR invalidation tells the device to drop its atomic
 * mapping, then the normal PTE comes back, writable if the VMA is.
 */
export async function restoreExclusivePte(
  ctx: MmContext,
  vma: Vma,
  slot: number,
  pv: number,
): Promise<number> {
  const mm = vma.mm;
  const addr = ctx.arena.slotAddress(slot);
  await lockPage(ctx, pv);
  try {
    const range = await notifyStart(mm, addr, addr + PAGE_SIZE, NotifyEvent.CLEAR);
    const arena = ctx.arena;
    if (
      mm.pgtable.lookup(addr / PAGE_SIZE) === slot &&
      pteType(arena.pteFlags[slot]!) === PteType.DEVICE_EXCLUSIVE &&
      arena.pteVal[slot] === pv
    ) {
      arena.setPte(slot, pv, Pte.PRESENT | (vma.writable ? Pte.WRITE | Pte.DIRTY : 0));
    }
    notifyEnd(mm, range);
  } finally {
    unlockPage(ctx, pv);
  }
  lastKind = 'spurious';
  return RETRY;
}

/** True if a pin on this present PTE's page needs an exclusive copy first (`gup_must_unshare`; GUP decides when to ask). */
function needsUnshare(ctx: MmContext, vma: Vma, pf: number, pv: number): boolean {
  if (vma.isShared) return false;
  if ((pf & Pte.SPECIAL) !== 0) return pv === ZERO_PFN;
  const f = ctx.mem.flags[pv]!;
  return (f & PG.ANON) === 0 || (f & PG.ANON_EXCLUSIVE) === 0;
}

/** Fault on an empty PTE: demand zero, zero page, file page, or the special mapping's `fault` op. */
async function doFaultNone(ctx: MmContext, vma: Vma, vpn: number, flags: number): Promise<number> {
  const mm = vma.mm;
  const addr = vpn * PAGE_SIZE;
  const write = (flags & FaultFlag.WRITE) !== 0;
  const arena = ctx.arena;
  if (vma.isSpecial || vma.ops !== null) {
    const pfn = vma.ops?.fault?.(vma, addr, write) ?? -1;
    if (pfn < 0) throw sigbus(vma, addr, 'the special mapping has no page here');
    const slot = mm.pgtable.ensure(vpn);
    if (arena.pteFlags[slot] !== 0) return RETRY;
    const w = write || (vma.isShared && vma.writable) ? Pte.WRITE : 0;
    arena.setPte(slot, pfn, Pte.PRESENT | Pte.SPECIAL | Pte.ACCESSED | w | (write ? Pte.DIRTY : 0));
    lastKind = 'special';
    return DONE;
  }
  if (vma.file === null) {
    if (!write) {
      // do_anonymous_page, read: map the shared zero page read-only.
      const slot = mm.pgtable.ensure(vpn);
      arena.setPte(slot, ZERO_PFN, Pte.PRESENT | Pte.SPECIAL | Pte.ACCESSED);
      lastKind = 'zero';
      return DONE;
    }
    const fast = ctx.mem.alloc(); // no await while a frame is free
    const pfn = fast >= 0 ? fast : await ctx.allocPage();
    const slot = mm.pgtable.ensure(vpn);
    if (arena.pteFlags[slot] !== 0 || vma.mm.state !== 'live') {
      ctx.putPage(pfn);
      return RETRY;
    }
    mapNewAnon(ctx, mm, slot, pfn, Pte.PRESENT | Pte.WRITE | Pte.DIRTY | Pte.ACCESSED);
    lastKind = 'anon';
    return DONE;
  }
  const file = vma.file;
  const index = vma.fileIndex(addr);
  if (index * PAGE_SIZE >= file.size)
    throw sigbus(vma, addr, `file page ${index} is beyond end of file (size ${file.size})`);
  const page = await findOrReadPage(ctx, file, index);
  if (write && !vma.isShared) {
    // do_cow_fault: private write to a file page copies it into a new anon page.
    const fast = ctx.mem.alloc(); // no await while a frame is free
    const pfn = fast >= 0 ? fast : await ctx.allocPage();
    const slot = mm.pgtable.ensure(vpn);
    if (arena.pteFlags[slot] !== 0 || file.pageCache.get(index) !== page) {
      ctx.putPage(pfn);
      return RETRY;
    }
    ctx.mem.copyFrame(pfn, page);
    mapNewAnon(ctx, mm, slot, pfn, Pte.PRESENT | Pte.WRITE | Pte.DIRTY | Pte.ACCESSED);
    lastKind = 'cow';
    return DONE;
  }
  const slot = mm.pgtable.ensure(vpn);
  if (arena.pteFlags[slot] !== 0 || file.pageCache.get(index) !== page) return RETRY;
  const mem = ctx.mem;
  mem.refcount[page]!++;
  mem.mapcount[page]!++;
  mm.rss[rssCounterOf(ctx, page)]!++;
  // Shared mappings start read-only so the first write is seen (write-notify) and dirties the page.
  let pte = Pte.PRESENT | Pte.ACCESSED;
  if (write) {
    pte |= Pte.WRITE | Pte.DIRTY;
    mem.flags[page]! |= PG.DIRTY;
  }
  arena.setPte(slot, page, pte);
  lastKind = 'file';
  return DONE;
}

/** Swap-in (`do_swap_page`): reads the slot into a new exclusive frame and drops one use of the slot. */
async function doSwapPage(
  ctx: MmContext,
  vma: Vma,
  vpn: number,
  slot: number,
  swapSlot: number,
  flags: number,
): Promise<number> {
  const mm = vma.mm;
  const fast = ctx.mem.alloc(); // no await while a frame is free
  const pfn = fast >= 0 ? fast : await ctx.allocPage();
  const arena = ctx.arena;
  const now = mm.pgtable.lookup(vpn);
  if (now !== slot || pteType(arena.pteFlags[slot]!) !== PteType.SWAP || arena.pteVal[slot] !== swapSlot) {
    ctx.putPage(pfn);
    return RETRY;
  }
  ctx.swap.readIn(ctx.mem, swapSlot, pfn);
  arena.setPte(slot, 0, 0);
  ctx.swap.free(swapSlot);
  mm.rss[RssCounter.SWAP]!--;
  ctx.mem.flags[pfn]! |= PG.DIRTY;
  const write = (flags & FaultFlag.WRITE) !== 0;
  mapNewAnon(ctx, mm, slot, pfn, Pte.PRESENT | Pte.ACCESSED | (write ? Pte.WRITE | Pte.DIRTY : 0));
  lastKind = 'swapin';
  return DONE;
}

/**
 * Write (or unshare) fault on a present PTE (`do_wp_page`): make a shared-file page writable, reuse
 * an exclusive anon page, or copy (`wp_page_copy`, which fires a CLEAR invalidation).
 */
async function doWpPage(
  ctx: MmContext,
  vma: Vma,
  vpn: number,
  slot: number,
  pv: number,
  pf: number,
  flags: number,
): Promise<number> {
  const mem = ctx.mem;
  const arena = ctx.arena;
  const write = (flags & FaultFlag.WRITE) !== 0;
  const special = (pf & Pte.SPECIAL) !== 0;
  if (special && pv !== ZERO_PFN) {
    arena.pteFlags[slot] = pf | Pte.WRITE | Pte.DIRTY | Pte.ACCESSED;
    lastKind = 'special';
    return DONE;
  }
  if (!special) {
    const f = mem.flags[pv]!;
    if (vma.isShared) {
      // wp_page_shared: the page cache page becomes writable and dirty.
      arena.pteFlags[slot] = pf | Pte.WRITE | Pte.DIRTY | Pte.ACCESSED;
      mem.flags[pv]! |= PG.DIRTY;
      lastKind = 'shared-write';
      return DONE;
    }
    if ((f & PG.ANON) !== 0) {
      let exclusive = (f & PG.ANON_EXCLUSIVE) !== 0;
      if (!exclusive && mem.mapcount[pv] === 1 && mem.refcount[pv] === 1) {
        mem.flags[pv]! |= PG.ANON_EXCLUSIVE;
        exclusive = true;
      }
      if (exclusive) {
        // wp_page_reuse
        if (write) arena.pteFlags[slot] = pf | Pte.WRITE | Pte.DIRTY | Pte.ACCESSED;
        lastKind = 'reuse';
        return DONE;
      }
    }
  }
  // wp_page_copy
  const mm = vma.mm;
  const addr = vpn * PAGE_SIZE;
  const fast = ctx.mem.alloc(); // no await while a frame is free
  const pfn = fast >= 0 ? fast : await ctx.allocPage();
  const range = await notifyStart(mm, addr, addr + PAGE_SIZE, NotifyEvent.CLEAR);
  const now = mm.pgtable.lookup(vpn);
  const nf = now < 0 ? 0 : arena.pteFlags[now]!;
  if (
    now !== slot ||
    arena.pteVal[slot] !== pv ||
    (nf & (Pte.PRESENT | Pte.WRITE)) !== (pf & (Pte.PRESENT | Pte.WRITE))
  ) {
    notifyEnd(mm, range);
    ctx.putPage(pfn);
    return RETRY;
  }
  if (!special) mem.copyFrame(pfn, pv);
  zapPte(ctx, mm, slot);
  const w = write ? Pte.WRITE | Pte.DIRTY : 0;
  mapNewAnon(ctx, mm, slot, pfn, Pte.PRESENT | Pte.ACCESSED | w);
  notifyEnd(mm, range);
  lastKind = 'cow';
  return DONE;
}
