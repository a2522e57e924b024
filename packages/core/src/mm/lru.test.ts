import { describe, it, expect } from 'vitest';
import { PAGE_SIZE } from './constants.js';
import { Lru, LruList } from './lru.js';
import { PG } from './page-flags.js';
import { PhysMem } from './physmem.js';

function setup(): { mem: PhysMem; lru: Lru } {
  const mem = new PhysMem(32 * PAGE_SIZE);
  return { mem, lru: new Lru(mem) };
}

const ALL = [LruList.INACTIVE_ANON, LruList.ACTIVE_ANON, LruList.INACTIVE_FILE, LruList.ACTIVE_FILE] as const;

function sizes(lru: Lru): number[] {
  return ALL.map((l) => lru.size(l));
}

describe('Lru', () => {
  it('picks the list from SWAPBACKED and ACTIVE', () => {
    const { mem, lru } = setup();
    const p = mem.alloc();
    expect(lru.listOf(p)).toBe(LruList.INACTIVE_FILE);
    mem.flags[p]! |= PG.ACTIVE;
    expect(lru.listOf(p)).toBe(LruList.ACTIVE_FILE);
    mem.flags[p]! |= PG.SWAPBACKED;
    expect(lru.listOf(p)).toBe(LruList.ACTIVE_ANON);
    mem.flags[p]! &= ~PG.ACTIVE;
    expect(lru.listOf(p)).toBe(LruList.INACTIVE_ANON);
  });

  it('add puts frames at the head; the oldest is the tail', () => {
    const { mem, lru } = setup();
    const a = mem.alloc();
    const b = mem.alloc();
    const c = mem.alloc();
    for (const p of [a, b, c]) mem.flags[p]! |= PG.SWAPBACKED | PG.ANON;
    lru.add(a);
    lru.add(b);
    lru.add(c);
    expect(lru.toArray(LruList.INACTIVE_ANON)).toEqual([c, b, a]);
    expect(lru.tailOf(LruList.INACTIVE_ANON)).toBe(a);
    expect(sizes(lru)).toEqual([3, 0, 0, 0]);
    for (const p of [a, b, c]) expect(mem.flags[p]! & PG.LRU).toBe(PG.LRU);
    expect(lru.tailOf(LruList.ACTIVE_FILE)).toBe(-1);
  });

  it('adding a frame twice is EINVAL and does not corrupt the list', () => {
    const { mem, lru } = setup();
    const a = mem.alloc();
    lru.add(a);
    expect(() => lru.add(a)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(lru.toArray(LruList.INACTIVE_FILE)).toEqual([a]);
    expect(lru.size(LruList.INACTIVE_FILE)).toBe(1);
  });

  it('del unlinks from the head, middle and tail and clears PG_LRU; del of an unlisted frame is a no-op', () => {
    const { mem, lru } = setup();
    const f = [mem.alloc(), mem.alloc(), mem.alloc(), mem.alloc()];
    for (const p of f) lru.add(p);
    expect(lru.toArray(LruList.INACTIVE_FILE)).toEqual([f[3], f[2], f[1], f[0]]);
    lru.del(f[2]!); // middle
    expect(lru.toArray(LruList.INACTIVE_FILE)).toEqual([f[3], f[1], f[0]]);
    lru.del(f[0]!); // tail
    expect(lru.tailOf(LruList.INACTIVE_FILE)).toBe(f[1]);
    lru.del(f[3]!); // head
    expect(lru.toArray(LruList.INACTIVE_FILE)).toEqual([f[1]]);
    expect(mem.flags[f[2]!]! & PG.LRU).toBe(0);
    expect(mem.lruNext[f[2]!]).toBe(-1);
    expect(mem.lruPrev[f[2]!]).toBe(-1);
    lru.del(f[2]!);
    expect(lru.size(LruList.INACTIVE_FILE)).toBe(1);
    lru.del(f[1]!);
    expect(lru.size(LruList.INACTIVE_FILE)).toBe(0);
    expect(lru.tailOf(LruList.INACTIVE_FILE)).toBe(-1);
    expect(lru.toArray(LruList.INACTIVE_FILE)).toEqual([]);
  });

  it('setActive moves a frame between the lists of its kind', () => {
    const { mem, lru } = setup();
    const anon = mem.alloc();
    const file = mem.alloc();
    mem.flags[anon]! |= PG.SWAPBACKED | PG.ANON;
    lru.add(anon);
    lru.add(file);
    expect(sizes(lru)).toEqual([1, 0, 1, 0]);
    lru.setActive(anon, true);
    lru.setActive(file, true);
    expect(sizes(lru)).toEqual([0, 1, 0, 1]);
    expect(lru.toArray(LruList.ACTIVE_ANON)).toEqual([anon]);
    expect(lru.toArray(LruList.ACTIVE_FILE)).toEqual([file]);
    expect(mem.flags[anon]! & (PG.ACTIVE | PG.LRU)).toBe(PG.ACTIVE | PG.LRU);
    lru.setActive(anon, false);
    expect(sizes(lru)).toEqual([1, 0, 0, 1]);
    expect(mem.flags[anon]! & PG.ACTIVE).toBe(0);
    // Every listed frame's flags agree with the list it is on.
    for (const l of ALL) for (const p of lru.toArray(l)) expect(lru.listOf(p)).toBe(l);
  });

  it('setActive(false) on an inactive frame rotates it to the head', () => {
    const { mem, lru } = setup();
    const a = mem.alloc();
    const b = mem.alloc();
    lru.add(a);
    lru.add(b);
    expect(lru.tailOf(LruList.INACTIVE_FILE)).toBe(a);
    lru.setActive(a, false);
    expect(lru.toArray(LruList.INACTIVE_FILE)).toEqual([a, b]);
  });

  it('a frame on the LRU cannot be freed until deleted', () => {
    const { mem, lru } = setup();
    const a = mem.alloc();
    lru.add(a);
    expect(() => mem.free(a)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    lru.del(a);
    mem.free(a);
    expect(mem.nrUsed).toBe(0);
  });
});
