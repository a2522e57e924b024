import { describe, it, expect } from 'vitest';
import type { Machine } from '../system/machine.js';
import { RssCounter } from './mm-struct.js';
import { PG } from './page-flags.js';
import { Pte } from './pgtable.js';
import type { Process } from './process.js';
import { ANON, P, RW, setup } from '../testing/fixtures.js';

/** A machine with exclusive, fork-shared and swapped anon pages, all consistent. */
async function busy(): Promise<{ m: Machine; p: Process; pfn: number; sharedSlot: number }> {
  const { m, p } = setup({ ramPages: 32, swapPages: 64 });
  const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
  await p.fill(a, 8 * P, 1);
  await m.reclaim(2);
  expect(m.stats().swapUsed).toBe(2);
  await p.fork();
  await p.fill(a + 7 * P, 1, 2);
  const arena = m.mm.arena;
  const slot = p.mm.pgtable.lookup(a / P + 7);
  const pfn = arena.pteVal[slot]!;
  expect(arena.pteFlags[slot]! & (Pte.PRESENT | Pte.WRITE)).toBe(Pte.PRESENT | Pte.WRITE);
  let sharedSlot = -1;
  p.mm.pgtable.forEachPte(a / P, a / P + 8, (s) => {
    if ((arena.pteFlags[s]! & Pte.PRESENT) !== 0 && m.mm.mem.mapcount[arena.pteVal[s]!] === 2) sharedSlot = s;
  });
  expect(sharedSlot).toBeGreaterThanOrEqual(0);
  m.checkInvariants();
  return { m, p, pfn, sharedSlot };
}

describe('checkMmInvariants', () => {
  it('detects a wrong mapcount', async () => {
    const { m, sharedSlot } = await busy();
    m.mm.mem.mapcount[m.mm.arena.pteVal[sharedSlot]!]!++;
    expect(() => m.checkInvariants()).toThrow(/mapcount/);
  });

  it('detects a leaked reference', async () => {
    const { m, pfn } = await busy();
    m.mm.mem.refcount[pfn]!++;
    expect(() => m.checkInvariants()).toThrow(/refcount/);
    // ...unless the caller declares it.
    m.checkInvariants((x) => (x === pfn ? 1 : 0));
  });

  it('detects a wrong RSS counter', async () => {
    const { m, p } = await busy();
    p.mm.rss[RssCounter.ANON]!--;
    expect(() => m.checkInvariants()).toThrow(/RSS/);
  });

  it('detects a writable PTE on a shared anon page', async () => {
    const { m, sharedSlot } = await busy();
    m.mm.arena.pteFlags[sharedSlot]! |= Pte.WRITE;
    expect(() => m.checkInvariants()).toThrow(/writable/);
  });

  it('detects an LRU flag without list membership', async () => {
    const { m, pfn } = await busy();
    m.mm.lru.del(pfn);
    m.mm.mem.flags[pfn]! |= PG.LRU;
    expect(() => m.checkInvariants()).toThrow(/LRU/);
  });

  it('detects a wrong swap use count', async () => {
    const { m } = await busy();
    const s = m.mm.swap.swapMap.findIndex((c, i) => i > 0 && c > 0);
    expect(s).toBeGreaterThan(0);
    m.mm.swap.swapMap[s]!++;
    expect(() => m.checkInvariants()).toThrow(/swap slot/);
  });

  it('detects a PTE mapping a free frame', async () => {
    const { m, p } = setup({ ramPages: 32, swapPages: 0 });
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.fill(a, P, 1);
    const s = p.mm.pgtable.lookup(a / P);
    m.mm.arena.pteVal[s] = 20; // a frame nobody allocated
    expect(() => m.checkInvariants()).toThrow(/free frame/);
  });
});
