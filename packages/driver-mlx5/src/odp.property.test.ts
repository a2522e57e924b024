/**
 * Model-based property test of ODP coherence: a process with a 16-page anonymous buffer, three MRs
 * over it (an explicit ODP MR with every right, the implicit ODP MR, and an explicit ODP MR with
 * REMOTE_READ only) and a remote requester. Random sequences of CPU reads and writes, RDMA WRITEs
 * and READs through a random MR, MADV_DONTNEED, mprotect read-only and back, munmap + remap of a
 * page, prefetch advice, and an RDMA access racing a DONTNEED, run against a model of each page's
 * bytes and protection. After every step: every RDMA READ returns the model's bytes (never stale)
 * or fails with the errno the model predicts, every translation entry of every MR points at the
 * frame the CPU page table maps for that page (with write permission only where the CPU PTE is
 * writable), and at the end the memory manager's invariants hold and nothing leaks.
 */
import { DevPerm, Machine, Madv, MapFlag, PAGE_SIZE, Prot, Pte, isHmmError } from '@hmm/core';
import type { Process } from '@hmm/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Mlx5Hca } from './hca.js';
import { IbAccess } from './mr.js';
import type { Mlx5Mr } from './mr.js';
import { ADVISE_MR_FLAG_FLUSH } from './odp.js';
import type { AdviseMrAdvice } from './odp.js';
import type { OdpMr } from './odp-mr.js';
import type { Mlx5Pd } from './pd.js';
import { RdmaRemote } from './rdma-remote.js';

const P = PAGE_SIZE;
const N = 16;
const RW = Prot.READ | Prot.WRITE;
const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;
const ALL = IbAccess.LOCAL_WRITE | IbAccess.REMOTE_READ | IbAccess.REMOTE_WRITE;
const RUNS = Number(process.env.HMM_PROP_RUNS ?? 25);

/** MR 0: explicit ODP, all rights; 1: implicit ODP; 2: explicit ODP, REMOTE_READ only. */
type MrIndex = 0 | 1 | 2;

type Op =
  | { t: 'cpuWrite'; page: number; v: number }
  | { t: 'cpuRead'; page: number; n: number }
  | { t: 'rdmaWrite'; page: number; v: number; mr: MrIndex }
  | { t: 'rdmaRead'; page: number; n: number; mr: MrIndex }
  | { t: 'dontneed'; page: number; n: number }
  | { t: 'mprotect'; page: number; n: number; ro: boolean }
  | { t: 'remap'; page: number }
  | { t: 'advise'; page: number; n: number; mr: MrIndex; advice: AdviseMrAdvice }
  | { t: 'race'; page: number; v: number; write: boolean; mr: 0 | 1; delay: number };

const page = fc.integer({ min: 0, max: N - 1 });
const count = fc.integer({ min: 1, max: 4 });
const value = fc.integer({ min: 1, max: 250 });
const mrIdx = fc.constantFrom<MrIndex>(0, 1, 2);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ t: fc.constant('cpuWrite' as const), page, v: value }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('cpuRead' as const), page, n: count }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('rdmaWrite' as const), page, v: value, mr: mrIdx }), weight: 4 },
  { arbitrary: fc.record({ t: fc.constant('rdmaRead' as const), page, n: count, mr: mrIdx }), weight: 5 },
  { arbitrary: fc.record({ t: fc.constant('dontneed' as const), page, n: count }), weight: 2 },
  {
    arbitrary: fc.record({ t: fc.constant('mprotect' as const), page, n: count, ro: fc.boolean() }),
    weight: 2,
  },
  { arbitrary: fc.record({ t: fc.constant('remap' as const), page }), weight: 1 },
  {
    arbitrary: fc.record({
      t: fc.constant('advise' as const),
      page,
      n: count,
      mr: mrIdx,
      advice: fc.constantFrom<AdviseMrAdvice>('PREFETCH', 'PREFETCH_WRITE', 'PREFETCH_NO_FAULT'),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      t: fc.constant('race' as const),
      page,
      v: value,
      write: fc.boolean(),
      mr: fc.constantFrom<0 | 1>(0, 1),
      delay: fc.integer({ min: 0, max: 200_000 }),
    }),
    weight: 2,
  },
);

