/**
 * get_user_pages and pin_user_pages (mm/gup.c).
 *
 * - `getUserPages` takes a reference on each page (FOLL_GET); release with {@link putUserPages}.
 * - `pinUserPages` pins (FOLL_PIN): the page can then be neither reclaimed nor migrated until
 *   {@link unpinUserPages}. An anon page must be exclusive to be pinned, so a shared (post-fork) page is
 *   first unshared by a copy (`gup_must_unshare`), even for a read pin. A FOLL_LONGTERM read pin of a
 *   private file page or of the zero page also breaks COW first, so the pin keeps seeing what the
 *   process sees; the page then no longer follows later changes to the file.
 * - FOLL_WRITE breaks copy-on-write first. FOLL_LONGTERM refuses file-backed shared mappings that
 *   need dirty tracking (`writable_file_mapping_allowed`) with EFAULT.
 * - Special (VM_IO / VM_PFNMAP) mappings, missing mappings and forbidden access fail with EFAULT.
 *
 * Unlike the kernel, which returns how many pages it got before an error, the SDK is all-or-nothing:
 * on error every reference taken is dropped and the error is thrown.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { Foll, PAGE_SIZE, PTRS_PER_TABLE, TASK_SIZE } from './constants.js';
import { FaultFlag, handleMmFault } from './memory.js';
import type { MmContext } from './mm-context.js';
import type { MmStruct } from './mm-struct.js';
import { PG } from './page-flags.js';
import { Pte } from './pgtable.js';
import { MAX_PINCOUNT, ZERO_PFN } from './physmem.js';
import { migrateDeviceCoherentPage } from './migrate-device.js';
import type { Vma } from './vma.js';

const KNOWN = Foll.WRITE | Foll.GET | Foll.FORCE | Foll.NOFAULT | Foll.LONGTERM | Foll.PIN;

function checkVma(vma: Vma | undefined, addr: number, gupFlags: number): Vma {
  if (vma === undefined) {
    throw new HmmError('EFAULT', `get_user_pages: no mapping at ${hex(addr)}`, {
      address: addr,
      kernelRef: 'mm/gup.c:check_vma_flags',
    });
  }
  if (vma.isSpecial) {
    throw new HmmError(
      'EFAULT',
      `get_user_pages: ${vma.toString()} is a VM_IO/VM_PFNMAP mapping without struct pages`,
      {
        address: addr,
      },
    );
  }
  const write = (gupFlags & Foll.WRITE) !== 0;
  if (write && !vma.writable) {
    throw new HmmError('EFAULT', `get_user_pages: FOLL_WRITE on non-writable mapping ${vma.toString()}`, {
      address: addr,
    });
  }
  if (!write && !vma.readable) {
    throw new HmmError('EFAULT', `get_user_pages: mapping ${vma.toString()} is not readable`, {
      address: addr,
    });
  }
  if ((gupFlags & Foll.LONGTERM) !== 0 && write && vma.file !== null && !vma.file.shmem && vma.isShared) {
    throw new HmmError(
      'EFAULT',
      `get_user_pages: FOLL_LONGTERM|FOLL_WRITE on a file mapping that needs dirty tracking`,
      {
        address: addr,
        kernelRef: 'mm/gup.c:writable_file_mapping_allowed',
      },
    );
  }
  return vma;
}

/**
 * Returns the pfn if the PTE already satisfies the access (`follow_page_pte`), else -1. The small,
 * obviously correct per-page rule that {@link takePresentPages} is differential-tested against.
 * @internal
 */
export function followPage(ctx: MmContext, mm: MmStruct, vpn: number, gupFlags: number): number {
  const slot = mm.pgtable.lookup(vpn);
  if (slot < 0) return -1;
  const f = ctx.arena.pteFlags[slot]!;
  if ((f & Pte.PRESENT) === 0) return -1;
  if ((gupFlags & Foll.WRITE) !== 0 && (f & Pte.WRITE) === 0) return -1;
  const pfn = ctx.arena.pteVal[slot]!;
  const longterm = (gupFlags & Foll.LONGTERM) !== 0;
  // Device-coherent memory is not long-term pinnable: the slow path migrates it to RAM first.
  if (longterm && (ctx.mem.flags[pfn]! & PG.ZONE_DEVICE) !== 0 && (f & Pte.SPECIAL) === 0) return -1;
  if ((f & Pte.SPECIAL) !== 0) {
    // Other special PTEs have no page. A long-term pin of the zero page in a COW mapping must
    // unshare it first, so the pin sees later writes through the page table (gup_must_unshare).
    if (pfn !== ZERO_PFN) return -1;
    return (gupFlags & Foll.PIN) !== 0 && longterm ? -1 : pfn;
  }
  if ((gupFlags & Foll.PIN) !== 0) {
    const pg = ctx.mem.flags[pfn]!;
    // An anon page must be exclusive to be pinned (PageAnonExclusive).
    if ((pg & PG.ANON) !== 0 && (pg & PG.ANON_EXCLUSIVE) === 0) return -1;
    // A long-term R/O pin of a private file mapping's cache page must break COW first.
    if ((pg & PG.ANON) === 0 && longterm && (f & Pte.WRITE) === 0) {
      const vma = mm.vmas.lookup(vpn * PAGE_SIZE);
      if (vma !== undefined && vma.isCow) return -1;
    }
  }
  return pfn;
}

