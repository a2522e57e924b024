/**
 * Reverse map (mm/rmap.c): from a frame to every PTE that maps it.
 *
 * - Anonymous pages record the PTE slot directly: the first mapping in the frame table's `rmap`
 *   field, further ones (pages shared by fork) in an overflow map. Kernel: anon_vma chains walked by
 *   `rmap_walk_anon`; the SDK stores the PTEs instead, which gives the same answer.
 * - Page-cache pages record their file index; their mappings are found by walking the file's VMAs
 *   (`i_mmap`) as `rmap_walk_file` does.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import type { SimFile } from './filemap.js';
import type { MmStruct } from './mm-struct.js';
import { PG } from './page-flags.js';
import type { PageTableArena } from './pgtable.js';
import { Pte } from './pgtable.js';
import type { PhysMem } from './physmem.js';

/** Visitor of one mapping: the mm, the PTE slot and the virtual address. Return false to stop. */
export type RmapVisitor = (mm: MmStruct, slot: number, address: number) => boolean | void;

/** Reverse-map bookkeeping for one memory arena. */
export class Rmap {
  /** Extra PTE slots of anon frames mapped more than once. */
  private readonly extra = new Map<number, number[]>();

  constructor(
    private readonly mem: PhysMem,
    private readonly arena: PageTableArena,
    private readonly mmOf: (id: number) => MmStruct | undefined,
    private readonly fileOf: (id: number) => SimFile | undefined,
  ) {}

  /** Records that PTE `slot` maps anon frame `pfn` (`folio_add_anon_rmap_pte`). */
  addAnon(pfn: number, slot: number): void {
    const r = this.mem.rmap;
    if (r[pfn] === 0) {
      r[pfn] = slot;
      return;
    }
    const list = this.extra.get(pfn);
    if (list === undefined) this.extra.set(pfn, [slot]);
    else list.push(slot);
  }

  /** Forgets that PTE `slot` maps anon frame `pfn` (`folio_remove_rmap_pte`). */
  removeAnon(pfn: number, slot: number): void {
    const r = this.mem.rmap;
    const list = this.extra.get(pfn);
    if (r[pfn] === slot) {
      if (list === undefined) r[pfn] = 0;
      else {
        r[pfn] = list.pop()!;
        if (list.length === 0) this.extra.delete(pfn);
      }
      return;
    }
    const i = list === undefined ? -1 : list.indexOf(slot);
    if (i < 0) throw new Error(`internal: rmap of frame ${hex(pfn)} has no slot ${slot}`);
    list!.splice(i, 1);
    if (list!.length === 0) this.extra.delete(pfn);
  }

  /** Moves the record of anon frame `pfn` from one PTE slot to another (mremap). */
  moveAnon(pfn: number, from: number, to: number): void {
    const r = this.mem.rmap;
    if (r[pfn] === from) {
      r[pfn] = to;
      return;
    }
    const list = this.extra.get(pfn);
    const i = list === undefined ? -1 : list.indexOf(from);
    if (i < 0) throw new Error(`internal: rmap of frame ${hex(pfn)} has no slot ${from}`);
    list![i] = to;
  }

  /**
   * Visits every PTE mapping `pfn` (`rmap_walk`). For anon frames the slots are recorded; for
   * page-cache frames the file's VMAs are searched for a present PTE with this pfn.
   */
  walk(pfn: number, visit: RmapVisitor): void {
    const f = this.mem.flags[pfn]!;
    const arena = this.arena;
    if ((f & PG.ANON) !== 0) {
      const first = this.mem.rmap[pfn]!;
      if (first === 0) return;
      const list = this.extra.get(pfn);
      const slots = list === undefined ? [first] : [first, ...list];
      for (const slot of slots) {
        const mm = this.mmOf(arena.slotMm(slot));
        if (mm === undefined) throw new Error(`internal: rmap slot ${slot} of frame ${hex(pfn)} has no mm`);
        if (visit(mm, slot, arena.slotAddress(slot)) === false) return;
      }
      return;
    }
    if ((f & PG.PAGECACHE) === 0) return;
    const file = this.fileOf(this.mem.owner[pfn]!);
    if (file === undefined) return;
    const index = this.mem.rmap[pfn]!;
    for (const vma of [...file.mappings]) {
      if (index < vma.pgoff || index >= vma.pgoff + vma.pages) continue;
      const addr = vma.start + (index - vma.pgoff) * PAGE_SIZE;
      const slot = vma.mm.pgtable.lookup(addr / PAGE_SIZE);
      if (slot < 0) continue;
      const fl = arena.pteFlags[slot]!;
      if ((fl & Pte.PRESENT) === 0 || (fl & Pte.SPECIAL) !== 0 || arena.pteVal[slot] !== pfn) continue;
      if (visit(vma.mm, slot, addr) === false) return;
    }
  }

  /** All (mm id, address) pairs mapping `pfn` (for tests and diagnostics). */
  mappingsOf(pfn: number): { mm: number; address: number }[] {
    const out: { mm: number; address: number }[] = [];
    this.walk(pfn, (mm, _slot, address) => {
      out.push({ mm: mm.id, address });
    });
    return out;
  }

  /** Checks that the anon record count equals the frame's mapcount (invariant checks). */
  checkAnon(pfn: number): void {
    const n = (this.mem.rmap[pfn] === 0 ? 0 : 1) + (this.extra.get(pfn)?.length ?? 0);
    if (n !== this.mem.mapcount[pfn]) {
      throw new HmmError(
        'EINVAL',
        `rmap of frame ${hex(pfn)} records ${n} mappings, mapcount is ${this.mem.mapcount[pfn]}`,
      );
    }
  }
}
