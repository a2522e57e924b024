/**
 * Model-based property test of the memory manager: random sequences of mmap, munmap, mprotect,
 * mremap, madvise, fork, exit, CPU reads and writes, pin, unpin and forced reclaim on a machine with
 * little RAM, mixed with device memory (migration of ranges to a device-private and a
 * device-coherent memory and back, with injected allocation failures, device reads and writes,
 * device-exclusive pages, release of all device memory) are replayed against a plain reference
 * model. After every step: every byte a process or device reads equals the model (MADV_FREE pages
 * may read as old data or zeros until written), errors match the model's errno, the VMA layout
 * matches, the memory manager's own invariants hold, no device frame is on an LRU list, and no
 * pinned page has been reclaimed or moved. At the end, after every process exits and the device
 * memory is released, every RAM frame, device frame and swap slot is free. fast-check prints the
 * seed and the shrunk failing sequence on failure.
 */
import { PROP_RUNS, PropStats, propParameters } from '../testing/property.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HmmError } from '../errors/errno.js';
import { Machine } from '../system/machine.js';
import { Foll, Madv, MapFlag, MremapFlag, PAGE_SIZE, Prot, TASK_SIZE } from './constants.js';
import type { SimFile } from './filemap.js';
import { unpinUserPages } from './gup.js';
import { MemoryType } from './memremap.js';
import { PG } from './page-flags.js';
import { Pte, PteType, pteType } from './pgtable.js';
import type { Process } from './process.js';
import { TestDevmemDriver } from '../testing/devmem-driver.js';

const P = PAGE_SIZE;
const STATS = new PropStats();
const RAM_PAGES = 48;
const SWAP_PAGES = 4096;
const MAX_PROCS = 4;
const MAX_PINNED = 12;
/** Pages of each device memory (two chunks of 16 and 8 pages). */
const DEV_PAGES = 24;
const ZERO = new Uint8Array(P);

type Kind = 'anon' | 'shm' | 'file';

/** A shared memory object of the model: a file or a shmem segment. */
interface MObj {
  readonly pages: Map<number, Uint8Array>;
  size: number;
  readonly sdk: SimFile | null;
}

/** A mapping of the model (kept merged exactly as the kernel merges VMAs). */
interface Seg {
  start: number;
  end: number;
  prot: number;
  readonly kind: Kind;
  /** MAP_SHARED (always for shm, never for anon). */
  readonly shared: boolean;
  readonly obj: MObj | null;
  pgoff: number;
}

interface Amb {
  cands: Uint8Array[];
  stable: boolean;
}

interface MProc {
  readonly p: Process;
  segs: Seg[];
  /** Private pages (anon, and COW copies of private file pages) by virtual page number. */
  priv: Map<number, Uint8Array>;
  /** Pages after MADV_FREE: any candidate may be read. */
  amb: Map<number, Amb>;
}

interface Pin {
  readonly proc: MProc;
  readonly vpn: number;
  readonly pfn: number;
  valid: boolean;
}

/** One generated step; numbers are interpreted against the state when the step runs. */
type Op =
  | {
      t: 'mmap';
      kind: Kind;
      pages: number;
      prot: number;
      fileNo: number;
      off: number;
      fixed: boolean;
      at: number;
    }
  | { t: 'munmap'; seg: number; from: number; pages: number }
  | { t: 'mprotect'; seg: number; from: number; pages: number; prot: number }
  | { t: 'mremap'; seg: number; pages: number; move: boolean; dontunmap: boolean }
  | { t: 'madvise'; seg: number; from: number; pages: number; advice: number }
  | { t: 'fork' }
  | { t: 'exit'; proc: number }
  | { t: 'read'; seg: number; from: number; len: number }
  | { t: 'write'; seg: number; from: number; len: number; byte: number }
  | { t: 'pin'; seg: number; from: number; pages: number; write: boolean }
  | { t: 'unpin'; which: number }
  | { t: 'reclaim'; pages: number }
  /** Device ops: `dev` 0 is the device-private driver, 1 the device-coherent one. */
  | { t: 'todev'; dev: number; seg: number; from: number; pages: number; fail: number }
  | { t: 'tosys'; dev: number; seg: number; from: number; pages: number; hot: boolean }
  /** `hot`: aim at a page of this process that is in the device's memory, if there is one. */
  | { t: 'devread'; dev: number; seg: number; from: number; len: number; hot: boolean }
  | { t: 'devwrite'; dev: number; seg: number; from: number; len: number; byte: number; hot: boolean }
  | { t: 'excl'; dev: number; seg: number; from: number; touch: 'none' | 'read' | 'write' }
  /** `dev` 2 releases both. */
  | { t: 'release'; dev: number }
  | { t: 'verify' };

