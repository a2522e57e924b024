import { describe, it, expect } from 'vitest';
import type { Machine } from '../system/machine.js';
import { MMAP_BASE, MMAP_MIN_ADDR, Madv, MapFlag, MremapFlag, Prot, TASK_SIZE } from './constants.js';
import type { MmapArgs } from './mmap.js';
import type { Process } from './process.js';
import { ANON, layout, P, RW, setup } from '../testing/fixtures.js';

describe('mmap', () => {
  it('maps anonymous memory top-down below MMAP_BASE, rounding the length up to pages', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 100, prot: RW, flags: ANON });
    expect(a).toBe(MMAP_BASE - P);
    expect(layout(p)).toEqual([[a, a + P]]);
    const v = p.mm.vmas.lookup(a)!;
    expect(v.isAnonymous).toBe(true);
    expect(v.writable).toBe(true);
    // Mapping costs no frames until touched.
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });

  describe('argument errors leave the address space and memory unchanged', () => {
    const cases: [string, (base: number) => MmapArgs, string][] = [
      ['length 0', () => ({ length: 0, prot: RW, flags: ANON }), 'EINVAL'],
      ['negative length', () => ({ length: -P, prot: RW, flags: ANON }), 'EINVAL'],
      [
        'unaligned MAP_FIXED',
        (b) => ({ addr: b + 1, length: P, prot: RW, flags: ANON | MapFlag.FIXED }),
        'EINVAL',
      ],
      [
        'MAP_FIXED without an address',
        () => ({ length: P, prot: RW, flags: ANON | MapFlag.FIXED }),
        'EINVAL',
      ],
      ['both SHARED and PRIVATE', () => ({ length: P, prot: RW, flags: ANON | MapFlag.SHARED }), 'EINVAL'],
      ['neither SHARED nor PRIVATE', () => ({ length: P, prot: RW, flags: MapFlag.ANONYMOUS }), 'EINVAL'],
      ['unknown flags', () => ({ length: P, prot: RW, flags: ANON | 0x4000_0000 }), 'EINVAL'],
      ['unknown prot bits', () => ({ length: P, prot: 0x10, flags: ANON }), 'EINVAL'],
      ['unaligned offset', () => ({ length: P, prot: RW, flags: ANON, offset: 100 }), 'EINVAL'],
      [
        'MAP_FIXED below mmap_min_addr',
        () => ({ addr: MMAP_MIN_ADDR - P, length: P, prot: RW, flags: ANON | MapFlag.FIXED }),
        'EPERM',
      ],
      ['MAP_FIXED at 0', () => ({ addr: 0, length: P, prot: RW, flags: ANON | MapFlag.FIXED }), 'EPERM'],
      [
        'MAP_FIXED_NOREPLACE overlapping',
        (b) => ({ addr: b + P, length: 4 * P, prot: RW, flags: ANON | MapFlag.FIXED_NOREPLACE }),
        'EEXIST',
      ],
      [
        'MAP_FIXED beyond 2^47',
        () => ({ addr: TASK_SIZE - P, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED }),
        'ENOMEM',
      ],
      ['length beyond 2^47', () => ({ length: TASK_SIZE + P, prot: RW, flags: ANON }), 'ENOMEM'],
      ['file mapping without a file', () => ({ length: P, prot: RW, flags: MapFlag.PRIVATE }), 'EBADF'],
    ];
    for (const [name, args, code] of cases) {
      it(`${name} → ${code}`, async () => {
        const { m, p } = setup();
        const base = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
        await p.fill(base, 2 * P, 0x5a);
        const before = { vmas: layout(p), stats: m.stats(), files: m.mm.files.count };
        await expect(p.mmap(args(base))).rejects.toMatchObject({ code });
        expect(layout(p)).toEqual(before.vmas);
        expect(m.stats()).toEqual(before.stats);
        expect(m.mm.files.count).toBe(before.files);
        expect((await p.read(base, 2 * P)).every((x) => x === 0x5a)).toBe(true);
        m.checkInvariants();
      });
    }

    it('MAP_ANONYMOUS with a file → EINVAL', async () => {
      const { m, p } = setup();
      const f = await m.createFile('f', new Uint8Array(P).fill(1));
      const before = { vmas: layout(p), stats: m.stats() };
      await expect(p.mmap({ length: P, prot: RW, flags: ANON, file: f })).rejects.toMatchObject({
        code: 'EINVAL',
      });
      expect(layout(p)).toEqual(before.vmas);
      expect(m.stats()).toEqual(before.stats);
      expect(f.mappings.size).toBe(0);
    });

    it('MAP_FIXED_NOREPLACE on a free range succeeds at that address', async () => {
      const { p } = setup();
      const a = await p.mmap({
        addr: 0x1000_0000,
        length: 2 * P,
        prot: RW,
        flags: ANON | MapFlag.FIXED_NOREPLACE,
      });
      expect(a).toBe(0x1000_0000);
    });
  });

  it('MAP_FIXED replaces an existing mapping: the old data is gone', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 0xab);
    const used = m.stats().usedPages;
    expect(used).toBe(4);
    const r = await p.mmap({ addr: a + P, length: 2 * P, prot: Prot.READ, flags: ANON | MapFlag.FIXED });
    expect(r).toBe(a + P);
    expect(layout(p)).toEqual([
      [a, a + P],
      [a + P, a + 3 * P],
      [a + 3 * P, a + 4 * P],
    ]);
    expect(m.stats().usedPages).toBe(2); // the two replaced pages were freed
    expect(Array.from(await p.read(a + P, 2 * P)).every((x) => x === 0)).toBe(true);
    expect((await p.read(a, P)).every((x) => x === 0xab)).toBe(true);
    expect((await p.read(a + 3 * P, P)).every((x) => x === 0xab)).toBe(true);
    m.checkInvariants();
  });

  it('honours a free, aligned hint and ignores a hint that overlaps or is unaligned', async () => {
    const { p } = setup();
    const hint = 0x2000_0000;
    expect(await p.mmap({ addr: hint, length: 2 * P, prot: RW, flags: ANON })).toBe(hint);
    const other = await p.mmap({ addr: hint, length: 2 * P, prot: RW, flags: ANON });
    expect(other).not.toBe(hint);
    expect(other + 2 * P <= hint || other >= hint + 2 * P).toBe(true);
    const unaligned = await p.mmap({ addr: 0x3000_0001, length: P, prot: RW, flags: ANON });
    expect(unaligned % P).toBe(0);
    expect(unaligned).not.toBe(0x3000_0000);
    const low = await p.mmap({ addr: P, length: P, prot: RW, flags: ANON });
    expect(low).toBeGreaterThanOrEqual(MMAP_MIN_ADDR);
  });

  it('a MAP_SHARED|MAP_ANONYMOUS mapping is backed by a shmem object freed with its last mapping', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    const v = p.mm.vmas.lookup(a)!;
    expect(v.file?.shmem).toBe(true);
    expect(v.file?.size).toBe(3 * P);
    expect(m.mm.files.count).toBe(1);
    await p.fill(a, 3 * P, 7);
    expect(m.stats().usedPages).toBe(3);
    await p.munmap(a, 3 * P);
    expect(m.mm.files.count).toBe(0);
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });
  it('a shmem object split into pieces lives until its last piece is unmapped', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.fill(a, 4 * P, 0x21);
    await p.mprotect(a + P, P, Prot.READ);
    expect(p.mm.vmas.count).toBe(3);
    const file = p.mm.vmas.lookup(a)!.file!;
    expect(file.mappings.size).toBe(3);
    expect(p.mm.vmas.all().map((v) => v.pgoff)).toEqual([0, 1, 2]);
    await p.munmap(a, 2 * P);
    expect(m.mm.files.count).toBe(1);
    expect((await p.read(a + 3 * P, P)).every((x) => x === 0x21)).toBe(true);
    await p.munmap(a + 2 * P, 2 * P);
    expect(file.mappings.size).toBe(0);
    expect(m.mm.files.count).toBe(0);
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });

  it('top-down placement uses a free gap that fits exactly', async () => {
    const { p } = setup();
    await p.mmap({ addr: MMAP_BASE - 3 * P, length: P, prot: Prot.READ, flags: ANON | MapFlag.FIXED });
    // [MMAP_BASE - 2P, MMAP_BASE) is free: exactly two pages.
    expect(await p.mmap({ length: 2 * P, prot: RW, flags: ANON })).toBe(MMAP_BASE - 2 * P);
    // The next one goes below the read-only page.
    expect(await p.mmap({ length: P, prot: RW, flags: ANON })).toBe(MMAP_BASE - 4 * P);
  });

  it('ENOMEM when no free range is large enough', async () => {
    const { m, p } = setup();
    const before = m.stats();
    await expect(p.mmap({ length: MMAP_BASE, prot: RW, flags: ANON })).rejects.toMatchObject({
      code: 'ENOMEM',
    });
    expect(p.mm.vmas.count).toBe(0);
    expect(m.stats()).toEqual(before);
  });
});

