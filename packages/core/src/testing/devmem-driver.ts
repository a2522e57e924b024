/**
 * Test-only: the smallest correct driver of device memory, used by the core's own tests. It migrates
 * with CPU copies (no device, no copy engine) exactly as `lib/test_hmm.c` sequences `migrate_vma`:
 * setup, allocate and copy, pages, finalize. Not part of the published package.
 *
 * @module
 */
import { MemoryType } from '../mm/memremap.js';
import type { MemoryTypeId, MigrateToRamFault } from '../mm/memremap.js';
import {
  MigratePfn,
  MigrateVmaSelect,
  migratePfn,
  migratePfnToPfn,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
} from '../mm/migrate-device.js';
import type { MigrateVma } from '../mm/migrate-device.js';
import { PG } from '../mm/page-flags.js';
import type { Process } from '../mm/process.js';
import { HmmDevmem } from '../device/hmm-devmem.js';
import type { Machine } from '../system/machine.js';
import { P } from './fixtures.js';

/** A device-memory driver doing CPU copies. */
export class TestDevmemDriver {
  readonly devmem: HmmDevmem;
  /** CPU faults served by `migrateToRam`. */
  faultsToRam = 0;

  constructor(
    readonly m: Machine,
    readonly type: MemoryTypeId = MemoryType.DEVICE_PRIVATE,
    capacityPages = 64,
    readonly owner: object = {},
  ) {
    this.devmem = new HmmDevmem(
      m.mm,
      type === MemoryType.DEVICE_PRIVATE ? { migrateToRam: (f) => this.migrateToRam(f) } : {},
      { type, owner, capacityBytes: capacityPages * P, chunkBytes: 16 * P, name: 'testdev' },
    );
  }

  private selectDevice(): number {
    return this.type === MemoryType.DEVICE_PRIVATE
      ? MigrateVmaSelect.DEVICE_PRIVATE
      : MigrateVmaSelect.DEVICE_COHERENT;
  }

  /** Migrates `[addr, addr + npages·P)` of `p` to device memory; returns the pages that moved. */
  async toDevice(p: Process, addr: number, npages: number): Promise<number> {
    const mm = p.mm;
    await mm.mmapLock.read();
    try {
      const vma = mm.vmas.lookup(addr)!;
      const args: MigrateVma = {
        vma,
        start: addr,
        end: addr + npages * P,
        src: new Float64Array(npages),
        dst: new Float64Array(npages),
        pgmapOwner: this.owner,
        flags: MigrateVmaSelect.SYSTEM,
        cpages: 0,
        npages: 0,
      };
      await migrateVmaSetup(args);
      this.allocAndCopy(args);
      await migrateVmaPages(args);
      let moved = 0;
      for (let i = 0; i < npages; i++) if ((args.src[i]! & MigratePfn.MIGRATE) !== 0) moved++;
      migrateVmaFinalize(args);
      return moved;
    } finally {
      mm.mmapLock.readUnlock();
    }
  }

  /** Migrates the device pages of `[addr, addr + npages·P)` back to RAM; returns the pages moved. */
  async toSystem(p: Process, addr: number, npages: number): Promise<number> {
    const mm = p.mm;
    await mm.mmapLock.read();
    try {
      return await this.backToRam(mm.vmas.lookup(addr)!, addr, npages, -1);
    } finally {
      mm.mmapLock.readUnlock();
    }
  }

  private async backToRam(
    vma: MigrateVma['vma'],
    addr: number,
    npages: number,
    faultPage: number,
  ): Promise<number> {
    const args: MigrateVma = {
      vma,
      start: addr,
      end: addr + npages * P,
      src: new Float64Array(npages),
      dst: new Float64Array(npages),
      pgmapOwner: this.owner,
      flags: this.selectDevice(),
      faultPage,
      cpages: 0,
      npages: 0,
    };
    await migrateVmaSetup(args);
    const mem = this.m.mm.mem;
    for (let i = 0; i < npages; i++) {
      const s = migratePfnToPfn(args.src[i]!);
      if (s < 0 || (args.src[i]! & MigratePfn.MIGRATE) === 0) continue;
      const d = await this.m.mm.allocPage();
      mem.flags[d]! |= PG.LOCKED;
      mem.copyFrame(d, s);
      args.dst[i] = migratePfn(d);
    }
    await migrateVmaPages(args);
    let moved = 0;
    for (let i = 0; i < npages; i++) if ((args.src[i]! & MigratePfn.MIGRATE) !== 0) moved++;
    migrateVmaFinalize(args);
    return moved;
  }

  private allocAndCopy(args: MigrateVma): void {
    const mem = this.m.mm.mem;
    const n = args.npages;
    for (let i = 0; i < n; i++) {
      const e = args.src[i]!;
      if ((e & MigratePfn.MIGRATE) === 0) continue;
      const s = migratePfnToPfn(e);
      if (s >= 0 && (mem.flags[s]! & PG.ZONE_DEVICE) !== 0) continue; // already device memory
      let d: number;
      try {
        d = this.devmem.allocPage();
      } catch {
        continue; // allocation failure: this page stays
      }
      if (s >= 0) mem.copyFrame(d, s);
      args.dst[i] = migratePfn(d);
    }
  }

  private async migrateToRam(f: MigrateToRamFault): Promise<void> {
    this.faultsToRam++;
    await this.backToRam(f.vma, f.address, 1, f.page);
  }
}
