import { describe, it, expect } from 'vitest';
import type { Machine } from '../system/machine.js';
import { Foll, MapFlag, Prot } from './constants.js';
import { PG } from './page-flags.js';
import { Pte } from './pgtable.js';
import type { Process } from './process.js';
import { ANON, P, recordHooks, RW, setup } from '../testing/fixtures.js';

function ptePfn(m: Machine, p: Process, addr: number): number {
  const slot = p.mm.pgtable.lookup(addr / P);
  expect(slot).toBeGreaterThanOrEqual(0);
  expect(m.mm.arena.pteFlags[slot]! & Pte.PRESENT).toBe(Pte.PRESENT);
  return m.mm.arena.pteVal[slot]!;
}

function frameByte(m: Machine, pfn: number, off = 0): number {
  const b = new Uint8Array(1);
  m.mm.mem.content.read(pfn, off, b, 0, 1);
  return b[0]!;
}

describe('fork', () => {
  it('child and parent share pages copy-on-write and then see independent writes', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    for (let i = 0; i < 4; i++) await p.writeU32(a + i * P, 100 + i);
    const c = await p.fork();
    expect(m.stats().usedPages).toBe(4); // nothing copied yet
    expect(ptePfn(m, c, a)).toBe(ptePfn(m, p, a));
    expect(m.mm.mem.mapcount[ptePfn(m, p, a)]).toBe(2);
    expect(await c.readU32(a + 2 * P)).toBe(102);
    m.checkInvariants();

    await c.writeU32(a, 1);
    await p.writeU32(a + P, 2);
    expect(await p.readU32(a)).toBe(100);
    expect(await c.readU32(a)).toBe(1);
    expect(await p.readU32(a + P)).toBe(2);
    expect(await c.readU32(a + P)).toBe(101);
    // Pages 2 and 3 are still shared.
    expect(ptePfn(m, c, a + 3 * P)).toBe(ptePfn(m, p, a + 3 * P));
    expect(ptePfn(m, c, a)).not.toBe(ptePfn(m, p, a));
    expect(m.stats().usedPages).toBe(6);
    m.checkInvariants();

    await c.exit();
    // The parent's remaining shared pages are its own again; writing reuses them.
    const pfn3 = ptePfn(m, p, a + 3 * P);
    await p.writeU32(a + 3 * P, 33);
    expect(ptePfn(m, p, a + 3 * P)).toBe(pfn3);
    expect(m.stats().usedPages).toBe(4);
    m.checkInvariants();
  });

  it('a write in one of three processes leaves the other two sharing', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 5);
    const c1 = await p.fork();
    const c2 = await p.fork();
    await c1.writeU32(a, 6);
    expect([await p.readU32(a), await c1.readU32(a), await c2.readU32(a)]).toEqual([5, 6, 5]);
    expect(ptePfn(m, p, a)).toBe(ptePfn(m, c2, a));
    m.checkInvariants();
  });

  it('the child gets the mapping layout; zero-page and untouched pages stay cheap', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
    await p.read(a, P);
    const b = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: ANON });
    const c = await p.fork();
    expect(c.mm.vmas.all().map((v) => [v.start, v.end, v.flags])).toEqual(
      p.mm.vmas.all().map((v) => [v.start, v.end, v.flags]),
    );
    expect(c.mm.vmas.lookup(b)!.mm).toBe(c.mm);
    expect((await c.read(a, 8 * P)).every((x) => x === 0)).toBe(true);
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });

  it('MAP_SHARED|MAP_ANONYMOUS memory is shared across fork in both directions', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.writeU32(a, 1);
    const c = await p.fork();
    expect(await c.readU32(a)).toBe(1);
    await c.writeU32(a, 2);
    expect(await p.readU32(a)).toBe(2);
    await p.writeU32(a + P, 3);
    expect(await c.readU32(a + P)).toBe(3);
    expect(ptePfn(m, p, a)).toBe(ptePfn(m, c, a));
    expect(m.stats().usedPages).toBe(2);
    m.checkInvariants();
    // The shmem object survives the parent's exit while the child maps it.
    await p.exit();
    expect(await c.readU32(a)).toBe(2);
    await c.exit();
    expect(m.stats().usedPages).toBe(0);
    expect(m.mm.files.count).toBe(0);
  });

  it('a private file mapping copies on write: the file is unchanged, the fork child sees the pre-write copy', async () => {
    const { m, p } = setup();
    const f = await m.createFile('priv', new Uint8Array(2 * P).fill(0x11));
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    expect((await p.read(a, 1))[0]).toBe(0x11);
    await p.fill(a, 16, 0x22);
    const c = await p.fork();
    await c.fill(a, 8, 0x33);
    expect((await p.read(a, 16)).every((x) => x === 0x22)).toBe(true);
    expect(Array.from(await c.read(a, 16))).toEqual([...Array(8).fill(0x33), ...Array(8).fill(0x22)]);
    expect((await m.readFile(f, 0, 2 * P)).every((x) => x === 0x11)).toBe(true);
    // The unwritten page still maps the page cache in both.
    expect((await c.read(a + P, 1))[0]).toBe(0x11);
    expect(ptePfn(m, c, a + P)).toBe(f.pageCache.get(1));
    m.checkInvariants();
  });

  it('shared file mapping writes reach the file and every process mapping it', async () => {
    const { m, p } = setup();
    const f = await m.createFile('shared', new Uint8Array(2 * P));
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    const c = await p.fork();
    await c.write(a + 10, new Uint8Array([9, 8, 7]));
    expect(Array.from(await m.readFile(f, 10, 3))).toEqual([9, 8, 7]);
    expect(Array.from(await p.read(a + 10, 3))).toEqual([9, 8, 7]);
    await m.writeFile(f, P, new Uint8Array([4, 4]));
    expect(Array.from(await c.read(a + P, 2))).toEqual([4, 4]);
    m.checkInvariants();
  });

  it('a pinned anon page is copied for the child at fork; the parent keeps the pinned frame', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 0x44);
    const pinned = await p.pinUserPages(a, 1, Foll.WRITE | Foll.LONGTERM);
    const pfn = pinned[0]!;
    const c = await p.fork();
    const childPfn = ptePfn(m, c, a);
    expect(childPfn).not.toBe(pfn);
    expect(ptePfn(m, p, a)).toBe(pfn);
    expect(frameByte(m, childPfn)).toBe(0x44);
    // The unpinned page is shared as usual.
    expect(ptePfn(m, c, a + P)).toBe(ptePfn(m, p, a + P));
    // The parent's writes land in the pinned frame (what a device would DMA into), the child's do not.
    await p.fill(a, 4, 0x55);
    await c.fill(a, 4, 0x66);
    expect(ptePfn(m, p, a)).toBe(pfn);
    expect(frameByte(m, pfn)).toBe(0x55);
    expect(frameByte(m, childPfn)).toBe(0x66);
    const gup = await p.getUserPages(a, 1);
    expect(gup[0]).toBe(pfn);
    p.putUserPages(gup);
    m.checkInvariants();
    p.unpinUserPages(pinned);
    m.checkInvariants();
  });

  it('pinning a page shared after fork unshares it first (even a read pin)', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 7);
    const c = await p.fork();
    const shared = ptePfn(m, p, a);
    expect(ptePfn(m, c, a)).toBe(shared);
    const pins = await p.pinUserPages(a, 1);
    expect(pins[0]).not.toBe(shared);
    expect(ptePfn(m, p, a)).toBe(pins[0]);
    expect(ptePfn(m, c, a)).toBe(shared);
    expect(m.mm.mem.flags[pins[0]!]! & PG.ANON_EXCLUSIVE).toBe(PG.ANON_EXCLUSIVE);
    expect(frameByte(m, pins[0]!)).toBe(7);
    // The child's write now reuses its page (it is the only mapper): no further copy.
    await c.writeU32(a, 8);
    expect(ptePfn(m, c, a)).toBe(shared);
    expect(await p.readU32(a)).toBe(7);
    m.checkInvariants();
    p.unpinUserPages(pins);
    m.checkInvariants();
  });

  it('swapped-out pages are shared through the swap slot and read back by both', async () => {
    const { m, p } = setup({ ramPages: 16, swapPages: 64 });
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    for (let i = 0; i < 4; i++) await p.writeU32(a + i * P, 40 + i);
    await m.reclaim(64);
    expect(m.stats().swapUsed).toBe(4);
    const c = await p.fork();
    const slot = m.mm.arena.pteVal[c.mm.pgtable.lookup(a / P)]!;
    expect(m.mm.swap.swapMap[slot]).toBe(2);
    m.checkInvariants();
    for (let i = 0; i < 4; i++) expect(await c.readU32(a + i * P)).toBe(40 + i);
    await p.writeU32(a, 1);
    expect(await c.readU32(a)).toBe(40);
    for (let i = 1; i < 4; i++) expect(await p.readU32(a + i * P)).toBe(40 + i);
    expect(m.stats().swapUsed).toBe(0);
    m.checkInvariants();
  });

  it('fork fires PROTECTION_PAGE on the parent only for touched private ranges', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.fill(a, 2 * P, 1);
    const rec = recordHooks(p);
    await p.fork();
    expect(rec.starts.map((r) => r.event)).toEqual([3]); // NotifyEvent.PROTECTION_PAGE
    m.checkInvariants();
  });

  it('fork of an exited process is ESRCH', async () => {
    const { p } = setup();
    await p.exit();
    await expect(p.fork()).rejects.toMatchObject({ code: 'ESRCH' });
  });
});