/**
 * The synchronous fast path (like `gup_fast`, without its lockless walk): takes pages from index
 * `from` on while their VMA allows the access and their PTE already satisfies it, and returns the
 * index of the first page that needs the slow path (a fault, a VMA check that fails, a full pin count).
 * @internal
 */
export function takePresentPages(
  ctx: MmContext,
  mm: MmStruct,
  start: number,
  from: number,
  nrPages: number,
  gupFlags: number,
  out: Int32Array,
): number {
  const mem = ctx.mem;
  const pins = mem.pincount;
  const refs = mem.refcount;
  const pageFlags = mem.flags;
  const pteFlags = ctx.arena.pteFlags;
  const pteVal = ctx.arena.pteVal;
  const pin = (gupFlags & Foll.PIN) !== 0;
  const write = (gupFlags & Foll.WRITE) !== 0;
  const longterm = (gupFlags & Foll.LONGTERM) !== 0;
  const need = write ? Pte.PRESENT | Pte.WRITE : Pte.PRESENT;
  let i = from;
  while (i < nrPages) {
    const addr = start + i * PAGE_SIZE;
    const vma = mm.vmas.lookup(addr);
    if (vma === undefined || vma.isSpecial || (write ? !vma.writable : !vma.readable)) return i;
    if (longterm && write && vma.file !== null && !vma.file.shmem && vma.isShared) return i;
    const cow = vma.isCow;
    let slot = mm.pgtable.lookup(addr / PAGE_SIZE);
    if (slot < 0) return i;
    // Walk the rest of this leaf table (and VMA) slot by slot.
    const lim = Math.min(
      nrPages,
      i + (PTRS_PER_TABLE - (slot & (PTRS_PER_TABLE - 1))),
      i + (vma.end - addr) / PAGE_SIZE,
    );
    for (; i < lim; i++, slot++) {
      const f = pteFlags[slot]!;
      if ((f & need) !== need || (f & Pte.SPECIAL) !== 0) return i;
      const pfn = pteVal[slot]!;
      if (longterm && (pageFlags[pfn]! & PG.ZONE_DEVICE) !== 0) return i;
      if (pin) {
        const pg = pageFlags[pfn]!;
        if ((pg & PG.ANON) !== 0 ? (pg & PG.ANON_EXCLUSIVE) === 0 : longterm && cow && (f & Pte.WRITE) === 0)
          return i;
        if (pins[pfn]! >= MAX_PINCOUNT) return i;
        pins[pfn]!++;
      }
      refs[pfn]!++;
      out[i] = pfn;
    }
  }
  return nrPages;
}

/**
 * Faults in (as needed) and references the pages of [start, start + nrPages·PAGE_SIZE)
 * (`__get_user_pages`). Returns their pfns. The caller must release them with {@link putUserPages} or,
 * with FOLL_PIN, {@link unpinUserPages}.
 */