describe('munmap', () => {
  it('rejects an unaligned address, length 0 and ranges beyond the address space with EINVAL', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 1);
    const before = { vmas: layout(p), stats: m.stats() };
    await expect(p.munmap(a + 1, P)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(p.munmap(a, 0)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(p.munmap(TASK_SIZE - P, 2 * P)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(p.munmap(a, -1)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(layout(p)).toEqual(before.vmas);
    expect(m.stats()).toEqual(before.stats);
  });

  it('partial munmap of the middle splits the VMA in two and frees only those pages', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 6 * P, prot: RW, flags: ANON });
    for (let i = 0; i < 6; i++) await p.fill(a + i * P, P, i + 1);
    await p.munmap(a + 2 * P, 2 * P);
    expect(layout(p)).toEqual([
      [a, a + 2 * P],
      [a + 4 * P, a + 6 * P],
    ]);
    expect(m.stats().usedPages).toBe(4);
    expect((await p.read(a + P, 1))[0]).toBe(2);
    expect((await p.read(a + 4 * P, 1))[0]).toBe(5);
    m.checkInvariants();
  });

  it('a length that is not a multiple of the page size unmaps whole pages', async () => {
    const { p } = setup();
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: ANON });
    await p.munmap(a, P + 1);
    expect(layout(p)).toEqual([[a + 2 * P, a + 3 * P]]);
  });

  it('unmapping a hole is not an error; a range spanning VMAs and holes removes all of them', async () => {
    const { m, p } = setup();
    await p.munmap(0x5000_0000, 16 * P);
    const a = await p.mmap({ addr: 0x5000_0000, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    await p.mmap({ addr: 0x5000_0000 + 4 * P, length: 2 * P, prot: Prot.READ, flags: ANON | MapFlag.FIXED });
    await p.fill(a, 2 * P, 9);
    await p.munmap(a - P, 10 * P);
    expect(p.mm.vmas.count).toBe(0);
    expect(m.stats().usedPages).toBe(0);
    expect(m.mm.arena.tablesLive).toEqual({ dirs: 1, leaves: 0 });
    m.checkInvariants();
  });

  it('access after munmap raises SIGSEGV with MAPERR', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.writeU32(a, 0xdeadbeef);
    await p.munmap(a, 2 * P);
    await expect(p.readU32(a)).rejects.toMatchObject({
      code: 'EFAULT',
      signal: 'SIGSEGV',
      sigCode: 'MAPERR',
      address: a,
    });
    await expect(p.writeU32(a + P, 1)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'MAPERR' });
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });
});

