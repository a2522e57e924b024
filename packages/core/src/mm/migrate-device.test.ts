import { describe, expect, it } from 'vitest';
import { ANON, P, RW, pfnAt, setup } from '../testing/fixtures.js';
import { HmmPfn, hmmPfnFlags, hmmPfnToPfn } from '../hmm/hmm-range-fault.js';
import { hmmRangeFaultLoop } from '../hmm/hmm-range-fault-loop.js';
import { mmuIntervalNotifierInsert } from '../hmm/mmu-interval-notifier.js';
import { Mutex } from '../sim/locks.js';
import { TestDevmemDriver } from '../testing/devmem-driver.js';
import { Foll, MapFlag, Prot } from './constants.js';
import { MemoryType, memremapPages, memunmapPages } from './memremap.js';
import {
  MigratePfn,
  MigrateVmaSelect,
  migratePfn,
  migratePfnFlags,
  migratePfnToPfn,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaArgs,
  migrateVmaSetup,
} from './migrate-device.js';
import type { MigrateVma } from './migrate-device.js';
import { RssCounter } from './mm-struct.js';
import { Pte, PteType, pteType } from './pgtable.js';
import type { Machine } from '../system/machine.js';
import type { Process } from './process.js';

function entryType(m: Machine, p: Process, addr: number): number {
  const slot = p.mm.pgtable.lookup(addr / P);
  return slot < 0 ? -1 : pteType(m.mm.arena.pteFlags[slot]!);
}

async function filled(p: Process, pages: number): Promise<number> {
  const a = await p.mmap({ length: pages * P, prot: RW, flags: ANON });
  for (let i = 0; i < pages; i++) await p.writeU32(a + i * P, 1000 + i);
  return a;
}

describe('migrateVmaArgs', () => {
  it('sizes src and dst to the range and refuses an empty one', async () => {
    const { p } = setup();
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: ANON });
    const vma = p.mm.vmas.lookup(a)!;
    const args = migrateVmaArgs({
      vma,
      start: a,
      end: a + 3 * P,
      pgmapOwner: 1,
      flags: MigrateVmaSelect.SYSTEM,
    });
    expect([args.src.length, args.dst.length, args.cpages, args.npages, args.faultPage]).toEqual([
      3,
      3,
      0,
      0,
      undefined,
    ]);
    expect(
      migrateVmaArgs({ vma, start: a, end: a + P, pgmapOwner: 1, flags: 0, faultPage: 9 }).faultPage,
    ).toBe(9);
    expect(() => migrateVmaArgs({ vma, start: a, end: a, pgmapOwner: 1, flags: 0 })).toThrow(/EINVAL/);
  });
});

describe('migrate pfn entries', () => {
  it('encode a frame above the flag bits', () => {
    const e = migratePfn(0x12345) | MigratePfn.MIGRATE;
    expect(migratePfnToPfn(e)).toBe(0x12345);
    expect(migratePfnFlags(e)).toBe(MigratePfn.VALID | MigratePfn.MIGRATE);
    expect(migratePfnToPfn(MigratePfn.MIGRATE)).toBe(-1);
  });
});

describe('memremap_pages', () => {
  it('refuses a private pagemap without migrateToRam, an owner or a free op', () => {
    const { m } = setup();
    const ops = { pageFree: () => {} };
    expect(() =>
      memremapPages(m.mm, { type: MemoryType.DEVICE_PRIVATE, bytes: 16 * P, owner: {}, ops }),
    ).toThrow(/migrateToRam/);
    expect(() =>
      memremapPages(m.mm, { type: MemoryType.DEVICE_COHERENT, bytes: 16 * P, owner: null, ops }),
    ).toThrow(/owner/);
    expect(() =>
      memremapPages(m.mm, { type: MemoryType.DEVICE_COHERENT, bytes: 16 * P, owner: {}, ops: {} as never }),
    ).toThrow(/pageFree/);
    expect(() =>
      memremapPages(m.mm, { type: MemoryType.DEVICE_COHERENT, bytes: 100, owner: {}, ops }),
    ).toThrow(/pages/);
    expect(m.mm.mem.nrFrames).toBe(m.mm.mem.nrRamFrames);
  });

  it('adds device frames above RAM, reuses them after removal, refuses removal twice', () => {
    const { m } = setup();
    const ops = { pageFree: () => {} };
    const a = memremapPages(m.mm, { type: MemoryType.DEVICE_COHERENT, bytes: 16 * P, owner: {}, ops });
    expect(a.basePfn).toBe(m.mm.mem.nrRamFrames);
    memunmapPages(m.mm, a);
    expect(() => memunmapPages(m.mm, a)).toThrow(/already removed/);
    const b = memremapPages(m.mm, { type: MemoryType.DEVICE_COHERENT, bytes: 16 * P, owner: {}, ops });
    expect(b.basePfn).toBe(a.basePfn);
    expect(m.mm.mem.nrFrames).toBe(m.mm.mem.nrRamFrames + 16);
  });
});

