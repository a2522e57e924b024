/**
 * Four-level page tables (PGD → PUD → PMD → PTE) of 512 entries each (include/linux/pgtable.h,
 * arch/x86/include/asm/pgtable_64.h).
 *
 * All tables of all address spaces live in one {@link PageTableArena} of typed arrays: directory
 * tables hold child table ids (0 = none), leaf tables hold one PTE per slot as a 32-bit value (pfn, or
 * swap slot for a swap entry) and 16-bit {@link Pte} flags. A PTE is named by its global slot number
 * `leafId * 512 + index`; that number is what the reverse map stores. Empty = flags 0.
 *
 * Only tables covering touched addresses exist, so a 128 TiB sparse mapping costs nothing until touched.
 *
 * @module
 */
import { PAGE_SIZE, PTRS_PER_TABLE } from './constants.js';

/** PTE flag bits. Present entries use the low bits; non-present entries carry a {@link PteType}. */
export const Pte = {
  /** `_PAGE_PRESENT`. */
  PRESENT: 1 << 0,
  /** `_PAGE_RW`. */
  WRITE: 1 << 1,
  /** `_PAGE_DIRTY`. */
  DIRTY: 1 << 2,
  /** `_PAGE_ACCESSED` (young). */
  ACCESSED: 1 << 3,
  /** `_PAGE_SPECIAL`: no `struct page` behind it (zero page, PFNMAP). */
  SPECIAL: 1 << 4,
  /** `_PAGE_SOFT_DIRTY`. */
  SOFT_DIRTY: 1 << 5,
  /** Reserved for a 2 MiB leaf at PMD level (THP); unused by this version. */
  HUGE: 1 << 6,
  /** Non-present entry: the type lives in bits 8..11 (see {@link PteType}). */
  TYPE_SHIFT: 8,
  TYPE_MASK: 0xf << 8,
} as const;

/**
 * Non-present entry types (`swp_entry_t` types, include/linux/swapops.h). The value field holds the
 * swap slot or the pfn. Device-private and device-exclusive entries are filled in by later layers.
 */
export const PteType = {
  NONE: 0,
  SWAP: 1,
  MIGRATION_READ: 2,
  MIGRATION_WRITE: 3,
  DEVICE_PRIVATE_READ: 4,
  DEVICE_PRIVATE_WRITE: 5,
  DEVICE_EXCLUSIVE: 6,
} as const;

/** Builds the flags of a non-present entry of the given type. */
export function nonPresentFlags(type: number): number {
  return type << Pte.TYPE_SHIFT;
}

/** Type of a non-present entry (0 for present or empty entries). */
export function pteType(flags: number): number {
  return (flags & Pte.TYPE_MASK) >>> Pte.TYPE_SHIFT;
}

const L4_SPAN = 2 ** 27; // pages covered by one PGD entry

/** Typed-array storage for the page tables of every address space of one machine. */
export class PageTableArena {
  /** Directory entries: child table id (dir or leaf), 0 = none. Table `t` owns `[t*512, t*512+512)`. */
  dir = new Int32Array(PTRS_PER_TABLE * 64);
  /** Non-zero entries per directory table. */
  dirUsed = new Uint16Array(64);
  /** PTE values (pfn or swap slot). */
  pteVal = new Uint32Array(PTRS_PER_TABLE * 64);
  /** PTE flags ({@link Pte}); 0 = empty. */
  pteFlags = new Uint16Array(PTRS_PER_TABLE * 64);
  /** Non-empty PTEs per leaf table. */
  leafUsed = new Uint16Array(64);
  /** Owning address space id per leaf table (reverse map: slot → mm). */
  leafMm = new Int32Array(64);
  /** First virtual page number covered by each leaf table (reverse map: slot → address). */
  leafBase = new Float64Array(64);

  private dirCount = 1; // id 0 is "none"
  private leafCount = 1;
  private dirFree: number[] = [];
  private leafFree: number[] = [];
  private _dirLive = 0;
  private _leafLive = 0;

