import { describe, it, expect } from 'vitest';
import { MapFlag, Prot, TASK_SIZE } from './constants.js';
import { Pte } from './pgtable.js';
import type { Process } from './process.js';
import { ANON, P, RW, setup } from '../testing/fixtures.js';

function snapshot(p: Process): [number, number, number][] {
  return p.mm.vmas.all().map((v) => [v.start, v.end, v.flags]);
}

describe('mprotect', () => {
  it('ENOMEM when part of the range is unmapped, with nothing changed', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 6 * P, prot: RW, flags: ANON });
    await p.munmap(a + 3 * P, P);
    await p.fill(a, 3 * P, 1);
    const before = snapshot(p);
    await expect(p.mprotect(a, 6 * P, Prot.READ)).rejects.toMatchObject({ code: 'ENOMEM' });
    await expect(p.mprotect(a + 3 * P, P, Prot.READ)).rejects.toMatchObject({ code: 'ENOMEM' });
    await expect(p.mprotect(a - P, 2 * P, Prot.READ)).rejects.toMatchObject({ code: 'ENOMEM' });
    await expect(p.mprotect(TASK_SIZE - P, 2 * P, Prot.READ)).rejects.toMatchObject({ code: 'ENOMEM' });
    expect(snapshot(p)).toEqual(before);
    // Still writable: nothing was write-protected.
    await p.fill(a, 3 * P, 2);
    expect((await p.read(a, 3 * P)).every((x) => x === 2)).toBe(true);
    m.checkInvariants();
  });

  it('EINVAL for an unaligned address or unknown bits; length 0 succeeds and does nothing', async () => {
    const { p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    const before = snapshot(p);
    await expect(p.mprotect(a + 1, P, Prot.READ)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(p.mprotect(a, P, 0x100)).rejects.toMatchObject({ code: 'EINVAL' });
    await p.mprotect(a, 0, Prot.NONE);
    // Length 0 on an unmapped address is fine too.
    await p.mprotect(0x7000_0000, 0, Prot.NONE);
    expect(snapshot(p)).toEqual(before);
  });

  it('a length that is not page aligned covers the whole last page', async () => {
    const { p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.mprotect(a, P + 1, Prot.READ);
    expect(p.mm.vmas.all().map((v) => [v.start, v.end, v.writable])).toEqual([
      [a, a + 2 * P, false],
      [a + 2 * P, a + 4 * P, true],
    ]);
  });

  it('write-protect, then a write raises ACCERR; restoring RW lets writes through', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.writeU32(a, 1);
    const slot = p.mm.pgtable.lookup(a / P);
    const pfn = m.mm.arena.pteVal[slot]!;
    await p.mprotect(a, 2 * P, Prot.READ);
    expect(m.mm.arena.pteFlags[slot]! & Pte.WRITE).toBe(0);
    await expect(p.writeU32(a, 2)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'ACCERR' });
    expect(await p.readU32(a)).toBe(1);
    m.checkInvariants();
    await p.mprotect(a, 2 * P, RW);
    await p.writeU32(a, 3);
    await p.writeU32(a + P, 4);
    expect(await p.readU32(a)).toBe(3);
    expect(await p.readU32(a + P)).toBe(4);
    // The exclusive page was reused, not copied.
    expect(m.mm.arena.pteVal[p.mm.pgtable.lookup(a / P)]).toBe(pfn);
    m.checkInvariants();
  });

  it('PROT_NONE blocks reads and keeps the data for when access is restored', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 0xabcd);
    await p.mprotect(a, P, Prot.NONE);
    await expect(p.readU32(a)).rejects.toMatchObject({ signal: 'SIGSEGV', sigCode: 'ACCERR' });
    await p.mprotect(a, P, Prot.READ);
    expect(await p.readU32(a)).toBe(0xabcd);
    m.checkInvariants();
  });

  it('spans several VMAs and merges them when they end up equal', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    const b = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: ANON });
    expect(b).toBe(a - 2 * P);
    expect(p.mm.vmas.count).toBe(2);
    await p.mprotect(b, 4 * P, RW);
    expect(p.mm.vmas.all().map((v) => [v.start, v.end])).toEqual([[b, a + 2 * P]]);
    await p.fill(b, 4 * P, 9);
    m.checkInvariants();
  });

  it('a read-only shared file mapping made writable writes through to the file', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(P).fill(1));
    const a = await p.mmap({ length: P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    expect((await p.read(a, 1))[0]).toBe(1);
    await p.mprotect(a, P, RW);
    await p.fill(a, 2, 5);
    expect(Array.from(await m.readFile(f, 0, 3))).toEqual([5, 5, 1]);
    m.checkInvariants();
  });

  it('after exit: ESRCH', async () => {
    const { p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.exit();
    await expect(p.mprotect(a, P, Prot.READ)).rejects.toMatchObject({ code: 'ESRCH' });
  });
});
