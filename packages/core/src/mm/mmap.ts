/**
 * Creating and removing mappings (mm/mmap.c, mm/vma.c): `mmap`, `munmap`, `exit_mmap`, VMA split and
 * merge, and `get_unmapped_area` (top-down below {@link MMAP_BASE}).
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import {
  MapFlag,
  MMAP_BASE,
  MMAP_MIN_ADDR,
  PAGE_SIZE,
  Prot,
  TASK_SIZE,
  VmFlag,
  pageAlignUp,
  pageAligned,
} from './constants.js';
import type { SimFile } from './filemap.js';
import { notifyEnd, notifyStart, zapRange } from './memory.js';
import type { MmContext } from './mm-context.js';
import type { MmStruct } from './mm-struct.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { PG } from './page-flags.js';
import { Vma } from './vma.js';
import type { VmOperations } from './vma.js';

/** Arguments of {@link doMmap} (`mmap(2)`). */
export interface MmapArgs {
  /** Hint, or the exact address with MAP_FIXED / MAP_FIXED_NOREPLACE. */
  readonly addr?: number;
  /** Length in bytes (> 0; rounded up to pages). */
  readonly length: number;
  /** {@link Prot} bits. */
  readonly prot: number;
  /** {@link MapFlag} bits: exactly one of SHARED and PRIVATE. */
  readonly flags: number;
  /** File to map (not with MAP_ANONYMOUS). */
  readonly file?: SimFile | null;
  /** Byte offset in the file (page aligned). */
  readonly offset?: number;
  /** Driver operations: makes a special VM_PFNMAP | VM_IO mapping (the mmap of a device file). */
  readonly ops?: VmOperations | null;
}

const PROT_MASK = Prot.READ | Prot.WRITE | Prot.EXEC;
const MAP_MASK =
  MapFlag.SHARED |
  MapFlag.PRIVATE |
  MapFlag.FIXED |
  MapFlag.ANONYMOUS |
  MapFlag.POPULATE |
  MapFlag.FIXED_NOREPLACE;

/** VMA protection bits for `prot` (`calc_vm_prot_bits`). */
export function protToVmFlags(prot: number): number {
  return (
    ((prot & Prot.READ) !== 0 ? VmFlag.READ : 0) |
    ((prot & Prot.WRITE) !== 0 ? VmFlag.WRITE : 0) |
    ((prot & Prot.EXEC) !== 0 ? VmFlag.EXEC : 0)
  );
}

/** Checks that [addr, addr+len) is a valid page-aligned user range; throws `code` otherwise. */
export function checkUserRange(op: string, addr: number, len: number, code: 'EINVAL' | 'ENOMEM'): void {
  if (!Number.isSafeInteger(addr) || addr < 0 || !pageAligned(addr)) {
    throw new HmmError('EINVAL', `${op}: address ${String(addr)} is not a page-aligned user address`);
  }
  if (!Number.isSafeInteger(len) || len < 0)
    throw new HmmError('EINVAL', `${op}: length ${String(len)} is not a size`);
  if (addr + pageAlignUp(len) > TASK_SIZE) {
    throw new HmmError(
      code,
      `${op}: range ${hex(addr)}+${hex(len)} goes beyond the user address space (${hex(TASK_SIZE)})`,
    );
  }
}

/** Finds a free range of `len` bytes, top-down below `MMAP_BASE` (`get_unmapped_area`); -1 if none. */
export function getUnmappedArea(mm: MmStruct, len: number): number {
  let top = MMAP_BASE;
  const vmas = mm.vmas.all();
  for (let i = vmas.length - 1; i >= 0; i--) {
    const v = vmas[i]!;
    if (v.start >= top) continue;
    if (v.end <= top && top - v.end >= len) return top - len;
    top = Math.min(top, v.start);
  }
  return top - MMAP_MIN_ADDR >= len ? top - len : -1;
}

/** Adds a VMA to the mm and its file's `i_mmap` (`vma_link`). */
export function linkVma(mm: MmStruct, vma: Vma): void {
  mm.vmas.insert(vma);
  vma.file?.mappings.add(vma);
}

/** Removes a VMA from the mm and its file, closing it (`remove_vma`). Its PTEs must already be zapped. */
export function unlinkVma(ctx: MmContext, mm: MmStruct, vma: Vma): void {
  mm.vmas.remove(vma);
  vma.ops?.close?.(vma);
  const file = vma.file;
  if (file !== null) {
    file.mappings.delete(vma);
    if (file.shmem && file.mappings.size === 0) dropShmem(ctx, file);
    else ctx.files.release(file);
  }
}

/** Frees a shmem object nobody maps any more (its pages go with it). */
function dropShmem(ctx: MmContext, file: SimFile): void {
  const mem = ctx.mem;
  for (const pfn of file.pageCache.values()) {
    mem.flags[pfn]! &= ~(PG.PAGECACHE | PG.DIRTY);
    ctx.putPage(pfn);
  }
  file.pageCache.clear();
  ctx.files.release(file);
}