describe('special (driver) mappings', () => {
  async function special(): Promise<{ m: Machine; p: Process; a: number; pfn: number; closed: number[] }> {
    const { m, p } = setup();
    const pfn = m.mm.mem.alloc(); // a frame the driver owns
    const closed: number[] = [];
    const a = await p.mmap({
      length: 2 * P,
      prot: RW,
      flags: MapFlag.SHARED,
      ops: {
        name: 'dev',
        fault: (vma, address) => (address - vma.start === 0 ? pfn : -1),
        close: (vma) => void closed.push(vma.start),
      },
    });
    return { m, p, a, pfn, closed };
  }

  it('faults through the driver: its pfn is mapped, a missing page is SIGBUS', async () => {
    const { m, p, a, pfn } = await special();
    expect(p.mm.vmas.lookup(a)!.isSpecial).toBe(true);
    await p.writeU32(a, 0x11223344);
    expect(m.mm.arena.pteVal[p.mm.pgtable.lookup(a / P)]).toBe(pfn);
    const b = new Uint8Array(4);
    m.mm.mem.content.read(pfn, 0, b, 0, 4);
    expect(Array.from(b)).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect(m.mm.mem.mapcount[pfn]).toBe(0); // no struct page accounting for PFNMAP
    await expect(p.read(a + P, 1)).rejects.toMatchObject({ signal: 'SIGBUS' });
  });

  it('is not copied to a fork child, cannot be pinned, grown, or zapped by MADV_DONTNEED', async () => {
    const { p, a, closed } = await special();
    await p.read(a, 1);
    const c = await p.fork();
    expect(c.mm.vmas.lookup(a)).toBeUndefined();
    await expect(c.read(a, 1)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'MAPERR' });
    await expect(p.pinUserPages(a, 1)).rejects.toMatchObject({ code: 'EFAULT' });
    await expect(p.getUserPages(a, 1)).rejects.toMatchObject({ code: 'EFAULT' });
    await expect(p.mremap(a, 2 * P, 4 * P, MremapFlag.MAYMOVE)).rejects.toMatchObject({ code: 'EFAULT' });
    await expect(p.madvise(a, P, Madv.DONTNEED)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(closed).toEqual([]);
    await p.munmap(a, 2 * P);
    expect(closed).toEqual([a]);
  });
});
