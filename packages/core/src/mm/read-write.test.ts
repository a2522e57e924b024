import { describe, it, expect } from 'vitest';
import { MapFlag, Prot } from './constants.js';
import { PG } from './page-flags.js';
import { expectBytes, machine, P, RW } from '../testing/fixtures.js';

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 17 + seed) & 0xff;
  return b;
}

describe('pread / pwrite', () => {
  it('round-trips data across page boundaries', async () => {
    const m = machine({ swapPages: 64 });
    const f = await m.createFile('f');
    expect(f.size).toBe(0);
    const data = pattern(3 * P + 123, 5);
    await m.writeFile(f, 0, data);
    expect(f.size).toBe(data.length);
    expectBytes(await m.readFile(f, 0, data.length), data);
    expect(await m.readFile(f, P - 7, 20)).toEqual(data.subarray(P - 7, P + 13));
    // Overwrite in the middle.
    await m.writeFile(f, 2 * P - 2, new Uint8Array([1, 2, 3, 4]));
    const back = await m.readFile(f, 2 * P - 3, 6);
    expect(Array.from(back)).toEqual([data[2 * P - 3], 1, 2, 3, 4, data[2 * P + 2]]);
    expect(f.size).toBe(data.length);
  });

  it('a read at or past EOF is short', async () => {
    const m = machine({ swapPages: 64 });
    const f = await m.createFile('f', pattern(P + 10, 1));
    expect((await m.readFile(f, P, 100)).length).toBe(10);
    expect((await m.readFile(f, P + 10, 100)).length).toBe(0);
    expect((await m.readFile(f, 10 * P, 100)).length).toBe(0);
    expect((await m.readFile(f, 0, 0)).length).toBe(0);
  });

  it('a write past EOF extends the file; the gap reads zeros', async () => {
    const m = machine({ swapPages: 64 });
    const f = await m.createFile('f', pattern(10, 1));
    await m.writeFile(f, 3 * P + 5, new Uint8Array([9, 9]));
    expect(f.size).toBe(3 * P + 7);
    const all = await m.readFile(f, 0, f.size);
    expect(all.subarray(10, 3 * P + 5).every((x) => x === 0)).toBe(true);
    expect(Array.from(all.subarray(3 * P + 5))).toEqual([9, 9]);
    // Pages of the gap that were never written cost no content memory after reclaim.
    await m.reclaim(100);
    expect(f.backing.hasData(1)).toBe(false);
    expect(f.backing.hasData(3)).toBe(true);
  });

  it('written pages are dirty in the cache and survive reclaim via write-back', async () => {
    const m = machine({ swapPages: 64 });
    const data = pattern(2 * P, 3);
    const f = await m.createFile('f', data);
    const pfn = f.pageCache.get(0)!;
    expect(m.mm.mem.flags[pfn]! & PG.DIRTY).toBe(PG.DIRTY);
    await m.reclaim(100);
    expect(f.pageCache.size).toBe(0);
    expect(m.stats().usedPages).toBe(0);
    expectBytes(await m.readFile(f, 0, 2 * P), data);
    expect(f.pageCache.size).toBe(2);
    m.checkInvariants();
  });

  it('pwrite is visible through shared mappings and through private mappings not yet written', async () => {
    const m = machine({ swapPages: 64 });
    const f = await m.createFile('f', new Uint8Array(2 * P));
    const p = m.createProcess();
    const shared = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    const priv = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    await p.read(shared, 2 * P);
    await p.read(priv, 2 * P);
    await p.fill(priv + P, 1, 0x77); // page 1 now has a private copy
    await m.writeFile(f, 0, new Uint8Array([1, 2]));
    await m.writeFile(f, P, new Uint8Array([3, 4]));
    expect(Array.from(await p.read(shared, 2))).toEqual([1, 2]);
    expect(Array.from(await p.read(priv, 2))).toEqual([1, 2]);
    expect(Array.from(await p.read(shared + P, 2))).toEqual([3, 4]);
    expect(Array.from(await p.read(priv + P, 2))).toEqual([0x77, 0]);
    m.checkInvariants();
  });

  it('invalid offsets or lengths are EINVAL', async () => {
    const m = machine({ swapPages: 64 });
    const f = await m.createFile('f', pattern(10, 1));
    await expect(m.readFile(f, -1, 1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(m.readFile(f, 0, -1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(m.readFile(f, 0.5, 1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(m.writeFile(f, -P, new Uint8Array(1))).rejects.toMatchObject({ code: 'EINVAL' });
    expect(f.size).toBe(10);
  });

  it('works under memory pressure with a file larger than RAM', async () => {
    const m = machine({ ramPages: 16, swapPages: 16 });
    const data = pattern(40 * P, 7);
    const f = await m.createFile('big', data);
    expect(m.stats().usedPages).toBeLessThanOrEqual(15);
    const back = await m.readFile(f, 0, data.length);
    expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
    m.checkInvariants();
  });
});

describe('file store', () => {
  it('create rejects duplicates and empty names; unlink keeps a mapped file alive', async () => {
    const m = machine({ swapPages: 64 });
    const f = await m.createFile('x', pattern(P, 1));
    await expect(m.createFile('x')).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(m.createFile('')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(m.mm.files.lookup('x')).toBe(f);
    m.mm.files.unlink('x');
    expect(m.mm.files.lookup('x')).toBeUndefined();
    expect(() => m.mm.files.unlink('x')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    // Still readable through the object; a new file may take the name.
    expect((await m.readFile(f, 0, 4)).length).toBe(4);
    const g = await m.createFile('x');
    expect(g).not.toBe(f);
  });
});