  /** Live directory and leaf tables. */
  get tablesLive(): { dirs: number; leaves: number } {
    return { dirs: this._dirLive, leaves: this._leafLive };
  }

  /** Bytes of page-table memory currently in use (live tables only). */
  get bytesInUse(): number {
    return this._dirLive * (PTRS_PER_TABLE * 4 + 2) + this._leafLive * (PTRS_PER_TABLE * 6 + 2 + 4 + 8);
  }

  /** Bytes reserved by the arena's arrays (capacity, including free tables). */
  get bytesReserved(): number {
    return (
      this.dir.byteLength +
      this.dirUsed.byteLength +
      this.pteVal.byteLength +
      this.pteFlags.byteLength +
      this.leafUsed.byteLength +
      this.leafMm.byteLength +
      this.leafBase.byteLength
    );
  }

  /** Allocates an empty directory table. */
  allocDir(): number {
    let id = this.dirFree.pop();
    if (id === undefined) {
      id = this.dirCount++;
      if (id >= this.dirUsed.length) this.growDirs();
    }
    this._dirLive++;
    return id;
  }

  /** Frees an empty directory table. */
  freeDir(id: number): void {
    this.dir.fill(0, id * PTRS_PER_TABLE, id * PTRS_PER_TABLE + PTRS_PER_TABLE);
    this.dirUsed[id] = 0;
    this.dirFree.push(id);
    this._dirLive--;
  }

  /** Allocates an empty leaf table for `mm` covering pages from `baseVpn`. */
  allocLeaf(mm: number, baseVpn: number): number {
    let id = this.leafFree.pop();
    if (id === undefined) {
      id = this.leafCount++;
      if (id >= this.leafUsed.length) this.growLeaves();
    }
    this.leafMm[id] = mm;
    this.leafBase[id] = baseVpn;
    this._leafLive++;
    return id;
  }

  /** Frees an empty leaf table. */
  freeLeaf(id: number): void {
    this.leafUsed[id] = 0;
    this.leafMm[id] = 0;
    this.leafFree.push(id);
    this._leafLive--;
  }

  private growDirs(): void {
    const n = this.dirUsed.length * 2;
    const dir = new Int32Array(n * PTRS_PER_TABLE);
    dir.set(this.dir);
    this.dir = dir;
    const used = new Uint16Array(n);
    used.set(this.dirUsed);
    this.dirUsed = used;
  }

  private growLeaves(): void {
    const n = this.leafUsed.length * 2;
    const val = new Uint32Array(n * PTRS_PER_TABLE);
    val.set(this.pteVal);
    this.pteVal = val;
    const fl = new Uint16Array(n * PTRS_PER_TABLE);
    fl.set(this.pteFlags);
    this.pteFlags = fl;
    const used = new Uint16Array(n);
    used.set(this.leafUsed);
    this.leafUsed = used;
    const mm = new Int32Array(n);
    mm.set(this.leafMm);
    this.leafMm = mm;
    const base = new Float64Array(n);
    base.set(this.leafBase);
    this.leafBase = base;
  }

  /** Writes a PTE, keeping the leaf's non-empty count (`set_pte_at` / `pte_clear`). */
  setPte(slot: number, val: number, flags: number): void {
    const old = this.pteFlags[slot]!;
    if (old === 0) {
      if (flags !== 0) this.leafUsed[slot >>> 9]!++;
    } else if (flags === 0) {
      this.leafUsed[slot >>> 9]!--;
    }
    this.pteVal[slot] = flags === 0 ? 0 : val;
    this.pteFlags[slot] = flags;
  }

  /** The mm id owning a PTE slot. */
  slotMm(slot: number): number {
    return this.leafMm[slot >>> 9]!;
  }

  /** The virtual address a PTE slot maps. */
  slotAddress(slot: number): number {
    return (this.leafBase[slot >>> 9]! + (slot & (PTRS_PER_TABLE - 1))) * PAGE_SIZE;
  }
}

