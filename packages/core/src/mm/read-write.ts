/**
 * `pread` / `pwrite` on files through the page cache (`filemap_read`, `generic_perform_write` in
 * mm/filemap.c). Written pages are dirty in the cache until reclaim writes them back.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import type { SimFile } from './filemap.js';
import { findOrReadPage } from './memory.js';
import type { MmContext } from './mm-context.js';
import { PG } from './page-flags.js';

function checkIo(op: string, offset: number, len: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0)
    throw new HmmError('EINVAL', `${op}: offset ${String(offset)} is not valid`);
  if (!Number.isSafeInteger(len) || len < 0)
    throw new HmmError('EINVAL', `${op}: length ${String(len)} is not valid`);
}

/** Reads up to `len` bytes at `offset`; returns fewer at end of file (`pread`). */
export async function fileRead(
  ctx: MmContext,
  file: SimFile,
  offset: number,
  len: number,
): Promise<Uint8Array> {
  checkIo('pread', offset, len);
  const n = Math.max(0, Math.min(len, file.size - offset));
  const out = new Uint8Array(n);
  let done = 0;
  while (done < n) {
    const pos = offset + done;
    const index = Math.floor(pos / PAGE_SIZE);
    const off = pos - index * PAGE_SIZE;
    const k = Math.min(PAGE_SIZE - off, n - done);
    const pfn = await findOrReadPage(ctx, file, index);
    // The page may have been reclaimed while another page was read in; re-look it up.
    if (file.pageCache.get(index) !== pfn) continue;
    ctx.mem.content.read(pfn, off, out, done, k);
    ctx.mem.flags[pfn]! |= PG.REFERENCED;
    done += k;
  }
  return out;
}

/** Writes `data` at `offset`, extending the file if needed (`pwrite`). */
export async function fileWrite(
  ctx: MmContext,
  file: SimFile,
  offset: number,
  data: Uint8Array,
): Promise<void> {
  checkIo('pwrite', offset, data.length);
  let done = 0;
  while (done < data.length) {
    const pos = offset + done;
    const index = Math.floor(pos / PAGE_SIZE);
    const off = pos - index * PAGE_SIZE;
    const k = Math.min(PAGE_SIZE - off, data.length - done);
    const pfn = await findOrReadPage(ctx, file, index);
    if (file.pageCache.get(index) !== pfn) continue;
    ctx.mem.content.write(pfn, off, data, done, k);
    ctx.mem.flags[pfn]! |= PG.DIRTY | PG.REFERENCED;
    done += k;
    if (pos + k > file.size) file.size = pos + k;
  }
}
