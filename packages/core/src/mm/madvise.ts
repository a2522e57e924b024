/**
 * `madvise(2)` (mm/madvise.c) for MADV_DONTNEED, MADV_FREE and MADV_WILLNEED.
 *
 * - DONTNEED zaps the range (CLEAR invalidation): private anonymous memory reads as zeros afterwards,
 *   file and shmem mappings refault from the page cache.
 * - FREE (private anonymous only) marks exclusively mapped pages lazily freeable: reclaim may discard
 *   them instead of swapping, unless they are written again first; swapped-out pages in the range are
 *   dropped at once. Until then reads return either the old data or zeros.
 * - WILLNEED reads file pages into the page cache (readahead). For anonymous memory it does nothing
 *   (the SDK has no swap cache to read ahead into).
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { Madv, PAGE_SIZE, VmFlag, pageAlignUp } from './constants.js';
import { findOrReadPage, notifyEnd, notifyStart, zapPte, zapRangeNotify } from './memory.js';
import { checkUserRange } from './mmap.js';
import type { MmContext } from './mm-context.js';
import type { MmStruct } from './mm-struct.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { PG } from './page-flags.js';
import { Pte, PteType, pteType } from './pgtable.js';

/**
 * Applies `advice` to [addr, addr+length). EINVAL for an unaligned address, unknown advice, or advice
 * the mapping cannot take (DONTNEED on a locked or PFNMAP mapping, FREE on anything but private
 * anonymous memory); ENOMEM if part of the range is unmapped. All checks happen before any change.
 * A length of 0 succeeds and does nothing, as in the kernel.
 */
export async function doMadvise(
  ctx: MmContext,
  mm: MmStruct,
  addr: number,
  length: number,
  advice: number,
): Promise<void> {
  mm.assertLive('madvise');
  if (advice !== Madv.DONTNEED && advice !== Madv.FREE && advice !== Madv.WILLNEED) {
    throw new HmmError('EINVAL', `madvise: unsupported advice ${advice}`);
  }
  checkUserRange('madvise', addr, length, 'ENOMEM');
  if (length === 0) return;
  const end = addr + pageAlignUp(length);
  await mm.mmapLock.read();
  try {
    mm.assertLive('madvise');
    if (!mm.vmas.covers(addr, end))
      throw new HmmError('ENOMEM', `madvise: range ${hex(addr)}-${hex(end)} is not fully mapped`);
    const vmas = mm.vmas.intersecting(addr, end);
    for (const v of vmas) {
      if (advice === Madv.DONTNEED && (v.flags & (VmFlag.LOCKED | VmFlag.PFNMAP)) !== 0) {
        throw new HmmError('EINVAL', `madvise(MADV_DONTNEED): ${v.toString()} is locked or a PFN mapping`);
      }
      if (advice === Madv.FREE && !v.isAnonymous) {
        throw new HmmError('EINVAL', `madvise(MADV_FREE): ${v.toString()} is not private anonymous memory`);
      }
    }
    for (const v of vmas) {
      const s = Math.max(addr, v.start);
      const e = Math.min(end, v.end);
      if (advice === Madv.DONTNEED) await zapRangeNotify(ctx, mm, s, e, NotifyEvent.CLEAR);
      else if (advice === Madv.FREE) await madviseFree(ctx, mm, s, e);
      else if (v.file !== null) {
        for (let a = s; a < e; a += PAGE_SIZE) {
          const index = v.fileIndex(a);
          if (index * PAGE_SIZE >= v.file.size) break;
          await findOrReadPage(ctx, v.file, index);
        }
      }
    }
  } finally {
    mm.mmapLock.readUnlock();
  }
}

/** MADV_FREE over one private anonymous range (`madvise_free_pte_range`). */
async function madviseFree(ctx: MmContext, mm: MmStruct, start: number, end: number): Promise<void> {
  const range = await notifyStart(mm, start, end, NotifyEvent.CLEAR);
  const arena = ctx.arena;
  const mem = ctx.mem;
  mm.pgtable.forEachPte(start / PAGE_SIZE, end / PAGE_SIZE, (slot) => {
    const f = arena.pteFlags[slot]!;
    if ((f & Pte.PRESENT) === 0) {
      if (pteType(f) === PteType.SWAP) zapPte(ctx, mm, slot);
      return;
    }
    if ((f & Pte.SPECIAL) !== 0) return;
    const pfn = arena.pteVal[slot]!;
    const pf = mem.flags[pfn]!;
    if ((pf & PG.ANON) === 0 || mem.mapcount[pfn] !== 1) return;
    arena.pteFlags[slot] = f & ~(Pte.DIRTY | Pte.ACCESSED);
    // A device-coherent page is never on an LRU list, so it cannot be lazily freed (folio_mark_lazyfree).
    if ((pf & PG.ZONE_DEVICE) !== 0) return;
    // Lazy free: off the swap-backed lists, clean, on the inactive file list (as the kernel does).
    ctx.lru.del(pfn);
    mem.flags[pfn] = pf & ~(PG.SWAPBACKED | PG.DIRTY | PG.ACTIVE | PG.REFERENCED | PG.LRU);
    ctx.lru.add(pfn);
  });
  mm.pgtable.freeEmptyTables(start / PAGE_SIZE, end / PAGE_SIZE);
  notifyEnd(mm, range);
}
