import { describe, it, expect } from 'vitest';
import type { Machine } from '../system/machine.js';
import { MapFlag, MremapFlag, Prot } from './constants.js';
import type { Process } from './process.js';
import { ANON, layout, P, RW, setup } from '../testing/fixtures.js';

async function fillPages(p: Process, a: number, n: number, base = 1): Promise<void> {
  for (let i = 0; i < n; i++) await p.writeU32(a + i * P, base + i);
}

async function expectPages(p: Process, a: number, n: number, base = 1): Promise<void> {
  for (let i = 0; i < n; i++) expect(await p.readU32(a + i * P)).toBe(base + i);
}

describe('mremap', () => {
  it('shrinks in place, freeing the tail', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await fillPages(p, a, 4);
    expect(await p.mremap(a, 4 * P, 2 * P)).toBe(a);
    expect(layout(p)).toEqual([[a, a + 2 * P]]);
    expect(m.stats().usedPages).toBe(2);
    await expectPages(p, a, 2);
    await expect(p.readU32(a + 2 * P)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'MAPERR' });
    m.checkInvariants();
  });

  it('same size without flags is a no-op returning the address', async () => {
    const { p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    expect(await p.mremap(a, 2 * P, 2 * P)).toBe(a);
    expect(layout(p)).toEqual([[a, a + 2 * P]]);
  });

  it('grows in place when the space after the mapping is free', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ addr: 0x1000_0000, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    await fillPages(p, a, 2);
    expect(await p.mremap(a, 2 * P, 5 * P)).toBe(a);
    expect(layout(p)).toEqual([[a, a + 5 * P]]);
    await expectPages(p, a, 2);
    await p.writeU32(a + 4 * P, 99);
    expect(await p.readU32(a + 4 * P)).toBe(99);
    m.checkInvariants();
  });

  it('growing up to a compatible neighbour merges with it', async () => {
    const { p } = setup();
    const a = await p.mmap({ addr: 0x1000_0000, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    await p.mmap({ addr: a + 4 * P, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    expect(p.mm.vmas.count).toBe(2);
    expect(await p.mremap(a, 2 * P, 4 * P)).toBe(a);
    expect(layout(p)).toEqual([[a, a + 6 * P]]);
  });

  it('cannot grow in place without MAYMOVE when blocked: ENOMEM, nothing changed', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ addr: 0x1000_0000, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    await p.mmap({ addr: a + 2 * P, length: P, prot: Prot.READ, flags: ANON | MapFlag.FIXED });
    await fillPages(p, a, 2);
    const before = layout(p);
    await expect(p.mremap(a, 2 * P, 4 * P)).rejects.toMatchObject({ code: 'ENOMEM' });
    expect(layout(p)).toEqual(before);
    await expectPages(p, a, 2);
    m.checkInvariants();
  });

  it('moves with MAYMOVE when blocked: data follows, the old range is unmapped, no frame is copied', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ addr: 0x1000_0000, length: 3 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    await p.mmap({ addr: a + 3 * P, length: P, prot: Prot.READ, flags: ANON | MapFlag.FIXED });
    await fillPages(p, a, 3);
    const pfns = [0, 1, 2].map((i) => m.mm.arena.pteVal[p.mm.pgtable.lookup(a / P + i)]);
    const used = m.stats().usedPages;
    const b = await p.mremap(a, 3 * P, 6 * P, MremapFlag.MAYMOVE);
    expect(b).not.toBe(a);
    expect(b % P).toBe(0);
    await expectPages(p, b, 3);
    expect((await p.read(b + 3 * P, 3 * P)).every((x) => x === 0)).toBe(true);
    expect([0, 1, 2].map((i) => m.mm.arena.pteVal[p.mm.pgtable.lookup(b / P + i)])).toEqual(pfns);
    expect(m.stats().usedPages).toBe(used);
    await expect(p.readU32(a)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'MAPERR' });
    expect(p.mm.vmas.lookup(a)).toBeUndefined();
    // The moved pages are reverse-mapped at their new address.
    expect(m.mm.rmap.mappingsOf(pfns[0]!)).toEqual([{ mm: p.mm.id, address: b }]);
    m.checkInvariants();
  });

  it('moves part of a mapping, splitting the source VMA', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await fillPages(p, a, 4);
    const dest = 0x2000_0000;
    const b = await p.mremap(a + P, 2 * P, 2 * P, MremapFlag.MAYMOVE | MremapFlag.FIXED, dest);
    expect(b).toBe(dest);
    expect(await p.readU32(dest)).toBe(2);
    expect(await p.readU32(dest + P)).toBe(3);
    expect(await p.readU32(a)).toBe(1);
    expect(await p.readU32(a + 3 * P)).toBe(4);
    expect(layout(p)).toEqual([
      [dest, dest + 2 * P],
      [a, a + P],
      [a + 3 * P, a + 4 * P],
    ]);
    m.checkInvariants();
  });

  it('MREMAP_FIXED replaces whatever was at the destination', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    const d = await p.mmap({ addr: 0x3000_0000, length: 4 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    await fillPages(p, a, 2, 10);
    await fillPages(p, d, 4, 50);
    const r = await p.mremap(a, 2 * P, 2 * P, MremapFlag.MAYMOVE | MremapFlag.FIXED, d + P);
    expect(r).toBe(d + P);
    expect(await p.readU32(d)).toBe(50);
    await expectPages(p, d + P, 2, 10);
    expect(await p.readU32(d + 3 * P)).toBe(53);
    expect(p.mm.vmas.lookup(a)).toBeUndefined();
    expect(m.stats().usedPages).toBe(4);
    m.checkInvariants();
  });

  it('MREMAP_DONTUNMAP leaves the old range mapped but empty', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await fillPages(p, a, 2, 7);
    const b = await p.mremap(a, 2 * P, 2 * P, MremapFlag.MAYMOVE | MremapFlag.DONTUNMAP);
    expect(b).not.toBe(a);
    await expectPages(p, b, 2, 7);
    expect(p.mm.vmas.lookup(a)).toBeDefined();
    expect((await p.read(a, 2 * P)).every((x) => x === 0)).toBe(true);
    expect(m.stats().usedPages).toBe(2);
    await p.writeU32(a, 1);
    expect(await p.readU32(b)).toBe(7);
    m.checkInvariants();
  });

  it('moving a shared file mapping keeps it connected to the file', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(2 * P).fill(3));
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    await p.fill(a, 1, 4);
    const b = await p.mremap(a, 2 * P, 2 * P, MremapFlag.MAYMOVE | MremapFlag.FIXED, 0x4000_0000);
    expect(f.mappings.size).toBe(1);
    await p.fill(b + P, 1, 5);
    expect(Array.from(await m.readFile(f, 0, 1))).toEqual([4]);
    expect(Array.from(await m.readFile(f, P, 1))).toEqual([5]);
    m.checkInvariants();
  });

  it('growing a shared anonymous mapping in place gives SIGBUS beyond the shmem object', async () => {
    const { m, p } = setup();
    const a = await p.mmap({
      addr: 0x1000_0000,
      length: 2 * P,
      prot: RW,
      flags: MapFlag.SHARED | MapFlag.ANONYMOUS | MapFlag.FIXED,
    });
    await fillPages(p, a, 2);
    expect(await p.mremap(a, 2 * P, 4 * P)).toBe(a);
    await expectPages(p, a, 2);
    await expect(p.readU32(a + 2 * P)).rejects.toMatchObject({ signal: 'SIGBUS' });
    m.checkInvariants();
  });

  it('moves swap entries with the mapping', async () => {
    const { m, p } = setup({ ramPages: 16, swapPages: 64 });
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await fillPages(p, a, 4, 20);
    await m.reclaim(100);
    expect(m.stats().swapUsed).toBe(4);
    const b = await p.mremap(a, 4 * P, 8 * P, MremapFlag.MAYMOVE | MremapFlag.FIXED, 0x2000_0000);
    expect(m.stats().swapUsed).toBe(4);
    m.checkInvariants();
    await expectPages(p, b, 4, 20);
    expect(m.stats().swapUsed).toBe(0);
    m.checkInvariants();
  });

  describe('errors leave the address space unchanged', () => {
    async function prepared(): Promise<{ m: Machine; p: Process; a: number; before: [number, number][] }> {
      const { m, p } = setup();
      const a = await p.mmap({ addr: 0x1000_0000, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
      await p.mmap({ addr: a + 2 * P, length: 2 * P, prot: Prot.READ, flags: ANON | MapFlag.FIXED });
      await fillPages(p, a, 2);
      return { m, p, a, before: layout(p) };
    }

    const cases: [string, (p: Process, a: number) => Promise<number>, string][] = [
      ['FIXED without MAYMOVE', (p, a) => p.mremap(a, P, P, MremapFlag.FIXED, 0x2000_0000), 'EINVAL'],
      ['DONTUNMAP without MAYMOVE', (p, a) => p.mremap(a, P, P, MremapFlag.DONTUNMAP), 'EINVAL'],
      [
        'DONTUNMAP with a size change',
        (p, a) => p.mremap(a, P, 2 * P, MremapFlag.MAYMOVE | MremapFlag.DONTUNMAP),
        'EINVAL',
      ],
      ['unknown flags', (p, a) => p.mremap(a, P, P, 0x80), 'EINVAL'],
      ['unaligned old address', (p, a) => p.mremap(a + 1, P, P), 'EINVAL'],
      ['new size 0', (p, a) => p.mremap(a, P, 0), 'EINVAL'],
      [
        'overlapping FIXED destination',
        (p, a) => p.mremap(a, 2 * P, 2 * P, MremapFlag.MAYMOVE | MremapFlag.FIXED, a + P),
        'EINVAL',
      ],
      [
        'unaligned FIXED destination',
        (p, a) => p.mremap(a, P, P, MremapFlag.MAYMOVE | MremapFlag.FIXED, 0x2000_0001),
        'EINVAL',
      ],
      ['range spanning two VMAs', (p, a) => p.mremap(a, 4 * P, 4 * P, MremapFlag.MAYMOVE), 'EFAULT'],
      ['range starting in a hole', (p, a) => p.mremap(a - P, P, 2 * P, MremapFlag.MAYMOVE), 'EFAULT'],
    ];
    for (const [name, op, code] of cases) {
      it(`${name} → ${code}`, async () => {
        const { m, p, a, before } = await prepared();
        await expect(op(p, a)).rejects.toMatchObject({ code });
        expect(layout(p)).toEqual(before);
        await expectPages(p, a, 2);
        m.checkInvariants();
      });
    }

    it('DONTUNMAP on a file mapping → EINVAL', async () => {
      const { m, p } = setup();
      const f = await m.createFile('f', new Uint8Array(P));
      const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.PRIVATE, file: f });
      await expect(p.mremap(a, P, P, MremapFlag.MAYMOVE | MremapFlag.DONTUNMAP)).rejects.toMatchObject({
        code: 'EINVAL',
      });
      expect(layout(p)).toEqual([[a, a + P]]);
    });
  });
});