describe('migrate_vma to device-private memory and back', () => {
  it('leaves device-private entries that count in RSS; a CPU read migrates the page back', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 4);
    expect(await drv.toDevice(p, a, 4)).toBe(4);
    expect(entryType(m, p, a)).toBe(PteType.DEVICE_PRIVATE_WRITE);
    expect(p.mm.rss[RssCounter.ANON]).toBe(4);
    expect(m.stats().usedPages).toBe(0);
    expect(drv.devmem.nrAllocated).toBe(4);
    m.checkInvariants();
    expect(await p.readU32(a + 2 * P)).toBe(1002);
    expect(drv.faultsToRam).toBe(1);
    expect(entryType(m, p, a + 2 * P)).toBe(PteType.NONE);
    expect(drv.devmem.nrAllocated).toBe(3);
    m.checkInvariants();
    expect(await drv.toSystem(p, a, 4)).toBe(3);
    for (let i = 0; i < 4; i++) expect(await p.readU32(a + i * P)).toBe(1000 + i);
    // 4 pages out, 1 back by the CPU fault, 3 back by MIGRATE_TO_SYS.
    expect(m.trace.counter('mm.migrate.pages')).toBe(8);
    expect(m.trace.counter('mm.fault.device-private')).toBe(1);
    expect(drv.devmem.nrAllocated).toBe(0);
    m.checkInvariants();
  });

  it('fills empty and zero-page slots with zeroed device pages', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.readU32(a + P); // zero page
    expect(await drv.toDevice(p, a, 2)).toBe(2);
    expect(await p.readU32(a)).toBe(0);
    expect(await p.readU32(a + P)).toBe(0);
    m.checkInvariants();
  });

  it('does not collect pinned pages, shared-memory pages go nowhere', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 2);
    const pins = await p.pinUserPages(a, 1, 0);
    expect(await drv.toDevice(p, a, 2)).toBe(1);
    p.unpinUserPages(pins);
    const s = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.writeU32(s, 7);
    expect(await drv.toDevice(p, s, 1)).toBe(0);
    expect(await p.readU32(s)).toBe(7);
    expect(drv.devmem.nrAllocated).toBe(1);
    m.checkInvariants();
  });

  it('fork shares a device page read-only; a write in the parent migrates back and copies', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 2);
    await drv.toDevice(p, a, 2);
    const c = await p.fork();
    expect(entryType(m, p, a)).toBe(PteType.DEVICE_PRIVATE_READ);
    expect(entryType(m, c, a)).toBe(PteType.DEVICE_PRIVATE_READ);
    m.checkInvariants();
    await p.writeU32(a, 5);
    expect(await p.readU32(a)).toBe(5);
    expect(await c.readU32(a)).toBe(1000);
    expect(await c.readU32(a + P)).toBe(1001);
    m.checkInvariants();
    await c.exit();
    await p.exit();
    expect(drv.devmem.nrAllocated).toBe(0);
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
  });

  it('GUP faults a device-private page back to RAM', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 1);
    await drv.toDevice(p, a, 1);
    const pfns = await p.getUserPages(a, 1, 0);
    expect(pfns[0]).toBeLessThan(m.mm.mem.nrRamFrames);
    p.putUserPages(pfns);
    expect(drv.devmem.nrAllocated).toBe(0);
  });

  it('munmap drops device pages; release evicts what is left', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 4);
    await drv.toDevice(p, a, 4);
    await p.munmap(a, 2 * P);
    expect(drv.devmem.nrAllocated).toBe(2);
    await drv.devmem.release();
    expect(drv.devmem.nrAllocated).toBe(0);
    expect(entryType(m, p, a + 2 * P)).toBe(PteType.NONE);
    expect(await p.readU32(a + 3 * P)).toBe(1003);
    m.checkInvariants();
  });

  it('mprotect read-only makes device-private entries read-only', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 1);
    await drv.toDevice(p, a, 1);
    await p.mprotect(a, P, Prot.READ);
    expect(entryType(m, p, a)).toBe(PteType.DEVICE_PRIVATE_READ);
    m.checkInvariants();
  });
});

