/**
 * `truncate` (mm/truncate.c): changing a file's size. Shrinking first unmaps the cut-off range from
 * every mapping, private copy-on-write pages included (`unmap_mapping_range` with `even_cows`),
 * firing a CLEAR invalidation in each mm; then drops the page-cache pages and the stored data beyond
 * the new end, and zeroes the tail of the new last page. Later access there raises SIGBUS.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import type { SimFile } from './filemap.js';
import { zapRangeNotify } from './memory.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import type { MmContext } from './mm-context.js';
import { PG } from './page-flags.js';

const ZERO_PAGE_BYTES = new Uint8Array(PAGE_SIZE);

/** Zeroes bytes [from, PAGE_SIZE) of file page `index` in the cache and on disk. */
function zeroTail(ctx: MmContext, file: SimFile, index: number, from: number): void {
  if (from === 0) return;
  const pfn = file.pageCache.get(index);
  if (pfn !== undefined) ctx.mem.content.fill(pfn, from, PAGE_SIZE - from, 0);
  if (file.backing.hasData(index)) file.backing.write(index, from, ZERO_PAGE_BYTES, 0, PAGE_SIZE - from);
}

/** Sets the size of `file` to `size` bytes (`truncate(2)`, `ftruncate(2)`). */
export async function truncateFile(ctx: MmContext, file: SimFile, size: number): Promise<void> {
  if (!Number.isSafeInteger(size) || size < 0)
    throw new HmmError('EINVAL', `truncate: size ${String(size)} is not valid`);
  const old = file.size;
  if (size >= old) {
    zeroTail(ctx, file, Math.floor(old / PAGE_SIZE), old % PAGE_SIZE);
    file.size = size;
    return;
  }
  const firstDrop = Math.ceil(size / PAGE_SIZE);
  file.size = size;
  for (const vma of [...file.mappings]) {
    const endIndex = vma.pgoff + vma.pages;
    if (endIndex <= firstDrop) continue;
    const start = vma.start + Math.max(0, firstDrop - vma.pgoff) * PAGE_SIZE;
    if (vma.mm.state !== 'live') continue;
    await zapRangeNotify(ctx, vma.mm, start, vma.end, NotifyEvent.CLEAR);
  }
  const mem = ctx.mem;
  for (const [index, pfn] of [...file.pageCache]) {
    if (index < firstDrop) continue;
    file.pageCache.delete(index);
    mem.flags[pfn]! &= ~(PG.PAGECACHE | PG.DIRTY);
    ctx.putPage(pfn);
  }
  file.backing.truncate(firstDrop);
  zeroTail(ctx, file, Math.floor(size / PAGE_SIZE), size % PAGE_SIZE);
  ctx.files.release(file);
}
