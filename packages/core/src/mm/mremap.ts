/**
 * `mremap(2)` (mm/mremap.c): shrink, grow in place, or move a mapping with its page-table entries.
 * Moving fires an UNMAP invalidation on the old range; pages travel with their PTEs (the reverse map
 * follows), nothing is copied.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { MMAP_MIN_ADDR, MremapFlag, PAGE_SIZE, TASK_SIZE, pageAlignUp, pageAligned } from './constants.js';
import { isMappingEntry, notifyEnd, notifyStart, zapRange } from './memory.js';
import {
  checkUserRange,
  getUnmappedArea,
  linkVma,
  mergeVma,
  splitRange,
  unlinkVma,
  unmapRangeLocked,
} from './mmap.js';
import type { MmContext } from './mm-context.js';
import type { MmStruct } from './mm-struct.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { PG } from './page-flags.js';
import { Pte, pteType } from './pgtable.js';
import type { Vma } from './vma.js';

/**
 * Moves every PTE of [oldStart, oldStart+len) to newStart (`move_page_tables`). The caller has
 * invalidated the old range.
 */
function movePageTables(ctx: MmContext, mm: MmStruct, oldStart: number, newStart: number, len: number): void {
  const arena = ctx.arena;
  const mem = ctx.mem;
  const s = oldStart / PAGE_SIZE;
  const delta = (newStart - oldStart) / PAGE_SIZE;
  const moves: number[] = [];
  mm.pgtable.forEachPte(s, s + len / PAGE_SIZE, (slot, vpn) => {
    moves.push(slot, vpn);
  });
  // Moving up, go from the top so a destination never overwrites a source not yet moved.
  const order = delta > 0 ? -1 : 1;
  const n = moves.length / 2;
  for (let k = 0; k < n; k++) {
    const i = order > 0 ? k : n - 1 - k;
    const from = moves[2 * i]!;
    const vpn = moves[2 * i + 1]!;
    const val = arena.pteVal[from]!;
    const flags = arena.pteFlags[from]!;
    const to = mm.pgtable.ensure(vpn + delta);
    arena.setPte(from, 0, 0);
    arena.setPte(to, val, flags);
    const mapsFrame =
      (flags & Pte.PRESENT) !== 0 ? (flags & Pte.SPECIAL) === 0 : isMappingEntry(pteType(flags));
    if (mapsFrame && (mem.flags[val]! & PG.ANON) !== 0) {
      ctx.rmap.moveAnon(val, from, to);
    }
  }
  mm.pgtable.freeEmptyTables(s, s + len / PAGE_SIZE);
}

/**
 * Changes the size or place of the mapping at `oldAddr` and returns its (new) address.
 * `flags` are {@link MremapFlag} bits; `newAddr` is required with MREMAP_FIXED. The old range must lie
 * inside one VMA (EFAULT otherwise). MREMAP_DONTUNMAP (private anonymous only, same size) leaves the
 * old range mapped but empty. Errors leave the address space unchanged.
 */