const protArb = fc.constantFrom(Prot.READ | Prot.WRITE, Prot.READ | Prot.WRITE, Prot.READ, Prot.NONE);
const small = fc.nat({ max: 40 });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant('mmap' as const),
      kind: fc.constantFrom<Kind>('anon', 'anon', 'shm', 'file'),
      pages: fc.integer({ min: 1, max: 12 }),
      prot: protArb,
      fileNo: fc.nat({ max: 1 }),
      off: fc.nat({ max: 6 }),
      fixed: fc.boolean(),
      at: small,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('munmap' as const),
      seg: small,
      from: fc.nat({ max: 8 }),
      pages: fc.integer({ min: 1, max: 8 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('mprotect' as const),
      seg: small,
      from: fc.nat({ max: 8 }),
      pages: fc.integer({ min: 1, max: 10 }),
      prot: protArb,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('mremap' as const),
      seg: small,
      pages: fc.integer({ min: 1, max: 14 }),
      move: fc.boolean(),
      dontunmap: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('madvise' as const),
      seg: small,
      from: fc.nat({ max: 8 }),
      pages: fc.integer({ min: 1, max: 8 }),
      advice: fc.constantFrom<number>(Madv.DONTNEED, Madv.FREE, Madv.WILLNEED),
    }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('fork' as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('exit' as const), proc: small }) },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('read' as const),
      seg: small,
      from: fc.nat({ max: 12 * P }),
      len: fc.integer({ min: 1, max: 5 * P }),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant('write' as const),
      seg: small,
      from: fc.nat({ max: 12 * P }),
      len: fc.integer({ min: 1, max: 5 * P }),
      byte: fc.integer({ min: 1, max: 255 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('pin' as const),
      seg: small,
      from: fc.nat({ max: 8 }),
      pages: fc.integer({ min: 1, max: 4 }),
      write: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('unpin' as const), which: small }) },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('reclaim' as const), pages: fc.integer({ min: 1, max: 64 }) }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('todev' as const),
      dev: fc.nat({ max: 1 }),
      seg: small,
      from: fc.nat({ max: 8 }),
      pages: fc.integer({ min: 1, max: 10 }),
      fail: fc.constantFrom(0, 0, 0, 1, 2, 5),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('tosys' as const),
      dev: fc.nat({ max: 1 }),
      seg: small,
      from: fc.nat({ max: 8 }),
      pages: fc.integer({ min: 1, max: 10 }),
      hot: fc.boolean(),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant('devread' as const),
      dev: fc.nat({ max: 1 }),
      seg: small,
      from: fc.nat({ max: 12 * P }),
      len: fc.integer({ min: 1, max: P }),
      hot: fc.boolean(),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant('devwrite' as const),
      dev: fc.nat({ max: 1 }),
      seg: small,
      from: fc.nat({ max: 12 * P }),
      len: fc.integer({ min: 1, max: P }),
      byte: fc.integer({ min: 1, max: 255 }),
      hot: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('excl' as const),
      dev: fc.nat({ max: 1 }),
      seg: small,
      from: fc.nat({ max: 8 }),
      touch: fc.constantFrom<'none' | 'read' | 'write'>('none', 'read', 'write'),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('release' as const), dev: fc.nat({ max: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('verify' as const) }) },
);

/** Error code an SDK call produced, or null. */
async function codeOf(f: () => Promise<unknown>): Promise<string | null> {
  try {
    await f();
    return null;
  } catch (e) {
    if (e instanceof HmmError) return e.code;
    throw e;
  }
}

/** Counts an event for HMM_PROP_STATS (no-op otherwise). */
function stat(key: string, n = 1): void {
  STATS.add(key, n);
}

class World {
  readonly m = new Machine({ ramBytes: RAM_PAGES * P, swapBytes: SWAP_PAGES * P, seed: 7 });
  readonly procs: MProc[] = [];
  readonly files: MObj[] = [];
  readonly pins: Pin[] = [];
  readonly log: string[] = [];
  /** The device-private driver and the device-coherent one. */
  readonly devs = [
    new TestDevmemDriver(this.m, MemoryType.DEVICE_PRIVATE, DEV_PAGES),
    new TestDevmemDriver(this.m, MemoryType.DEVICE_COHERENT, DEV_PAGES),
  ];

  async init(fileSizes: number[]): Promise<void> {
    for (let i = 0; i < fileSizes.length; i++) {
      const size = fileSizes[i]! * P;
      const bytes = new Uint8Array(size);
      for (let k = 0; k < size; k++) bytes[k] = (k * 7 + i * 13 + (k >> 12)) & 0xff;
      const f = await this.m.createFile(`f${i}`, bytes);
      const pages = new Map<number, Uint8Array>();
      for (let pg = 0; pg < fileSizes[i]!; pg++) pages.set(pg, bytes.slice(pg * P, pg * P + P));
      this.files.push({ pages, size, sdk: f });
    }
    this.procs.push({ p: this.m.createProcess('init'), segs: [], priv: new Map(), amb: new Map() });
  }

  // ---------- model helpers ----------

  segAt(mp: MProc, addr: number): Seg | undefined {
    return mp.segs.find((s) => s.start <= addr && addr < s.end);
  }

  sortSegs(mp: MProc): void {
    mp.segs.sort((a, b) => a.start - b.start);
  }

