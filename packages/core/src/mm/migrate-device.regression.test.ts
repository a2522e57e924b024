/**
 * Regressions found by the model-based property test (mm.model.test.ts), shrunk to the smallest
 * sequence that shows them.
 */
import { describe, expect, it } from 'vitest';
import { ANON, P, RW, setup } from '../testing/fixtures.js';
import { TestDevmemDriver } from '../testing/devmem-driver.js';
import { Foll, Madv, MapFlag } from './constants.js';
import { MemoryType } from './memremap.js';
import { PG } from './page-flags.js';
import { Pte, PteType, pteType } from './pgtable.js';
import type { Machine } from '../system/machine.js';
import type { Process } from './process.js';

function entryType(m: Machine, p: Process, addr: number): number {
  const slot = p.mm.pgtable.lookup(addr / P);
  return slot < 0 ? -1 : pteType(m.mm.arena.pteFlags[slot]!);
}

function present(m: Machine, p: Process, addr: number): boolean {
  const slot = p.mm.pgtable.lookup(addr / P);
  return slot >= 0 && (m.mm.arena.pteFlags[slot]! & Pte.PRESENT) !== 0;
}

/**
 * A page that `migrate_vma_setup` collects but then finds held beyond its mappings is put back by
 * setup (`migrate_device_unmap`). Its entry must then be cleared, or finalize puts it back a second
 * time (double unlock and put).
 */
describe('a collected page that setup has to put back', () => {
  it('a pinned shared-memory page: nothing moves, the page is intact', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.writeU32(a, 42);
    const pins = await p.pinUserPages(a, 1, Foll.LONGTERM);
    expect(await drv.toDevice(p, a, 1)).toBe(0);
    expect(present(m, p, a)).toBe(true);
    expect(await p.readU32(a)).toBe(42);
    m.checkInvariants();
    p.unpinUserPages(pins);
    await p.exit();
    await drv.devmem.release();
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });

  it('an anonymous page held by get_user_pages: nothing moves, the page is intact', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.writeU32(a, 7);
    await p.writeU32(a + P, 8);
    const held = await p.getUserPages(a, 1, 0);
    expect(await drv.toDevice(p, a, 2)).toBe(1);
    expect(present(m, p, a)).toBe(true);
    expect(entryType(m, p, a + P)).toBe(PteType.DEVICE_PRIVATE_WRITE);
    m.checkInvariants((pfn) => (pfn === held[0] ? 1 : 0));
    expect(await p.readU32(a)).toBe(7);
    expect(await p.readU32(a + P)).toBe(8);
    p.putUserPages(held);
    m.checkInvariants();
    await p.exit();
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    expect(drv.devmem.nrAllocated).toBe(0);
  });

  it('a device-coherent page held by get_user_pages: eviction refuses it with EBUSY, then succeeds', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m, MemoryType.DEVICE_COHERENT);
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 9);
    expect(await drv.toDevice(p, a, 1)).toBe(1);
    const held = await p.getUserPages(a, 1, 0);
    expect(drv.devmem.owns(held[0]!)).toBe(true);
    await expect(drv.devmem.release()).rejects.toThrow(/could not be evicted/);
    expect(present(m, p, a)).toBe(true);
    m.checkInvariants((pfn) => (pfn === held[0] ? 1 : 0));
    expect(await p.readU32(a)).toBe(9);
    p.putUserPages(held);
    await drv.devmem.release();
    expect(drv.devmem.nrAllocated).toBe(0);
    expect(await p.readU32(a)).toBe(9);
    m.checkInvariants();
  });
});

/** `migrate_to_ram` gets the page-aligned address (`vmf->address`), whatever byte the CPU touched. */
describe('a CPU access in the middle of a device-private page', () => {
  it('migrates the page back: the driver is told the page-aligned address', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.write(a + P + 100, new Uint8Array([1, 2, 3]));
    expect(await drv.toDevice(p, a, 2)).toBe(2);
    expect(await p.read(a + P + 101, 2)).toEqual(new Uint8Array([2, 3]));
    expect(drv.lastFaultAddress).toBe(a + P);
    await p.write(a + 7, new Uint8Array([9]));
    expect(drv.lastFaultAddress).toBe(a);
    expect(drv.faultsToRam).toBe(2);
    expect(drv.devmem.nrAllocated).toBe(0);
    m.checkInvariants();
  });
});

/**
 * MADV_FREE moves exclusively mapped anon pages to the lazy-free list; a device-coherent page is never
 * on an LRU list (`folio_mark_lazyfree` only acts on LRU folios), so it must stay off them.
 */
describe('MADV_FREE over a device-coherent page', () => {
  it('leaves it off the LRU lists, in device memory, with its data', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m, MemoryType.DEVICE_COHERENT);
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 5);
    expect(await drv.toDevice(p, a, 1)).toBe(1);
    const slot = p.mm.pgtable.lookup(a / P);
    const pfn = m.mm.arena.pteVal[slot]!;
    expect(drv.devmem.owns(pfn)).toBe(true);
    await p.madvise(a, P, Madv.FREE);
    expect(m.mm.mem.flags[pfn]! & PG.LRU).toBe(0);
    m.checkInvariants();
    await m.reclaim(64);
    expect(m.mm.arena.pteVal[p.mm.pgtable.lookup(a / P)]).toBe(pfn);
    expect(await p.readU32(a)).toBe(5);
    await p.exit();
    await drv.devmem.release();
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });
});
