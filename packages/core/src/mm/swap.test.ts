import { describe, it, expect } from 'vitest';
import { PAGE_SIZE } from './constants.js';
import { PhysMem } from './physmem.js';
import { SwapSpace } from './swap.js';
import { expectBytes } from '../testing/fixtures.js';

describe('SwapSpace', () => {
  it('has one reserved header slot and rejects unaligned sizes', () => {
    const s = new SwapSpace(8 * PAGE_SIZE);
    expect(s.nrSlots).toBe(9);
    expect(s.nrFree).toBe(8);
    expect(s.nrUsed).toBe(0);
    expect(() => new SwapSpace(PAGE_SIZE + 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    const none = new SwapSpace(0);
    expect(none.nrFree).toBe(0);
    expect(none.alloc(1)).toBe(-1);
  });

  it('alloc/dup/free track use counts; the last free returns the slot', () => {
    const s = new SwapSpace(4 * PAGE_SIZE);
    const a = s.alloc(1);
    expect(a).toBeGreaterThan(0);
    expect(s.swapMap[a]).toBe(1);
    expect(s.nrUsed).toBe(1);
    s.dup(a);
    s.dup(a);
    expect(s.swapMap[a]).toBe(3);
    s.free(a);
    s.free(a);
    expect(s.swapMap[a]).toBe(1);
    expect(s.nrFree).toBe(3);
    s.free(a);
    expect(s.swapMap[a]).toBe(0);
    expect(s.nrFree).toBe(4);
    const b = s.alloc(2);
    expect(b).toBe(a); // reused
    expect(s.swapMap[b]).toBe(2);
  });

  it('returns -1 when full', () => {
    const s = new SwapSpace(3 * PAGE_SIZE);
    const got = [s.alloc(1), s.alloc(1), s.alloc(1)];
    expect(new Set(got).size).toBe(3);
    expect(got).not.toContain(0);
    expect(s.alloc(1)).toBe(-1);
    expect(s.nrFree).toBe(0);
    s.free(got[1]!);
    expect(s.alloc(1)).toBe(got[1]);
  });

  it('dup or free of a free slot or slot 0 is EINVAL and changes nothing', () => {
    const s = new SwapSpace(2 * PAGE_SIZE);
    expect(() => s.free(1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => s.dup(1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => s.free(0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => s.dup(0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(s.nrFree).toBe(2);
    expect(s.swapMap[1]).toBe(0);
  });

  it('dup beyond the maximum use count is ENOMEM', () => {
    const s = new SwapSpace(PAGE_SIZE);
    const a = s.alloc(0xffff);
    expect(() => s.dup(a)).toThrow(expect.objectContaining({ code: 'ENOMEM' }));
    expect(s.swapMap[a]).toBe(0xffff);
  });

  it('writeOut/readIn round-trip frame contents; the last free drops them', () => {
    const mem = new PhysMem(16 * PAGE_SIZE);
    const s = new SwapSpace(4 * PAGE_SIZE);
    const src = mem.alloc();
    const data = new Uint8Array(PAGE_SIZE);
    for (let i = 0; i < PAGE_SIZE; i++) data[i] = (i * 7 + 3) & 0xff;
    mem.content.write(src, 0, data, 0, PAGE_SIZE);
    const slot = s.alloc(1);
    s.writeOut(mem, src, slot);
    mem.free(src);
    const dst = mem.alloc();
    s.readIn(mem, slot, dst);
    const out = new Uint8Array(PAGE_SIZE);
    mem.content.read(dst, 0, out, 0, PAGE_SIZE);
    expectBytes(out, data);
    expect(s.store.hasData(slot)).toBe(true);
    s.free(slot);
    expect(s.store.hasData(slot)).toBe(false);
    // An all-zero frame costs no swap content.
    const z = mem.alloc();
    const zs = s.alloc(1);
    s.writeOut(mem, z, zs);
    expect(s.store.contentBytes).toBe(0);
  });
});
