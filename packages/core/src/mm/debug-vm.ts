/**
 * Consistency checks of the whole memory manager (CONFIG_DEBUG_VM's `VM_BUG_ON` checks gathered in
 * one pass). Recomputes every count from the page tables and compares: map counts, reverse map,
 * reference counts, swap use counts, RSS, LRU membership and page-table occupancy. Throws an
 * {@link HmmError} (EINVAL) naming the first inconsistency. O(touched state); for tests.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import type { MmContext } from './mm-context.js';
import { RssCounter } from './mm-struct.js';
import { PG } from './page-flags.js';
import { Pte, PteType, pteType } from './pgtable.js';
import { isDevicePrivateEntry, isMappingEntry } from './memory.js';
import { ZERO_PFN } from './physmem.js';

function fail(msg: string): never {
  throw new HmmError('EINVAL', `invariant broken: ${msg}`);
}

/**
 * Checks the invariants. `extraRefs(pfn)` tells how many references outside the mm the caller
 * knows of (GUP gets it holds); by default none.
 */
export function checkMmInvariants(ctx: MmContext, extraRefs: (pfn: number) => number = () => 0): void {
  const mem = ctx.mem;
  const arena = ctx.arena;
  const maps = new Map<number, number>();
  const swapUses = new Map<number, number>();
  for (const mm of ctx.liveMms()) {
    if (mm.state === 'dead') continue;
    const rss = [0, 0, 0, 0];
    for (const vma of mm.vmas.all()) {
      mm.pgtable.forEachPte(vma.start / PAGE_SIZE, vma.end / PAGE_SIZE, (slot) => {
        const f = arena.pteFlags[slot]!;
        const v = arena.pteVal[slot]!;
        if ((f & Pte.PRESENT) !== 0) {
          if ((f & Pte.SPECIAL) !== 0) {
            if (v === ZERO_PFN && (f & Pte.WRITE) !== 0) fail(`zero page mapped writable at slot ${slot}`);
            return;
          }
          if ((mem.flags[v]! & PG.ALLOCATED) === 0) fail(`PTE maps free frame ${hex(v)} in mm ${mm.id}`);
          if ((f & Pte.WRITE) !== 0 && !vma.writable) fail(`writable PTE in non-writable ${vma.toString()}`);
          maps.set(v, (maps.get(v) ?? 0) + 1);
          const pg = mem.flags[v]!;
          rss[
            (pg & PG.ANON) !== 0
              ? RssCounter.ANON
              : (pg & PG.SWAPBACKED) !== 0
                ? RssCounter.SHMEM
                : RssCounter.FILE
          ]!++;
          if ((f & Pte.WRITE) !== 0 && (pg & PG.ANON) !== 0 && mem.mapcount[v]! > 1) {
            fail(`anon frame ${hex(v)} mapped ${mem.mapcount[v]} times but writable in mm ${mm.id}`);
          }
        } else if (isMappingEntry(pteType(f))) {
          const t = pteType(f);
          if ((mem.flags[v]! & PG.ALLOCATED) === 0)
            fail(`entry of type ${t} refers to free frame ${hex(v)} in mm ${mm.id}`);
          if (isDevicePrivateEntry(t) && (mem.flags[v]! & PG.ZONE_DEVICE) === 0)
            fail(`device-private entry refers to RAM frame ${hex(v)} in mm ${mm.id}`);
          if (t === PteType.DEVICE_PRIVATE_WRITE && mem.mapcount[v]! > 1)
            fail(`device frame ${hex(v)} mapped ${mem.mapcount[v]} times but writable in mm ${mm.id}`);
          maps.set(v, (maps.get(v) ?? 0) + 1);
          rss[(mem.flags[v]! & PG.ANON) !== 0 ? RssCounter.ANON : RssCounter.SHMEM]!++;
        } else if (pteType(f) === PteType.SWAP) {
          swapUses.set(v, (swapUses.get(v) ?? 0) + 1);
          rss[RssCounter.SWAP]!++;
        }
      });
    }
    for (let i = 0; i < 4; i++)
      if (rss[i] !== mm.rss[i])
        fail(`mm ${mm.id} RSS counter ${i} is ${mm.rss[i]}, page tables say ${rss[i]}`);
  }
  if (mem.refcount[ZERO_PFN] !== 1 + mem.pincount[ZERO_PFN]! + extraRefs(ZERO_PFN)) {
    fail(`zero page refcount ${mem.refcount[ZERO_PFN]} with ${mem.pincount[ZERO_PFN]} pins`);
  }
  let lruCount = 0;
  for (let pfn = 1; pfn < mem.nrFrames; pfn++) {
    const f = mem.flags[pfn]!;
    if ((f & PG.ALLOCATED) === 0) {
      if (mem.refcount[pfn] !== 0 || mem.mapcount[pfn] !== 0 || mem.pincount[pfn] !== 0)
        fail(`free frame ${hex(pfn)} has counts`);
      continue;
    }
    const m = maps.get(pfn) ?? 0;
    if (mem.mapcount[pfn] !== m) fail(`frame ${hex(pfn)} mapcount ${mem.mapcount[pfn]} but ${m} PTEs map it`);
    const expect = m + mem.pincount[pfn]! + ((f & PG.PAGECACHE) !== 0 ? 1 : 0) + extraRefs(pfn);
    if (mem.refcount[pfn] !== expect)
      fail(`frame ${hex(pfn)} refcount ${mem.refcount[pfn]}, expected ${expect}`);
    if (expect === 0) fail(`frame ${hex(pfn)} allocated with no reference (leak)`);
    if ((f & PG.ANON) !== 0) ctx.rmap.checkAnon(pfn);
    if ((f & PG.LRU) !== 0) lruCount++;
  }
  let listed = 0;
  for (let l = 0; l < 4; l++) {
    for (const pfn of ctx.lru.toArray(l as 0 | 1 | 2 | 3)) {
      if (ctx.lru.listOf(pfn) !== l)
        fail(`frame ${hex(pfn)} on LRU list ${l} but its flags say ${ctx.lru.listOf(pfn)}`);
      listed++;
    }
  }
  if (listed !== lruCount) fail(`${lruCount} frames flagged LRU, ${listed} on the lists`);
  for (let s = 1; s < ctx.swap.nrSlots; s++) {
    const want = swapUses.get(s) ?? 0;
    if (ctx.swap.swapMap[s] !== want)
      fail(`swap slot ${s} use count ${ctx.swap.swapMap[s]}, ${want} PTEs use it`);
  }
}
