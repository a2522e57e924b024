/**
 * Page reclaim (mm/vmscan.c) and the OOM reaper's non-blockable unmap (mm/oom_kill.c).
 *
 * `shrinkNode` scans the inactive lists from the tail. A page referenced through a PTE since the last
 * scan is activated; a pinned page, a page with references beyond its mappings and cache entry
 * (GUP), or a locked page is kept. Otherwise it is unmapped from every PTE through the reverse map
 * (`try_to_unmap`, firing a CLEAR invalidation per mapping), written to swap (anon) or back to its
 * file (page cache, when dirty), and freed. MADV_FREE'd anon pages that were not written again are
 * discarded. When the inactive lists run dry, pages age from the active lists (`shrink_active_list`).
 *
 * @module
 */
import { PAGE_SIZE, VmFlag } from './constants.js';
import { notifyEnd } from './memory.js';
import type { MmContext } from './mm-context.js';
import { RssCounter } from './mm-struct.js';
import type { MmStruct } from './mm-struct.js';
import type { MmuNotifierRange } from './mmu-notifier-hooks.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { zapRange } from './memory.js';
import { LruList } from './lru.js';
import type { LruListId } from './lru.js';
import { PG } from './page-flags.js';
import { Pte, PteType, nonPresentFlags } from './pgtable.js';
import { traceResident } from './trace-events.js';

/** Outcome of trying to reclaim one page. */
export const ReclaimResult = { FREED: 0, ACTIVATE: 1, KEEP: 2 } as const;
type ReclaimResultId = (typeof ReclaimResult)[keyof typeof ReclaimResult];

interface Mapping {
  mm: MmStruct;
  slot: number;
  address: number;
}

/** Statistics of reclaim, kept on the context (`/proc/vmstat` pgscan/pgsteal-like). */
export interface ReclaimStats {
  scanned: number;
  freed: number;
  swappedOut: number;
  writtenBack: number;
  discarded: number;
  skippedPinned: number;
}

const stats = new WeakMap<MmContext, ReclaimStats>();

/** Reclaim statistics of a context. */
export function reclaimStats(ctx: MmContext): ReclaimStats {
  let s = stats.get(ctx);
  if (s === undefined) {
    s = { scanned: 0, freed: 0, swappedOut: 0, writtenBack: 0, discarded: 0, skippedPinned: 0 };
    stats.set(ctx, s);
  }
  return s;
}

/** Test-and-clears the accessed bit of every PTE mapping `pfn` (`folio_referenced`); returns how many were set. */
function folioReferenced(ctx: MmContext, pfn: number): number {
  let n = 0;
  const flags = ctx.arena.pteFlags;
  ctx.rmap.walk(pfn, (_mm, slot) => {
    if ((flags[slot]! & Pte.ACCESSED) !== 0) {
      flags[slot] = flags[slot]! & ~Pte.ACCESSED;
      n++;
    }
  });
  const f = ctx.mem.flags[pfn]!;
  if ((f & PG.REFERENCED) !== 0) {
    ctx.mem.flags[pfn] = f & ~PG.REFERENCED;
    n++;
  }
  return n;
}

function mappingsOf(ctx: MmContext, pfn: number): Mapping[] {
  const out: Mapping[] = [];
  ctx.rmap.walk(pfn, (mm, slot, address) => {
    out.push({ mm, slot, address });
  });
  return out;
}

/** References a page holds beyond its mappings and page-cache entry (GUP gets and pins). */
function extraRefs(ctx: MmContext, pfn: number): number {
  const mem = ctx.mem;
  return mem.refcount[pfn]! - mem.mapcount[pfn]! - ((mem.flags[pfn]! & PG.PAGECACHE) !== 0 ? 1 : 0);
}

