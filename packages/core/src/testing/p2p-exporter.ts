/**
 * Test-only: the smallest correct peer-to-peer exporter. It owns one object of `pages` pages that it
 * keeps either in its BAR window (peer memory, a p2pdma run) or in system memory; `mmap` of its device
 * file gives a VM_PFNMAP mapping whose `p2pMap` returns wherever the object lives now, after placing it
 * in the BAR if the importer can reach the BAR and it has room, else falling back to system memory.
 * `move` relocates the object at any time: zap, copy, free the old place. Not part of the package.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import { MapFlag, PAGE_SIZE, Prot } from '../mm/constants.js';
import { zapVmaPtes } from '../mm/memory.js';
import type { MmStruct } from '../mm/mm-struct.js';
import type { Process } from '../mm/process.js';
import type { P2pImporterRef, P2pMapping, Vma, VmOperations } from '../mm/vma.js';
import type { P2pdmaResource } from '../pci/p2pdma.js';
import { P2pMapType } from '../pci/topology.js';
import type { PciEndpoint, PciTopology } from '../pci/topology.js';
import type { Machine } from '../system/machine.js';

/** Where the object is. */
export type ObjectPlace = 'bar' | 'system';

/** A p2p exporter with one object. */
export class TestP2pExporter {
  /** Frames holding the object now (a BAR run, or system pages the exporter references). */
  frames: Int32Array;
  place: ObjectPlace = 'system';
  /** Mappings of the device file, as created by {@link mmap}. */
  readonly vmas = new Set<Vma>();
  /** Address spaces that mapped the device file. */
  private readonly mms = new Set<MmStruct>();
  /** p2pMap calls served, by place. */
  readonly served = { bar: 0, system: 0 };
  private barRun = -1;
  /** Set by {@link teardown}: CPU faults SIGBUS, `p2pMap` and `move` fail with ENODEV. */
  dead = false;
  readonly ops: VmOperations;

  constructor(
    readonly m: Machine,
    readonly topology: PciTopology,
    readonly pci: PciEndpoint,
    readonly bar: P2pdmaResource,
    readonly pages: number,
  ) {
    this.frames = new Int32Array(pages);
    for (let i = 0; i < pages; i++) this.frames[i] = this.allocSystem();
    this.ops = {
      name: `${pci.name}-file`,
      fault: (vma, address) => (this.dead ? -1 : this.frames[this.index(vma, address)]!),
      open: (vma) => {
        this.vmas.add(vma);
      },
      close: (vma) => {
        this.vmas.delete(vma);
      },
      p2pMap: (vma, start, end, importer) => this.p2pMap(vma, start, end, importer),
      p2pUnmap: () => {},
    };
  }

  private allocSystem(): number {
    const pfn = this.m.mm.mem.alloc();
    if (pfn < 0) throw new HmmError('ENOMEM', 'test exporter: no system page for the object');
    return pfn;
  }

  private index(vma: Vma, address: number): number {
    return (address - vma.start) / PAGE_SIZE + vma.pgoff;
  }

  /** `mmap` of the device file in `p`: the whole object, shared. */
  async mmap(p: Process, prot = Prot.READ | Prot.WRITE): Promise<number> {
    const a = await p.mmap({ length: this.pages * PAGE_SIZE, prot, flags: MapFlag.SHARED, ops: this.ops });
    this.vmas.add(p.mm.vmas.lookup(a)!);
    this.mms.add(p.mm);
    return a;
  }

  /**
   * `zapVmaPtes` over every mapping of the device file, found by its ops in each address space that
   * mapped it (like `unmap_mapping_range` walking the file's mappings): a mapping split by mprotect
   * or moved by mremap is a new VMA the exporter was never told about (there is no `vm_ops->open`).
   */
  private async revokeAll(): Promise<void> {
    // A CPU fault on one mapping while another is being zapped maps the old frame again, and the
    // fault op cannot wait for the move: zap again until no PTE is left. Each extra round needs a
    // fault in the previous one, so this ends when the faulting tasks do.
    do {
      for (const mm of [...this.mms]) {
        if (mm.state !== 'live') {
          this.mms.delete(mm);
          continue;
        }
        for (const vma of this.fileVmas(mm)) {
          if (mm.state === 'live' && mm.vmas.lookup(vma.start) === vma)
            await zapVmaPtes(vma, vma.start, vma.end - vma.start);
        }
      }
    } while (this.anyCpuPte());
  }

