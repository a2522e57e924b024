/**
 * Soft-dirty tracking (`Documentation/admin-guide/mm/soft-dirty.rst`, fs/proc/task_mmu.c): writing
 * 4 to `/proc/pid/clear_refs` clears every PTE's soft-dirty bit and write-protects the PTEs, firing a
 * SOFT_DIRTY invalidation per VMA, so that the next write to a page faults and marks it soft-dirty
 * again; `/proc/pid/pagemap` bit 55 reports the bit.
 *
 * @module
 */
import { PAGE_SIZE } from './constants.js';
import { notifyEnd, notifyStart } from './memory.js';
import type { MmContext } from './mm-context.js';
import type { MmStruct } from './mm-struct.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { Pte } from './pgtable.js';

/** `echo 4 > /proc/pid/clear_refs` (`clear_refs_write` with CLEAR_REFS_SOFT_DIRTY). */
export async function clearSoftDirty(ctx: MmContext, mm: MmStruct): Promise<void> {
  mm.assertLive('clear_refs');
  await mm.mmapLock.read();
  try {
    const arena = ctx.arena;
    for (const vma of mm.vmas.all()) {
      if (vma.isSpecial) continue;
      const range = await notifyStart(mm, vma.start, vma.end, NotifyEvent.SOFT_DIRTY);
      mm.pgtable.forEachPte(vma.start / PAGE_SIZE, vma.end / PAGE_SIZE, (slot) => {
        const f = arena.pteFlags[slot]!;
        if ((f & Pte.PRESENT) !== 0) arena.pteFlags[slot] = f & ~(Pte.SOFT_DIRTY | Pte.WRITE);
        else arena.pteFlags[slot] = f & ~Pte.SOFT_DIRTY;
      });
      notifyEnd(mm, range);
    }
  } finally {
    mm.mmapLock.readUnlock();
  }
}

/**
 * Which of the `npages` pages at `addr` are soft-dirty (pagemap bit 55): written since the last
 * {@link clearSoftDirty}, or mapped since.
 */
export function softDirtyPages(ctx: MmContext, mm: MmStruct, addr: number, npages: number): boolean[] {
  const out: boolean[] = [];
  for (let i = 0; i < npages; i++) {
    const slot = mm.pgtable.lookup(addr / PAGE_SIZE + i);
    out.push(slot >= 0 && (ctx.arena.pteFlags[slot]! & Pte.SOFT_DIRTY) !== 0);
  }
  return out;
}