  /** Merges adjacent compatible mappings, as the kernel's vma_merge does. */
  normalize(mp: MProc): void {
    this.sortSegs(mp);
    const out: Seg[] = [];
    for (const s of mp.segs) {
      const prev = out[out.length - 1];
      if (
        prev !== undefined &&
        prev.end === s.start &&
        prev.prot === s.prot &&
        prev.kind === s.kind &&
        prev.shared === s.shared &&
        prev.obj === s.obj &&
        (prev.kind === 'anon' || prev.pgoff + (prev.end - prev.start) / P === s.pgoff)
      ) {
        prev.end = s.end;
      } else out.push(s);
    }
    mp.segs = out;
  }

  /** Removes [start, end) from the model's mappings and private pages. */
  unmapModel(mp: MProc, start: number, end: number): void {
    const out: Seg[] = [];
    for (const s of mp.segs) {
      if (s.end <= start || s.start >= end) {
        out.push(s);
        continue;
      }
      if (s.start < start) out.push({ ...s, end: start });
      if (s.end > end) out.push({ ...s, start: end, pgoff: s.pgoff + (end - s.start) / P });
    }
    mp.segs = out;
    for (let v = start / P; v < end / P; v++) {
      mp.priv.delete(v);
      mp.amb.delete(v);
    }
    for (const pin of this.pins)
      if (pin.proc === mp && pin.vpn >= start / P && pin.vpn < end / P) pin.valid = false;
  }

  covered(mp: MProc, start: number, end: number): boolean {
    for (let a = start; a < end; a += P) if (this.segAt(mp, a) === undefined) return false;
    return true;
  }

  /** Candidates for the contents of the page at `addr` (one unless MADV_FREE made it ambiguous). */
  pageCands(mp: MProc, s: Seg, addr: number): Uint8Array[] {
    const vpn = addr / P;
    if (!s.shared) {
      const amb = mp.amb.get(vpn);
      if (amb !== undefined) return amb.cands;
      const pv = mp.priv.get(vpn);
      if (pv !== undefined) return [pv];
      if (s.kind === 'anon') return [ZERO];
    }
    const idx = s.pgoff + (addr - s.start) / P;
    return [s.obj!.pages.get(idx) ?? ZERO];
  }

  /** Expected fault for an access, or null. */
  accessError(s: Seg | undefined, addr: number, write: boolean): string | null {
    if (s === undefined) return 'EFAULT';
    if (write ? (s.prot & Prot.WRITE) === 0 : (s.prot & (Prot.READ | Prot.WRITE)) === 0) return 'EFAULT';
    if (s.obj !== null) {
      const idx = s.pgoff + Math.floor((addr - s.start) / P);
      if (idx * P >= s.obj.size) return 'EFAULT';
    }
    return null;
  }

  // ---------- steps ----------

  pickProc(n: number): MProc | undefined {
    return this.procs.length === 0 ? undefined : this.procs[n % this.procs.length];
  }

  pickSeg(mp: MProc, n: number): Seg | undefined {
    return mp.segs.length === 0 ? undefined : mp.segs[n % mp.segs.length];
  }

