import { describe, it, expect } from 'vitest';
import { MapFlag, MremapFlag, Prot } from './constants.js';
import { ANON, P, pfnAt, RW, setup } from '../testing/fixtures.js';

function sorted(xs: { mm: number; address: number }[]): { mm: number; address: number }[] {
  return [...xs].sort((x, y) => x.mm - y.mm || x.address - y.address);
}

describe('reverse map', () => {
  it('finds every process mapping an anon page shared by fork, and forgets them on COW and exit', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 1);
    const pfn = pfnAt(m, p, a);
    expect(m.mm.rmap.mappingsOf(pfn)).toEqual([{ mm: p.mm.id, address: a }]);
    const c1 = await p.fork();
    const c2 = await p.fork();
    expect(sorted(m.mm.rmap.mappingsOf(pfn))).toEqual(
      sorted([p, c1, c2].map((x) => ({ mm: x.mm.id, address: a }))),
    );
    await c1.writeU32(a, 2);
    expect(sorted(m.mm.rmap.mappingsOf(pfn))).toEqual(
      sorted([p, c2].map((x) => ({ mm: x.mm.id, address: a }))),
    );
    expect(m.mm.rmap.mappingsOf(pfnAt(m, c1, a))).toEqual([{ mm: c1.mm.id, address: a }]);
    await p.exit(); // removes the primary record; the other one takes over
    expect(m.mm.rmap.mappingsOf(pfn)).toEqual([{ mm: c2.mm.id, address: a }]);
    m.checkInvariants();
  });

  it('follows pages moved by mremap, including pages shared with a fork child', async () => {
    const { m, p } = setup({ ramPages: 16 });
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: ANON });
    for (let i = 0; i < 3; i++) await p.writeU32(a + i * P, 10 + i);
    const c = await p.fork();
    const pfn = pfnAt(m, p, a + P);
    const b = await p.mremap(a, 3 * P, 3 * P, MremapFlag.MAYMOVE | MremapFlag.FIXED, 0x1000_0000);
    expect(sorted(m.mm.rmap.mappingsOf(pfn))).toEqual(
      sorted([
        { mm: p.mm.id, address: b + P },
        { mm: c.mm.id, address: a + P },
      ]),
    );
    m.checkInvariants();
    // Reclaim walks the reverse map: both PTEs become swap entries and read back correctly.
    await m.reclaim(100);
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
    for (let i = 0; i < 3; i++) {
      expect(await p.readU32(b + i * P)).toBe(10 + i);
      expect(await c.readU32(a + i * P)).toBe(10 + i);
    }
    await p.writeU32(b, 99);
    expect(await c.readU32(a)).toBe(10);
    m.checkInvariants();
  });

  it('finds the mappings of a page-cache page through the file, skipping private copies', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(2 * P).fill(1));
    const q = m.createProcess();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    const b = await q.mmap({ length: P, prot: RW, flags: MapFlag.PRIVATE, file: f, offset: P });
    const c = await q.mmap({ length: 2 * P, prot: Prot.READ, flags: MapFlag.PRIVATE, file: f });
    await p.read(a, 2 * P);
    await q.read(b, 1);
    await q.read(c, 2 * P);
    const page1 = f.pageCache.get(1)!;
    expect(sorted(m.mm.rmap.mappingsOf(page1))).toEqual(
      sorted([
        { mm: p.mm.id, address: a + P },
        { mm: q.mm.id, address: b },
        { mm: q.mm.id, address: c + P },
      ]),
    );
    await q.fill(b, 1, 2); // private copy replaces the cache page in q at b
    expect(sorted(m.mm.rmap.mappingsOf(page1))).toEqual(
      sorted([
        { mm: p.mm.id, address: a + P },
        { mm: q.mm.id, address: c + P },
      ]),
    );
    // A visitor can stop the walk.
    let visits = 0;
    m.mm.rmap.walk(page1, () => {
      visits++;
      return false;
    });
    expect(visits).toBe(1);
    m.checkInvariants();
  });

  it('unmapped and free frames have no mappings', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 1);
    const pfn = pfnAt(m, p, a);
    await p.munmap(a, P);
    expect(m.mm.rmap.mappingsOf(pfn)).toEqual([]);
  });
});
