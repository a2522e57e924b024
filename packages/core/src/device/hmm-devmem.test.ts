import { describe, expect, it } from 'vitest';
import { MemoryType, unlockPage } from '../mm/memremap.js';
import { TestDevmemDriver } from '../testing/devmem-driver.js';
import { ANON, P, RW, setup } from '../testing/fixtures.js';
import { HmmDevmem } from './hmm-devmem.js';

describe('HmmDevmem', () => {
  it('maps chunks on demand up to the capacity, then fails with ENOMEM', () => {
    const { m } = setup();
    const dm = new HmmDevmem(
      m.mm,
      { migrateToRam: () => Promise.resolve() },
      {
        type: MemoryType.DEVICE_PRIVATE,
        owner: {},
        capacityBytes: 24 * P,
        chunkBytes: 16 * P,
      },
    );
    const got: number[] = [];
    for (let i = 0; i < 24; i++) got.push(dm.allocPage());
    expect(dm.chunks.map((c) => c.nrPages)).toEqual([16, 8]);
    expect(() => dm.allocPage()).toThrow(/ENOMEM.*exhausted/);
    for (const pfn of got) {
      unlockPage(m.mm, pfn);
      m.mm.putPage(pfn);
    }
    expect(dm.nrAllocated).toBe(0);
    expect(dm.nrFree).toBe(24);
  });

  it('mapPages maps chunks ahead of use, up to the capacity', () => {
    const { m } = setup();
    const dm = new HmmDevmem(
      m.mm,
      {},
      {
        type: MemoryType.DEVICE_COHERENT,
        owner: {},
        capacityBytes: 40 * P,
        chunkBytes: 16 * P,
      },
    );
    expect(dm.mapPages(17)).toBe(32);
    expect(dm.nrFree).toBe(32);
    expect(dm.mapPages(1000)).toBe(40);
    expect(dm.chunks.map((c) => c.nrPages)).toEqual([16, 16, 8]);
    expect(() => dm.mapPages(-1)).toThrow(/EINVAL/);
  });

  it('failNextAlloc fails exactly the next allocations', () => {
    const { m } = setup();
    const dm = new HmmDevmem(
      m.mm,
      {},
      { type: MemoryType.DEVICE_COHERENT, owner: {}, capacityBytes: 16 * P },
    );
    dm.failNextAlloc(2);
    expect(() => dm.allocPage()).toThrow(/injected/);
    expect(() => dm.allocPage()).toThrow(/injected/);
    const pfn = dm.allocPage();
    expect(pfn).toBeGreaterThanOrEqual(m.mm.mem.nrRamFrames);
    expect(() => dm.failNextAlloc(-1)).toThrow(/EINVAL/);
  });

  it('refuses device-private memory without migrateToRam and bad sizes', () => {
    const { m } = setup();
    const opts = { type: MemoryType.DEVICE_PRIVATE, owner: {}, capacityBytes: 16 * P } as const;
    expect(() => new HmmDevmem(m.mm, {}, opts)).toThrow(/migrateToRam/);
    expect(
      () => new HmmDevmem(m.mm, {}, { ...opts, type: MemoryType.DEVICE_COHERENT, capacityBytes: 5 }),
    ).toThrow(/capacity/);
  });

  it('release with a copy that stops half-way keeps the rest on the device and loses no byte', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m);
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    for (let i = 0; i < 4; i++) await p.writeU32(a + i * P, 70 + i);
    await drv.toDevice(p, a, 4);
    const mem = m.mm.mem;
    const half = (s: readonly number[], d: readonly number[]): Promise<number> => {
      const n = Math.min(2, s.length);
      for (let i = 0; i < n; i++) mem.copyFrame(d[i]!, s[i]!);
      return Promise.resolve(n);
    };
    await drv.devmem.release(half); // rounds of two pages each until all are out
    expect(drv.devmem.nrAllocated).toBe(0);
    for (let i = 0; i < 4; i++) expect(await p.readU32(a + i * P)).toBe(70 + i);
    m.checkInvariants();
  });

  it('eviction that runs out of RAM gives the uncopied destinations back and keeps the data', async () => {
    const { m, p } = setup({ ramPages: 24, swapPages: 0 });
    const drv = new TestDevmemDriver(m);
    const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
    for (let i = 0; i < 8; i++) await p.writeU32(a + i * P, 10 + i);
    await drv.toDevice(p, a, 8);
    // Eat the RAM so that only a few destinations can be had.
    const hog = await p.mmap({ length: 64 * P, prot: RW, flags: ANON });
    let n = 0;
    try {
      for (; n < 64; n++) await p.writeU32(hog + n * P, 1);
    } catch {
      // out of memory: the hog holds all it could get
    }
    await p.munmap(hog + (n - 3) * P, 3 * P); // three frames free again
    await expect(drv.devmem.release()).rejects.toThrow(/ENOMEM/);
    expect(m.stats().freePages).toBe(3); // the three destinations came back
    await p.munmap(hog, 64 * P);
    for (let i = 0; i < 8; i++) expect(await p.readU32(a + i * P)).toBe(10 + i);
    await drv.devmem.release();
    expect(drv.devmem.nrAllocated).toBe(0);
    m.checkInvariants();
  });
});