describe('migrate_vma_setup errors', () => {
  it('rejects bad ranges and leaves the page table alone', async () => {
    const { m, p } = setup();
    const a = await filled(p, 2);
    const vma = p.mm.vmas.lookup(a)!;
    const base: MigrateVma = {
      vma,
      start: a,
      end: a + 2 * P,
      src: new Float64Array(2),
      dst: new Float64Array(2),
      pgmapOwner: {},
      flags: MigrateVmaSelect.SYSTEM,
      cpages: 0,
      npages: 0,
    };
    await p.mm.mmapLock.read();
    try {
      await expect(migrateVmaSetup({ ...base, end: a })).rejects.toThrow(/EINVAL.*empty/);
      await expect(migrateVmaSetup({ ...base, start: a + 1 })).rejects.toThrow(/aligned/);
      await expect(migrateVmaSetup({ ...base, end: a + 3 * P })).rejects.toThrow(/inside/);
      await expect(migrateVmaSetup({ ...base, src: new Float64Array(1) })).rejects.toThrow(/at least 2/);
      await expect(migrateVmaSetup({ ...base, flags: 64 })).rejects.toThrow(/select flags/);
      await expect(migrateVmaSetup({ ...base, faultPage: 3 })).rejects.toThrow(/faultPage/);
    } finally {
      p.mm.mmapLock.readUnlock();
    }
    await expect(migrateVmaSetup(base)).rejects.toThrow(/mmap lock/);
    expect(entryType(m, p, a)).toBe(PteType.NONE);
    m.checkInvariants();
  });
});

describe('device-coherent memory', () => {
  it('maps coherent pages by normal PTEs; plain GUP keeps them, FOLL_LONGTERM moves them to RAM', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m, MemoryType.DEVICE_COHERENT);
    const a = await filled(p, 2);
    expect(await drv.toDevice(p, a, 2)).toBe(2);
    const slot = p.mm.pgtable.lookup(a / P);
    expect(m.mm.arena.pteFlags[slot]! & Pte.PRESENT).toBe(Pte.PRESENT);
    expect(m.mm.arena.pteVal[slot]).toBeGreaterThanOrEqual(m.mm.mem.nrRamFrames);
    expect(await p.readU32(a)).toBe(1000); // the CPU reads device memory directly
    const got = await p.getUserPages(a, 1, 0);
    expect(got[0]).toBeGreaterThanOrEqual(m.mm.mem.nrRamFrames);
    p.putUserPages(got);
    const pinned = await p.pinUserPages(a + P, 1, Foll.LONGTERM);
    expect(pinned[0]).toBeLessThan(m.mm.mem.nrRamFrames);
    expect(await p.readU32(a + P)).toBe(1001);
    p.unpinUserPages(pinned);
    expect(drv.devmem.nrAllocated).toBe(1);
    m.checkInvariants();
    expect(await drv.toSystem(p, a, 2)).toBe(1);
    expect(drv.devmem.nrAllocated).toBe(0);
    expect(await p.readU32(a)).toBe(1000);
    m.checkInvariants();
  });

  it('a CPU write to a coherent page shared by fork copies it into RAM', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m, MemoryType.DEVICE_COHERENT);
    const a = await filled(p, 1);
    await drv.toDevice(p, a, 1);
    const c = await p.fork();
    await c.writeU32(a, 9);
    expect(await p.readU32(a)).toBe(1000);
    expect(await c.readU32(a)).toBe(9);
    expect(pfnAt(m, c, a)).toBeLessThan(m.mm.mem.nrRamFrames);
    m.checkInvariants();
  });
});

