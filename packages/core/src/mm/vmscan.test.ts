import { describe, it, expect } from 'vitest';
import type { Machine } from '../system/machine.js';
import { Foll, MapFlag, Prot } from './constants.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { RssCounter } from './mm-struct.js';
import { Pte, PteType, pteType } from './pgtable.js';
import type { Process } from './process.js';
import { ANON, P, recordHooks, RW, setup } from '../testing/fixtures.js';

function pteOf(m: Machine, p: Process, addr: number): { flags: number; val: number } {
  const slot = p.mm.pgtable.lookup(addr / P);
  return slot < 0
    ? { flags: 0, val: 0 }
    : { flags: m.mm.arena.pteFlags[slot]!, val: m.mm.arena.pteVal[slot]! };
}

function isSwapEntry(flags: number): boolean {
  return (flags & Pte.PRESENT) === 0 && pteType(flags) === PteType.SWAP;
}

describe('reclaim and swap', () => {
  it('writing more pages than RAM swaps out and back in with correct data', async () => {
    const { m, p } = setup({ ramPages: 16, swapPages: 64 });
    const n = 40;
    const a = await p.mmap({ length: n * P, prot: RW, flags: ANON });
    for (let i = 0; i < n; i++) {
      await p.writeU32(a + i * P, 0x1000 + i);
      await p.writeU32(a + i * P + P - 4, 0x2000 + i);
    }
    const s = m.stats();
    expect(s.usedPages).toBeLessThanOrEqual(15);
    expect(s.swapUsed).toBeGreaterThanOrEqual(n - 15);
    expect(s.reclaim.swappedOut).toBeGreaterThanOrEqual(n - 15);
    expect(p.mm.rss[RssCounter.ANON]! + p.mm.rss[RssCounter.SWAP]!).toBe(n);
    m.checkInvariants();
    for (let i = 0; i < n; i++) {
      expect(await p.readU32(a + i * P)).toBe(0x1000 + i);
      expect(await p.readU32(a + i * P + P - 4)).toBe(0x2000 + i);
    }
    m.checkInvariants();
    await p.exit();
    expect(m.stats().usedPages).toBe(0);
    expect(m.stats().swapUsed).toBe(0);
  });

  it('reclaim returns how many frames it freed and leaves swap entries behind', async () => {
    const { m, p } = setup({ ramPages: 32, swapPages: 64 });
    const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
    await p.fill(a, 8 * P, 0x99);
    expect(await m.reclaim(3)).toBe(3);
    expect(m.stats().usedPages).toBe(5);
    expect(m.stats().swapUsed).toBe(3);
    expect(await m.reclaim(100)).toBe(5);
    expect(m.stats().usedPages).toBe(0);
    for (let i = 0; i < 8; i++) expect(isSwapEntry(pteOf(m, p, a + i * P).flags)).toBe(true);
    expect(p.mm.rss[RssCounter.SWAP]).toBe(8);
    expect(await m.reclaim(10)).toBe(0);
    // Sync throw or rejected promise: either way the caller sees EINVAL.
    await expect((async () => m.reclaim(0))()).rejects.toMatchObject({ code: 'EINVAL' });
    expect((await p.read(a, 8 * P)).every((x) => x === 0x99)).toBe(true);
    m.checkInvariants();
  });

  it('pinned pages are never reclaimed: same frame stays mapped', async () => {
    const { m, p } = setup({ ramPages: 16, swapPages: 64 });
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 0x10);
    const pins = await p.pinUserPages(a, 2, Foll.WRITE | Foll.LONGTERM);
    await m.reclaim(100);
    expect(m.stats().reclaim.skippedPinned).toBeGreaterThan(0);
    for (let i = 0; i < 2; i++) {
      const e = pteOf(m, p, a + i * P);
      expect(e.flags & Pte.PRESENT).toBe(Pte.PRESENT);
      expect(e.val).toBe(pins[i]);
    }
    expect(isSwapEntry(pteOf(m, p, a + 2 * P).flags)).toBe(true);
    expect(m.stats().usedPages).toBe(2);
    // Memory pressure from more writes does not take them either.
    const b = await p.mmap({ length: 30 * P, prot: RW, flags: ANON });
    await p.fill(b, 30 * P, 1);
    expect(pteOf(m, p, a).val).toBe(pins[0]);
    expect(pteOf(m, p, a + P).val).toBe(pins[1]);
    m.checkInvariants();
    p.unpinUserPages(pins);
    await m.reclaim(100);
    expect(isSwapEntry(pteOf(m, p, a).flags)).toBe(true);
    expect((await p.read(a, 4 * P)).every((x) => x === 0x10)).toBe(true);
    m.checkInvariants();
  });

  it('GUP-referenced pages are not reclaimed until putUserPages', async () => {
    const { m, p } = setup({ ramPages: 16, swapPages: 64 });
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 0x20);
    const refs = await p.getUserPages(a, 2);
    const extra = (pfn: number): number => (pfn === refs[0] || pfn === refs[1] ? 1 : 0);
    m.checkInvariants(extra);
    await m.reclaim(100);
    expect(pteOf(m, p, a).val).toBe(refs[0]);
    expect(pteOf(m, p, a + P).val).toBe(refs[1]);
    expect(m.stats().usedPages).toBe(2);
    m.checkInvariants(extra);
    p.putUserPages(refs);
    m.checkInvariants();
    expect(await m.reclaim(100)).toBe(2);
    expect(isSwapEntry(pteOf(m, p, a).flags)).toBe(true);
    m.checkInvariants();
  });

  it('RAM and swap full: the next fault fails with ENOMEM and the state stays consistent', async () => {
    const { m, p } = setup({ ramPages: 16, swapPages: 4 });
    const a = await p.mmap({ length: 32 * P, prot: RW, flags: ANON });
    let written = 0;
    let err: unknown;
    for (; written < 32; written++) {
      try {
        await p.writeU32(a + written * P, written + 1);
      } catch (e) {
        err = e;
        break;
      }
    }
    expect(err).toMatchObject({ code: 'ENOMEM' });
    expect(written).toBe(15 + 4);
    expect(m.stats().usedPages).toBe(15);
    expect(m.stats().swapUsed).toBe(4);
    m.checkInvariants();
    // The failed page has no entry; reading untouched memory still works (zero page, no frame).
    expect(pteOf(m, p, a + written * P).flags).toBe(0);
    expect(await p.readU32(a + 31 * P)).toBe(0);
    m.checkInvariants();
    // Freeing some memory lets everything else be read back intact and writes continue.
    await p.munmap(a, 4 * P);
    expect(m.stats().usedPages + m.stats().swapUsed).toBe(written - 4);
    for (let i = 4; i < written; i++) expect(await p.readU32(a + i * P)).toBe(i + 1);
    await p.writeU32(a + written * P, 77);
    expect(await p.readU32(a + written * P)).toBe(77);
    m.checkInvariants();
  });

  it('dirty file pages written through a shared mapping are written back on reclaim', async () => {
    const { m, p } = setup({ ramPages: 32, swapPages: 64 });
    const f = await m.createFile('log', new Uint8Array(3 * P));
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    await p.fill(a, 3 * P, 0xd1);
    await p.writeU32(a + P, 0xcafe);
    await m.reclaim(100);
    expect(f.pageCache.size).toBe(0);
    expect(m.stats().usedPages).toBe(0);
    expect(m.stats().reclaim.writtenBack).toBeGreaterThanOrEqual(3);
    expect(f.backing.hasData(0) && f.backing.hasData(1) && f.backing.hasData(2)).toBe(true);
    const back = await m.readFile(f, 0, 3 * P);
    expect(new DataView(back.buffer).getUint32(P, true)).toBe(0xcafe);
    expect(back.subarray(0, P).every((x) => x === 0xd1)).toBe(true);
    expect(await p.readU32(a + P)).toBe(0xcafe);
    m.checkInvariants();
  });

  it('clean file pages are dropped without write-back', async () => {
    const { m, p } = setup({ ramPages: 32, swapPages: 64 });
    const f = await m.createFile('ro', new Uint8Array(2 * P).fill(4));
    await m.reclaim(100); // writes back createFile's dirty cache
    const wb = m.stats().reclaim.writtenBack;
    const a = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    await p.read(a, 2 * P);
    expect(f.pageCache.size).toBe(2);
    await m.reclaim(100);
    expect(f.pageCache.size).toBe(0);
    expect(m.stats().reclaim.writtenBack).toBe(wb);
    expect((await p.read(a, 2 * P)).every((x) => x === 4)).toBe(true);
  });

  it('shmem pages survive reclaim', async () => {
    const { m, p } = setup({ ramPages: 16, swapPages: 64 });
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.fill(a, 4 * P, 0x5e);
    const c = await p.fork();
    await m.reclaim(100);
    expect(m.stats().usedPages).toBe(0);
    expect((await c.read(a, 4 * P)).every((x) => x === 0x5e)).toBe(true);
    m.checkInvariants();
  });

  it('pages shared by fork are swapped out of both processes at once', async () => {
    const { m, p } = setup({ ramPages: 16, swapPages: 64 });
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 31);
    const c = await p.fork();
    await m.reclaim(100);
    expect(m.stats().usedPages).toBe(0);
    const slot = pteOf(m, p, a).val;
    expect(pteOf(m, c, a).val).toBe(slot);
    expect(m.mm.swap.swapMap[slot]).toBe(2);
    m.checkInvariants();
    expect(await c.readU32(a)).toBe(31);
    expect(await p.readU32(a)).toBe(31);
    m.checkInvariants();
  });

  it('fires one CLEAR invalidation per unmapped page, paired with its end', async () => {
    const { m, p } = setup({ ramPages: 32, swapPages: 64 });
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 1);
    const rec = recordHooks(p);
    expect(await m.reclaim(100)).toBe(2);
    expect(rec.starts.map((r) => [r.event, r.end - r.start, r.blockable])).toEqual([
      [NotifyEvent.CLEAR, P, true],
      [NotifyEvent.CLEAR, P, true],
    ]);
    expect(rec.starts.map((r) => r.start).sort()).toEqual([a, a + P]);
    expect(rec.ends).toEqual(rec.starts);
  });
});