/** Splits `vma` at `at` (`split_vma`); returns the upper part, now a VMA of its own. */
export function splitVma(mm: MmStruct, vma: Vma, at: number): Vma {
  const upper = vma.cloneRange(at, vma.end);
  vma.end = at;
  linkVma(mm, upper);
  return upper;
}

/** Merges `vma` with compatible neighbours (`vma_merge`). */
export function mergeVma(mm: MmStruct, vma: Vma): Vma {
  let v = vma;
  for (let prev = mm.vmas.prev(v); prev !== undefined && prev.canMergeWith(v); prev = mm.vmas.prev(v)) {
    const end = v.end;
    unlinkMerged(mm, v);
    prev.end = end;
    v = prev;
  }
  for (let next = mm.vmas.next(v); next !== undefined && v.canMergeWith(next); next = mm.vmas.next(v)) {
    const end = next.end;
    unlinkMerged(mm, next);
    v.end = end;
  }
  return v;
}

function unlinkMerged(mm: MmStruct, vma: Vma): void {
  mm.vmas.remove(vma);
  vma.file?.mappings.delete(vma);
}

/** Splits VMAs so that `start` and `end` fall on VMA boundaries; returns the VMAs inside [start, end). */
export function splitRange(mm: MmStruct, start: number, end: number): Vma[] {
  const first = mm.vmas.lookup(start);
  if (first !== undefined && first.start < start) splitVma(mm, first, start);
  const last = mm.vmas.lookup(end - 1);
  if (last !== undefined && last.end > end) splitVma(mm, last, end);
  return mm.vmas.intersecting(start, end);
}

/**
 * Unmaps [start, end) (`do_vmi_munmap`): one UNMAP invalidation over the range, then the PTEs are
 * zapped, emptied page tables freed and the VMAs removed. Caller holds `mmap_lock` for writing.
 */
export async function unmapRangeLocked(
  ctx: MmContext,
  mm: MmStruct,
  start: number,
  end: number,
): Promise<void> {
  if (mm.vmas.intersecting(start, end).length === 0) return;
  const vmas = splitRange(mm, start, end);
  const range = await notifyStart(mm, start, end, NotifyEvent.UNMAP);
  for (const v of vmas) zapRange(ctx, mm, v.start, v.end);
  for (const v of vmas) unlinkVma(ctx, mm, v);
  notifyEnd(mm, range);
}

/** Validates mmap arguments and returns the VMA flags and rounded length; throws before any change. */
function validateMmap(mm: MmStruct, a: MmapArgs): { len: number; vmFlags: number } {
  const { length, prot, flags } = a;
  if (!Number.isSafeInteger(length) || length <= 0) {
    throw new HmmError('EINVAL', `mmap: length ${String(length)} must be a positive number of bytes`);
  }
  const len = pageAlignUp(length);
  if (len > TASK_SIZE) throw new HmmError('ENOMEM', `mmap: length ${hex(length)} exceeds the address space`);
  if ((prot & ~PROT_MASK) !== 0)
    throw new HmmError('EINVAL', `mmap: unknown prot bits ${hex(prot & ~PROT_MASK)}`);
  if ((flags & ~MAP_MASK) !== 0)
    throw new HmmError('EINVAL', `mmap: unknown flags ${hex(flags & ~MAP_MASK)}`);
  const shared = (flags & MapFlag.SHARED) !== 0;
  if (shared === ((flags & MapFlag.PRIVATE) !== 0)) {
    throw new HmmError('EINVAL', 'mmap: exactly one of MAP_SHARED and MAP_PRIVATE must be given');
  }
  const offset = a.offset ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0 || !pageAligned(offset)) {
    throw new HmmError(
      'EINVAL',
      `mmap: offset ${String(offset)} must be a page-aligned, non-negative byte offset`,
    );
  }
  const anon = (flags & MapFlag.ANONYMOUS) !== 0;
  if (anon && (a.file ?? null) !== null) throw new HmmError('EINVAL', 'mmap: MAP_ANONYMOUS with a file');
  if (!anon && (a.file ?? null) === null && (a.ops ?? null) === null) {
    throw new HmmError('EBADF', 'mmap: a file mapping needs a file (or pass MAP_ANONYMOUS)');
  }
  const fixed = (flags & (MapFlag.FIXED | MapFlag.FIXED_NOREPLACE)) !== 0;
  if (fixed) {
    const addr = a.addr ?? -1;
    if (!Number.isSafeInteger(addr) || addr < 0 || !pageAligned(addr)) {
      throw new HmmError('EINVAL', `mmap: MAP_FIXED address ${String(a.addr)} must be page aligned`);
    }
    if (addr < MMAP_MIN_ADDR) {
      throw new HmmError(
        'EPERM',
        `mmap: MAP_FIXED address ${hex(addr)} is below mmap_min_addr (${hex(MMAP_MIN_ADDR)})`,
      );
    }
    if (addr + len > TASK_SIZE)
      throw new HmmError('ENOMEM', `mmap: ${hex(addr)}+${hex(len)} is beyond the address space`);
    if ((flags & MapFlag.FIXED_NOREPLACE) !== 0 && mm.vmas.intersecting(addr, addr + len).length > 0) {
      throw new HmmError(
        'EEXIST',
        `mmap: MAP_FIXED_NOREPLACE range ${hex(addr)}+${hex(len)} overlaps an existing mapping`,
      );
    }
  }
  let vmFlags = protToVmFlags(prot) | VmFlag.MAYREAD | VmFlag.MAYWRITE | VmFlag.MAYEXEC;
  if (shared) vmFlags |= VmFlag.SHARED | VmFlag.MAYSHARE;
  if ((a.ops ?? null) !== null) vmFlags |= VmFlag.PFNMAP | VmFlag.IO | VmFlag.DONTEXPAND | VmFlag.DONTCOPY;
  return { len, vmFlags };
}

