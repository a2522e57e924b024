import { describe, it, expect } from 'vitest';
import { PAGE_SIZE } from './constants.js';
import { PAGES_PER_CHUNK, PageStore } from './page-store.js';
import { expectBytes } from '../testing/fixtures.js';

const CHUNK_BYTES = PAGES_PER_CHUNK * PAGE_SIZE;

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function readPage(s: PageStore, i: number): Uint8Array {
  const out = new Uint8Array(PAGE_SIZE).fill(0xee);
  s.read(i, 0, out, 0, PAGE_SIZE);
  return out;
}

describe('PageStore', () => {
  it('costs no content memory until a page is written, and reads zeros', () => {
    const s = new PageStore(64);
    expect(s.capacity).toBe(64);
    expect(s.contentBytes).toBe(0);
    expect(s.pagesWithData).toBe(0);
    expect(s.hasData(5)).toBe(false);
    expectBytes(readPage(s, 5), new Uint8Array(PAGE_SIZE));
    expect(s.contentBytes).toBe(0);
  });

  it('materialises one chunk per group of pages that hold data', () => {
    const s = new PageStore(64);
    const data = pattern(100, 7);
    s.write(3, 10, data, 0, data.length);
    expect(s.contentBytes).toBe(CHUNK_BYTES);
    expect(s.pagesWithData).toBe(1);
    expect(s.hasData(3)).toBe(true);
    // A second page in the same chunk costs nothing more.
    s.write(4, 0, data, 0, 1);
    expect(s.contentBytes).toBe(CHUNK_BYTES);
    expect(s.pagesWithData).toBe(2);
    // A page in another chunk materialises a second chunk.
    s.write(PAGES_PER_CHUNK * 2, 0, data, 0, 1);
    expect(s.contentBytes).toBe(2 * CHUNK_BYTES);
    expect(s.pagesWithData).toBe(3);

    const out = new Uint8Array(120);
    s.read(3, 0, out, 0, 120);
    expectBytes(out.subarray(0, 10), new Uint8Array(10));
    expectBytes(out.subarray(10, 110), data);
    expectBytes(out.subarray(110), new Uint8Array(10));
    // Neighbouring page in the same chunk is untouched.
    expectBytes(readPage(s, 2), new Uint8Array(PAGE_SIZE));
  });

  it('read honours source and destination offsets', () => {
    const s = new PageStore(16);
    const data = pattern(PAGE_SIZE, 3);
    s.write(1, 0, data, 0, PAGE_SIZE);
    const out = new Uint8Array(50).fill(0xaa);
    s.read(1, 100, out, 20, 10);
    expectBytes(out.subarray(0, 20), new Uint8Array(20).fill(0xaa));
    expectBytes(out.subarray(20, 30), data.subarray(100, 110));
    expectBytes(out.subarray(30), new Uint8Array(20).fill(0xaa));
  });

  it('clear drops the data and releases the chunk when its last page goes', () => {
    const s = new PageStore(32);
    s.write(0, 0, pattern(10, 1), 0, 10);
    s.write(1, 0, pattern(10, 2), 0, 10);
    expect(s.contentBytes).toBe(CHUNK_BYTES);
    s.clear(0);
    expect(s.hasData(0)).toBe(false);
    expect(s.pagesWithData).toBe(1);
    expect(s.contentBytes).toBe(CHUNK_BYTES);
    expectBytes(readPage(s, 0), new Uint8Array(PAGE_SIZE));
    s.clear(1);
    expect(s.pagesWithData).toBe(0);
    expect(s.contentBytes).toBe(0);
    // Clearing an empty page or one beyond the store is a no-op.
    s.clear(1);
    s.clear(1000);
    expect(s.pagesWithData).toBe(0);
    // Re-writing after release gives a fresh zeroed chunk.
    s.write(1, 5, pattern(1, 9), 0, 1);
    const p = readPage(s, 1);
    expect(p[5]).toBe(9);
    expect(p.reduce((a, b) => a + (b !== 0 ? 1 : 0), 0)).toBe(1);
  });

  it('fill with zero on an empty page costs nothing; a non-zero fill materialises', () => {
    const s = new PageStore(16);
    s.fill(2, 0, PAGE_SIZE, 0);
    expect(s.contentBytes).toBe(0);
    expect(s.hasData(2)).toBe(false);
    s.fill(2, 8, 16, 0x5a);
    expect(s.hasData(2)).toBe(true);
    const p = readPage(s, 2);
    expectBytes(p.subarray(8, 24), new Uint8Array(16).fill(0x5a));
    expect(p[7]).toBe(0);
    expect(p[24]).toBe(0);
    // Zero-fill of a page with data really zeroes it.
    s.fill(2, 0, PAGE_SIZE, 0);
    expectBytes(readPage(s, 2), new Uint8Array(PAGE_SIZE));
  });

  it('a fixed-size store rejects pages beyond its capacity', () => {
    const s = new PageStore(16);
    expect(() => s.write(16, 0, new Uint8Array(1), 0, 1)).toThrow(RangeError);
    expect(() => s.fill(100, 0, 1, 1)).toThrow(RangeError);
    // Reads beyond capacity see zeros.
    expectBytes(readPage(s, 100), new Uint8Array(PAGE_SIZE));
  });

  it('a growable store grows on demand and keeps earlier data', () => {
    const s = new PageStore(16, true);
    const a = pattern(PAGE_SIZE, 11);
    const b = pattern(PAGE_SIZE, 12);
    s.write(3, 0, a, 0, PAGE_SIZE);
    s.write(1000, 0, b, 0, PAGE_SIZE);
    expect(s.capacity).toBeGreaterThanOrEqual(1001);
    expectBytes(readPage(s, 3), a);
    expectBytes(readPage(s, 1000), b);
    expectBytes(readPage(s, 999), new Uint8Array(PAGE_SIZE));
    expect(s.pagesWithData).toBe(2);
    expect(s.contentBytes).toBe(2 * CHUNK_BYTES);
  });

  it('copyPageFrom copies data, and copying an empty page clears the destination', () => {
    const src = new PageStore(16);
    const dst = new PageStore(16);
    const a = pattern(PAGE_SIZE, 5);
    src.write(4, 0, a, 0, PAGE_SIZE);
    dst.copyPageFrom(src, 4, 9);
    expectBytes(readPage(dst, 9), a);
    // Source modification does not affect the copy.
    src.fill(4, 0, PAGE_SIZE, 1);
    expectBytes(readPage(dst, 9), a);
    dst.copyPageFrom(src, 5, 9);
    expect(dst.hasData(9)).toBe(false);
    expect(dst.contentBytes).toBe(0);
    // Copy within one store.
    src.copyPageFrom(src, 4, 15);
    expectBytes(readPage(src, 15), new Uint8Array(PAGE_SIZE).fill(1));
  });

  it('truncate drops every page from an index on', () => {
    const s = new PageStore(64);
    for (const i of [0, 5, 17, 40, 63]) s.fill(i, 0, 1, i + 1);
    s.truncate(17);
    expect([0, 5, 17, 40, 63].map((i) => s.hasData(i))).toEqual([true, true, false, false, false]);
    expect(s.pagesWithData).toBe(2);
    expect(s.contentBytes).toBe(CHUNK_BYTES);
    s.truncate(0);
    expect(s.contentBytes).toBe(0);
  });

  it('reuses released chunks without leaking their old bytes into new pages', () => {
    const s = new PageStore(4 * PAGES_PER_CHUNK);
    for (let i = 0; i < PAGES_PER_CHUNK; i++) s.fill(i, 0, PAGE_SIZE, 0xaa);
    for (let i = 0; i < PAGES_PER_CHUNK; i++) s.clear(i);
    expect(s.contentBytes).toBe(0);
    // The next chunk comes from the pool: a partial write must leave the rest of its page zero.
    const p = 2 * PAGES_PER_CHUNK;
    s.write(p, 100, pattern(8, 1), 0, 8);
    const out = new Uint8Array(PAGE_SIZE);
    s.read(p, 0, out, 0, PAGE_SIZE);
    const want = new Uint8Array(PAGE_SIZE);
    want.set(pattern(8, 1), 100);
    expectBytes(out, want);
    // Pages of the reused chunk that never got data read as zeros, and a whole-page copy is exact.
    s.read(p + 1, 0, out, 0, PAGE_SIZE);
    expectBytes(out, new Uint8Array(PAGE_SIZE));
    s.fill(0, 0, PAGE_SIZE, 7);
    s.copyPageFrom(s, 0, p + 3);
    s.read(p + 3, 0, out, 0, PAGE_SIZE);
    expectBytes(out, new Uint8Array(PAGE_SIZE).fill(7));
  });
});