describe('oomReap', () => {
  it('zaps the private anonymous memory of a process; shared memory is kept', async () => {
    const { m, p } = setup({ ramPages: 32, swapPages: 64 });
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    const s = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.fill(a, 4 * P, 0x77);
    await p.fill(s, P, 0x88);
    await m.reclaim(1); // one page to swap
    expect(m.stats().swapUsed).toBe(1);
    expect(m.oomReap(p)).toBe(true);
    expect(m.stats().usedPages).toBe(1); // the shmem page
    expect(m.stats().swapUsed).toBe(0);
    expect(p.mm.rss[RssCounter.ANON]).toBe(0);
    expect(p.mm.rss[RssCounter.SWAP]).toBe(0);
    expect((await p.read(a, 4 * P)).every((x) => x === 0)).toBe(true);
    expect((await p.read(s, P)).every((x) => x === 0x88)).toBe(true);
    m.checkInvariants();
  });

  it('skips and returns false when a subscriber cannot invalidate without blocking', async () => {
    const { m, p } = setup({ ramPages: 32, swapPages: 64 });
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 0x66);
    const rec = recordHooks(p);
    rec.allowNonblock = false;
    expect(m.oomReap(p)).toBe(false);
    expect(rec.starts.map((r) => [r.start, r.end, r.event, r.blockable])).toEqual([
      [a, a + 2 * P, NotifyEvent.CLEAR, false],
    ]);
    expect(rec.ends.length).toBe(0);
    expect(m.stats().usedPages).toBe(2);
    expect((await p.read(a, 2 * P)).every((x) => x === 0x66)).toBe(true);
    // Once the subscriber agrees, the reap goes through and the end is paired.
    rec.allowNonblock = true;
    expect(m.oomReap(p)).toBe(true);
    expect(rec.ends.length).toBe(1);
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });

  it('returns false when mmap_lock cannot be taken without sleeping', async () => {
    const { m, p } = setup({ ramPages: 32, swapPages: 64 });
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.fill(a, P, 1);
    await p.mm.mmapLock.write();
    try {
      expect(m.oomReap(p)).toBe(false);
      expect(m.stats().usedPages).toBe(1);
    } finally {
      p.mm.mmapLock.writeUnlock();
    }
    expect(m.oomReap(p)).toBe(true);
    expect(m.stats().usedPages).toBe(0);
  });
});