/** The bytes of a page whose model value is `v` (0 = zeros). */
function bytesOf(v: number): Uint8Array {
  if (v === 0) return new Uint8Array(P);
  return new Uint8Array(P).map((_, i) => (v * 31 + i * 7 + (i >> 8)) & 0xff || 1);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

/** Errno of a failed promise, or null if it resolved. */
async function outcome<T>(p: Promise<T>): Promise<{ value: T | null; code: string | null }> {
  try {
    return { value: await p, code: null };
  } catch (e) {
    if (!isHmmError(e)) throw e;
    return { value: null, code: e.code };
  }
}

class World {
  readonly hca: Mlx5Hca;
  readonly p: Process;
  readonly pd: Mlx5Pd;
  a = 0;
  readonly mrs: Mlx5Mr[] = [];
  remote!: RdmaRemote;
  /** Model value of each page (0 = zeros). */
  readonly model = new Array<number>(N).fill(0);
  /** Page mapped read-only. */
  readonly ro = new Array<boolean>(N).fill(false);
  readonly log: string[] = [];

  constructor(readonly m: Machine) {
    this.hca = new Mlx5Hca(m);
    this.p = m.createProcess('app');
    this.pd = this.hca.allocPd(this.p);
  }

  async init(): Promise<void> {
    this.a = await this.p.mmap({ length: N * P, prot: RW, flags: ANON });
    this.mrs.push(await this.pd.regMr(this.a, N * P, ALL | IbAccess.ON_DEMAND));
    this.mrs.push(this.pd.regImplicitOdp(ALL));
    this.mrs.push(await this.pd.regMr(this.a, N * P, IbAccess.REMOTE_READ | IbAccess.ON_DEMAND));
    this.remote = await RdmaRemote.create(this.pd, { bufferBytes: 4 * P });
  }

  addr(i: number): number {
    return this.a + i * P;
  }

  /** Pages `[i, i + n)` clipped to the buffer. */
  span(i: number, n: number): number[] {
    const out: number[] = [];
    for (let k = i; k < Math.min(N, i + n); k++) out.push(k);
    return out;
  }

  expected(pages: number[]): Uint8Array {
    const out = new Uint8Array(pages.length * P);
    pages.forEach((k, j) => out.set(bytesOf(this.model[k]!), j * P));
    return out;
  }

  async step(op: Op): Promise<void> {
    this.log.push(JSON.stringify(op));
    switch (op.t) {
      case 'cpuWrite': {
        if (this.ro[op.page]) return; // would SIGSEGV
        await this.p.write(this.addr(op.page), bytesOf(op.v));
        this.model[op.page] = op.v;
        return;
      }
      case 'cpuRead': {
        const pages = this.span(op.page, op.n);
        const got = await this.p.read(this.addr(op.page), pages.length * P);
        expect(same(got, this.expected(pages)), 'CPU read differs from the model').toBe(true);
        return;
      }
      case 'rdmaWrite': {
        const mr = this.mrs[op.mr]!;
        const r = await outcome(this.remote.write(mr.rkey, this.addr(op.page), bytesOf(op.v)));
        const want = op.mr === 2 ? 'EACCES' : this.ro[op.page] ? 'EPERM' : null;
        expect(r.code, 'RDMA WRITE outcome').toBe(want);
        if (r.code === null) this.model[op.page] = op.v;
        return;
      }
      case 'rdmaRead': {
        const pages = this.span(op.page, op.n);
        const mr = this.mrs[op.mr]!;
        const r = await outcome(this.remote.read(mr.rkey, this.addr(op.page), pages.length * P));
        if (r.code !== null) {
          // Only a writable MR over read-only memory may fail: it faults for write.
          expect(op.mr !== 2 && pages.some((k) => this.ro[k]), `RDMA READ failed with ${r.code}`).toBe(true);
          expect(r.code).toBe('EPERM');
          return;
        }
        expect(same(r.value!, this.expected(pages)), 'RDMA READ returned stale bytes').toBe(true);
        return;
      }
      case 'dontneed': {
        const pages = this.span(op.page, op.n);
        await this.p.madvise(this.addr(op.page), pages.length * P, Madv.DONTNEED);
        for (const k of pages) this.model[k] = 0;
        return;
      }
      case 'mprotect': {
        const pages = this.span(op.page, op.n);
        await this.p.mprotect(this.addr(op.page), pages.length * P, op.ro ? Prot.READ : RW);
        for (const k of pages) this.ro[k] = op.ro;
        return;
      }
      case 'remap': {
        await this.p.munmap(this.addr(op.page), P);
        const at = await this.p.mmap({
          addr: this.addr(op.page),
          length: P,
          prot: RW,
          flags: ANON | MapFlag.FIXED,
        });
        expect(at).toBe(this.addr(op.page));
        this.model[op.page] = 0;
        this.ro[op.page] = false;
        return;
      }
      case 'advise': {
        const pages = this.span(op.page, op.n);
        const mr = this.mrs[op.mr]!;
        const r = await outcome(
          this.pd.adviseMr(op.advice, ADVISE_MR_FLAG_FLUSH, [
            { lkey: mr.lkey, addr: this.addr(op.page), length: pages.length * P },
          ]),
        );
        const write = op.advice === 'PREFETCH_WRITE';
        const want = write && (op.mr === 2 || pages.some((k) => this.ro[k])) ? 'EPERM' : null;
        expect(r.code, 'advise outcome').toBe(want);
        return;
      }
      case 'race': {
        // An RDMA access of one page (one packet) racing MADV_DONTNEED of that page.
        const k = op.page;
        if (this.ro[k]) return;
        const mr = this.mrs[op.mr]!;
        const old = this.model[k]!;
        const task = this.m.sched.spawn('rdma', () =>
          outcome<Uint8Array | null>(
            op.write
              ? this.remote.write(mr.rkey, this.addr(k), bytesOf(op.v)).then(() => null)
              : this.remote.read(mr.rkey, this.addr(k), P),
          ),
        );
        await this.m.sched.sleep(op.delay);
        await this.p.madvise(this.addr(k), P, Madv.DONTNEED);
        const r = await task.join();
        expect(r.code, 'racing RDMA access failed').toBeNull();
        const now = await this.p.read(this.addr(k), P);
        if (op.write) {
          // The write landed before the DONTNEED (zeros) or after it (its bytes): never lost in a freed frame.
          const v = same(now, bytesOf(op.v)) ? op.v : same(now, bytesOf(0)) ? 0 : -1;
          expect(v, 'racing RDMA WRITE left neither zeros nor its bytes').not.toBe(-1);
          this.model[k] = v;
        } else {
          const got = r.value!;
          expect(
            same(got, bytesOf(old)) || same(got, bytesOf(0)),
            'racing RDMA READ returned other bytes',
          ).toBe(true);
          expect(same(now, bytesOf(0))).toBe(true);
          this.model[k] = 0;
        }
        return;
      }
    }
  }

  /** Every translation entry of every MR matches the CPU page table. */
  checkTranslations(): void {
    const arena = this.m.mm.arena;
    const v0 = this.a / P;
    this.mrs.forEach((mr, idx) => {
      let n = 0;
      mr.hca.device.findMmu(mr.asid)?.forEachEntry(v0, v0 + N, (vpn, pfn, perm) => {
        n++;
        const k = vpn - v0;
        const slot = this.p.mm.pgtable.lookup(vpn);
        const flags = slot < 0 ? 0 : arena.pteFlags[slot]!;
        const where = `MR ${idx} page ${k} (${this.log.length} steps)`;
        expect(
          (flags & Pte.PRESENT) !== 0,
          `${where}: mapped by the MR, not present in the CPU page table`,
        ).toBe(true);
        expect(arena.pteVal[slot], `${where}: the MR maps another frame than the CPU`).toBe(pfn);
        if ((perm & DevPerm.WRITE) !== 0) {
          expect(idx, `${where}: write entry in a read-only MR`).not.toBe(2);
          expect(flags & Pte.WRITE, `${where}: the MR may write a page the CPU maps read-only`).toBe(
            Pte.WRITE,
          );
          expect(this.ro[k]).toBe(false);
        }
      });
      // Nothing is mapped outside the buffer, and the umem agrees with the table.
      expect(mr.mappedPages(), `MR ${idx}: entries outside the buffer`).toBe(n);
      if (idx !== 1) expect((mr as OdpMr).umem.mapped).toBe(n);
    });
  }

  async finish(): Promise<void> {
    // Every page, through the read-only MR, equals the model.
    for (let k = 0; k < N; k++) {
      const got = await this.remote.read(this.mrs[2]!.rkey, this.addr(k), P);
      expect(same(got, bytesOf(this.model[k]!)), `final page ${k}`).toBe(true);
    }
    this.checkTranslations();
    await this.remote.close();
    await this.pd.dealloc();
    await this.p.exit();
    await this.hca.remove();
  }
}

describe('ODP coherence model', () => {
  it(`random CPU / RDMA / invalidation sequences never read stale data (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.array(opArb, { minLength: 5, maxLength: 30 }),
        async (seed, ops) => {
          const m = new Machine({ seed, ramBytes: 16 * 1024 * 1024 });
          let w: World | null = null;
          try {
            await m.sched.runTask('model', async () => {
              w = new World(m);
              await w.init();
              for (const op of ops) {
                await w.step(op);
                w.checkTranslations();
              }
              await w.finish();
            });
            m.checkInvariants();
            expect(m.mm.mem.allocatedFrames()).toEqual([]);
          } catch (e) {
            const log = (w as World | null)?.log ?? [];
            (e as Error).message += `\nseed ${seed}\nsteps:\n  ${log.join('\n  ')}`;
            throw e;
          }
        },
      ),
      {
        numRuns: RUNS,
        ...(process.env.HMM_PROP_SEED === undefined ? {} : { seed: Number(process.env.HMM_PROP_SEED) }),
      },
    );
  }, 120_000);
});