export async function getUserPagesInternal(
  ctx: MmContext,
  mm: MmStruct,
  start: number,
  nrPages: number,
  gupFlags: number,
): Promise<Int32Array> {
  mm.assertLive('get_user_pages');
  if ((gupFlags & ~KNOWN) !== 0)
    throw new HmmError('EINVAL', `get_user_pages: unknown flags ${hex(gupFlags & ~KNOWN)}`);
  if ((gupFlags & Foll.FORCE) !== 0) {
    throw new HmmError(
      'EINVAL',
      'get_user_pages: FOLL_FORCE (ptrace-style access past the VMA protection) is not simulated',
    );
  }
  if (!Number.isSafeInteger(start) || start < 0 || start % PAGE_SIZE !== 0) {
    throw new HmmError('EINVAL', `get_user_pages: start ${String(start)} is not page aligned`);
  }
  if (!Number.isSafeInteger(nrPages) || nrPages <= 0) {
    throw new HmmError('EINVAL', `get_user_pages: nr_pages ${String(nrPages)} must be a positive integer`);
  }
  if (start + nrPages * PAGE_SIZE > TASK_SIZE) {
    throw new HmmError(
      'EFAULT',
      `get_user_pages: range ${hex(start)}+${nrPages} pages leaves the address space`,
    );
  }
  const pin = (gupFlags & Foll.PIN) !== 0;
  const out = new Int32Array(nrPages);
  const mem = ctx.mem;
  let got = 0;
  if (!mm.mmapLock.tryRead()) await mm.mmapLock.read();
  try {
    while (got < nrPages) {
      // Fast path over pages that need no fault; then one page through the slow path.
      got = takePresentPages(ctx, mm, start, got, nrPages, gupFlags, out);
      if (got === nrPages) break;
      const addr = start + got * PAGE_SIZE;
      const vma = checkVma(mm.vmas.lookup(addr), addr, gupFlags);
      const vpn = addr / PAGE_SIZE;
      let pfn = followPage(ctx, mm, vpn, gupFlags);
      for (let tries = 0; pfn < 0; tries++) {
        if (tries === 100) {
          throw new HmmError('EAGAIN', `get_user_pages: page at ${hex(addr)} kept changing under the fault`, {
            address: addr,
          });
        }
        if ((gupFlags & Foll.NOFAULT) !== 0) {
          throw new HmmError(
            'EFAULT',
            `get_user_pages: page at ${hex(addr)} is not present and FOLL_NOFAULT is set`,
            { address: addr },
          );
        }
        if ((gupFlags & Foll.LONGTERM) !== 0 && (await migrateCoherentForLongterm(ctx, mm, vpn))) {
          pfn = followPage(ctx, mm, vpn, gupFlags);
          continue;
        }
        const ff =
          ((gupFlags & Foll.WRITE) !== 0 ? FaultFlag.WRITE : 0) |
          (pin ? FaultFlag.UNSHARE : 0) |
          FaultFlag.REMOTE;
        await handleMmFault(ctx, vma, addr, ff);
        pfn = followPage(ctx, mm, vpn, gupFlags);
      }
      if (pin) {
        if (mem.pincount[pfn]! >= MAX_PINCOUNT) {
          throw new HmmError('ENOMEM', `pin_user_pages: page ${hex(pfn)} already has ${MAX_PINCOUNT} pins`, {
            address: addr,
          });
        }
        mem.pincount[pfn]!++;
      }
      mem.refcount[pfn]!++;
      out[got++] = pfn;
    }
  } catch (e) {
    for (let i = 0; i < got; i++) {
      const pfn = out[i]!;
      if (pin) mem.pincount[pfn]!--;
      ctx.putPage(pfn);
    }
    throw e;
  } finally {
    mm.mmapLock.readUnlock();
  }
  return out;
}

/**
 * If `vpn` maps a device-coherent page, migrates it to RAM so it can be pinned long-term
 * (`migrate_longterm_unpinnable_folios` → `migrate_device_coherent_folio`) and returns true.
 * EBUSY when the page cannot be moved (it is pinned or held), as `migrate_device_coherent_folio` fails.
 */
async function migrateCoherentForLongterm(ctx: MmContext, mm: MmStruct, vpn: number): Promise<boolean> {
  const slot = mm.pgtable.lookup(vpn);
  if (slot < 0) return false;
  const f = ctx.arena.pteFlags[slot]!;
  const pfn = ctx.arena.pteVal[slot]!;
  if ((f & Pte.PRESENT) === 0 || (f & Pte.SPECIAL) !== 0 || (ctx.mem.flags[pfn]! & PG.ZONE_DEVICE) === 0) {
    return false;
  }
  if (!(await migrateDeviceCoherentPage(ctx, pfn))) {
    throw new HmmError(
      'EBUSY',
      `pin_user_pages(FOLL_LONGTERM): device-coherent page ${hex(pfn)} at ${hex(vpn * PAGE_SIZE)} could not be migrated to RAM (pinned or busy)`,
      { address: vpn * PAGE_SIZE, kernelRef: 'mm/gup.c:migrate_longterm_unpinnable_folios' },
    );
  }
  return true;
}

