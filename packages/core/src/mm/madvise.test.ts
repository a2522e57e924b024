import { describe, it, expect } from 'vitest';
import { Madv, MapFlag, Prot } from './constants.js';
import type { MadvAdvice } from './constants.js';
import { LruList } from './lru.js';
import { PG } from './page-flags.js';
import { ANON, P, pfnAt, RW, setup } from '../testing/fixtures.js';

describe('madvise(MADV_DONTNEED)', () => {
  it('private anonymous memory reads zeros afterwards and its frames are freed', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 0x3c);
    expect(m.stats().usedPages).toBe(4);
    await p.madvise(a + P, 2 * P, Madv.DONTNEED);
    expect(m.stats().usedPages).toBe(2);
    expect((await p.read(a + P, 2 * P)).every((x) => x === 0)).toBe(true);
    expect((await p.read(a, P)).every((x) => x === 0x3c)).toBe(true);
    expect((await p.read(a + 3 * P, P)).every((x) => x === 0x3c)).toBe(true);
    expect(p.mm.vmas.count).toBe(1);
    m.checkInvariants();
  });

  it('a shared file mapping refaults the data from the page cache', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(2 * P).fill(1));
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    await p.fill(a, 8, 0x77);
    await p.madvise(a, 2 * P, Madv.DONTNEED);
    expect(p.mm.pgtable.lookup(a / P)).toBe(-1);
    expect(Array.from(await p.read(a, 9))).toEqual([...Array(8).fill(0x77), 1]);
    expect(Array.from(await m.readFile(f, 0, 9))).toEqual([...Array(8).fill(0x77), 1]);
    // The page stayed dirty in the cache when the dirty PTE was zapped.
    expect(m.mm.mem.flags[f.pageCache.get(0)!]! & PG.DIRTY).toBe(PG.DIRTY);
    m.checkInvariants();
  });

  it('shared anonymous memory keeps its data', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.writeU32(a, 1234);
    await p.madvise(a, P, Madv.DONTNEED);
    expect(await p.readU32(a)).toBe(1234);
    m.checkInvariants();
  });

  it('a private file mapping drops the private copy and shows the file again', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(P).fill(2));
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    await p.fill(a, 4, 9);
    await p.madvise(a, P, Madv.DONTNEED);
    expect(Array.from(await p.read(a, 5))).toEqual([2, 2, 2, 2, 2]);
    m.checkInvariants();
  });

  it('swapped-out pages are dropped too', async () => {
    const { m, p } = setup({ ramPages: 16 });
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 5);
    await m.reclaim(64);
    expect(m.stats().swapUsed).toBe(4);
    await p.madvise(a, 4 * P, Madv.DONTNEED);
    expect(m.stats().swapUsed).toBe(0);
    expect((await p.read(a, 4 * P)).every((x) => x === 0)).toBe(true);
    m.checkInvariants();
  });
});

