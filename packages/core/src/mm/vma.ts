/**
 * Virtual memory areas (`struct vm_area_struct`, include/linux/mm_types.h) and the per-mm ordered
 * set of them (the maple tree, lib/maple_tree.c, here a sorted array with binary search).
 *
 * @module
 */
import { PAGE_SIZE, VM_SPECIAL, VmFlag } from './constants.js';
import type { SimFile } from './filemap.js';
import type { MmStruct } from './mm-struct.js';
import type { P2pMapTypeId, PciEndpoint } from '../pci/topology.js';

/** The device asking an exporter for a peer mapping (the `struct device *` of `p2p_map`). */
export interface P2pImporterRef {
  /** Name for messages. */
  readonly name: string;
  /** The importing device's place in the PCI topology. */
  readonly pci: PciEndpoint;
}

/**
 * What `p2pMap` returns for `[start, end)` of a special mapping: per page, the frame the importer
 * may DMA to and from, and its bus address. Frames are the exporter's peer memory (in its BAR,
 * `type` BUS_ADDR or THRU_HOST_BRIDGE) or, at the exporter's choice, system memory (`type`
 * NOT_SUPPORTED, bus address -1): the fallback when the BAR is full or the topology has no peer path.
 */
export interface P2pMapping {
  readonly start: number;
  readonly end: number;
  /** One frame per page. */
  readonly pfns: Int32Array;
  /** One bus address per page; -1 for system memory. */
  readonly bus: Float64Array;
  /** The path the importer's DMA takes. */
  readonly type: P2pMapTypeId;
  /** Whether the importer may write. */
  readonly writable: boolean;
}

/**
 * Operations of a special mapping supplied by the driver that created it (`vm_operations_struct`),
 * with the peer-to-peer operations of the 2019 linux-mm proposal (`p2p_map` / `p2p_unmap`).
 */
export interface VmOperations {
  /** Name shown in diagnostics, e.g. the device file. */
  readonly name: string;
  /**
   * CPU fault on a page with no PTE (`vm_ops->fault`): return the pfn to insert as a special PTE
   * (`vmf_insert_pfn`), or -1 to raise SIGBUS.
   */
  fault?(vma: Vma, address: number, write: boolean): number;
  /**
   * Called when a new VMA of this mapping is made from an existing one: split by mprotect or a
   * partial munmap, moved by mremap (`vm_ops->open`). A driver that revokes its mappings (an
   * exporter's `zapVmaPtes`) tracks its VMAs through `open` and `close`.
   */
  open?(vma: Vma): void;
  /** Called when the VMA is removed (`vm_ops->close`). */
  close?(vma: Vma): void;
  /**
   * An importing device asks for `[start, end)` (page aligned, inside the VMA) for DMA (`p2p_map`).
   * The exporter places the object where the importer can reach it, or falls back to system memory.
   * The mapping stays valid until a CLEAR/UNMAP invalidation of the range (`zapVmaPtes`, munmap):
   * the importer must then drop it, call {@link p2pUnmap}, and map again on its next access. Once a
   * `p2pMap` of a range has succeeded, later ones for the same range should succeed too.
   */
  p2pMap?(
    vma: Vma,
    start: number,
    end: number,
    importer: P2pImporterRef,
    write: boolean,
  ): Promise<P2pMapping>;
  /** The importer is done with a mapping from {@link p2pMap} (`p2p_unmap`). */
  p2pUnmap?(vma: Vma, mapping: P2pMapping, importer: P2pImporterRef): void;
}

/** One mapping of a contiguous range of an address space. */
export class Vma {
  constructor(
    /** Owning address space. */
    readonly mm: MmStruct,
    /** First byte (page aligned). */
    public start: number,
    /** One past the last byte (page aligned). */
    public end: number,
    /** {@link VmFlag} bits. */
    public flags: number,
    /** Backing file (a shmem file for MAP_SHARED|MAP_ANONYMOUS), or null for private anonymous memory. */
    readonly file: SimFile | null,
    /** File page offset of `start` (`vm_pgoff`); for anonymous memory, `start / PAGE_SIZE`. */
    public pgoff: number,
    /** Driver operations of a special (PFNMAP) mapping. */
    readonly ops: VmOperations | null = null,
  ) {}

  /** Length in pages. */
  get pages(): number {
    return (this.end - this.start) / PAGE_SIZE;
  }

  /** `vma_is_anonymous` and private: memory that faults in zero-filled anon pages. */
  get isAnonymous(): boolean {
    return this.file === null && this.ops === null;
  }

  /** Shared mapping (`VM_SHARED`): writes go to the file / shmem object. */
  get isShared(): boolean {
    return (this.flags & VmFlag.SHARED) !== 0;
  }

