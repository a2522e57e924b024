/**
 * Duplicating an address space at fork (`dup_mmap` in kernel/fork.c, `copy_page_range` in
 * mm/memory.c).
 *
 * Private mappings share their pages copy-on-write: both PTEs become read-only (a PROTECTION_PAGE
 * invalidation on the parent first) and the page loses its anon-exclusive mark. Exception, as in the
 * kernel since 5.8 (`page_needs_cow_for_dma`): a pinned anon page is copied for the child at once, so
 * the parent's pin keeps pointing at the page the parent uses. Shared file and shmem mappings are not
 * copied; the child faults them in from the page cache. Swap entries gain a use. VM_DONTCOPY
 * mappings are left out.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import { PAGE_SIZE, VmFlag } from './constants.js';
import {
  isDevicePrivateEntry,
  isMigrationEntry,
  notifyEnd,
  notifyStart,
  restoreExclusivePte,
} from './memory.js';
import { waitOnPageLocked } from './memremap.js';
import { exitMmap, linkVma } from './mmap.js';
import type { MmContext } from './mm-context.js';
import { RssCounter } from './mm-struct.js';
import type { MmStruct } from './mm-struct.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { PG } from './page-flags.js';
import { Pte, PteType, nonPresentFlags, pteType } from './pgtable.js';
import { MAX_MAPCOUNT } from './physmem.js';
import type { Vma } from './vma.js';

/** Creates the child's copy of `parent` (`dup_mm`). On failure the child is torn down and the error rethrown. */
export async function dupMm(ctx: MmContext, parent: MmStruct): Promise<MmStruct> {
  parent.assertLive('fork');
  await parent.mmapLock.write();
  const child = ctx.createMm();
  try {
    parent.assertLive('fork');
    for (const v of parent.vmas.all()) {
      if ((v.flags & VmFlag.DONTCOPY) !== 0) continue;
      const cv = v.cloneRange(v.start, v.end, child);
      linkVma(child, cv);
      if (v.isShared && !v.isSpecial) continue;
      await copyPageRange(ctx, parent, child, v);
    }
  } catch (e) {
    parent.mmapLock.writeUnlock();
    await exitMmap(ctx, child);
    throw e;
  }
  parent.mmapLock.writeUnlock();
  return child;
}

/** Copies the PTEs of one VMA into the child. */
async function copyPageRange(ctx: MmContext, parent: MmStruct, child: MmStruct, vma: Vma): Promise<void> {
  const arena = ctx.arena;
  const mem = ctx.mem;
  const cow = vma.isCow;
  const vpns: number[] = [];
  parent.pgtable.forEachPte(vma.start / PAGE_SIZE, vma.end / PAGE_SIZE, (_slot, vpn) => {
    vpns.push(vpn);
  });
  if (vpns.length === 0) return;
  const range = cow ? await notifyStart(parent, vma.start, vma.end, NotifyEvent.PROTECTION_PAGE) : null;
  try {
    for (const vpn of vpns) {
      let spare = -1;
      for (;;) {
        const ps = parent.pgtable.lookup(vpn);
        const pf = ps < 0 ? 0 : arena.pteFlags[ps]!;
        if (pf === 0) break;
        const pv = arena.pteVal[ps]!;
        if ((pf & Pte.PRESENT) === 0) {
          const type = pteType(pf);
          if (isMigrationEntry(type)) {
            // The page is being migrated (by pfn, without our mmap lock): wait for the end.
            await waitOnPageLocked(ctx, pv);
            continue;
          }
          if (type === PteType.DEVICE_EXCLUSIVE) {
            // copy_nonpresent_pte: exclusive access ends before the entry is copied.
            await restoreExclusivePte(ctx, vma, ps, pv);
            continue;
          }
          if (isDevicePrivateEntry(type)) {
            // The child shares the device page; a writable entry in a COW mapping becomes read-only
            // in both, so a later write migrates the page back to RAM and then copies it.
            if (mem.mapcount[pv]! >= MAX_MAPCOUNT) {
              throw new HmmError('ENOMEM', `fork: page ${pv} is mapped ${MAX_MAPCOUNT} times already`);
            }
            let cf = pf;
            if (cow && type === PteType.DEVICE_PRIVATE_WRITE) {
              cf = nonPresentFlags(PteType.DEVICE_PRIVATE_READ);
              arena.pteFlags[ps] = cf;
            }
            const cs = child.pgtable.ensure(vpn);
            arena.setPte(cs, pv, cf);
            mem.mapcount[pv]!++;
            mem.refcount[pv]!++;
            mem.flags[pv]! &= ~PG.ANON_EXCLUSIVE;
            ctx.rmap.addAnon(pv, cs);
            child.rss[RssCounter.ANON]!++;
            break;
          }
          if (type !== PteType.SWAP) {
            throw new Error(`internal: fork cannot copy a non-present entry of type ${type}`);
          }
          ctx.swap.dup(pv);
          arena.setPte(child.pgtable.ensure(vpn), pv, pf);
          child.rss[RssCounter.SWAP]!++;
          break;
        }
        if ((pf & Pte.SPECIAL) !== 0) {
          arena.setPte(child.pgtable.ensure(vpn), pv, pf & ~Pte.ACCESSED);
          break;
        }
        const pg = mem.flags[pv]!;
        const anon = (pg & PG.ANON) !== 0;
        if (anon && mem.pincount[pv]! > 0) {
          // page_needs_cow_for_dma: the child gets its own copy now.
          if (spare < 0) {
            spare = await ctx.allocPage();
            continue; // the parent's PTE may have changed while we allocated
          }
          mem.copyFrame(spare, pv);
          mem.flags[spare]! |= PG.ANON | PG.SWAPBACKED | PG.ANON_EXCLUSIVE | PG.DIRTY;
          mem.mapcount[spare] = 1;
          const cs = child.pgtable.ensure(vpn);
          arena.setPte(cs, spare, Pte.PRESENT | Pte.DIRTY | (pf & Pte.WRITE));
          ctx.rmap.addAnon(spare, cs);
          ctx.lru.add(spare);
          child.rss[RssCounter.ANON]!++;
          spare = -1;
          break;
        }
        if (mem.mapcount[pv]! >= MAX_MAPCOUNT) {
          throw new HmmError('ENOMEM', `fork: page ${pv} is mapped ${MAX_MAPCOUNT} times already`);
        }
        let cf = pf & ~Pte.ACCESSED;
        if (cow && (pf & Pte.WRITE) !== 0) {
          arena.pteFlags[ps] = pf & ~Pte.WRITE;
          cf &= ~Pte.WRITE;
        }
        const cs = child.pgtable.ensure(vpn);
        arena.setPte(cs, pv, cf);
        mem.mapcount[pv]!++;
        mem.refcount[pv]!++;
        if (anon) {
          mem.flags[pv] = pg & ~PG.ANON_EXCLUSIVE;
          ctx.rmap.addAnon(pv, cs);
          child.rss[RssCounter.ANON]!++;
        } else {
          child.rss[(pg & PG.SWAPBACKED) !== 0 ? RssCounter.SHMEM : RssCounter.FILE]!++;
        }
        break;
      }
      if (spare >= 0) ctx.putPage(spare);
    }
  } finally {
    notifyEnd(parent, range);
  }
}
