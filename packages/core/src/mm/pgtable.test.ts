import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { PAGE_SIZE, TASK_SIZE } from './constants.js';
import { PageTable, PageTableArena, Pte, PteType, nonPresentFlags, pteType } from './pgtable.js';

const MAX_VPN = TASK_SIZE / PAGE_SIZE - 1; // 2^35 - 1

function fresh(mmId = 7): { arena: PageTableArena; pt: PageTable } {
  const arena = new PageTableArena();
  return { arena, pt: new PageTable(arena, mmId) };
}

function visited(pt: PageTable, start: number, end: number): number[] {
  const out: number[] = [];
  pt.forEachPte(start, end, (_slot, vpn) => out.push(vpn));
  return out;
}

describe('PTE encoding', () => {
  it('non-present entries carry their type', () => {
    for (const t of Object.values(PteType)) {
      const f = nonPresentFlags(t);
      expect(pteType(f)).toBe(t);
      expect(f & Pte.PRESENT).toBe(0);
    }
    expect(pteType(Pte.PRESENT | Pte.WRITE | Pte.DIRTY)).toBe(PteType.NONE);
  });
});

describe('PageTable', () => {
  it('starts with only the root table', () => {
    const { arena, pt } = fresh();
    expect(arena.tablesLive).toEqual({ dirs: 1, leaves: 0 });
    expect(pt.lookup(0)).toBe(-1);
    expect(pt.lookup(12345)).toBe(-1);
    expect(visited(pt, 0, MAX_VPN + 1)).toEqual([]);
  });

  it('ensure allocates the 3 tables below the root once per leaf, lookup then finds the same slot', () => {
    const { arena, pt } = fresh();
    const s = pt.ensure(1000);
    expect(arena.tablesLive).toEqual({ dirs: 3, leaves: 1 });
    expect(pt.lookup(1000)).toBe(s);
    expect(pt.ensure(1000)).toBe(s);
    // Neighbour in the same leaf: no new table, adjacent slot.
    expect(pt.ensure(1001)).toBe(s + 1);
    expect(arena.tablesLive).toEqual({ dirs: 3, leaves: 1 });
    // Another leaf in the same PMD.
    pt.ensure(1000 + 512);
    expect(arena.tablesLive).toEqual({ dirs: 3, leaves: 2 });
    // A different PGD entry needs a new PUD and PMD.
    pt.ensure(2 ** 27 + 5);
    expect(arena.tablesLive).toEqual({ dirs: 5, leaves: 3 });
    // Lookup of an unallocated vpn in an existing PMD is still -1.
    expect(pt.lookup(1000 + 1024)).toBe(-1);
  });

  it('slotAddress and slotMm invert ensure, near 0 and near the top of the address space', () => {
    const { arena, pt } = fresh(42);
    for (const vpn of [
      0,
      1,
      511,
      512,
      MAX_VPN,
      MAX_VPN - 511,
      MAX_VPN - 512,
      2 ** 27,
      2 ** 27 - 1,
      123456789,
    ]) {
      const slot = pt.ensure(vpn);
      expect(arena.slotAddress(slot)).toBe(vpn * PAGE_SIZE);
      expect(arena.slotMm(slot)).toBe(42);
      expect(pt.lookup(vpn)).toBe(slot);
    }
  });

  it('setPte keeps the entry and clearing it zeroes the value', () => {
    const { arena, pt } = fresh();
    const slot = pt.ensure(77);
    arena.setPte(slot, 1234, Pte.PRESENT | Pte.WRITE);
    expect(arena.pteVal[slot]).toBe(1234);
    expect(arena.pteFlags[slot]).toBe(Pte.PRESENT | Pte.WRITE);
    arena.setPte(slot, 55, nonPresentFlags(PteType.SWAP));
    expect(arena.pteVal[slot]).toBe(55);
    arena.setPte(slot, 999, 0);
    expect(arena.pteVal[slot]).toBe(0);
    expect(arena.pteFlags[slot]).toBe(0);
  });

  it('forEachPte visits set entries in order, only within the range, and skips missing tables', () => {
    const { arena, pt } = fresh();
    const vpns = [3, 511, 512, 700, 262144 + 9, 2 ** 27 + 1, MAX_VPN];
    for (const v of [...vpns].reverse()) arena.setPte(pt.ensure(v), v % 1000, Pte.PRESENT);
    // An ensured but empty slot is not visited.
    pt.ensure(4);
    expect(visited(pt, 0, MAX_VPN + 1)).toEqual(vpns);
    expect(visited(pt, 4, 700)).toEqual([511, 512]);
    expect(visited(pt, 511, 513)).toEqual([511, 512]);
    expect(visited(pt, 2 ** 27, 2 ** 27 + 1)).toEqual([]);
    expect(visited(pt, 700, 700)).toEqual([]);
    expect(visited(pt, MAX_VPN, MAX_VPN + 1)).toEqual([MAX_VPN]);
    const slots: number[] = [];
    pt.forEachPte(0, MAX_VPN + 1, (slot, vpn) => {
      expect(arena.slotAddress(slot)).toBe(vpn * PAGE_SIZE);
      slots.push(slot);
    });
    expect(slots.length).toBe(vpns.length);
  });

  it('freeEmptyTables frees emptied leaf and directory tables but keeps tables still in use', () => {
    const { arena, pt } = fresh();
    const a = pt.ensure(10);
    const b = pt.ensure(10 + 512);
    const c = pt.ensure(2 ** 27 + 10);
    arena.setPte(a, 1, Pte.PRESENT);
    arena.setPte(b, 2, Pte.PRESENT);
    arena.setPte(c, 3, Pte.PRESENT);
    expect(arena.tablesLive).toEqual({ dirs: 5, leaves: 3 });
    pt.freeEmptyTables(0, MAX_VPN + 1);
    expect(arena.tablesLive).toEqual({ dirs: 5, leaves: 3 }); // nothing empty
    arena.setPte(a, 0, 0);
    pt.freeEmptyTables(0, MAX_VPN + 1);
    expect(arena.tablesLive).toEqual({ dirs: 5, leaves: 2 });
    expect(pt.lookup(10)).toBe(-1);
    expect(pt.lookup(10 + 512)).toBe(b);
    arena.setPte(b, 0, 0);
    // Out of range: not freed.
    pt.freeEmptyTables(2 ** 20, 2 ** 21);
    expect(arena.tablesLive.leaves).toBe(2);
    pt.freeEmptyTables(512, 1024);
    expect(arena.tablesLive).toEqual({ dirs: 3, leaves: 1 });
    arena.setPte(c, 0, 0);
    pt.freeEmptyTables(0, MAX_VPN + 1);
    expect(arena.tablesLive).toEqual({ dirs: 1, leaves: 0 });
    expect(arena.bytesInUse).toBe(512 * 4 + 2);
    pt.destroy();
    expect(arena.tablesLive).toEqual({ dirs: 0, leaves: 0 });
    expect(arena.bytesInUse).toBe(0);
  });

  it('a lookup after the cached leaf was freed does not return a stale slot', () => {
    const { arena, pt } = fresh();
    const s = pt.ensure(5);
    arena.setPte(s, 1, Pte.PRESENT);
    expect(pt.lookup(5)).toBe(s);
    arena.setPte(s, 0, 0);
    pt.freeEmptyTables(0, 512);
    expect(pt.lookup(5)).toBe(-1);
    expect(pt.lookup(6)).toBe(-1);
  });

  it('two page tables sharing an arena are independent', () => {
    const arena = new PageTableArena();
    const p1 = new PageTable(arena, 1);
    const p2 = new PageTable(arena, 2);
    const s1 = p1.ensure(100);
    arena.setPte(s1, 11, Pte.PRESENT);
    expect(p2.lookup(100)).toBe(-1);
    const s2 = p2.ensure(100);
    expect(s2).not.toBe(s1);
    expect(arena.slotMm(s1)).toBe(1);
    expect(arena.slotMm(s2)).toBe(2);
    expect(visited(p2, 0, 1000)).toEqual([]);
  });

  it('the arena grows past its initial capacity without losing entries', () => {
    const { arena, pt } = fresh();
    // 200 leaves in 200 different PMDs: more than the initial 64 tables of either kind.
    const vpns = Array.from({ length: 200 }, (_, i) => i * 262144 + (i % 512));
    vpns.forEach((v, i) => arena.setPte(pt.ensure(v), i + 1, Pte.PRESENT));
    expect(arena.tablesLive.leaves).toBe(200);
    expect(visited(pt, 0, MAX_VPN + 1)).toEqual(vpns);
    vpns.forEach((v, i) => {
      const s = pt.lookup(v);
      expect(arena.pteVal[s]).toBe(i + 1);
      expect(arena.slotAddress(s)).toBe(v * PAGE_SIZE);
    });
  });

  it('property: setting then clearing a random set of vpns visits exactly them in order and leaves no tables', () => {
    const vpnArb = fc.oneof(
      fc.integer({ min: 0, max: 4096 }),
      fc.integer({ min: MAX_VPN - 4096, max: MAX_VPN }),
      fc.integer({ min: 0, max: MAX_VPN }),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(vpnArb, { maxLength: 60 }),
        fc.integer({ min: 0, max: MAX_VPN }),
        (vpns, cut) => {
          const { arena, pt } = fresh(3);
          for (const v of vpns) arena.setPte(pt.ensure(v), (v % 0xffff) + 1, Pte.PRESENT);
          const sorted = [...vpns].sort((a, b) => a - b);
          const seen: number[] = [];
          pt.forEachPte(0, MAX_VPN + 1, (slot, vpn) => {
            expect(arena.pteVal[slot]).toBe((vpn % 0xffff) + 1);
            expect(arena.slotMm(slot)).toBe(3);
            seen.push(vpn);
          });
          expect(seen).toEqual(sorted);
          // A sub-range sees exactly the entries inside it.
          expect(visited(pt, cut, MAX_VPN + 1)).toEqual(sorted.filter((v) => v >= cut));
          expect(visited(pt, 0, cut)).toEqual(sorted.filter((v) => v < cut));
          // Clearing everything (in the visitor, which is allowed) and freeing leaves only the root.
          pt.forEachPte(0, MAX_VPN + 1, (slot) => arena.setPte(slot, 0, 0));
          pt.freeEmptyTables(0, MAX_VPN + 1);
          expect(arena.tablesLive).toEqual({ dirs: 1, leaves: 0 });
          expect(visited(pt, 0, MAX_VPN + 1)).toEqual([]);
          for (const v of vpns) expect(pt.lookup(v)).toBe(-1);
        },
      ),
      { numRuns: 100, seed: 20240601 },
    );
  });
});
