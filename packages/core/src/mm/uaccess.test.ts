import { describe, it, expect } from 'vitest';
import type { Machine } from '../system/machine.js';
import { MMAP_MIN_ADDR, MapFlag, Prot, TASK_SIZE } from './constants.js';
import { RssCounter } from './mm-struct.js';
import { Pte } from './pgtable.js';
import type { Process } from './process.js';
import { ZERO_PFN } from './physmem.js';
import { ANON, expectBytes, P, RW, setup } from '../testing/fixtures.js';

/** The PTE (flags, value) mapping `addr` in `p`, or null. */
function pte(m: Machine, p: Process, addr: number): { flags: number; val: number } | null {
  const slot = p.mm.pgtable.lookup(Math.floor(addr / P));
  if (slot < 0 || m.mm.arena.pteFlags[slot] === 0) return null;
  return { flags: m.mm.arena.pteFlags[slot]!, val: m.mm.arena.pteVal[slot]! };
}

describe('CPU access to anonymous memory', () => {
  it('a first write demand-faults a zeroed frame', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.writeU32(a + 8, 0x12345678);
    expect(m.stats().usedPages).toBe(1);
    expect(p.mm.rss[RssCounter.ANON]).toBe(1);
    const page = await p.read(a, P);
    expect(new DataView(page.buffer).getUint32(8, true)).toBe(0x12345678);
    expect(page.reduce((s, x) => s + (x !== 0 ? 1 : 0), 0)).toBe(4);
    const e = pte(m, p, a)!;
    expect(e.flags & (Pte.PRESENT | Pte.WRITE | Pte.DIRTY)).toBe(Pte.PRESENT | Pte.WRITE | Pte.DIRTY);
    expect(e.val).not.toBe(ZERO_PFN);
    m.checkInvariants();
  });

  it('a read of untouched memory maps the shared zero page without allocating a frame', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
    const used = m.stats().usedPages;
    const data = await p.read(a, 8 * P);
    expect(data.length).toBe(8 * P);
    expect(data.every((x) => x === 0)).toBe(true);
    expect(m.stats().usedPages).toBe(used);
    expect(p.mm.rss[RssCounter.ANON]).toBe(0);
    for (let i = 0; i < 8; i++) {
      const e = pte(m, p, a + i * P)!;
      expect(e.val).toBe(ZERO_PFN);
      expect(e.flags & Pte.WRITE).toBe(0);
      expect(e.flags & Pte.SPECIAL).toBe(Pte.SPECIAL);
    }
    expect(m.mm.mem.content.contentBytes).toBe(0);
    m.checkInvariants();
  });

  it('a write after a read copies the zero page into a private frame', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.read(a, 2 * P);
    expect(m.stats().usedPages).toBe(0);
    await p.write(a + 100, new Uint8Array([1, 2, 3]));
    expect(m.stats().usedPages).toBe(1);
    const e = pte(m, p, a)!;
    expect(e.val).not.toBe(ZERO_PFN);
    expect(e.flags & (Pte.WRITE | Pte.SPECIAL)).toBe(Pte.WRITE);
    expect(pte(m, p, a + P)!.val).toBe(ZERO_PFN);
    const page = await p.read(a, P);
    expect(Array.from(page.subarray(99, 104))).toEqual([0, 1, 2, 3, 0]);
    // The zero page itself is untouched.
    expect(m.mm.mem.content.hasData(ZERO_PFN)).toBe(false);
    expect((await p.read(a + P, P)).every((x) => x === 0)).toBe(true);
    m.checkInvariants();
  });

  it('accesses crossing page boundaries read and write every piece', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    const data = new Uint8Array(2 * P + 10);
    for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 1) & 0xff;
    await p.write(a + P - 5, data);
    expect(m.stats().usedPages).toBe(4);
    expectBytes(await p.read(a + P - 5, data.length), data);
    expect((await p.read(a, P - 5)).every((x) => x === 0)).toBe(true);
    await p.writeU32(a + 2 * P - 2, 0xa1b2c3d4);
    expect(await p.readU32(a + 2 * P - 2)).toBe(0xa1b2c3d4);
    await p.writeF64(a + 3 * P - 4, Math.PI);
    expect(await p.readF64(a + 3 * P - 4)).toBe(Math.PI);
    await p.fill(a + P / 2, 3 * P, 0xcc);
    const all = await p.read(a, 4 * P);
    expect(all.subarray(P / 2, P / 2 + 3 * P).every((x) => x === 0xcc)).toBe(true);
    expect(all[P / 2 - 1]).toBe(0);
    m.checkInvariants();
  });

  it('an access running off the end of a mapping faults after transferring the bytes before the hole', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.munmap(a + P, P);
    await expect(p.write(a + P - 4, new Uint8Array(8).fill(0xee))).rejects.toMatchObject({
      signal: 'SIGSEGV',
      sigCode: 'MAPERR',
      address: a + P,
    });
    expect(Array.from(await p.read(a + P - 4, 4))).toEqual([0xee, 0xee, 0xee, 0xee]);
    m.checkInvariants();
  });

  it('PROT_NONE: read and write raise SIGSEGV ACCERR', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: Prot.NONE, flags: ANON });
    await expect(p.read(a, 1)).rejects.toMatchObject({
      code: 'EFAULT',
      signal: 'SIGSEGV',
      sigCode: 'ACCERR',
      address: a,
    });
    await expect(p.write(a, new Uint8Array(1))).rejects.toMatchObject({
      signal: 'SIGSEGV',
      sigCode: 'ACCERR',
    });
    expect(m.stats().usedPages).toBe(0);
    expect(pte(m, p, a)).toBeNull();
  });

  it('a write to a PROT_READ mapping raises SIGSEGV ACCERR; reading it works', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: Prot.READ, flags: ANON });
    expect((await p.read(a, 16)).every((x) => x === 0)).toBe(true);
    await expect(p.writeU32(a, 1)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'ACCERR' });
    await expect(p.fill(a, 4, 1)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'ACCERR' });
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });

  it('an access crossing into a VMA that forbids it faults there, even with present PTEs', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 0x12);
    await p.mprotect(a + P, P, Prot.NONE); // PTEs stay present; the VMA forbids access
    await expect(p.read(a + P - 2, 4)).rejects.toMatchObject({
      signal: 'SIGSEGV',
      sigCode: 'ACCERR',
      address: a + P,
    });
    await p.mprotect(a + P, P, Prot.READ);
    await expect(p.write(a + P - 2, new Uint8Array(4).fill(0x34))).rejects.toMatchObject({
      signal: 'SIGSEGV',
      sigCode: 'ACCERR',
      address: a + P,
    });
    expect(Array.from(await p.read(a + P - 2, 4))).toEqual([0x34, 0x34, 0x12, 0x12]);
    m.checkInvariants();
  });

  it('PROT_WRITE alone implies read on x86', async () => {
    const { p } = setup();
    const a = await p.mmap({ length: P, prot: Prot.WRITE, flags: ANON });
    await p.writeU32(a, 77);
    expect(await p.readU32(a)).toBe(77);
  });

  it('works at the very top and bottom of the user address space', async () => {
    const { m, p } = setup();
    const top = await p.mmap({
      addr: TASK_SIZE - 2 * P,
      length: 2 * P,
      prot: RW,
      flags: ANON | MapFlag.FIXED,
    });
    const low = await p.mmap({ addr: MMAP_MIN_ADDR, length: P, prot: RW, flags: ANON | MapFlag.FIXED });
    await p.writeU32(TASK_SIZE - 4, 0x7f7f7f7f);
    await p.writeU32(top + P - 2, 0x01020304);
    await p.writeU32(low, 0x0a0b0c0d);
    expect(await p.readU32(TASK_SIZE - 4)).toBe(0x7f7f7f7f);
    expect(await p.readU32(top + P - 2)).toBe(0x01020304);
    expect(await p.readU32(low)).toBe(0x0a0b0c0d);
    expect(m.stats().usedPages).toBe(3);
    await expect(p.read(TASK_SIZE - 2, 4)).rejects.toMatchObject({ signal: 'SIGSEGV' });
    m.checkInvariants();
    await p.munmap(top, 2 * P);
    await p.munmap(low, P);
    expect(m.mm.arena.tablesLive).toEqual({ dirs: 1, leaves: 0 });
    expect(m.stats().usedPages).toBe(0);
  });

  it('addresses beyond the user address space raise SIGSEGV; negative addresses are EINVAL', async () => {
    const { p } = setup();
    await expect(p.read(TASK_SIZE - 2, 4)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'MAPERR' });
    await expect(p.read(-1, 4)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(p.read(0, 4)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'MAPERR' });
  });
});

