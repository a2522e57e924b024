import { describe, expect, it } from 'vitest';
import { HmmDevmem } from '../device/hmm-devmem.js';
import { MemoryType, memunmapPages, unlockPage } from '../mm/memremap.js';
import {
  MigratePfn,
  MigrateVmaSelect,
  migratePfn,
  migrateVmaArgs,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
} from '../mm/migrate-device.js';
import { TestDevmemDriver } from '../testing/devmem-driver.js';
import { ANON, P, RW, setup } from '../testing/fixtures.js';
import { HmmSanitizer } from './hmm-sanitizer.js';

describe('sanitizer: device memory rules', () => {
  it('a correct driver migrating back and forth raises nothing', async () => {
    const { m, p } = setup();
    const san = new HmmSanitizer(m.mm, 'record');
    const drv = new TestDevmemDriver(m);
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 3 * P, 9);
    await drv.toDevice(p, a, 4);
    await p.readU32(a);
    await drv.devmem.release();
    expect(san.checkAll()).toEqual([]);
    expect(san.violations).toEqual([]);
  });

  it('reports a migration committed without copying the data', async () => {
    const { m, p } = setup();
    const san = new HmmSanitizer(m.mm, 'record');
    const owner = {};
    const devmem = new HmmDevmem(
      m.mm,
      { migrateToRam: () => Promise.resolve() },
      {
        type: MemoryType.DEVICE_PRIVATE,
        owner,
        capacityBytes: 16 * P,
      },
    );
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.fill(a, P, 7);
    await p.mm.mmapLock.read();
    const args = migrateVmaArgs({
      vma: p.mm.vmas.lookup(a)!,
      start: a,
      end: a + P,
      pgmapOwner: owner,
      flags: MigrateVmaSelect.SYSTEM,
    });
    await migrateVmaSetup(args);
    expect(args.src[0]! & MigratePfn.MIGRATE).toBe(MigratePfn.MIGRATE);
    args.dst[0] = migratePfn(devmem.allocPage()); // forgot to copy
    await migrateVmaPages(args);
    migrateVmaFinalize(args);
    p.mm.mmapLock.readUnlock();
    expect(san.violations.map((v) => v.rule)).toEqual(['migrated-data']);
    expect(san.violations[0]!.message).toMatch(/not copied before migrate_vma_pages/);
  });

  it('reports removing a pagemap whose frames are in use, a leaked device page and a pinned one', async () => {
    const { m } = setup();
    const san = new HmmSanitizer(m.mm, 'record');
    const devmem = new HmmDevmem(
      m.mm,
      { migrateToRam: () => Promise.resolve() },
      {
        type: MemoryType.DEVICE_PRIVATE,
        owner: {},
        capacityBytes: 16 * P,
      },
    );
    const pfn = devmem.allocPage();
    expect(() => memunmapPages(m.mm, devmem.chunks[0]!)).toThrow(/EBUSY.*still referenced/);
    expect(san.violations.map((v) => v.rule)).toEqual(['pagemap-busy']);
    unlockPage(m.mm, pfn); // allocated, unlocked, mapped nowhere: leaked
    expect(san.checkAll().map((v) => v.rule)).toEqual(['device-page-leak']);
    m.mm.mem.pincount[pfn] = 1; // what GUP must never do
    expect(san.checkAll().map((v) => v.rule)).toEqual(['pinned-device-page']);
    m.mm.mem.pincount[pfn] = 0;
    m.mm.putPage(pfn);
    expect(devmem.nrAllocated).toBe(0);
    expect(san.checkAll()).toEqual([]);
  });
});
