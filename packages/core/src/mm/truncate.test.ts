import { describe, it, expect } from 'vitest';
import { MapFlag, Prot } from './constants.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { P, recordHooks, RW, setup } from '../testing/fixtures.js';

function bytes(n: number, v: number): Uint8Array {
  return new Uint8Array(n).fill(v);
}

describe('truncate', () => {
  it('shrinking unmaps beyond EOF in every process: SIGBUS afterwards, private COW copies included', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', bytes(4 * P, 0xaa));
    const q = m.createProcess();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    const b = await q.mmap({ length: 4 * P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    await p.read(a, 4 * P);
    await q.read(b, 4 * P);
    await q.fill(b + 3 * P, 4, 0xbb); // private COW copy of page 3
    expect(m.stats().usedPages).toBe(5);
    m.checkInvariants();

    await m.truncate(f, 2 * P);
    expect(f.size).toBe(2 * P);
    expect(f.pageCache.size).toBe(2);
    expect(m.stats().usedPages).toBe(2);
    for (const [proc, base] of [
      [p, a],
      [q, b],
    ] as const) {
      await expect(proc.read(base + 2 * P, 1)).rejects.toMatchObject({ signal: 'SIGBUS' });
      await expect(proc.read(base + 3 * P, 1)).rejects.toMatchObject({ signal: 'SIGBUS' });
      expect((await proc.read(base, 2 * P)).every((x) => x === 0xaa)).toBe(true);
    }
    await expect(q.fill(b + 3 * P, 1, 1)).rejects.toMatchObject({ signal: 'SIGBUS' });
    m.checkInvariants();
  });

  it('a partial last page is zeroed beyond the new size, in the cache and in the mapping', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', bytes(2 * P, 0x11));
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    await p.read(a, 2 * P);
    await m.truncate(f, P + 100);
    const page = await p.read(a + P, P);
    expect(page.subarray(0, 100).every((x) => x === 0x11)).toBe(true);
    expect(page.subarray(100).every((x) => x === 0)).toBe(true);
    expect((await m.readFile(f, 0, 2 * P)).length).toBe(P + 100);
    // Still zero after the page went through the disk.
    await m.reclaim(100);
    await m.truncate(f, 2 * P);
    const back = await m.readFile(f, P, P);
    expect(back.subarray(0, 100).every((x) => x === 0x11)).toBe(true);
    expect(back.subarray(100).every((x) => x === 0)).toBe(true);
    m.checkInvariants();
  });

  it('growing reads zeros in the new range and the old data does not come back', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', bytes(3 * P, 0x22));
    await m.reclaim(100); // data now only on "disk"
    await m.truncate(f, P);
    await m.truncate(f, 3 * P);
    expect(f.size).toBe(3 * P);
    const all = await m.readFile(f, 0, 3 * P);
    expect(all.subarray(0, P).every((x) => x === 0x22)).toBe(true);
    expect(all.subarray(P).every((x) => x === 0)).toBe(true);
    const a = await p.mmap({ length: 3 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    expect((await p.read(a + 2 * P, P)).every((x) => x === 0)).toBe(true);
    m.checkInvariants();
  });

  it('growing zeroes what a mapping wrote past the old EOF in the last page', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', bytes(100, 0x33));
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED, file: f });
    await p.fill(a + 200, 10, 0x44); // past EOF, inside the last page
    await m.truncate(f, 2 * P);
    const all = await m.readFile(f, 0, 2 * P);
    expect(all.subarray(0, 100).every((x) => x === 0x33)).toBe(true);
    expect(all.subarray(100).every((x) => x === 0)).toBe(true);
  });

  it('an existing mapping gains access to pages made valid by growing the file', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', bytes(P, 5));
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    await expect(p.read(a + P, 1)).rejects.toMatchObject({ signal: 'SIGBUS' });
    await m.truncate(f, 3 * P);
    expect((await p.read(a + P, 2 * P)).every((x) => x === 0)).toBe(true);
    await p.fill(a + 2 * P, 4, 6);
    expect(Array.from(await m.readFile(f, 2 * P, 5))).toEqual([6, 6, 6, 6, 0]);
    m.checkInvariants();
  });

  it('truncate to 0 drops the whole page cache; negative sizes are EINVAL', async () => {
    const { m } = setup();
    const f = await m.createFile('f', bytes(2 * P, 1));
    await expect(m.truncate(f, -1)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(f.size).toBe(2 * P);
    await m.truncate(f, 0);
    expect(f.size).toBe(0);
    expect(f.pageCache.size).toBe(0);
    expect(m.stats().usedPages).toBe(0);
    expect((await m.readFile(f, 0, 10)).length).toBe(0);
  });

  it('fires CLEAR over the cut-off part of each mapping', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', bytes(4 * P, 1));
    const a = await p.mmap({ length: 4 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    const b = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f, offset: 2 * P });
    const c = await p.mmap({ length: P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    const rec = recordHooks(p);
    await m.truncate(f, P + 1);
    const got = rec.starts.map((r) => [r.start, r.end, r.event]).sort((x, y) => x[0]! - y[0]!);
    const want = [
      [a + 2 * P, a + 4 * P, NotifyEvent.CLEAR],
      [b, b + 2 * P, NotifyEvent.CLEAR],
    ].sort((x, y) => x[0]! - y[0]!);
    expect(got).toEqual(want);
    expect(rec.ends.length).toBe(rec.starts.length);
    expect(c).toBeGreaterThan(0); // the one-page mapping was not touched
  });
});