/**
 * `mmap(2)`: creates a mapping and returns its address. Private anonymous memory faults in zero
 * pages; shared anonymous memory is a new shmem object; file mappings go through the page cache.
 * MAP_FIXED replaces what was there (as the kernel does); MAP_FIXED_NOREPLACE fails with EEXIST.
 * Errors leave the address space unchanged.
 */
export async function doMmap(ctx: MmContext, mm: MmStruct, a: MmapArgs): Promise<number> {
  mm.assertLive('mmap');
  const { len, vmFlags } = validateMmap(mm, a);
  await mm.mmapLock.write();
  let addr: number;
  try {
    mm.assertLive('mmap');
    const fixed = (a.flags & (MapFlag.FIXED | MapFlag.FIXED_NOREPLACE)) !== 0;
    if (fixed) {
      addr = a.addr!;
      if ((a.flags & MapFlag.FIXED_NOREPLACE) !== 0 && mm.vmas.intersecting(addr, addr + len).length > 0) {
        throw new HmmError(
          'EEXIST',
          `mmap: MAP_FIXED_NOREPLACE range ${hex(addr)}+${hex(len)} overlaps an existing mapping`,
        );
      }
      await unmapRangeLocked(ctx, mm, addr, addr + len);
    } else {
      const hint = a.addr;
      if (
        hint !== undefined &&
        Number.isSafeInteger(hint) &&
        pageAligned(hint) &&
        hint >= MMAP_MIN_ADDR &&
        hint + len <= TASK_SIZE &&
        mm.vmas.intersecting(hint, hint + len).length === 0
      ) {
        addr = hint;
      } else {
        addr = getUnmappedArea(mm, len);
        if (addr < 0)
          throw new HmmError('ENOMEM', `mmap: no free range of ${hex(len)} bytes in the address space`);
      }
    }
    let file = a.file ?? null;
    let pgoff = (a.offset ?? 0) / PAGE_SIZE;
    if ((a.flags & MapFlag.ANONYMOUS) !== 0) {
      if ((vmFlags & VmFlag.SHARED) !== 0) {
        file = ctx.files.createShmem(len);
        pgoff = 0;
      } else {
        pgoff = addr / PAGE_SIZE;
      }
    }
    const vma = new Vma(mm, addr, addr + len, vmFlags, file, pgoff, a.ops ?? null);
    linkVma(mm, vma);
    mergeVma(mm, vma);
  } finally {
    mm.mmapLock.writeUnlock();
  }
  return addr;
}

/**
 * `munmap(2)`: removes every mapping in [addr, addr+length). Unmapping a range with no mapping is not
 * an error. EINVAL for an unaligned address, a length of 0, or a range beyond the address space.
 */
export async function doMunmap(ctx: MmContext, mm: MmStruct, addr: number, length: number): Promise<void> {
  mm.assertLive('munmap');
  checkUserRange('munmap', addr, length, 'EINVAL');
  if (length === 0) throw new HmmError('EINVAL', 'munmap: length must not be 0');
  const end = addr + pageAlignUp(length);
  await mm.mmapLock.write();
  try {
    mm.assertLive('munmap');
    await unmapRangeLocked(ctx, mm, addr, end);
  } finally {
    mm.mmapLock.writeUnlock();
  }
}

/**
 * Tears an address space down at exit (`exit_mmap`): `mmu_notifier_release` first, then every VMA is
 * zapped and removed and the page tables freed. Pinned pages stay allocated until unpinned.
 */
export async function exitMmap(ctx: MmContext, mm: MmStruct): Promise<void> {
  mm.assertLive('exit');
  mm.state = 'exiting';
  await mm.mmapLock.write();
  try {
    if (mm.notifier !== null) await mm.notifier.release(mm);
    for (const v of mm.vmas.all()) {
      zapRange(ctx, mm, v.start, v.end);
      unlinkVma(ctx, mm, v);
    }
    mm.pgtable.destroy();
    mm.state = 'dead';
  } finally {
    mm.mmapLock.writeUnlock();
  }
  ctx.destroyMm(mm);
}
