import { describe, it, expect } from 'vitest';
import { PAGE_SIZE } from './constants.js';
import { PG } from './page-flags.js';
import { PhysMem, ZERO_PFN } from './physmem.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('PhysMem', () => {
  it('rejects sizes that are not whole pages or smaller than 16 pages', () => {
    expect(code(() => new PhysMem(15 * PAGE_SIZE))).toBe('EINVAL');
    expect(code(() => new PhysMem(16 * PAGE_SIZE + 1))).toBe('EINVAL');
    expect(code(() => new PhysMem(-PAGE_SIZE))).toBe('EINVAL');
    expect(new PhysMem(16 * PAGE_SIZE).nrFrames).toBe(16);
  });

  it('starts with every frame but the reserved zero page free', () => {
    const mem = new PhysMem(32 * PAGE_SIZE);
    expect(mem.nrFrames).toBe(32);
    expect(mem.nrFree).toBe(31);
    expect(mem.nrUsed).toBe(0);
    expect(mem.flags[ZERO_PFN]! & PG.RESERVED).toBe(PG.RESERVED);
    expect(mem.refcount[ZERO_PFN]).toBe(1);
    expect(mem.allocatedFrames()).toEqual([]);
  });

  it('alloc hands out low frames first with refcount 1 and only ALLOCATED set', () => {
    const mem = new PhysMem(32 * PAGE_SIZE);
    const a = mem.alloc();
    const b = mem.alloc();
    expect([a, b]).toEqual([1, 2]);
    expect(mem.refcount[a]).toBe(1);
    expect(mem.flags[a]).toBe(PG.ALLOCATED);
    expect(mem.mapcount[a]).toBe(0);
    expect(mem.nrFree).toBe(29);
    expect(mem.nrUsed).toBe(2);
    expect(mem.allocatedFrames()).toEqual([1, 2]);
  });

  it('returns -1 once the free list is exhausted, and reuses freed frames', () => {
    const mem = new PhysMem(16 * PAGE_SIZE);
    const got: number[] = [];
    for (let i = 0; i < 15; i++) got.push(mem.alloc());
    expect(new Set(got).size).toBe(15);
    expect(got).not.toContain(ZERO_PFN);
    expect(mem.nrFree).toBe(0);
    expect(mem.alloc()).toBe(-1);
    expect(mem.alloc()).toBe(-1);
    mem.free(got[7]!);
    expect(mem.nrFree).toBe(1);
    expect(mem.alloc()).toBe(got[7]);
    expect(mem.alloc()).toBe(-1);
  });

  it('free clears contents and state; a freed frame reads zeros when reallocated', () => {
    const mem = new PhysMem(16 * PAGE_SIZE);
    const pfn = mem.alloc();
    mem.content.fill(pfn, 0, PAGE_SIZE, 0x77);
    mem.owner[pfn] = 3;
    mem.rmap[pfn] = 99;
    mem.free(pfn);
    expect(mem.flags[pfn]).toBe(0);
    expect(mem.refcount[pfn]).toBe(0);
    expect(mem.owner[pfn]).toBe(0);
    expect(mem.rmap[pfn]).toBe(0);
    expect(mem.content.hasData(pfn)).toBe(false);
    const again = mem.alloc();
    expect(again).toBe(pfn);
    const out = new Uint8Array(PAGE_SIZE);
    mem.content.read(again, 0, out, 0, PAGE_SIZE);
    expect(out).toEqual(new Uint8Array(PAGE_SIZE));
  });

  it('double free and freeing the zero page are EINVAL', () => {
    const mem = new PhysMem(16 * PAGE_SIZE);
    const pfn = mem.alloc();
    mem.free(pfn);
    const free = mem.nrFree;
    expect(code(() => mem.free(pfn))).toBe('EINVAL');
    expect(mem.nrFree).toBe(free);
    expect(code(() => mem.free(ZERO_PFN))).toBe('EINVAL');
    expect(mem.flags[ZERO_PFN]! & PG.RESERVED).toBe(PG.RESERVED);
  });

  it('freeing a mapped, pinned, LRU or page-cache frame is EBUSY and changes nothing', () => {
    const mem = new PhysMem(16 * PAGE_SIZE);
    const pfn = mem.alloc();
    const free = mem.nrFree;
    mem.mapcount[pfn] = 1;
    expect(code(() => mem.free(pfn))).toBe('EBUSY');
    mem.mapcount[pfn] = 0;
    mem.pincount[pfn] = 1;
    expect(code(() => mem.free(pfn))).toBe('EBUSY');
    mem.pincount[pfn] = 0;
    mem.flags[pfn]! |= PG.LRU;
    expect(code(() => mem.free(pfn))).toBe('EBUSY');
    mem.flags[pfn]! &= ~PG.LRU;
    mem.flags[pfn]! |= PG.PAGECACHE;
    expect(code(() => mem.free(pfn))).toBe('EBUSY');
    expect(mem.nrFree).toBe(free);
    expect(mem.flags[pfn]! & PG.ALLOCATED).toBe(PG.ALLOCATED);
    mem.flags[pfn]! &= ~PG.PAGECACHE;
    mem.free(pfn);
    expect(mem.nrFree).toBe(free + 1);
  });

  it('put frees on the last reference only; put with no reference is EINVAL', () => {
    const mem = new PhysMem(16 * PAGE_SIZE);
    const pfn = mem.alloc();
    mem.refcount[pfn] = 2;
    expect(mem.put(pfn)).toBe(false);
    expect(mem.refcount[pfn]).toBe(1);
    expect(mem.flags[pfn]! & PG.ALLOCATED).toBe(PG.ALLOCATED);
    expect(mem.put(pfn)).toBe(true);
    expect(mem.flags[pfn]).toBe(0);
    expect(mem.nrFree).toBe(15);
    expect(code(() => mem.put(pfn))).toBe('EINVAL');
    expect(mem.refcount[pfn]).toBe(0);
    expect(mem.nrFree).toBe(15);
  });

  it('copyFrame copies contents between frames', () => {
    const mem = new PhysMem(16 * PAGE_SIZE);
    const a = mem.alloc();
    const b = mem.alloc();
    mem.content.fill(a, 100, 10, 0x42);
    mem.copyFrame(b, a);
    const out = new Uint8Array(PAGE_SIZE);
    mem.content.read(b, 0, out, 0, PAGE_SIZE);
    expect(out.subarray(100, 110)).toEqual(new Uint8Array(10).fill(0x42));
    expect(out.reduce((s, v) => s + v, 0)).toBe(10 * 0x42);
  });
});