  private fileVmas(mm: MmStruct): Vma[] {
    return mm.vmas.all().filter((v) => v.ops === this.ops);
  }

  /** True if some mapping of the device file has a PTE. */
  private anyCpuPte(): boolean {
    const flags = this.m.mm.arena.pteFlags;
    let found = false;
    for (const mm of this.mms) {
      if (mm.state !== 'live') continue;
      for (const vma of this.fileVmas(mm)) {
        mm.pgtable.forEachPte(vma.start / PAGE_SIZE, vma.end / PAGE_SIZE, (slot) => {
          if (flags[slot] !== 0) found = true;
        });
      }
    }
    return found;
  }

  private gone(what: string): HmmError {
    return new HmmError('ENODEV', `test exporter ${this.pci.name}: ${what} after teardown`);
  }

  private async p2pMap(vma: Vma, start: number, end: number, importer: P2pImporterRef): Promise<P2pMapping> {
    if (this.dead) throw this.gone('p2pMap');
    await Promise.resolve();
    if (this.dead) throw this.gone('p2pMap');
    const reach = this.topology.distance(this.pci, importer.pci).type;
    if (reach !== P2pMapType.NOT_SUPPORTED && this.place === 'system') await this.move('bar');
    const n = (end - start) / PAGE_SIZE;
    const first = this.index(vma, start);
    const pfns = this.frames.slice(first, first + n);
    const useBar = this.place === 'bar' && reach !== P2pMapType.NOT_SUPPORTED;
    if (!useBar && this.place === 'bar') {
      // This importer cannot reach the BAR: the object goes to system memory for everyone.
      await this.move('system');
      return this.p2pMap(vma, start, end, importer);
    }
    const bus = new Float64Array(n).fill(-1);
    if (useBar) for (let i = 0; i < n; i++) bus[i] = this.bar.toBus(pfns[i]!);
    this.served[useBar ? 'bar' : 'system']++;
    return {
      start,
      end,
      pfns,
      bus,
      type: useBar ? reach : P2pMapType.NOT_SUPPORTED,
      writable: vma.writable,
    };
  }

  /**
   * Moves the object (`'bar'` falls back to `'system'` when the BAR is full): revoke every mapping
   * with `zapVmaPtes`, copy, free the old place. Returns where it went. ENODEV after {@link teardown}.
   */
  async move(to: ObjectPlace): Promise<ObjectPlace> {
    if (this.dead) throw this.gone('move');
    // Get the new place first: if the BAR is full and the object is already in system memory,
    // nothing changes (no needless revocation, which would make importers map again forever).
    let run = -1;
    let place: ObjectPlace = to;
    if (to === 'bar') {
      run = this.bar.alloc(this.pages);
      if (run < 0) place = 'system';
    }
    if (place === 'system' && this.place === 'system' && to === 'bar') return 'system';
    await this.revokeAll();
    if (this.dead) {
      // Torn down while revoking: nothing left to copy from.
      if (run >= 0) this.bar.free(run);
      throw this.gone('move');
    }
    const mem = this.m.mm.mem;
    const next = new Int32Array(this.pages);
    for (let i = 0; i < this.pages; i++) {
      next[i] = place === 'bar' ? run + i : this.allocSystem();
      mem.copyFrame(next[i]!, this.frames[i]!);
    }
    this.release();
    this.frames = next;
    this.place = place;
    this.barRun = run;
    return place;
  }

  private release(): void {
    if (this.place === 'bar') this.bar.free(this.barRun);
    else for (const pfn of this.frames) this.m.mm.putPage(pfn);
    this.barRun = -1;
  }

  /**
   * Exporter teardown: revoke every importer, then free the memory. Afterwards CPU access to the
   * device-file mappings raises SIGBUS and `p2pMap` fails with ENODEV. Idempotent.
   */
  async teardown(): Promise<void> {
    if (this.dead) return;
    this.dead = true;
    await this.revokeAll();
    this.release();
    this.frames = new Int32Array(0);
  }
}