/** Tries to reclaim one page from an inactive list (`shrink_folio_list` for one folio). */
async function reclaimOne(ctx: MmContext, pfn: number): Promise<ReclaimResultId> {
  const mem = ctx.mem;
  const st = reclaimStats(ctx);
  st.scanned++;
  const f0 = mem.flags[pfn]!;
  if ((f0 & PG.LOCKED) !== 0) return ReclaimResult.KEEP;
  if (mem.pincount[pfn]! > 0 || extraRefs(ctx, pfn) > 0) {
    // Pinned or held by GUP: the kernel's folio_ref_freeze would fail. Never reclaimed.
    st.skippedPinned++;
    return ReclaimResult.ACTIVATE;
  }
  if (folioReferenced(ctx, pfn) > 0) return ReclaimResult.ACTIVATE;

  const mappings = mappingsOf(ctx, pfn);
  const anon = (f0 & PG.ANON) !== 0;
  let lazyFree = anon && (f0 & PG.SWAPBACKED) === 0;
  if (lazyFree) {
    // A MADV_FREE page written again is dirty again: it goes back to being swap-backed.
    let dirty = (f0 & PG.DIRTY) !== 0;
    for (const m of mappings) if ((ctx.arena.pteFlags[m.slot]! & Pte.DIRTY) !== 0) dirty = true;
    if (dirty) {
      ctx.lru.del(pfn);
      mem.flags[pfn]! |= PG.SWAPBACKED | PG.DIRTY;
      ctx.lru.add(pfn);
      lazyFree = false;
      return ReclaimResult.ACTIVATE;
    }
  }
  let swapSlot = -1;
  if (anon && !lazyFree) {
    swapSlot = ctx.swap.alloc(mappings.length);
    if (swapSlot < 0) return ReclaimResult.ACTIVATE;
  }

  // try_to_unmap: one CLEAR invalidation per mapping, then re-check nothing changed meanwhile.
  const ranges: (MmuNotifierRange | null)[] = [];
  let awaited = false;
  for (const m of mappings) {
    if (m.mm.notifier === null) {
      ranges.push(null);
      continue;
    }
    const range: MmuNotifierRange = {
      mm: m.mm,
      start: m.address,
      end: m.address + PAGE_SIZE,
      event: NotifyEvent.CLEAR,
      blockable: true,
      owner: null,
    };
    awaited = true;
    await m.mm.notifier.invalidateRangeStart(range);
    ranges.push(range);
  }
  const endAll = (): void => {
    mappings.forEach((m, i) => notifyEnd(m.mm, ranges[i] ?? null));
  };
  if (awaited) {
    const now = mappingsOf(ctx, pfn);
    const same =
      mem.flags[pfn] === f0 &&
      mem.pincount[pfn] === 0 &&
      extraRefs(ctx, pfn) === 0 &&
      now.length === mappings.length &&
      now.every((m, i) => m.slot === mappings[i]!.slot);
    if (!same) {
      endAll();
      if (swapSlot >= 0) for (let i = 0; i < mappings.length; i++) ctx.swap.free(swapSlot);
      return ReclaimResult.KEEP;
    }
  }

  const arena = ctx.arena;
  let wroteBack = false;
  if (anon) {
    if (swapSlot >= 0) ctx.swap.writeOut(mem, pfn, swapSlot);
    for (const m of mappings) {
      if (swapSlot >= 0) {
        arena.setPte(m.slot, swapSlot, nonPresentFlags(PteType.SWAP));
        m.mm.rss[RssCounter.SWAP]!++;
      } else {
        arena.setPte(m.slot, 0, 0);
      }
      m.mm.rss[RssCounter.ANON]!--;
      ctx.rmap.removeAnon(pfn, m.slot);
      mem.mapcount[pfn]!--;
      mem.refcount[pfn]!--;
    }
    if (swapSlot >= 0) st.swappedOut++;
    else st.discarded++;
  } else {
    const counter = (f0 & PG.SWAPBACKED) !== 0 ? RssCounter.SHMEM : RssCounter.FILE;
    for (const m of mappings) {
      if ((arena.pteFlags[m.slot]! & Pte.DIRTY) !== 0) mem.flags[pfn]! |= PG.DIRTY;
      arena.setPte(m.slot, 0, 0);
      m.mm.rss[counter]!--;
      mem.mapcount[pfn]!--;
      mem.refcount[pfn]!--;
    }
    const file = ctx.files.get(mem.owner[pfn]!)!;
    const index = mem.rmap[pfn]!;
    wroteBack = (mem.flags[pfn]! & PG.DIRTY) !== 0;
    if (wroteBack) {
      // pageout: write the page back to the file (shmem: to its backing object).
      file.backing.copyPageFrom(mem.content, pfn, index);
      st.writtenBack++;
    }
    file.pageCache.delete(index);
    mem.flags[pfn]! &= ~(PG.PAGECACHE | PG.DIRTY);
    mem.refcount[pfn]!--;
    ctx.files.release(file);
  }
  endAll();
  ctx.lru.del(pfn);
  mem.free(pfn);
  st.freed++;
  const bus = ctx.trace;
  bus.count('mm.reclaim');
  if (bus.enabled('mm.reclaim')) {
    const how = anon ? (swapSlot >= 0 ? 'swap' : 'discard') : wroteBack ? 'writeback' : 'drop';
    bus.emit({ type: 'mm.reclaim', ts: ctx.sched.now, pfn, how });
  }
  traceResident(ctx);
  return ReclaimResult.FREED;
}