/** Splits a virtual page number into its four table indices. */
function split(vpn: number, out: Int32Array): void {
  const i4 = Math.floor(vpn / L4_SPAN);
  const rem = vpn - i4 * L4_SPAN;
  out[0] = i4;
  out[1] = rem >>> 18;
  out[2] = (rem >>> 9) & 511;
  out[3] = rem & 511;
}

/**
 * The page table of one address space (`mm->pgd`). Lookups cache the last leaf table, so sequential
 * access walks the tree once per 512 pages.
 */
export class PageTable {
  /** Root (PGD) directory id. */
  readonly root: number;
  private cacheBase = -1;
  private cacheLeaf = 0;
  private readonly idx = new Int32Array(4);

  constructor(
    readonly arena: PageTableArena,
    readonly mmId: number,
  ) {
    this.root = arena.allocDir();
  }

  /** PTE slot for `vpn`, or -1 if no leaf table covers it (`pte_offset_map` on a missing table). */
  lookup(vpn: number): number {
    const base = Math.floor(vpn / PTRS_PER_TABLE) * PTRS_PER_TABLE;
    if (base === this.cacheBase) return this.cacheLeaf * PTRS_PER_TABLE + (vpn - base);
    const a = this.arena;
    const idx = this.idx;
    split(vpn, idx);
    let t = a.dir[this.root * PTRS_PER_TABLE + idx[0]!]!;
    if (t === 0) return -1;
    t = a.dir[t * PTRS_PER_TABLE + idx[1]!]!;
    if (t === 0) return -1;
    const leaf = a.dir[t * PTRS_PER_TABLE + idx[2]!]!;
    if (leaf === 0) return -1;
    this.cacheBase = base;
    this.cacheLeaf = leaf;
    return leaf * PTRS_PER_TABLE + idx[3]!;
  }

  /** PTE slot for `vpn`, allocating the tables on the way (`pte_alloc_map`). */
  ensure(vpn: number): number {
    const s = this.lookup(vpn);
    if (s >= 0) return s;
    const a = this.arena;
    const idx = this.idx;
    split(vpn, idx);
    let parent = this.root;
    for (let level = 0; level < 2; level++) {
      const e = parent * PTRS_PER_TABLE + idx[level]!;
      let t = a.dir[e]!;
      if (t === 0) {
        t = a.allocDir();
        a.dir[e] = t;
        a.dirUsed[parent]!++;
      }
      parent = a.dir[e]!;
    }
    const e = parent * PTRS_PER_TABLE + idx[2]!;
    let leaf = a.dir[e]!;
    if (leaf === 0) {
      const base = Math.floor(vpn / PTRS_PER_TABLE) * PTRS_PER_TABLE;
      leaf = a.allocLeaf(this.mmId, base);
      a.dir[e] = leaf;
      a.dirUsed[parent]!++;
    }
    this.cacheBase = Math.floor(vpn / PTRS_PER_TABLE) * PTRS_PER_TABLE;
    this.cacheLeaf = leaf;
    return leaf * PTRS_PER_TABLE + idx[3]!;
  }

  /**
   * Calls `fn(slot, vpn)` for every non-empty PTE with `startVpn ≤ vpn < endVpn`, in address order,
   * skipping missing tables: work is proportional to the tables that exist, not to the range size.
   * `fn` may clear or rewrite the entry it is given but must not add entries.
   */
  forEachPte(startVpn: number, endVpn: number, fn: (slot: number, vpn: number) => void): void {
    this.forEachLeaf(startVpn, endVpn, (leaf, base, from, to) => {
      const flags = this.arena.pteFlags;
      const s0 = leaf * PTRS_PER_TABLE;
      for (let i = from; i < to; i++) if (flags[s0 + i] !== 0) fn(s0 + i, base + i);
    });
  }