/** `get_user_pages`: references (FOLL_GET) the pages of a range, faulting them in. */
export async function getUserPages(
  ctx: MmContext,
  mm: MmStruct,
  start: number,
  nrPages: number,
  gupFlags = 0,
): Promise<Int32Array> {
  if ((gupFlags & Foll.PIN) !== 0)
    throw new HmmError('EINVAL', 'get_user_pages: FOLL_PIN is for pin_user_pages only');
  return getUserPagesInternal(ctx, mm, start, nrPages, gupFlags | Foll.GET);
}

/** `pin_user_pages`: pins (FOLL_PIN) the pages of a range, faulting them in. */
export async function pinUserPages(
  ctx: MmContext,
  mm: MmStruct,
  start: number,
  nrPages: number,
  gupFlags = 0,
): Promise<Int32Array> {
  if ((gupFlags & Foll.GET) !== 0)
    throw new HmmError('EINVAL', 'pin_user_pages: FOLL_GET cannot be combined with pinning');
  return getUserPagesInternal(ctx, mm, start, nrPages, gupFlags | Foll.PIN);
}

/** Why `pfn` cannot give up one more reference of the kind `held` counts, or null if it can. */
function releaseError(
  ctx: MmContext,
  pfn: number,
  what: string,
  held: (pfn: number) => number,
): HmmError | null {
  const mem = ctx.mem;
  const ref = { kernelRef: `mm/gup.c:${what}` };
  if (!Number.isInteger(pfn) || pfn < 0 || pfn >= mem.nrFrames || (mem.flags[pfn]! & PG.ALLOCATED) === 0) {
    return new HmmError(
      'EINVAL',
      `${what}: ${String(pfn)} is not an allocated frame (released and freed already?)`,
      ref,
    );
  }
  if (held(pfn) <= 0) {
    return new HmmError(
      'EINVAL',
      `${what}: frame ${hex(pfn)} holds no reference of this kind any more (released twice?)`,
      ref,
    );
  }
  return null;
}

/**
 * Drops one count per entry from `counts` (pins or references), all or nothing: if any entry cannot
 * give one up, the ones already taken off are put back and the error is thrown.
 */
function releaseAll(
  ctx: MmContext,
  pfns: ArrayLike<number>,
  what: string,
  counts: Uint16Array | Int32Array,
  held: (pfn: number) => number,
): void {
  for (let i = 0; i < pfns.length; i++) {
    const pfn = pfns[i]!;
    const bad = releaseError(ctx, pfn, what, held);
    if (bad !== null) {
      for (let k = 0; k < i; k++) counts[pfns[k]!]!++;
      throw bad;
    }
    counts[pfn]!--;
  }
}

/**
 * `unpin_user_pages`: drops one pin per entry. EINVAL, with nothing changed, if any entry is not
 * pinned (as many times as it appears) — a double unpin.
 */
export function unpinUserPages(ctx: MmContext, pfns: ArrayLike<number>): void {
  const pins = ctx.mem.pincount;
  releaseAll(ctx, pfns, 'unpin_user_page', pins, (pfn) => pins[pfn]!);
  // Each pin also held a reference.
  for (let i = 0; i < pfns.length; i++) ctx.putPage(pfns[i]!);
}

/**
 * `put_page` for references taken by {@link getUserPages}. EINVAL, with nothing changed, if an entry
 * holds no such reference.
 */
export function putUserPages(ctx: MmContext, pfns: ArrayLike<number>): void {
  const mem = ctx.mem;
  // GUP references: what the refcount holds beyond mappings, pins, the page cache and (for the zero
  // page) its own permanent reference.
  const gets = (pfn: number): number =>
    mem.refcount[pfn]! -
    mem.mapcount[pfn]! -
    mem.pincount[pfn]! -
    ((mem.flags[pfn]! & PG.PAGECACHE) !== 0 ? 1 : 0) -
    (pfn === ZERO_PFN ? 1 : 0);
  releaseAll(ctx, pfns, 'put_page', mem.refcount, gets);
  // Frames whose last reference went are freed now (once each, even if listed twice).
  for (let i = 0; i < pfns.length; i++) {
    const pfn = pfns[i]!;
    if (pfn !== ZERO_PFN && mem.refcount[pfn] === 0 && (mem.flags[pfn]! & PG.ALLOCATED) !== 0) {
      mem.refcount[pfn] = 1;
      ctx.putPage(pfn);
    }
  }
}