describe('CPU access to file mappings', () => {
  it('reads file contents; bytes past EOF in the last page read zeros; pages past EOF raise SIGBUS', async () => {
    const { m, p } = setup();
    const contents = new Uint8Array(P + 100);
    for (let i = 0; i < contents.length; i++) contents[i] = (i % 251) + 1;
    const f = await m.createFile('data', contents);
    const a = await p.mmap({ length: 4 * P, prot: Prot.READ, flags: MapFlag.PRIVATE, file: f });
    expectBytes(await p.read(a, P + 100), contents);
    expect((await p.read(a + P + 100, P - 100)).every((x) => x === 0)).toBe(true);
    await expect(p.read(a + 2 * P, 1)).rejects.toMatchObject({
      code: 'EFAULT',
      signal: 'SIGBUS',
      sigCode: 'ADRERR',
      address: a + 2 * P,
    });
    await expect(p.read(a + 3 * P + 5, 1)).rejects.toMatchObject({ signal: 'SIGBUS' });
    expect(p.mm.rss[RssCounter.FILE]).toBe(2);
    m.checkInvariants();
  });

  it('a first write to a private file mapping copies the whole file page, then diverges', async () => {
    const { m, p } = setup();
    const contents = new Uint8Array(P);
    for (let i = 0; i < P; i++) contents[i] = (i * 7 + 1) & 0xff;
    const f = await m.createFile('cow', contents);
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    await p.write(a + 8, new Uint8Array([0, 0, 0, 0]));
    const page = await p.read(a, P);
    const want = contents.slice();
    want.fill(0, 8, 12);
    expectBytes(page, want);
    expectBytes(await m.readFile(f, 0, P), contents);
    expect(m.mm.mem.mapcount[f.pageCache.get(0)!]).toBe(0);
    m.checkInvariants();
  });

  it('honours the mapping offset', async () => {
    const { m, p } = setup();
    const contents = new Uint8Array(4 * P);
    for (let i = 0; i < 4; i++) contents.fill(i + 10, i * P, (i + 1) * P);
    const f = await m.createFile('off', contents);
    const a = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f, offset: 2 * P });
    expect((await p.read(a, 1))[0]).toBe(12);
    expect((await p.read(a + P, 1))[0]).toBe(13);
  });

  it('the page cache frame is shared by every reader', async () => {
    const { m, p } = setup();
    const f = await m.createFile('shared', new Uint8Array(P).fill(3));
    const q = m.createProcess();
    const a = await p.mmap({ length: P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    const b = await q.mmap({ length: P, prot: Prot.READ, flags: MapFlag.PRIVATE, file: f });
    await p.read(a, 1);
    await q.read(b, 1);
    expect(pte(m, p, a)!.val).toBe(pte(m, q, b)!.val);
    expect(pte(m, p, a)!.val).toBe(f.pageCache.get(0));
    expect(m.mm.mem.mapcount[f.pageCache.get(0)!]).toBe(2);
    expect(m.stats().usedPages).toBe(1);
    m.checkInvariants();
  });
});