  /** Calls `fn(leafId, baseVpn, fromIndex, toIndex)` for each existing leaf table overlapping the range. */
  forEachLeaf(
    startVpn: number,
    endVpn: number,
    fn: (leaf: number, baseVpn: number, from: number, to: number) => void,
  ): void {
    if (endVpn <= startVpn) return;
    const a = this.arena;
    const i4lo = Math.floor(startVpn / L4_SPAN);
    const i4hi = Math.floor((endVpn - 1) / L4_SPAN);
    for (let i4 = i4lo; i4 <= i4hi; i4++) {
      const pud = a.dir[this.root * PTRS_PER_TABLE + i4]!;
      if (pud === 0) continue;
      const b4 = i4 * L4_SPAN;
      const i3lo = Math.max(0, Math.floor((startVpn - b4) / 262144));
      const i3hi = Math.min(511, Math.floor((endVpn - 1 - b4) / 262144));
      for (let i3 = i3lo; i3 <= i3hi; i3++) {
        const b3 = b4 + i3 * 262144;
        const pmd = a.dir[pud * PTRS_PER_TABLE + i3]!;
        if (pmd === 0) continue;
        const i2lo = Math.max(0, Math.floor((startVpn - b3) / 512));
        const i2hi = Math.min(511, Math.floor((endVpn - 1 - b3) / 512));
        for (let i2 = i2lo; i2 <= i2hi; i2++) {
          const b2 = b3 + i2 * 512;
          const leaf = a.dir[pmd * PTRS_PER_TABLE + i2]!;
          if (leaf === 0) continue;
          fn(leaf, b2, Math.max(0, startVpn - b2), Math.min(512, endVpn - b2));
        }
      }
    }
  }

  /**
   * Frees leaf and directory tables left empty in the range (`free_pgtables`). The root stays.
   */
  freeEmptyTables(startVpn: number, endVpn: number): void {
    if (endVpn <= startVpn) return;
    const a = this.arena;
    const i4lo = Math.floor(startVpn / L4_SPAN);
    const i4hi = Math.floor((endVpn - 1) / L4_SPAN);
    for (let i4 = i4lo; i4 <= i4hi; i4++) {
      const e4 = this.root * PTRS_PER_TABLE + i4;
      const pud = a.dir[e4]!;
      if (pud === 0) continue;
      const b4 = i4 * L4_SPAN;
      const i3lo = Math.max(0, Math.floor((startVpn - b4) / 262144));
      const i3hi = Math.min(511, Math.floor((endVpn - 1 - b4) / 262144));
      for (let i3 = i3lo; i3 <= i3hi; i3++) {
        const b3 = b4 + i3 * 262144;
        const e3 = pud * PTRS_PER_TABLE + i3;
        const pmd = a.dir[e3]!;
        if (pmd === 0) continue;
        const i2lo = Math.max(0, Math.floor((startVpn - b3) / 512));
        const i2hi = Math.min(511, Math.floor((endVpn - 1 - b3) / 512));
        for (let i2 = i2lo; i2 <= i2hi; i2++) {
          const e2 = pmd * PTRS_PER_TABLE + i2;
          const leaf = a.dir[e2]!;
          if (leaf === 0 || a.leafUsed[leaf] !== 0) continue;
          if (this.cacheLeaf === leaf) this.cacheBase = -1;
          a.freeLeaf(leaf);
          a.dir[e2] = 0;
          a.dirUsed[pmd]!--;
        }
        if (a.dirUsed[pmd] === 0) {
          a.freeDir(pmd);
          a.dir[e3] = 0;
          a.dirUsed[pud]!--;
        }
      }
      if (a.dirUsed[pud] === 0) {
        a.freeDir(pud);
        a.dir[e4] = 0;
        a.dirUsed[this.root]!--;
      }
    }
  }

  /** Frees every table including the root (exit). All PTEs must already be empty. */
  destroy(): void {
    this.freeEmptyTables(0, 2 ** 35);
    this.arena.freeDir(this.root);
    this.cacheBase = -1;
  }
}