export async function doMremap(
  ctx: MmContext,
  mm: MmStruct,
  oldAddr: number,
  oldSize: number,
  newSize: number,
  flags: number,
  newAddr?: number,
): Promise<number> {
  mm.assertLive('mremap');
  const known = MremapFlag.MAYMOVE | MremapFlag.FIXED | MremapFlag.DONTUNMAP;
  if ((flags & ~known) !== 0) throw new HmmError('EINVAL', `mremap: unknown flags ${hex(flags & ~known)}`);
  const mayMove = (flags & MremapFlag.MAYMOVE) !== 0;
  const fixed = (flags & MremapFlag.FIXED) !== 0;
  const dontUnmap = (flags & MremapFlag.DONTUNMAP) !== 0;
  if ((fixed || dontUnmap) && !mayMove) {
    throw new HmmError('EINVAL', 'mremap: MREMAP_FIXED and MREMAP_DONTUNMAP require MREMAP_MAYMOVE');
  }
  checkUserRange('mremap', oldAddr, oldSize, 'EINVAL');
  if (!Number.isSafeInteger(newSize) || newSize <= 0)
    throw new HmmError('EINVAL', `mremap: new size ${String(newSize)} must be positive`);
  if (oldSize === 0)
    throw new HmmError('EINVAL', 'mremap: an old size of 0 (duplicating a shared mapping) is not supported');
  const oldLen = pageAlignUp(oldSize);
  const newLen = pageAlignUp(newSize);
  if (newLen > TASK_SIZE)
    throw new HmmError('ENOMEM', `mremap: new size ${hex(newSize)} exceeds the address space`);
  if (dontUnmap && oldLen !== newLen)
    throw new HmmError('EINVAL', 'mremap: MREMAP_DONTUNMAP needs equal old and new sizes');
  if (fixed) {
    const na = newAddr ?? -1;
    if (!Number.isSafeInteger(na) || !pageAligned(na) || na < MMAP_MIN_ADDR || na + newLen > TASK_SIZE) {
      throw new HmmError(
        'EINVAL',
        `mremap: MREMAP_FIXED address ${String(newAddr)} is not a valid aligned user address`,
      );
    }
    if (na < oldAddr + oldLen && oldAddr < na + newLen) {
      throw new HmmError('EINVAL', 'mremap: the new range overlaps the old one');
    }
  }
  await mm.mmapLock.write();
  try {
    mm.assertLive('mremap');
    const vma = mm.vmas.lookup(oldAddr);
    if (vma === undefined || oldAddr + oldLen > vma.end) {
      throw new HmmError('EFAULT', `mremap: ${hex(oldAddr)}+${hex(oldLen)} is not inside one mapping`);
    }
    if (vma.isSpecial && newLen > oldLen) {
      throw new HmmError('EFAULT', `mremap: cannot grow the special mapping ${vma.toString()}`);
    }
    if (dontUnmap && !vma.isAnonymous) {
      throw new HmmError(
        'EINVAL',
        'mremap: MREMAP_DONTUNMAP is supported for private anonymous mappings only',
      );
    }
    if (!fixed && !dontUnmap) {
      if (newLen <= oldLen) {
        if (newLen < oldLen) await unmapRangeLocked(ctx, mm, oldAddr + newLen, oldAddr + oldLen);
        return oldAddr;
      }
      // Grow in place if the old range ends the VMA and the space after it is free.
      const growEnd = oldAddr + newLen;
      if (
        oldAddr + oldLen === vma.end &&
        growEnd <= TASK_SIZE &&
        mm.vmas.intersecting(vma.end, growEnd).length === 0
      ) {
        vma.end = growEnd;
        mergeVma(mm, vma);
        return oldAddr;
      }
      if (!mayMove)
        throw new HmmError(
          'ENOMEM',
          `mremap: cannot grow ${hex(oldAddr)} in place and MREMAP_MAYMOVE was not given`,
        );
    }
    let dest: number;
    if (fixed) {
      dest = newAddr!;
    } else {
      dest = getUnmappedArea(mm, newLen);
      if (dest < 0) throw new HmmError('ENOMEM', `mremap: no free range of ${hex(newLen)} bytes`);
    }
    if (fixed) await unmapRangeLocked(ctx, mm, dest, dest + newLen);
    // The VMA may have been split by the unmap above only if it overlapped, which was rejected.
    const [src] = splitRange(mm, oldAddr, oldAddr + oldLen) as [Vma];
    const moveLen = Math.min(oldLen, newLen);
    const range = await notifyStart(mm, oldAddr, oldAddr + oldLen, NotifyEvent.UNMAP);
    const moved = src.cloneRange(src.start, src.start + newLen > src.end ? src.end : src.start + newLen);
    moved.start = dest;
    moved.end = dest + newLen;
    linkVma(mm, moved);
    movePageTables(ctx, mm, oldAddr, dest, moveLen);
    if (dontUnmap) {
      mergeVma(mm, src); // the old VMA stays, now empty
    } else {
      zapRange(ctx, mm, oldAddr, oldAddr + oldLen);
      unlinkVma(ctx, mm, src);
    }
    notifyEnd(mm, range);
    mergeVma(mm, moved);
    return dest;
  } finally {
    mm.mmapLock.writeUnlock();
  }
}
