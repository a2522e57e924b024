/**
 * Test-only: the smallest correct driver of device memory, used by the core's own tests. It migrates
 * exactly as `lib/test_hmm.c` sequences `migrate_vma`: setup, allocate and copy, pages, finalize.
 * Copies are CPU copies, or transfers of an optional {@link CopyEngine}; when a transfer stops early
 * the driver abandons, page by page, the entries whose data did not arrive (their destination is
 * cleared and freed) and commits the rest. It can also access memory as its device would
 * ({@link TestDevmemDriver.deviceRead}, {@link TestDevmemDriver.deviceWrite}) and take a page
 * device-exclusive. Not part of the published package.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { makeDeviceExclusive } from '../mm/device-exclusive.js';
import { MemoryType, unlockPage } from '../mm/memremap.js';
import type { MemoryTypeId, MigrateToRamFault } from '../mm/memremap.js';
import {
  migrateVmaArgs,
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
import { PteType, pteType } from '../mm/pgtable.js';
import type { Process } from '../mm/process.js';
import type { CopyDirection, CopyEngine, CopyPage } from '../device/copy-engine.js';
import { HmmDevmem } from '../device/hmm-devmem.js';
import type { Machine } from '../system/machine.js';
import { P } from './fixtures.js';

/** A device-memory driver doing CPU copies, or copy-engine transfers when given an engine. */
export class TestDevmemDriver {
  readonly devmem: HmmDevmem;
  /** CPU faults served by `migrateToRam`. */
  faultsToRam = 0;
  /** `address` of the last `migrateToRam` fault, or -1. */
  lastFaultAddress = -1;
  /** Device reads and writes served straight from this device's own frames. */
  localAccesses = 0;
  /** `cpages` of the last {@link toDevice} (entries collected by setup). */
  lastCollected = 0;
  /** Entries of the last migration (either way) whose copy did not arrive and that were abandoned. */
  lastAbandoned = 0;

  constructor(
    readonly m: Machine,
    readonly type: MemoryTypeId = MemoryType.DEVICE_PRIVATE,
    capacityPages = 64,
    readonly owner: object = {},
    /** Copies with this engine instead of the CPU; migrations must then run inside a task. */
    readonly engine: CopyEngine | null = null,
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
      const args = migrateVmaArgs({
        vma,
        start: addr,
        end: addr + npages * P,
        pgmapOwner: this.owner,
        flags: MigrateVmaSelect.SYSTEM,
      });
      await migrateVmaSetup(args);
      this.lastCollected = args.cpages;
      await this.allocAndCopy(args);
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
    const args = migrateVmaArgs({
      vma,
      start: addr,
      end: addr + npages * P,
      pgmapOwner: this.owner,
      flags: this.selectDevice(),
      faultPage,
    });
    await migrateVmaSetup(args);
    const mem = this.m.mm.mem;
    const copies: number[] = [];
    for (let i = 0; i < npages; i++) {
      const s = migratePfnToPfn(args.src[i]!);
      if (s < 0 || (args.src[i]! & MigratePfn.MIGRATE) === 0) continue;
      const d = await this.m.mm.allocPage();
      mem.flags[d]! |= PG.LOCKED;
      args.dst[i] = migratePfn(d);
      copies.push(i);
    }
    await this.copyOrAbandon(args, copies, 'd2h');
    await migrateVmaPages(args);
    let moved = 0;
    for (let i = 0; i < npages; i++) if ((args.src[i]! & MigratePfn.MIGRATE) !== 0) moved++;
    migrateVmaFinalize(args);
    return moved;
  }

