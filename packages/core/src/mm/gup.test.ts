import { describe, it, expect } from 'vitest';
import { Foll, MapFlag, Prot, TASK_SIZE } from './constants.js';
import { PG } from './page-flags.js';
import { Pte } from './pgtable.js';
import { ZERO_PFN } from './physmem.js';
import { ANON, P, pfnAt, RW, setup, totalPins, totalRefs } from '../testing/fixtures.js';

describe('pin_user_pages / unpin_user_pages', () => {
  it('pins fault pages in, count pins and references, and unpinning releases them', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    const pins = await p.pinUserPages(a, 4, Foll.WRITE);
    expect(pins.length).toBe(4);
    expect(new Set(pins).size).toBe(4);
    expect(m.stats().usedPages).toBe(4);
    const mem = m.mm.mem;
    for (let i = 0; i < 4; i++) {
      const pfn = pins[i]!;
      expect(pfnAt(m, p, a + i * P)).toBe(pfn);
      expect(mem.pincount[pfn]).toBe(1);
      expect(mem.refcount[pfn]).toBe(2); // mapping + pin
      expect(mem.flags[pfn]! & PG.ANON_EXCLUSIVE).toBe(PG.ANON_EXCLUSIVE);
    }
    m.checkInvariants();
    const again = await p.pinUserPages(a, 2, Foll.WRITE | Foll.LONGTERM);
    expect(Array.from(again)).toEqual(Array.from(pins.subarray(0, 2)));
    expect(mem.pincount[pins[0]!]).toBe(2);
    expect(mem.refcount[pins[0]!]).toBe(3);
    p.unpinUserPages(again);
    p.unpinUserPages(pins);
    expect(totalPins(m)).toBe(0);
    for (const pfn of pins) expect(mem.refcount[pfn]).toBe(1);
    m.checkInvariants();
  });

  it('the pinned frame is the one the process writes to', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    const [pfn] = await p.pinUserPages(a, 1, Foll.WRITE | Foll.LONGTERM);
    await p.writeU32(a + 12, 0x01020304);
    const b = new Uint8Array(4);
    m.mm.mem.content.read(pfn!, 12, b, 0, 4);
    expect(Array.from(b)).toEqual([4, 3, 2, 1]);
    p.unpinUserPages([pfn!]);
  });

  it('a long-term read pin of untouched anon memory gets a real exclusive page, not the zero page', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.read(a, 1); // zero page mapped
    expect(pfnAt(m, p, a)).toBe(ZERO_PFN);
    const [pfn] = await p.pinUserPages(a, 1, Foll.LONGTERM);
    expect(pfn).not.toBe(ZERO_PFN);
    expect(pfnAt(m, p, a)).toBe(pfn);
    expect(m.mm.mem.flags[pfn!]! & PG.ANON_EXCLUSIVE).toBe(PG.ANON_EXCLUSIVE);
    m.checkInvariants();
    // A later CPU write reuses the pinned page.
    await p.writeU32(a, 5);
    expect(pfnAt(m, p, a)).toBe(pfn);
    p.unpinUserPages([pfn!]);
    m.checkInvariants();
  });

  it('a short-term read pin of untouched anon memory may return the zero page, and unpinning it works', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    const base = { pins: m.mm.mem.pincount[ZERO_PFN], refs: m.mm.mem.refcount[ZERO_PFN] };
    const pins = await p.pinUserPages(a, 2);
    for (const pfn of pins) expect(m.mm.mem.pincount[pfn]).toBeGreaterThan(0);
    m.checkInvariants();
    p.unpinUserPages(pins);
    expect(totalPins(m)).toBe(0);
    expect(m.mm.mem.pincount[ZERO_PFN]).toBe(base.pins);
    expect(m.mm.mem.refcount[ZERO_PFN]).toBe(base.refs);
    // ...and only once.
    if (pins[0] === ZERO_PFN) {
      expect(() => p.unpinUserPages([ZERO_PFN])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      expect(m.mm.mem.refcount[ZERO_PFN]).toBe(base.refs);
    }
    m.checkInvariants();
  });

  it('a short-term read pin of a private file page needs no private copy', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(P).fill(8));
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    await p.read(a, 1);
    const pins = await p.pinUserPages(a, 1);
    expect(m.mm.mem.pincount[pins[0]!]).toBe(1);
    const b = new Uint8Array(1);
    m.mm.mem.content.read(pins[0]!, 0, b, 0, 1);
    expect(b[0]).toBe(8);
    p.unpinUserPages(pins);
    expect(totalPins(m)).toBe(0);
    m.checkInvariants();
  });

  it('a long-term read pin of a private file page pins a private copy, not the page cache', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(P).fill(8));
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    await p.read(a, 1);
    const [pfn] = await p.pinUserPages(a, 1, Foll.LONGTERM);
    expect(pfn).not.toBe(f.pageCache.get(0));
    expect(m.mm.mem.flags[pfn!]! & PG.ANON).toBe(PG.ANON);
    expect((await p.read(a, 4)).every((x) => x === 8)).toBe(true);
    p.unpinUserPages([pfn!]);
    m.checkInvariants();
  });

  it('double unpin is EINVAL and changes nothing', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    const pins = await p.pinUserPages(a, 2, Foll.WRITE);
    p.unpinUserPages([pins[0]!]);
    const before = { pins: Array.from(m.mm.mem.pincount), refs: Array.from(m.mm.mem.refcount) };
    // pins[1] is still pinned, pins[0] is not: the whole call fails, pins[1] keeps its pin.
    expect(() => p.unpinUserPages(pins)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => p.unpinUserPages([pins[1]!, pins[1]!])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => p.unpinUserPages([0])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => p.unpinUserPages([1e9])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(Array.from(m.mm.mem.pincount)).toEqual(before.pins);
    expect(Array.from(m.mm.mem.refcount)).toEqual(before.refs);
    expect(m.mm.mem.pincount[pins[1]!]).toBe(1);
    p.unpinUserPages([pins[1]!]);
    m.checkInvariants();
  });

  it('unpin of a frame freed since is EINVAL', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    const pins = await p.pinUserPages(a, 1, Foll.WRITE);
    await p.munmap(a, P);
    p.unpinUserPages(pins); // last reference: the frame is freed
    expect(m.stats().usedPages).toBe(0);
    expect(() => p.unpinUserPages(pins)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(m.stats().usedPages).toBe(0);
  });

  describe('errors', () => {
    it('PROT_NONE → EFAULT', async () => {
      const { m, p } = setup();
      const a = await p.mmap({ length: P, prot: Prot.NONE, flags: ANON });
      await expect(p.pinUserPages(a, 1)).rejects.toMatchObject({ code: 'EFAULT' });
      await expect(p.getUserPages(a, 1)).rejects.toMatchObject({ code: 'EFAULT' });
      expect(m.stats().usedPages).toBe(0);
    });

    it('FOLL_WRITE on a read-only mapping → EFAULT', async () => {
      const { m, p } = setup();
      const a = await p.mmap({ length: P, prot: Prot.READ, flags: ANON });
      await expect(p.pinUserPages(a, 1, Foll.WRITE)).rejects.toMatchObject({ code: 'EFAULT' });
      await expect(p.getUserPages(a, 1, Foll.WRITE)).rejects.toMatchObject({ code: 'EFAULT' });
      expect(totalPins(m)).toBe(0);
      // A read pin works.
      const pins = await p.pinUserPages(a, 1, Foll.LONGTERM);
      expect(pins[0]).not.toBe(ZERO_PFN);
      p.unpinUserPages(pins);
      expect(totalPins(m)).toBe(0);
    });

    it('FOLL_LONGTERM|FOLL_WRITE on a shared file mapping → EFAULT; shmem and short-term pins are fine', async () => {
      const { m, p } = setup();
      const f = await m.createFile('f', new Uint8Array(P));
      const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED, file: f });
      await expect(p.pinUserPages(a, 1, Foll.WRITE | Foll.LONGTERM)).rejects.toMatchObject({
        code: 'EFAULT',
      });
      expect(totalPins(m)).toBe(0);
      const short = await p.pinUserPages(a, 1, Foll.WRITE);
      expect(short[0]).toBe(f.pageCache.get(0));
      p.unpinUserPages(short);
      const s = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
      const shm = await p.pinUserPages(s, 1, Foll.WRITE | Foll.LONGTERM);
      p.unpinUserPages(shm);
      m.checkInvariants();
    });

    it('unaligned start, nrPages 0, unknown flags, FOLL_PIN/FOLL_GET mix-ups → EINVAL', async () => {
      const { m, p } = setup();
      const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
      await expect(p.pinUserPages(a + 1, 1)).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(p.pinUserPages(a, 0)).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(p.pinUserPages(a, -1)).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(p.getUserPages(a + 8, 1)).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(p.getUserPages(a, 0)).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(p.pinUserPages(a, 1, 0x8000_0000)).rejects.toMatchObject({ code: 'EINVAL' });
      await expect((async () => p.pinUserPages(a, 1, Foll.GET))()).rejects.toMatchObject({ code: 'EINVAL' });
      await expect((async () => p.getUserPages(a, 1, Foll.PIN))()).rejects.toMatchObject({ code: 'EINVAL' });
      expect(m.stats().usedPages).toBe(0);
    });

    it('no mapping or beyond the address space → EFAULT', async () => {
      const { p } = setup();
      await expect(p.pinUserPages(0x1000_0000, 1)).rejects.toMatchObject({ code: 'EFAULT' });
      await expect(p.pinUserPages(TASK_SIZE - P, 2)).rejects.toMatchObject({ code: 'EFAULT' });
    });

    it('FOLL_NOFAULT on a page that is not present → EFAULT', async () => {
      const { m, p } = setup();
      const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
      await p.writeU32(a, 1);
      await expect(p.pinUserPages(a, 2, Foll.NOFAULT)).rejects.toMatchObject({ code: 'EFAULT' });
      expect(totalPins(m)).toBe(0);
      const pins = await p.pinUserPages(a, 1, Foll.NOFAULT);
      p.unpinUserPages(pins);
    });

    it('is all-or-nothing: a pin across a hole fails and leaves no pin or reference', async () => {
      const { m, p } = setup();
      const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
      await p.munmap(a + 2 * P, P);
      await p.fill(a, 2 * P, 1);
      const refs = totalRefs(m);
      await expect(p.pinUserPages(a, 4, Foll.WRITE)).rejects.toMatchObject({ code: 'EFAULT' });
      expect(totalPins(m)).toBe(0);
      expect(totalRefs(m)).toBe(refs);
      await expect(p.getUserPages(a, 4)).rejects.toMatchObject({ code: 'EFAULT' });
      expect(totalRefs(m)).toBe(refs);
      // A mapping it crosses into with the wrong permission fails the same way.
      await p.mmap({ addr: a + 2 * P, length: P, prot: Prot.READ, flags: ANON | MapFlag.FIXED });
      await expect(p.pinUserPages(a, 4, Foll.WRITE)).rejects.toMatchObject({ code: 'EFAULT' });
      expect(totalPins(m)).toBe(0);
      expect(totalRefs(m)).toBe(refs);
      m.checkInvariants();
    });

    it('after exit → ESRCH', async () => {
      const { p } = setup();
      const a = await p.mmap({ length: P, prot: RW, flags: ANON });
      await p.exit();
      await expect(p.pinUserPages(a, 1)).rejects.toMatchObject({ code: 'ESRCH' });
      await expect(p.getUserPages(a, 1)).rejects.toMatchObject({ code: 'ESRCH' });
    });
  });
});