  async step(op: Op, who: number): Promise<void> {
    const mp = this.pickProc(who);
    if (mp === undefined) return;
    const p = mp.p;
    switch (op.t) {
      case 'mmap': {
        const len = op.pages * P;
        let flags =
          op.kind === 'anon'
            ? MapFlag.PRIVATE | MapFlag.ANONYMOUS
            : op.kind === 'shm'
              ? MapFlag.SHARED | MapFlag.ANONYMOUS
              : MapFlag.SHARED;
        let file: MObj | null = null;
        let offset = 0;
        let shared = op.kind !== 'anon';
        if (op.kind === 'file') {
          file = this.files[op.fileNo % this.files.length]!;
          offset = (op.off % Math.max(1, file.size / P)) * P;
          if (op.at % 2 === 0) {
            flags = MapFlag.PRIVATE;
            shared = false;
          }
        }
        let fixedAt: number | undefined;
        if (op.fixed && mp.segs.length > 0) {
          const s = this.pickSeg(mp, op.at)!;
          fixedAt = s.start + (op.at % 3) * P;
          flags |= MapFlag.FIXED;
        }
        const addr = await p.mmap({
          addr: fixedAt,
          length: len,
          prot: op.prot,
          flags,
          file: file?.sdk ?? null,
          offset,
        });
        this.log.push(
          `pid ${p.pid}: mmap ${op.kind}${shared ? '' : '-private'}${file !== null ? ` f${this.files.indexOf(file)}@${offset / P}` : ''} ${op.pages}p prot ${op.prot}${fixedAt !== undefined ? ' FIXED' : ''} -> ${addr.toString(16)}`,
        );
        if (fixedAt !== undefined) expect(addr).toBe(fixedAt);
        else
          expect(
            this.covered(mp, addr, addr + len) || mp.segs.some((s) => s.start < addr + len && addr < s.end),
          ).toBe(false);
        this.unmapModel(mp, addr, addr + len);
        const obj = op.kind === 'shm' ? { pages: new Map<number, Uint8Array>(), size: len, sdk: null } : file;
        mp.segs.push({
          start: addr,
          end: addr + len,
          prot: op.prot,
          kind: op.kind,
          shared,
          obj,
          pgoff: op.kind === 'file' ? offset / P : 0,
        });
        this.normalize(mp);
        return;
      }
      case 'munmap': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        const start = s.start + Math.min(op.from, (s.end - s.start) / P - 1) * P;
        const end = start + op.pages * P;
        this.log.push(`pid ${p.pid}: munmap ${start.toString(16)} ${op.pages}p`);
        await p.munmap(start, op.pages * P);
        this.unmapModel(mp, start, end);
        return;
      }
      case 'mprotect': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        const start = s.start + Math.min(op.from, (s.end - s.start) / P - 1) * P;
        const end = start + op.pages * P;
        const want = this.covered(mp, start, end) ? null : 'ENOMEM';
        this.log.push(`pid ${p.pid}: mprotect ${start.toString(16)} ${op.pages}p ${op.prot} expect ${want}`);
        const got = await codeOf(() => p.mprotect(start, op.pages * P, op.prot));
        expect(got).toBe(want);
        if (got !== null) return;
        const out: Seg[] = [];
        for (const x of mp.segs) {
          if (x.end <= start || x.start >= end) {
            out.push(x);
            continue;
          }
          if (x.start < start) out.push({ ...x, end: start });
          const a = Math.max(x.start, start);
          const b = Math.min(x.end, end);
          out.push({ ...x, start: a, end: b, prot: op.prot, pgoff: x.pgoff + (a - x.start) / P });
          if (x.end > end) out.push({ ...x, start: end, pgoff: x.pgoff + (end - x.start) / P });
        }
        mp.segs = out;
        this.normalize(mp);
        return;
      }
      case 'mremap': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        const oldLen = s.end - s.start;
        const newLen = op.pages * P;
        const dontunmap = op.dontunmap && op.move && s.kind === 'anon' && newLen === oldLen;
        const flags = op.move ? MremapFlag.MAYMOVE | (dontunmap ? MremapFlag.DONTUNMAP : 0) : 0;
        const inPlace =
          newLen <= oldLen ||
          (s.end + (newLen - oldLen) <= TASK_SIZE &&
            !mp.segs.some((x) => x.start < s.start + newLen && x.end > s.end));
        const want = !dontunmap && !inPlace && !op.move ? 'ENOMEM' : null;
        this.log.push(
          `pid ${p.pid}: mremap ${s.start.toString(16)} ${oldLen / P}p -> ${op.pages}p flags ${flags} expect ${want}`,
        );
        let addr = -1;
        const got = await codeOf(async () => {
          addr = await p.mremap(s.start, oldLen, newLen, flags);
        });
        expect(got).toBe(want);
        if (got !== null) return;
        if (!dontunmap && inPlace) {
          expect(addr).toBe(s.start);
          if (newLen < oldLen) this.unmapModel(mp, s.start + newLen, s.end);
          else s.end = s.start + newLen;
          this.normalize(mp);
          return;
        }
        // Moved: the new range was free; pages travel.
        expect(mp.segs.some((x) => x.start < addr + newLen && addr < x.end)).toBe(false);
        const moveLen = Math.min(oldLen, newLen);
        const delta = (addr - s.start) / P;
        const moved = new Map<number, Uint8Array>();
        const movedAmb = new Map<number, Amb>();
        for (let v = s.start / P; v < (s.start + moveLen) / P; v++) {
          const pv = mp.priv.get(v);
          if (pv !== undefined) moved.set(v + delta, pv);
          const am = mp.amb.get(v);
          if (am !== undefined) movedAmb.set(v + delta, am);
        }
        for (const pin of this.pins) {
          if (pin.proc === mp && pin.vpn >= s.start / P && pin.vpn < s.end / P) pin.valid = false;
        }
        const seg: Seg = { ...s, start: addr, end: addr + newLen };
        if (dontunmap) {
          for (let v = s.start / P; v < s.end / P; v++) {
            mp.priv.delete(v);
            mp.amb.delete(v);
          }
        } else this.unmapModel(mp, s.start, s.end);
        for (const [v, pv] of moved) mp.priv.set(v, pv);
        for (const [v, am] of movedAmb) mp.amb.set(v, am);
        mp.segs.push(seg);
        this.normalize(mp);
        return;
      }
      case 'madvise': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        const start = s.start + Math.min(op.from, (s.end - s.start) / P - 1) * P;
        const end = start + op.pages * P;
        let want: string | null = this.covered(mp, start, end) ? null : 'ENOMEM';
        if (want === null && op.advice === Madv.FREE) {
          for (let a = start; a < end; a += P) if (this.segAt(mp, a)!.kind !== 'anon') want = 'EINVAL';
        }
        this.log.push(
          `pid ${p.pid}: madvise ${start.toString(16)} ${op.pages}p advice ${op.advice} expect ${want}`,
        );
        const got = await codeOf(() => p.madvise(start, op.pages * P, op.advice as 3 | 4 | 8));
        expect(got).toBe(want);
        if (got !== null) return;
        for (let a = start; a < end; a += P) {
          const v = a / P;
          const seg = this.segAt(mp, a)!;
          if (op.advice === Madv.DONTNEED) {
            if (!seg.shared) {
              mp.priv.delete(v);
              mp.amb.delete(v);
            }
            for (const pin of this.pins) if (pin.proc === mp && pin.vpn === v) pin.valid = false;
          } else if (op.advice === Madv.FREE) {
            const cands = this.pageCands(mp, seg, a);
            const set = dedupe([...cands, ZERO]);
            mp.amb.set(v, { cands: set, stable: false });
            mp.priv.delete(v);
          }
        }
        return;
      }
      case 'fork': {
        if (this.procs.length >= MAX_PROCS) return;
        this.log.push(`pid ${p.pid}: fork`);
        const c = await p.fork();
        stat(
          'fork-shared-device-private-pages',
          this.devs[0]!.devmem.framesInUse().filter((f) => this.m.mm.mem.mapcount[f]! > 1).length,
        );
        const amb = new Map<number, Amb>();
        for (const [v, a] of mp.amb) amb.set(v, { cands: a.cands.slice(), stable: a.stable });
        this.procs.push({ p: c, segs: mp.segs.map((x) => ({ ...x })), priv: new Map(mp.priv), amb });
        return;
      }
      case 'exit': {
        const victim = this.pickProc(op.proc)!;
        this.log.push(`exit ${victim.p.pid}`);
        await victim.p.exit();
        this.procs.splice(this.procs.indexOf(victim), 1);
        for (const pin of this.pins) if (pin.proc === victim) pin.valid = false;
        if (this.procs.length === 0)
          this.procs.push({ p: this.m.createProcess('next'), segs: [], priv: new Map(), amb: new Map() });
        return;
      }
      case 'read':
      case 'write': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        const write = op.t === 'write';
        const start = s.start + (op.from % (s.end - s.start));
        const len = op.len;
        // The model's view, page piece by page piece, up to the first faulting page.
        let firstFault = -1;
        for (let a = Math.floor(start / P) * P; a < start + len; a += P) {
          const err = this.accessError(this.segAt(mp, a), a, write);
          if (err !== null) {
            firstFault = Math.max(a, start);
            break;
          }
        }
        this.log.push(`pid ${p.pid}: ${op.t} ${start.toString(16)} +${len} fault@${firstFault.toString(16)}`);
        if (!write) {
          let got: Uint8Array | null = null;
          const code = await codeOf(async () => {
            got = await p.read(start, len);
          });
          if (firstFault >= 0) {
            expect(code).toBe('EFAULT');
            return;
          }
          expect(code).toBe(null);
          this.checkBytes(mp, start, got!);
          return;
        }
        const data = new Uint8Array(len).fill(op.byte);
        for (let i = 0; i < len; i += 97) data[i] = (op.byte + i) & 0xff;
        const code = await codeOf(() => p.write(start, data));
        expect(code).toBe(firstFault >= 0 ? 'EFAULT' : null);
        const stop = firstFault >= 0 ? firstFault : start + len;
        this.applyWrite(mp, start, data.subarray(0, stop - start));
        return;
      }
      case 'pin': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        if (this.pins.length + op.pages > MAX_PINNED) return;
        const start = s.start + Math.min(op.from, (s.end - s.start) / P - 1) * P;
        // GUP walks the pages in order; those before a failing page have been faulted in (and, for a
        // long-term pin of a private file page, COW-broken) even though the call fails as a whole.
        let want: string | null = null;
        let reached = start;
        for (let a = start; a < start + op.pages * P; a += P, reached = a) {
          const seg = this.segAt(mp, a);
          if (this.accessError(seg, a, op.write) !== null) want = 'EFAULT';
          // FOLL_LONGTERM|FOLL_WRITE on a file mapping that needs dirty tracking (writable_file_mapping_allowed).
          if (seg !== undefined && op.write && seg.kind === 'file' && seg.shared) want = 'EFAULT';
          if (want !== null) break;
        }
        const breakCow = (end: number): void => {
          for (let a = start; a < end; a += P) {
            const seg = this.segAt(mp, a)!;
            if (seg.kind === 'file' && !seg.shared && !mp.priv.has(a / P))
              mp.priv.set(a / P, this.pageCands(mp, seg, a)[0]!);
          }
        };
        this.log.push(
          `pid ${p.pid}: pin ${start.toString(16)} ${op.pages}p write=${op.write} expect ${want}`,
        );
        let pfns: Int32Array | null = null;
        const got = await codeOf(async () => {
          pfns = await p.pinUserPages(start, op.pages, Foll.LONGTERM | (op.write ? Foll.WRITE : 0));
        });
        expect(got).toBe(want);
        breakCow(got !== null ? reached : start + op.pages * P);
        if (got !== null) return;
        for (let i = 0; i < op.pages; i++)
          this.pins.push({ proc: mp, vpn: start / P + i, pfn: pfns![i]!, valid: true });
        return;
      }
      case 'unpin': {
        if (this.pins.length === 0) return;
        const pin = this.pins.splice(op.which % this.pins.length, 1)[0]!;
        this.log.push(`unpin ${pin.pfn}`);
        mp.p.unpinUserPages([pin.pfn]);
        return;
      }
      case 'reclaim': {
        this.log.push(`reclaim ${op.pages}`);
        await this.m.reclaim(op.pages);
        return;
      }
      case 'todev':
      case 'tosys': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        const drv = this.devs[op.dev]!;
        let start = s.start + Math.min(op.from, (s.end - s.start) / P - 1) * P;
        let seg = s;
        if (op.t === 'tosys' && op.hot) {
          const hot = this.devicePages(mp, drv);
          if (hot.length > 0) {
            start = hot[op.from % hot.length]!;
            seg = this.segAt(mp, start)!;
          }
        }
        const n = Math.min(op.pages, (seg.end - start) / P);
        if (op.t === 'tosys') {
          this.log.push(`pid ${p.pid}: dev${op.dev} to-system ${start.toString(16)} ${n}p`);
          stat(`dev${op.dev}-pages-back`, await drv.toSystem(p, start, n));
          // Nothing of this device is left in the range but device-exclusive entries (not collected).
          expect(this.onDevice(mp, drv, start, n, false)).toBe(0);
          return;
        }
        const fail = op.fail;
        if (fail > 0) drv.devmem.failNextAlloc(fail);
        this.log.push(`pid ${p.pid}: dev${op.dev} to-device ${start.toString(16)} ${n}p fail ${fail}`);
        const moved = await drv.toDevice(p, start, n);
        drv.devmem.failNextAlloc(0);
        stat(`dev${op.dev}-pages-moved`, moved);
        if (fail > 0 && drv.lastCollected > 0) stat(`dev${op.dev}-alloc-failures-hit`);
        // Each collected entry costs one allocation; the failed ones stay where they were.
        expect(moved).toBeLessThanOrEqual(Math.max(0, drv.lastCollected - fail));
        expect(this.onDevice(mp, drv, start, n, true)).toBeGreaterThanOrEqual(moved);
        return;
      }
      case 'devread':
      case 'devwrite': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        const drv = this.devs[op.dev]!;
        const write = op.t === 'devwrite';
        let start = s.start + (op.from % (s.end - s.start));
        let seg = s;
        if (op.hot) {
          const hot = this.devicePages(mp, drv);
          if (hot.length > 0) {
            start = hot[Math.floor(op.from / P) % hot.length]! + (op.from % P);
            seg = this.segAt(mp, start)!;
          }
        }
        const len = Math.min(op.len, P - (start % P));
        const want = this.accessError(seg, start, write);
        this.log.push(`pid ${p.pid}: dev${op.dev} ${op.t} ${start.toString(16)} +${len} expect ${want}`);
        if (op.t === 'devread') {
          let got: Uint8Array | null = null;
          const code = await codeOf(async () => {
            got = await drv.deviceRead(p, start, len);
          });
          expect(code).toBe(want);
          if (code === null) this.checkBytes(mp, start, got!);
          return;
        }
        const data = new Uint8Array(len).fill(op.byte);
        for (let i = 0; i < len; i += 89) data[i] = (op.byte * 3 + i) & 0xff;
        const code = await codeOf(() => drv.deviceWrite(p, start, data));
        expect(code).toBe(want);
        if (code === null) this.applyWrite(mp, start, data);
        return;
      }
      case 'excl': {
        const s = this.pickSeg(mp, op.seg);
        if (s === undefined) return;
        const drv = this.devs[op.dev]!;
        const start = s.start + Math.min(op.from, (s.end - s.start) / P - 1) * P;
        let want = this.accessError(s, start, true);
        if (want === null && s.shared) want = 'EOPNOTSUPP';
        this.log.push(`pid ${p.pid}: dev${op.dev} exclusive ${start.toString(16)} expect ${want}`);
        let pfn = -1;
        const code = await codeOf(async () => {
          pfn = await drv.makeExclusive(p, start);
        });
        expect(code).toBe(want);
        if (code !== null) return;
        // The write fault it takes breaks COW of a private file page.
        const v = start / P;
        if (s.kind === 'file' && !mp.priv.has(v) && !mp.amb.has(v))
          mp.priv.set(v, this.pageCands(mp, s, start)[0]!);
        const slot = p.mm.pgtable.lookup(v);
        expect(pteType(this.m.mm.arena.pteFlags[slot]!)).toBe(PteType.DEVICE_EXCLUSIVE);
        expect(this.m.mm.arena.pteVal[slot]).toBe(pfn);
        stat(`excl-on-${(this.m.mm.mem.flags[pfn]! & PG.ZONE_DEVICE) !== 0 ? 'device' : 'ram'}-page`);
        if (op.touch !== 'none') {
          // Any CPU access ends device-exclusive access and restores the PTE.
          if (op.touch === 'read') {
            this.log.push(`pid ${p.pid}: read ${start.toString(16)} +${P}`);
            this.checkBytes(mp, start, await p.read(start, P));
          } else {
            const data = new Uint8Array([op.dev + 1, 0x5a, 0xa5]);
            this.log.push(`pid ${p.pid}: write ${(start + 17).toString(16)} +${data.length}`);
            await p.write(start + 17, data);
            this.applyWrite(mp, start + 17, data);
          }
          const f = this.m.mm.arena.pteFlags[p.mm.pgtable.lookup(v)]!;
          expect(f & Pte.PRESENT).not.toBe(0);
          expect(this.m.mm.arena.pteVal[p.mm.pgtable.lookup(v)]).toBe(pfn);
        }
        return;
      }
      case 'release': {
        const list = op.dev === 2 ? this.devs : [this.devs[op.dev]!];
        this.log.push(`release dev${op.dev}`);
        for (const d of list) {
          await d.devmem.release();
          expect(d.devmem.nrAllocated).toBe(0);
          expect(d.devmem.chunks).toEqual([]);
        }
        return;
      }
      case 'verify': {
        this.log.push('verify');
        return; // the caller reads everything through the CPU
      }
    }
  }

  /** Addresses of the pages of `mp` whose entry refers to a frame of `drv`'s memory, in address order. */
  devicePages(mp: MProc, drv: TestDevmemDriver): number[] {
    const out: number[] = [];
    for (const s of mp.segs)
      for (let a = s.start; a < s.end; a += P) if (this.onDevice(mp, drv, a, 1, false) > 0) out.push(a);
    return out;
  }

  /**
   * Pages of `[start, start + n·P)` in `mp` whose entry refers to a frame of `drv`'s memory
   * (device-exclusive entries counted only when `withExclusive`).
   */
  onDevice(mp: MProc, drv: TestDevmemDriver, start: number, n: number, withExclusive: boolean): number {
    const arena = this.m.mm.arena;
    let count = 0;
    for (let i = 0; i < n; i++) {
      const slot = mp.p.mm.pgtable.lookup(start / P + i);
      if (slot < 0 || arena.pteFlags[slot] === 0 || !drv.devmem.owns(arena.pteVal[slot]!)) continue;
      const f = arena.pteFlags[slot]!;
      if ((f & Pte.PRESENT) !== 0 && (f & Pte.SPECIAL) !== 0) continue;
      if (!withExclusive && (f & Pte.PRESENT) === 0 && pteType(f) === PteType.DEVICE_EXCLUSIVE) continue;
      count++;
    }
    return count;
  }

  /** Compares bytes a process read with the model; narrows MADV_FREE candidates that are stable. */
  checkBytes(mp: MProc, start: number, got: Uint8Array): void {
    for (let a = Math.floor(start / P) * P; a < start + got.length; a += P) {
      const s = this.segAt(mp, a)!;
      const lo = Math.max(a, start);
      const hi = Math.min(a + P, start + got.length);
      const piece = got.subarray(lo - start, hi - start);
      const cands = this.pageCands(mp, s, a);
      const match = cands.filter((c) => equal(c.subarray(lo - a, hi - a), piece));
      if (match.length === 0) {
        const exp = cands[0]!.subarray(lo - a, hi - a);
        let i = 0;
        while (exp[i] === piece[i]) i++;
        throw new Error(
          `byte mismatch at ${(lo + i).toString(16)} in pid ${mp.p.pid}: got ${piece[i]}, model ${exp[i]} (${cands.length} candidates; ${s.kind}${s.shared ? '' : '-private'} pgoff ${s.pgoff} file ${this.files.indexOf(s.obj!)} priv ${mp.priv.has(a / P)})`,
        );
      }
      const amb = mp.amb.get(a / P);
      if (amb !== undefined && amb.stable) {
        amb.cands = match;
        if (match.length === 1) {
          mp.priv.set(a / P, match[0]!);
          mp.amb.delete(a / P);
        }
      }
    }
  }

  applyWrite(mp: MProc, start: number, data: Uint8Array): void {
    if (data.length === 0) return;
    for (let a = Math.floor(start / P) * P; a < start + data.length; a += P) {
      const s = this.segAt(mp, a)!;
      const lo = Math.max(a, start);
      const hi = Math.min(a + P, start + data.length);
      const piece = data.subarray(lo - start, hi - start);
      const apply = (c: Uint8Array): Uint8Array => {
        const n = c.slice();
        n.set(piece, lo - a);
        return n;
      };
      const v = a / P;
      if (!s.shared) {
        const amb = mp.amb.get(v);
        if (amb !== undefined) {
          amb.cands = dedupe(amb.cands.map(apply));
          amb.stable = true;
          if (amb.cands.length === 1) {
            mp.priv.set(v, amb.cands[0]!);
            mp.amb.delete(v);
          }
          continue;
        }
        mp.priv.set(v, apply(this.pageCands(mp, s, a)[0]!));
      } else {
        const idx = s.pgoff + (a - s.start) / P;
        s.obj!.pages.set(idx, apply(s.obj!.pages.get(idx) ?? ZERO));
      }
    }
  }

  /**
   * Reads every accessible page of every process and compares it with the model: through the CPU
   * (which migrates device-private pages back to RAM), or, with `peek`, as the device-private
   * driver reads them (its own pages straight from device memory, where they stay).
   */
  async verifyAll(peek = false): Promise<void> {
    for (const mp of this.procs) {
      for (const s of [...mp.segs]) {
        for (let a = s.start; a < s.end; a += P) {
          if (this.accessError(s, a, false) !== null) continue;
          this.checkBytes(mp, a, peek ? await this.devs[0]!.deviceRead(mp.p, a, P) : await mp.p.read(a, P));
        }
      }
    }
  }

  /** Checks after every step: layout, invariants, and that no pinned page was reclaimed or moved. */
  check(): void {
    this.m.checkInvariants();
    const ctx = this.m.mm;
    for (const mp of this.procs) {
      const sdk = mp.p.mm.vmas
        .all()
        .map((v) => `${v.start.toString(16)}-${v.end.toString(16)}:${v.flags & 7}`);
      const model = mp.segs.map(
        (s) =>
          `${s.start.toString(16)}-${s.end.toString(16)}:${s.prot === Prot.NONE ? 0 : s.prot === Prot.READ ? 1 : 3}`,
      );
      expect(sdk).toEqual(model);
    }
    const pinsPerPfn = new Map<number, number>();
    for (const pin of this.pins) pinsPerPfn.set(pin.pfn, (pinsPerPfn.get(pin.pfn) ?? 0) + 1);
    for (const [pfn, n] of pinsPerPfn) {
      expect(ctx.mem.flags[pfn]! & PG.ALLOCATED).not.toBe(0);
      expect(ctx.mem.pincount[pfn]).toBe(n);
    }
    for (const pin of this.pins) {
      if (!pin.valid) continue;
      const slot = pin.proc.p.mm.pgtable.lookup(pin.vpn);
      expect(slot).toBeGreaterThanOrEqual(0);
      // Present, or taken device-exclusive (the page stays where it is).
      const f = ctx.arena.pteFlags[slot]!;
      if ((f & Pte.PRESENT) === 0) expect(pteType(f)).toBe(PteType.DEVICE_EXCLUSIVE);
      expect(ctx.arena.pteVal[slot]).toBe(pin.pfn);
    }
    // Device frames never sit on an LRU list (reclaim does not handle them).
    for (let pfn = ctx.mem.nrRamFrames; pfn < ctx.mem.nrFrames; pfn++) {
      if ((ctx.mem.flags[pfn]! & PG.LRU) !== 0)
        throw new Error(
          `device frame ${pfn.toString(16)} is on an LRU list (flags ${ctx.mem.flags[pfn]!.toString(16)})`,
        );
    }
  }

  async teardown(): Promise<void> {
    for (const mp of [...this.procs]) await mp.p.exit();
    // Pins outlive the processes that took them.
    unpinUserPages(
      this.m.mm,
      this.pins.splice(0).map((pin) => pin.pfn),
    );
    for (const d of this.devs) await d.devmem.release();
    for (const f of this.files) await this.m.truncate(f.sdk!, 0);
    const st = this.m.stats();
    expect(st.usedPages).toBe(0);
    expect(st.swapUsed).toBe(0);
    expect(st.pageTableBytes).toBe(0);
    expect(this.m.mm.mem.allocatedFrames()).toEqual([]);
    expect(this.m.mm.mem.allocatedDeviceFrames()).toEqual([]);
    for (const d of this.devs) expect(d.devmem.nrAllocated).toBe(0);
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function dedupe(list: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const c of list) if (!out.some((o) => equal(o, c))) out.push(c);
  return out;
}