/** Moves up to `nr` pages from the tail of an active list to its inactive list, clearing accessed bits. */
function shrinkActiveList(ctx: MmContext, list: LruListId, nr: number): void {
  for (let i = 0; i < nr; i++) {
    const pfn = ctx.lru.tailOf(list);
    if (pfn < 0) return;
    folioReferenced(ctx, pfn);
    ctx.lru.setActive(pfn, false);
  }
}

/** Scans one inactive list; returns pages freed. */
async function shrinkInactiveList(ctx: MmContext, list: LruListId, want: number): Promise<number> {
  let freed = 0;
  const budget = ctx.lru.size(list);
  for (let i = 0; i < budget && freed < want; i++) {
    const pfn = ctx.lru.tailOf(list);
    if (pfn < 0) break;
    const r = await reclaimOne(ctx, pfn);
    if (r === ReclaimResult.FREED) freed++;
    else if ((ctx.mem.flags[pfn]! & PG.LRU) !== 0 && ctx.lru.tailOf(ctx.lru.listOf(pfn)) === pfn) {
      if (r === ReclaimResult.ACTIVATE) ctx.lru.setActive(pfn, true);
      else ctx.lru.setActive(pfn, false); // rotate to the head of the inactive list
    }
  }
  return freed;
}

/**
 * Reclaims up to `nrToReclaim` frames (`shrink_node` for direct reclaim or kswapd). Returns how many
 * were freed; 0 means nothing on the LRU can be reclaimed right now.
 */
export async function shrinkNode(ctx: MmContext, nrToReclaim: number): Promise<number> {
  let freed = 0;
  for (let pass = 0; pass < 4 && freed < nrToReclaim; pass++) {
    freed += await shrinkInactiveList(ctx, LruList.INACTIVE_FILE, nrToReclaim - freed);
    if (freed >= nrToReclaim) break;
    freed += await shrinkInactiveList(ctx, LruList.INACTIVE_ANON, nrToReclaim - freed);
    if (freed >= nrToReclaim) break;
    shrinkActiveList(ctx, LruList.ACTIVE_FILE, Math.max(ctx.lru.size(LruList.ACTIVE_FILE), 1));
    shrinkActiveList(ctx, LruList.ACTIVE_ANON, Math.max(ctx.lru.size(LruList.ACTIVE_ANON), 1));
  }
  return freed;
}

/**
 * The OOM reaper's unmap of a victim's private memory (`__oom_reap_task_mm`): non-blockable, so each
 * VMA whose notifier subscribers would have to sleep is skipped. Returns false if anything was skipped
 * or the mm's `mmap_lock` could not be taken without sleeping (the reaper then retries later). EINVAL
 * if a subscriber slept (returned a promise): its continuation is contained by the scheduler and
 * settles before any other task runs, but the calling task itself must not sleep until then, so
 * call this from a task of its own (the kernel's `oom_reaper` thread) that ends after it.
 */
export function oomReapMm(ctx: MmContext, mm: MmStruct): boolean {
  if (mm.state === 'dead') return true;
  if (!mm.mmapLock.tryRead()) return false;
  let ok = true;
  try {
    for (const vma of mm.vmas.all()) {
      if (vma.isSpecial || (vma.flags & (VmFlag.SHARED | VmFlag.LOCKED)) !== 0) continue;
      if (mm.notifier !== null) {
        const range: MmuNotifierRange = {
          mm,
          start: vma.start,
          end: vma.end,
          event: NotifyEvent.CLEAR,
          blockable: false,
          owner: null,
        };
        if (!mm.notifier.invalidateRangeStartNonblock(range)) {
          ok = false;
          continue;
        }
        zapRange(ctx, mm, vma.start, vma.end);
        mm.notifier.invalidateRangeEnd(range);
      } else {
        zapRange(ctx, mm, vma.start, vma.end);
      }
    }
  } finally {
    mm.mmapLock.readUnlock();
  }
  return ok;
}
