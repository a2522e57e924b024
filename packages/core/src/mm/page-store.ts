/**
 * Lazily materialised page contents. Pages are grouped in chunks of {@link PAGES_PER_CHUNK}; a chunk's
 * buffer exists only while one of its pages holds data, and a page without data reads as zeros.
 * Used for RAM frames, swap slots and file backing stores alike.
 *
 * SDK-only mechanism (the kernel's memory simply exists); it is what makes a never-written page cost
 * no content memory.
 *
 * @module
 */
import { PAGE_SIZE } from './constants.js';

/** Pages per content chunk (16 × 4 KiB = 64 KiB). */
export const PAGES_PER_CHUNK = 16;
const CHUNK_SHIFT = 4;
const CHUNK_BYTES = PAGES_PER_CHUNK * PAGE_SIZE;

/** Spare chunks a store keeps for reuse (4 MiB). */
export const PAGE_STORE_POOL_CHUNKS = 64;

/** Sparse, chunked byte store of `capacity` pages; grows on demand when `growable`. */
export class PageStore {
  private chunks: (Uint8Array | undefined)[] = [];
  /** Released chunks kept for reuse; their bytes are stale (see {@link PageStore.materialise}). */
  private readonly pool: Uint8Array[] = [];
  private live: Uint16Array;
  private has: Uint8Array;
  private _capacity: number;
  private _materialised = 0;
  private _pagesWithData = 0;

  constructor(
    capacity: number,
    private readonly growable = false,
  ) {
    this._capacity = capacity;
    this.has = new Uint8Array(growable ? Math.max(capacity, 16) : capacity);
    this.live = new Uint16Array(Math.ceil(this.has.length / PAGES_PER_CHUNK));
  }

  /** Number of pages addressable without growing. */
  get capacity(): number {
    return this._capacity;
  }

  /** Bytes of content memory holding pages (chunks materialised × 64 KiB), not counting spare pooled chunks. */
  get contentBytes(): number {
    return this._materialised * CHUNK_BYTES;
  }

  /** Pages that currently hold data. */
  get pagesWithData(): number {
    return this._pagesWithData;
  }

  /** Bytes of bookkeeping (presence bytes and chunk counters). */
  get metadataBytes(): number {
    return this.has.byteLength + this.live.byteLength + this.chunks.length * 8;
  }

  /** True if page `i` holds data (otherwise it reads as zeros). */
  hasData(i: number): boolean {
    return this.has[i] === 1;
  }

  /** Makes `n` pages addressable (a growable store only; no content is allocated). */
  grow(n: number): void {
    if (n > this._capacity) this.ensureCapacity(n - 1);
  }

  private ensureCapacity(i: number): void {
    if (i < this.has.length) return;
    if (!this.growable) throw new RangeError(`page ${i} outside store of ${this._capacity} pages`);
    let n = this.has.length;
    while (n <= i) n *= 2;
    const has = new Uint8Array(n);
    has.set(this.has);
    this.has = has;
    const live = new Uint16Array(Math.ceil(n / PAGES_PER_CHUNK));
    live.set(this.live);
    this.live = live;
    this._capacity = Math.max(this._capacity, i + 1);
  }

  /**
   * The chunk holding page `i`, materialising it and marking `i` as holding data. A page that gains
   * data is zeroed first unless the caller overwrites all of it (`whole`): bytes of pages without
   * data are never read, so released chunks can be reused without clearing them.
   */
  private materialise(i: number, whole = false): Uint8Array {
    this.ensureCapacity(i);
    const c = i >>> CHUNK_SHIFT;
    let chunk = this.chunks[c];
    if (chunk === undefined) {
      chunk = this.pool.pop() ?? new Uint8Array(CHUNK_BYTES);
      this.chunks[c] = chunk;
      this._materialised++;
    }
    if (this.has[i] === 0) {
      if (!whole) {
        const base = (i & (PAGES_PER_CHUNK - 1)) * PAGE_SIZE;
        chunk.fill(0, base, base + PAGE_SIZE);
      }
      this.has[i] = 1;
      this.live[c]!++;
      this._pagesWithData++;
    }
    return chunk;
  }

  /**
   * Page `i`'s 4 KiB in place, materialised (zero-filled if it held no data): for engines that
   * compute on frames directly, such as a GPU kernel over VRAM. The view is only valid until the
   * page is cleared (freed); do not keep it across a yield.
   */
  view(i: number): Uint8Array {
    const chunk = this.materialise(i);
    const base = (i & (PAGES_PER_CHUNK - 1)) * PAGE_SIZE;
    return chunk.subarray(base, base + PAGE_SIZE);
  }

  /** Copies `len` bytes of page `i` from `off` into `dst` at `dstOff`; absent data reads as zeros. */
  read(i: number, off: number, dst: Uint8Array, dstOff: number, len: number): void {
    if (i < this.has.length && this.has[i] === 1) {
      const chunk = this.chunks[i >>> CHUNK_SHIFT]!;
      const base = (i & (PAGES_PER_CHUNK - 1)) * PAGE_SIZE + off;
      dst.set(chunk.subarray(base, base + len), dstOff);
    } else {
      dst.fill(0, dstOff, dstOff + len);
    }
  }

  /** Copies `len` bytes from `src` at `srcOff` into page `i` at `off`. */
  write(i: number, off: number, src: Uint8Array, srcOff: number, len: number): void {
    const chunk = this.materialise(i);
    const base = (i & (PAGES_PER_CHUNK - 1)) * PAGE_SIZE + off;
    chunk.set(src.subarray(srcOff, srcOff + len), base);
  }

  /** Sets `len` bytes of page `i` from `off` to `value`. Filling an empty page with 0 costs nothing. */
  fill(i: number, off: number, len: number, value: number): void {
    if (value === 0 && !(i < this.has.length && this.has[i] === 1)) return;
    const chunk = this.materialise(i);
    const base = (i & (PAGES_PER_CHUNK - 1)) * PAGE_SIZE + off;
    chunk.fill(value, base, base + len);
  }

  /**
   * Drops page `i`'s data: it reads as zeros again. A chunk left empty is released to a small pool
   * of spare chunks (at most {@link PAGE_STORE_POOL_CHUNKS}) that later pages reuse.
   */
  clear(i: number): void {
    if (i >= this.has.length || this.has[i] === 0) return;
    const c = i >>> CHUNK_SHIFT;
    this.has[i] = 0;
    this._pagesWithData--;
    if (--this.live[c]! === 0) {
      if (this.pool.length < PAGE_STORE_POOL_CHUNKS) this.pool.push(this.chunks[c]!);
      this.chunks[c] = undefined;
      this._materialised--;
    }
  }

  /** Copies the whole page `src` of `from` into page `dst` of this store (zeros stay free). */
  copyPageFrom(from: PageStore, src: number, dst: number): void {
    if (!from.hasData(src)) {
      this.clear(dst);
      return;
    }
    const sChunk = from.chunks[src >>> CHUNK_SHIFT]!;
    const sBase = (src & (PAGES_PER_CHUNK - 1)) * PAGE_SIZE;
    const dChunk = this.materialise(dst, true);
    const dBase = (dst & (PAGES_PER_CHUNK - 1)) * PAGE_SIZE;
    dChunk.set(sChunk.subarray(sBase, sBase + PAGE_SIZE), dBase);
  }

  /** Drops every page at index ≥ `from` (used by truncate). */
  truncate(from: number): void {
    for (let i = from; i < this.has.length; i++) if (this.has[i] === 1) this.clear(i);
  }
}