const RUNS = PROP_RUNS;

describe('mm model-based property', () => {
  it(
    `random syscall sequences match the reference model (${RUNS} sequences)`,
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 2, max: 10 }), { minLength: 2, maxLength: 2 }),
          fc.array(fc.tuple(opArb, fc.nat({ max: 7 })), { minLength: 20, maxLength: 120, size: 'max' }),
          async (fileSizes, ops) => {
            const w = new World();
            await w.init(fileSizes);
            try {
              for (const [op, who] of ops) {
                const before = w.log.length;
                await w.step(op, who);
                if (op.t === 'reclaim' || op.t === 'fork') await w.verifyAll(true);
                else if (op.t === 'release' || op.t === 'verify') await w.verifyAll();
                stat(w.log.length > before ? op.t : `${op.t}-noop`);
                w.check();
              }
              await w.verifyAll();
              for (const [i, d] of w.devs.entries()) {
                stat(`dev${i}-local-accesses`, d.localAccesses);
                stat(`dev${i}-faults-to-ram`, d.faultsToRam);
              }
              await w.teardown();
            } catch (e) {
              (e as Error).message += `\nsteps:\n  ${w.log.join('\n  ')}`;
              throw e;
            }
          },
        ),
        propParameters(),
      );
      STATS.print();
    },
    Math.max(60_000, RUNS * 300),
  );
});