  /** A PFNMAP/IO mapping (`VM_SPECIAL`): no struct pages behind it. */
  get isSpecial(): boolean {
    return (this.flags & VM_SPECIAL) !== 0;
  }

  /** Private mapping whose writes copy on write (`is_cow_mapping`). */
  get isCow(): boolean {
    return (this.flags & (VmFlag.SHARED | VmFlag.MAYWRITE)) === VmFlag.MAYWRITE;
  }

  /** Readable by the CPU (x86: write or exec imply read). */
  get readable(): boolean {
    return (this.flags & (VmFlag.READ | VmFlag.WRITE | VmFlag.EXEC)) !== 0;
  }

  /** Writable by the CPU. */
  get writable(): boolean {
    return (this.flags & VmFlag.WRITE) !== 0;
  }

  /** File page index that address `addr` maps. */
  fileIndex(addr: number): number {
    return this.pgoff + (addr - this.start) / PAGE_SIZE;
  }

  /**
   * A copy of this VMA restricted to [start, end) (`vma_split` half, `copy_vma`, fork), for the same
   * or another mm. The driver of a special mapping is told through `ops.open` (`vm_ops->open`).
   */
  cloneRange(start: number, end: number, mm: MmStruct = this.mm): Vma {
    const v = new Vma(
      mm,
      start,
      end,
      this.flags,
      this.file,
      this.pgoff + (start - this.start) / PAGE_SIZE,
      this.ops,
    );
    this.ops?.open?.(v);
    return v;
  }

  /** True if `other` directly follows this VMA and could be merged with it (`can_vma_merge_after`). */
  canMergeWith(other: Vma): boolean {
    return (
      this.end === other.start &&
      this.flags === other.flags &&
      this.file === other.file &&
      this.ops === null &&
      other.ops === null &&
      (this.file === null || this.pgoff + this.pages === other.pgoff)
    );
  }

  toString(): string {
    return `[0x${this.start.toString(16)}-0x${this.end.toString(16)} flags 0x${this.flags.toString(16)}${this.file ? ` file ${this.file.name}` : ''}]`;
  }
}

/** The VMAs of one mm, ordered by address, non-overlapping. */
export class VmaTree {
  private readonly list: Vma[] = [];

  /** Number of VMAs (`mm->map_count`). */
  get count(): number {
    return this.list.length;
  }

  /** All VMAs in address order (a copy). */
  all(): Vma[] {
    return this.list.slice();
  }

  /** Index of the first VMA with `end > addr`. */
  private lowerBound(addr: number): number {
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.list[mid]!.end <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The VMA containing `addr`, or undefined (`vma_lookup`). */
  lookup(addr: number): Vma | undefined {
    const v = this.list[this.lowerBound(addr)];
    return v !== undefined && v.start <= addr ? v : undefined;
  }

  /** The first VMA ending above `addr` (`find_vma`), which may start above it. */
  findFrom(addr: number): Vma | undefined {
    return this.list[this.lowerBound(addr)];
  }

  /** VMAs intersecting [start, end), in order. */
  intersecting(start: number, end: number): Vma[] {
    const out: Vma[] = [];
    for (let i = this.lowerBound(start); i < this.list.length; i++) {
      const v = this.list[i]!;
      if (v.start >= end) break;
      out.push(v);
    }
    return out;
  }

  /** True if [start, end) is entirely covered by VMAs with no hole. */
  covers(start: number, end: number): boolean {
    let at = start;
    for (const v of this.intersecting(start, end)) {
      if (v.start > at) return false;
      at = v.end;
      if (at >= end) return true;
    }
    return at >= end;
  }

  /** Inserts a VMA that overlaps none. */
  insert(vma: Vma): void {
    const i = this.lowerBound(vma.start);
    const next = this.list[i];
    if (next !== undefined && next.start < vma.end) {
      throw new Error(`internal: VMA ${vma.toString()} overlaps ${next.toString()}`);
    }
    this.list.splice(i, 0, vma);
  }

  /** Removes a VMA. */
  remove(vma: Vma): void {
    const i = this.list.indexOf(vma);
    if (i < 0) throw new Error(`internal: VMA ${vma.toString()} not in tree`);
    this.list.splice(i, 1);
  }

  /** The VMA just before `vma`, if any. */
  prev(vma: Vma): Vma | undefined {
    const i = this.list.indexOf(vma);
    return i > 0 ? this.list[i - 1] : undefined;
  }

  /** The VMA just after `vma`, if any. */
  next(vma: Vma): Vma | undefined {
    const i = this.list.indexOf(vma);
    return i >= 0 ? this.list[i + 1] : undefined;
  }
}