describe('hmm_range_fault and device-private pages', () => {
  it("reports the owner's pages with the device frame and faults other owners' pages back", async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 2);
    await drv.toDevice(p, a, 2);
    const sub = mmuIntervalNotifierInsert(p.mm, a, 2 * P, { invalidate: () => true });
    const run = (owner: unknown, flags: number) =>
      hmmRangeFaultLoop({
        notifier: sub,
        start: a,
        end: a + 2 * P,
        defaultFlags: flags,
        devPrivateOwner: owner,
        driverLock: new Mutex(m.sched, 'l'),
        commit: () => {},
      });
    const mine = await m.sched.runTask('mine', () => run(drv.owner, HmmPfn.REQ_FAULT | HmmPfn.REQ_WRITE));
    expect(hmmPfnFlags(mine.hmmPfns[0]!)).toBe(HmmPfn.VALID | HmmPfn.WRITE);
    expect(hmmPfnToPfn(mine.hmmPfns[0]!)).toBeGreaterThanOrEqual(m.mm.mem.nrRamFrames);
    expect(drv.faultsToRam).toBe(0);
    const snap = await m.sched.runTask('snap', () => run({}, 0));
    expect(snap.hmmPfns[0]).toBe(0);
    const other = await m.sched.runTask('other', () => run({}, HmmPfn.REQ_FAULT));
    expect(drv.faultsToRam).toBe(2);
    expect(hmmPfnToPfn(other.hmmPfns[1]!)).toBeLessThan(m.mm.mem.nrRamFrames);
    expect(await p.readU32(a + P)).toBe(1001);
    m.checkInvariants();
  });
});

describe('races with a migration in flight', () => {
  it('a CPU access during the copy waits on the migration entry and sees the data', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 1);
    const owner = drv.owner;
    const seen: string[] = [];
    m.sched.spawn('migrate', async () => {
      await p.mm.mmapLock.read();
      const args = migrateVmaArgs({
        vma: p.mm.vmas.lookup(a)!,
        start: a,
        end: a + P,
        pgmapOwner: owner,
        flags: MigrateVmaSelect.SYSTEM,
      });
      await migrateVmaSetup(args);
      seen.push(`setup ${entryType(m, p, a)}`);
      const d = drv.devmem.allocPage();
      m.mm.mem.copyFrame(d, migratePfnToPfn(args.src[0]!));
      args.dst[0] = migratePfn(d);
      await m.sched.sleep(50_000); // the copy takes time
      await migrateVmaPages(args);
      migrateVmaFinalize(args);
      seen.push('finalized');
      p.mm.mmapLock.readUnlock();
    });
    m.sched.spawn('cpu', async () => {
      await m.sched.sleep(10_000);
      const v = await p.readU32(a);
      seen.push(`cpu read ${v}`);
    });
    await m.sched.run();
    expect(seen).toEqual([`setup ${PteType.MIGRATION_WRITE}`, 'finalized', 'cpu read 1000']);
    expect(drv.faultsToRam).toBe(1); // the read found the device-private entry and migrated back
    m.checkInvariants();
  });

  it('munmap during the migration drops the page; finalize frees both frames', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await filled(p, 2);
    m.sched.spawn('migrate', async () => {
      await p.mm.mmapLock.read();
      const args = migrateVmaArgs({
        vma: p.mm.vmas.lookup(a)!,
        start: a,
        end: a + 2 * P,
        pgmapOwner: drv.owner,
        flags: MigrateVmaSelect.SYSTEM,
      });
      await migrateVmaSetup(args);
      for (let i = 0; i < 2; i++) {
        const d = drv.devmem.allocPage();
        m.mm.mem.copyFrame(d, migratePfnToPfn(args.src[i]!));
        args.dst[i] = migratePfn(d);
      }
      // Drop the lock while "copying" (as drivers that copy asynchronously may): munmap gets in.
      p.mm.mmapLock.readUnlock();
      await m.sched.sleep(50_000);
      await migrateVmaPages(args);
      migrateVmaFinalize(args);
    });
    m.sched.spawn('unmap', async () => {
      await m.sched.sleep(10_000);
      await p.munmap(a, P);
    });
    await m.sched.run();
    expect(drv.devmem.nrAllocated).toBe(1);
    expect(await p.readU32(a + P)).toBe(1001);
    m.checkInvariants();
    await p.exit();
    expect(drv.devmem.nrAllocated).toBe(0);
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
  });
});