describe('get_user_pages / put_user_pages', () => {
  it('takes a reference per page without pinning, and put drops it', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 3);
    const pfns = await p.getUserPages(a, 2, Foll.WRITE);
    for (const pfn of pfns) {
      expect(m.mm.mem.refcount[pfn]).toBe(2);
      expect(m.mm.mem.pincount[pfn]).toBe(0);
    }
    m.checkInvariants((pfn) => (pfns.includes(pfn) ? 1 : 0));
    p.putUserPages(pfns);
    for (const pfn of pfns) expect(m.mm.mem.refcount[pfn]).toBe(1);
    // A second put has no reference to drop: EINVAL, nothing changed.
    expect(() => p.putUserPages(pfns)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    for (const pfn of pfns) expect(m.mm.mem.refcount[pfn]).toBe(1);
    m.checkInvariants();
  });

  it('a read GUP of untouched anon memory returns the zero page', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    const pfns = await p.getUserPages(a, 1);
    expect(pfns[0]).toBe(ZERO_PFN);
    expect(m.stats().usedPages).toBe(0);
    p.putUserPages(pfns);
    expect(m.mm.mem.refcount[ZERO_PFN]).toBe(1);
  });

  it('FOLL_WRITE breaks COW after fork, giving the caller its own page', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 10);
    const c = await p.fork();
    const shared = pfnAt(m, c, a);
    const [pfn] = await p.getUserPages(a, 1, Foll.WRITE);
    expect(pfn).not.toBe(shared);
    expect(pfnAt(m, p, a)).toBe(pfn);
    expect(m.mm.arena.pteFlags[p.mm.pgtable.lookup(a / P)]! & Pte.WRITE).toBe(Pte.WRITE);
    p.putUserPages([pfn!]);
    m.checkInvariants();
  });
});