describe('madvise(MADV_FREE)', () => {
  it('pages not written again are discarded by reclaim and read zeros', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 0x42);
    await p.madvise(a, 4 * P, Madv.FREE);
    const pfn = pfnAt(m, p, a);
    // Lazily freed: off the swap-backed lists, on the inactive file list.
    expect(m.mm.mem.flags[pfn]! & PG.SWAPBACKED).toBe(0);
    expect(m.mm.lru.toArray(LruList.INACTIVE_FILE)).toContain(pfn);
    m.checkInvariants();
    const swapBefore = m.stats().swapUsed;
    await m.reclaim(64);
    expect(m.stats().usedPages).toBe(0);
    expect(m.stats().swapUsed).toBe(swapBefore);
    expect(m.stats().reclaim.discarded).toBe(4);
    expect((await p.read(a, 4 * P)).every((x) => x === 0)).toBe(true);
    m.checkInvariants();
  });

  it('a page written after MADV_FREE keeps its data through reclaim', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 0x42);
    await p.madvise(a, 2 * P, Madv.FREE);
    await p.writeU32(a, 0xfeedface);
    await m.reclaim(64);
    expect(await p.readU32(a)).toBe(0xfeedface);
    const rest = await p.read(a + 4, P - 4);
    expect(rest.every((x) => x === 0x42)).toBe(true);
    // The untouched page was discarded.
    expect((await p.read(a + P, P)).every((x) => x === 0)).toBe(true);
    m.checkInvariants();
  });

  it('drops swapped-out pages in the range at once', async () => {
    const { m, p } = setup({ ramPages: 16 });
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 0x42);
    await m.reclaim(64);
    expect(m.stats().swapUsed).toBe(4);
    await p.madvise(a + P, 2 * P, Madv.FREE);
    expect(m.stats().swapUsed).toBe(2);
    expect(
      p.mm.pgtable.lookup(a / P + 1) < 0 || m.mm.arena.pteFlags[p.mm.pgtable.lookup(a / P + 1)] === 0,
    ).toBe(true);
    expect((await p.read(a + P, 2 * P)).every((x) => x === 0)).toBe(true);
    expect((await p.read(a, P)).every((x) => x === 0x42)).toBe(true);
    expect((await p.read(a + 3 * P, P)).every((x) => x === 0x42)).toBe(true);
    m.checkInvariants();
  });

  it('leaves pages shared with a fork child alone', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.fill(a, P, 0x42);
    const c = await p.fork();
    await p.madvise(a, P, Madv.FREE);
    const pfn = pfnAt(m, p, a);
    expect(m.mm.mem.flags[pfn]! & PG.SWAPBACKED).toBe(PG.SWAPBACKED);
    await m.reclaim(64);
    expect(m.stats().reclaim.discarded).toBe(0);
    expect((await c.read(a, P)).every((x) => x === 0x42)).toBe(true);
    expect((await p.read(a, P)).every((x) => x === 0x42)).toBe(true);
    m.checkInvariants();
  });

  it('is EINVAL on file and shared mappings, with nothing changed', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(P).fill(1));
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    const s = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.fill(a, 1, 3);
    await p.fill(s, 1, 4);
    await expect(p.madvise(a, P, Madv.FREE)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(p.madvise(s, P, Madv.FREE)).rejects.toMatchObject({ code: 'EINVAL' });
    expect((await p.read(a, 1))[0]).toBe(3);
    expect((await p.read(s, 1))[0]).toBe(4);
    m.checkInvariants();
  });
});

describe('madvise(MADV_WILLNEED)', () => {
  it('reads file pages into the page cache without mapping them', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(3 * P + 10).fill(6));
    await m.reclaim(64); // drop the cache filled by createFile
    expect(f.pageCache.size).toBe(0);
    const a = await p.mmap({ length: 8 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    await p.madvise(a, 8 * P, Madv.WILLNEED);
    expect(f.pageCache.size).toBe(4); // only up to EOF
    expect(p.mm.pgtable.lookup(a / P)).toBe(-1);
    expect(p.mm.rssPages).toBe(0);
    expect((await p.read(a + 2 * P, 1))[0]).toBe(6);
    m.checkInvariants();
  });

  it('does nothing on anonymous memory', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.madvise(a, 2 * P, Madv.WILLNEED);
    expect(m.stats().usedPages).toBe(0);
  });
});

describe('madvise errors', () => {
  it('a hole in the range is ENOMEM and nothing is changed', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.munmap(a + 2 * P, P);
    await p.fill(a, 2 * P, 8);
    for (const adv of [Madv.DONTNEED, Madv.FREE, Madv.WILLNEED] as MadvAdvice[]) {
      await expect(p.madvise(a, 4 * P, adv)).rejects.toMatchObject({ code: 'ENOMEM' });
    }
    expect((await p.read(a, 2 * P)).every((x) => x === 8)).toBe(true);
    expect(m.stats().usedPages).toBe(2);
    m.checkInvariants();
  });

  it('unaligned address and unknown advice are EINVAL; length 0 succeeds', async () => {
    const { p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await expect(p.madvise(a + 1, P, Madv.DONTNEED)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(p.madvise(a, P, 99 as MadvAdvice)).rejects.toMatchObject({ code: 'EINVAL' });
    await p.madvise(a, 0, Madv.DONTNEED);
    await p.madvise(0x7000_0000, 0, Madv.DONTNEED);
  });
});