  private async allocAndCopy(args: MigrateVma): Promise<void> {
    const mem = this.m.mm.mem;
    const n = args.npages;
    const copies: number[] = [];
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
      args.dst[i] = migratePfn(d);
      if (s >= 0) copies.push(i); // an empty slot needs no copy: the new page reads as zeros
    }
    await this.copyOrAbandon(args, copies, 'h2d');
  }

  /**
   * Copies `src[i]` to `dst[i]` for each listed entry, as one transfer. Entries whose data did not
   * arrive lose their destination (unlocked and freed), so the migration leaves them where they are.
   */
  private async copyOrAbandon(args: MigrateVma, idx: readonly number[], dir: CopyDirection): Promise<void> {
    this.lastAbandoned = 0;
    if (idx.length === 0) return;
    const ctx = this.m.mm;
    const mem = ctx.mem;
    let copied: number;
    if (this.engine === null) {
      for (const i of idx) mem.copyFrame(migratePfnToPfn(args.dst[i]!), migratePfnToPfn(args.src[i]!));
      copied = idx.length;
    } else {
      const page = (e: number): CopyPage => ({ store: mem.content, index: migratePfnToPfn(e) });
      const r = await this.engine.copy(
        idx.map((i) => page(args.src[i]!)),
        idx.map((i) => page(args.dst[i]!)),
        dir,
      );
      copied = r.copied;
    }
    for (let k = copied; k < idx.length; k++) {
      const i = idx[k]!;
      const d = migratePfnToPfn(args.dst[i]!);
      args.dst[i] = 0;
      unlockPage(ctx, d);
      ctx.putPage(d);
      this.lastAbandoned++;
    }
  }

  private async migrateToRam(f: MigrateToRamFault): Promise<void> {
    this.faultsToRam++;
    this.lastFaultAddress = f.address;
    const moved = await this.backToRam(f.vma, f.address, 1, f.page);
    if (moved === 0 && this.lastAbandoned > 0) {
      throw new HmmError('EIO', `testdev: the copy of device page ${hex(f.page)} to RAM failed`);
    }
  }

  /**
   * Runs `fn` on this device's own frame behind `addr` in `p` when the CPU entry there is one of its
   * device-private entries (writable, for a write), under the mmap lock; returns undefined otherwise.
   * EFAULT when the mapping does not allow the access.
   */
  private async onLocalFrame<T>(
    p: Process,
    addr: number,
    write: boolean,
    fn: (pfn: number) => T,
  ): Promise<T | undefined> {
    const mm = p.mm;
    const ctx = this.m.mm;
    await mm.mmapLock.read();
    try {
      const vma = mm.vmas.lookup(addr);
      if (vma === undefined || !(write ? vma.writable : vma.readable)) {
        throw new HmmError('EFAULT', `testdev: the device cannot ${write ? 'write' : 'read'} ${hex(addr)}`);
      }
      const slot = mm.pgtable.lookup(Math.floor(addr / P));
      if (slot < 0) return undefined;
      const t = pteType(ctx.arena.pteFlags[slot]!);
      const pfn = ctx.arena.pteVal[slot]!;
      const ok = write
        ? t === PteType.DEVICE_PRIVATE_WRITE
        : t === PteType.DEVICE_PRIVATE_WRITE || t === PteType.DEVICE_PRIVATE_READ;
      if (!ok || !this.devmem.owns(pfn)) return undefined;
      this.localAccesses++;
      return fn(pfn);
    } finally {
      mm.mmapLock.readUnlock();
    }
  }

  /**
   * Reads `len` bytes at `addr` (inside one page) as the device would: straight from its own frame
   * when the page is in its device-private memory, otherwise through the CPU path (which faults the
   * page in, migrating it back to RAM if it is another device's private page).
   */
  async deviceRead(p: Process, addr: number, len: number): Promise<Uint8Array> {
    checkOnePage(addr, len);
    const out = new Uint8Array(len);
    const content = this.m.mm.mem.content;
    const done = await this.onLocalFrame(p, addr, false, (pfn) => {
      content.read(pfn, addr % P, out, 0, len);
      return true;
    });
    return done === true ? out : p.read(addr, len);
  }

  /**
   * Writes `data` at `addr` (inside one page) as the device would: straight into its own frame when
   * the page is in its device-private memory and mapped writable, otherwise through the CPU path
   * (a read-only device-private entry, shared after fork, is migrated back and copied on write).
   */
  async deviceWrite(p: Process, addr: number, data: Uint8Array): Promise<void> {
    checkOnePage(addr, data.length);
    const content = this.m.mm.mem.content;
    const done = await this.onLocalFrame(p, addr, true, (pfn) => {
      content.write(pfn, addr % P, data, 0, data.length);
      return true;
    });
    if (done !== true) await p.write(addr, data);
  }

  /**
   * Takes the page at `addr` device-exclusive for atomics (`make_device_exclusive`), then lets go of
   * the page as the driver does once it has mapped it; returns the frame. The next CPU access ends it.
   */
  async makeExclusive(p: Process, addr: number): Promise<number> {
    const mm = p.mm;
    const ctx = this.m.mm;
    await mm.mmapLock.read();
    try {
      const pfn = await makeDeviceExclusive(mm, addr, this.owner);
      unlockPage(ctx, pfn);
      ctx.putPage(pfn);
      return pfn;
    } finally {
      mm.mmapLock.readUnlock();
    }
  }
}

function checkOnePage(addr: number, len: number): void {
  if (len <= 0 || Math.floor(addr / P) !== Math.floor((addr + len - 1) / P)) {
    throw new HmmError(
      'EINVAL',
      `testdev: a device access of ${len} bytes at ${hex(addr)} must stay in one page`,
    );
  }
}
