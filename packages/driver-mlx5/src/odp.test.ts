import {
  DevPerm,
  Machine,
  Madv,
  MapFlag,
  NotifyEvent,
  PAGE_SIZE,
  PG,
  Prot,
  Pte,
  isHmmError,
} from '@hmm/core';
import type { MmuNotifierRange, Process } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { WcStatus } from './cq.js';
import { Mlx5Hca } from './hca.js';
import { IbAccess } from './mr.js';
import type { Mlx5Mr } from './mr.js';
import { ADVISE_MR_FLAG_FLUSH, MLX5_MAX_PREFETCH_BYTES } from './odp.js';
import type { AdviseMrAdvice } from './odp.js';
import { MLX5_IMR_CHILD_BYTES } from './odp-mr.js';
import type { OdpMr } from './odp-mr.js';
import type { Mlx5Pd } from './pd.js';
import { RdmaRemote } from './rdma-remote.js';
import type { PinnedMr } from './umem.js';

const P = PAGE_SIZE;
const RW = Prot.READ | Prot.WRITE;
const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;
const ALL = IbAccess.LOCAL_WRITE | IbAccess.REMOTE_READ | IbAccess.REMOTE_WRITE;
const ODP = ALL | IbAccess.ON_DEMAND;
const FLUSH = ADVISE_MR_FLAG_FLUSH;

function pattern(len: number, salt: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 7 + salt * 53 + (i >> 12) * 3 + 1) & 0xff);
}

function expectBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  const bad = got.findIndex((b, i) => b !== want[i]);
  expect(bad, `first differing byte ${bad}`).toBe(-1);
}

/** The CPU PTE of `addr` in `p`: its frame (or -1 without a present PTE) and flags. */
function cpuPte(m: Machine, p: Process, addr: number): { pfn: number; flags: number } {
  const slot = p.mm.pgtable.lookup(Math.floor(addr / P));
  if (slot < 0) return { pfn: -1, flags: 0 };
  const flags = m.mm.arena.pteFlags[slot]!;
  return { pfn: (flags & Pte.PRESENT) !== 0 ? m.mm.arena.pteVal[slot]! : -1, flags };
}

/** Every translation entry of `mr` in `[addr, addr + pages)`: `[pageIndex, pfn, perm]`. */
function entries(mr: Mlx5Mr, addr: number, pages: number): [number, number, number][] {
  const out: [number, number, number][] = [];
  const v0 = addr / P;
  mr.hca.device
    .findMmu(mr.asid)
    ?.forEachEntry(v0, v0 + pages, (vpn, pfn, perm) => out.push([vpn - v0, pfn, perm]));
  return out;
}

/** Element-wise equality of two frame-indexed arrays (deep equality is slow on them). */
function expectSameCounts(got: ArrayLike<number>, want: ArrayLike<number>): void {
  expect(got.length).toBe(want.length);
  let bad = -1;
  for (let i = 0; i < got.length && bad < 0; i++) if (got[i] !== want[i]) bad = i;
  expect(bad, `first differing frame ${bad}`).toBe(-1);
}

function totalPins(m: Machine): number {
  return m.mm.mem.pincount.reduce((s, x) => s + x, 0);
}

/** Errno of a rejected promise (fails the test if it resolves or rejects with a non-HmmError). */
async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isHmmError(e)) return e.code;
    throw e;
  }
  throw new Error('expected a rejection');
}

interface World {
  readonly m: Machine;
  readonly hca: Mlx5Hca;
  readonly p: Process;
  readonly pd: Mlx5Pd;
}

/** Runs `body` in a task with an HCA, a process and its PD; tears down and checks for leaks. */
async function world(seed: number, body: (w: World) => Promise<void>): Promise<void> {
  const m = new Machine({ seed });
  await m.sched.runTask('t', async () => {
    const hca = new Mlx5Hca(m);
    const p = m.createProcess('app');
    const pd = hca.allocPd(p);
    await body({ m, hca, p, pd });
    await pd.dealloc();
    await p.exit();
    await hca.remove();
    expect(hca.mkeyCount).toBe(0);
  });
  m.checkInvariants();
  expect(totalPins(m)).toBe(0);
  expect(m.mm.mem.allocatedFrames()).toEqual([]);
}

describe('explicit ODP registration', () => {
  it('pins nothing; its snapshot maps exactly the present pages, nothing faulted', async () => {
    await world(1, async ({ m, p, pd }) => {
      const a = await p.mmap({ length: 16 * P, prot: RW, flags: ANON });
      const present = [0, 1, 2, 5, 9, 15];
      for (const i of present) await p.write(a + i * P + 3, new Uint8Array([i + 1]));
      const pins = m.mm.mem.pincount.slice();
      const refs = m.mm.mem.refcount.slice();
      const mr = (await pd.regMr(a, 16 * P, ODP)) as OdpMr;
      expect(mr.kind).toBe('odp');
      expect(mr.hca.mkey(mr.lkey)).toBe(mr);
      expectSameCounts(m.mm.mem.pincount, pins);
      expectSameCounts(m.mm.mem.refcount, refs); // no reference taken either
      expect(mr.mappedPages()).toBe(present.length);
      expect(mr.umem.mapped).toBe(present.length);
      expect(mr.stats).toEqual({ faults: 0, faultEvents: 0, invalidations: 0, prefetchedPages: 0 });
      expect(entries(mr, a, 16)).toEqual(
        present.map((i) => [i, cpuPte(m, p, a + i * P).pfn, DevPerm.READ | DevPerm.WRITE]),
      );
      // A read-only MR's snapshot maps the same pages read-only.
      const ro = await pd.regMr(a, 16 * P, IbAccess.REMOTE_READ | IbAccess.ON_DEMAND);
      expect(entries(ro, a, 16)).toEqual(present.map((i) => [i, cpuPte(m, p, a + i * P).pfn, DevPerm.READ]));
      expect(mr.hca.stats().pageFaultEvents).toBe(0);
      expectSameCounts(m.mm.mem.pincount, pins);
    });
  });

  it('registers over a range with a hole; the snapshot maps what is present', async () => {
    await world(2, async ({ p, pd }) => {
      const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
      await p.fill(a, 8 * P, 1);
      await p.munmap(a + 2 * P, 2 * P);
      const mr = await pd.regMr(a, 8 * P, ODP);
      expect(mr.mappedPages()).toBe(6);
      expect(mr.stats.faults).toBe(0);
    });
  });

  it('the first RDMA access faults the page in; later accesses hit', async () => {
    await world(3, async ({ hca, p, pd }) => {
      const a = await p.mmap({ length: 16 * P, prot: RW, flags: ANON });
      const mr = await pd.regMr(a, 16 * P, ODP);
      const d = pattern(2 * P, 1);
      await p.write(a + 4 * P, d); // after registration: the MR is cold
      expect(mr.mappedPages()).toBe(0);
      const r = await RdmaRemote.create(pd);
      expectBytes(await r.read(mr.rkey, a + 4 * P, 2 * P), d);
      expect(mr.stats.faultEvents).toBe(1);
      expect(mr.stats.faults).toBe(2); // an RDMA READ knows its length: both pages in one fault
      expect(hca.stats().pageFaultEvents).toBe(1);
      expect(hca.stats().pageFaultsResolved).toBe(1);
      expect(r.qp.stats.rnrNaksReceived).toBe(1);
      expectBytes(await r.read(mr.rkey, a + 4 * P, 2 * P), d);
      expect(mr.stats.faultEvents).toBe(1);
      expect(hca.stats().pageFaultEvents).toBe(1);
      await r.close();
    });
  });

  it('a writable MR faults for write: EPERM on PROT_READ memory; a REMOTE_READ-only MR reads it', async () => {
    const contents = pattern(4 * P, 2);
    await world(4, async ({ m, hca, p, pd }) => {
      const f = await m.createFile('ro.dat', contents);
      const a = await p.mmap({ length: 4 * P, prot: Prot.READ, flags: MapFlag.PRIVATE, file: f });
      const rw = await pd.regMr(a, 4 * P, ODP);
      const r = await RdmaRemote.create(pd);
      const err = await r.read(rw.rkey, a, P).then(
        () => null,
        (e: unknown) => e,
      );
      expect(isHmmError(err) && err.code).toBe('EPERM');
      expect(r.completions.get(WcStatus.REM_ACCESS_ERR)).toBe(1);
      expect(rw.mappedPages()).toBe(0);
      expect(rw.stats.faults).toBe(0);
      expect(hca.stats().pageFaultErrors).toBe(1);
      const ro = await pd.regMr(a, 4 * P, IbAccess.REMOTE_READ | IbAccess.ON_DEMAND);
      expectBytes(await r.read(ro.rkey, a, 4 * P), contents);
      expect(ro.stats.faults).toBe(4);
      expect(entries(ro, a, 4).every(([, , perm]) => perm === DevPerm.READ)).toBe(true);
      await r.close();
      await pd.deregMr(rw);
      await pd.deregMr(ro);
      await p.munmap(a, 4 * P);
      await m.truncate(f, 0);
      m.mm.files.unlink('ro.dat');
    });
  });
});

describe('invalidation', () => {
  const ops: [string, (p: Process, addr: number, len: number) => Promise<void>][] = [
    ['munmap', (p, addr, len) => p.munmap(addr, len)],
    ['mprotect(PROT_READ)', (p, addr, len) => p.mprotect(addr, len, Prot.READ)],
    ['madvise(DONTNEED)', (p, addr, len) => p.madvise(addr, len, Madv.DONTNEED)],
  ];
  it.each(ops)('%s of part of the range zaps exactly that part', async (_name, op) => {
    await world(5, async ({ m, p, pd }) => {
      const a = await p.mmap({ length: 16 * P, prot: RW, flags: ANON });
      await p.write(a, pattern(16 * P, 3));
      const mr = await pd.regMr(a, 16 * P, ODP);
      expect(mr.mappedPages()).toBe(16);
      const before = entries(mr, a, 16);
      await op(p, a + 4 * P, 3 * P);
      expect(mr.mappedPages()).toBe(13);
      expect(mr.stats.invalidations).toBe(3);
      expect(entries(mr, a, 16)).toEqual(before.filter(([i]) => i < 4 || i >= 7));
      // The rest still translates to the CPU's frames.
      for (const [i, pfn] of entries(mr, a, 16)) expect(cpuPte(m, p, a + i * P).pfn).toBe(pfn);
      // An invalidation of pages the MR does not map counts nothing.
      await op(p, a + 4 * P, 3 * P);
      expect(mr.stats.invalidations).toBe(3);
    });
  });

  it('an invalidation outside the MR leaves it alone', async () => {
    await world(6, async ({ p, pd }) => {
      const a = await p.mmap({ length: 16 * P, prot: RW, flags: ANON });
      await p.fill(a, 16 * P, 9);
      const mr = await pd.regMr(a + 4 * P, 8 * P, ODP);
      await p.madvise(a, 4 * P, Madv.DONTNEED);
      await p.munmap(a + 12 * P, 4 * P);
      expect(mr.mappedPages()).toBe(8);
      expect(mr.stats.invalidations).toBe(0);
    });
  });

  it('pages the HCA mapped for write become PG.DIRTY when invalidated; read-only ones stay clean', async () => {
    await world(7, async ({ m, p, pd }) => {
      const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
      const mr = await pd.regMr(a, 4 * P, ODP);
      await p.write(a, pattern(2 * P, 4));
      const f0 = cpuPte(m, p, a).pfn;
      const f1 = cpuPte(m, p, a + P).pfn;
      const mem = m.mm.mem;
      expect([mem.flags[f0]! & PG.DIRTY, mem.flags[f1]! & PG.DIRTY]).toEqual([0, 0]);
      await pd.adviseMr('PREFETCH_WRITE', FLUSH, [{ lkey: mr.lkey, addr: a, length: P }]);
      await pd.adviseMr('PREFETCH', FLUSH, [{ lkey: mr.lkey, addr: a + P, length: P }]);
      expect(entries(mr, a, 4).map(([i, , perm]) => [i, perm])).toEqual([
        [0, DevPerm.READ | DevPerm.WRITE],
        [1, DevPerm.READ],
      ]);
      // mprotect keeps the frames (and does not dirty them itself): only the MR's unmap dirties.
      await p.mprotect(a, 4 * P, Prot.READ);
      expect(mr.mappedPages()).toBe(0);
      expect(mr.stats.invalidations).toBe(2);
      expect(cpuPte(m, p, a).pfn).toBe(f0);
      expect(mem.flags[f0]! & PG.DIRTY).toBe(PG.DIRTY);
      expect(mem.flags[f1]! & PG.DIRTY).toBe(0);
    });
  });

  it('pages written by RDMA through a shared file mapping are dirty in the page cache', async () => {
    await world(8, async ({ m, p, pd }) => {
      const f = await m.createFile('shared.dat', new Uint8Array(4 * P));
      const a = await p.mmap({ length: 4 * P, prot: RW, flags: MapFlag.SHARED, file: f });
      const mr = await pd.regMr(a, 4 * P, ODP);
      const r = await RdmaRemote.create(pd);
      const d = pattern(P, 5);
      await r.write(mr.rkey, a + 2 * P, d);
      const pfn = cpuPte(m, p, a + 2 * P).pfn;
      await p.munmap(a, 4 * P);
      expect(mr.mappedPages()).toBe(0);
      expect(m.mm.mem.flags[pfn]! & (PG.DIRTY | PG.PAGECACHE)).toBe(PG.DIRTY | PG.PAGECACHE);
      expectBytes(await m.readFile(f, 2 * P, P), d);
      await r.close();
      await pd.deregMr(mr);
      await m.truncate(f, 0);
      m.mm.files.unlink('shared.dat');
    });
  });

  it('declines a non-blockable invalidation (the OOM reaper) and keeps its translation', async () => {
    await world(9, async ({ m, p, pd }) => {
      const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
      await p.write(a, pattern(8 * P, 6));
      const mr = (await pd.regMr(a, 8 * P, ODP)) as OdpMr;
      const imr = pd.regImplicitOdp(ALL);
      await pd.adviseMr('PREFETCH', FLUSH, [{ lkey: imr.lkey, addr: a, length: 8 * P }]);
      const before = entries(mr, a, 8);
      expect(m.oomReap(p)).toBe(false);
      expect(entries(mr, a, 8)).toEqual(before);
      expect(imr.mappedPages()).toBe(8);
      expect([mr.stats.invalidations, imr.stats.invalidations]).toEqual([0, 0]);
      expect(cpuPte(m, p, a).pfn).toBe(before[0]![1]); // the reaper skipped the VMA
      expectBytes(await p.read(a, 8 * P), pattern(8 * P, 6));
      // Called directly, the callback answers false synchronously (it must not sleep).
      const range: MmuNotifierRange = {
        mm: p.mm,
        start: a,
        end: a + 8 * P,
        event: NotifyEvent.CLEAR,
        blockable: false,
        owner: null,
      };
      expect(mr.umem.notifier.ops.invalidate(mr.umem.notifier, range, 1)).toBe(false);
      expect(mr.mappedPages()).toBe(8);
      // Without MRs the reaper succeeds.
      await pd.deregMr(mr);
      await pd.deregMr(imr);
      expect(m.oomReap(p)).toBe(true);
      expect(cpuPte(m, p, a).pfn).toBe(-1);
    });
  });
});

describe('implicit ODP MR', () => {
  it('creates one child per GiB on first fault, frees an emptied child, recreates it on a later fault', async () => {
    await world(10, async ({ m, p, pd }) => {
      const G = MLX5_IMR_CHILD_BYTES;
      const a0 = 4 * G;
      const a1 = 5 * G + 16 * P;
      for (const a of [a0, a1]) {
        expect(await p.mmap({ addr: a, length: 4 * P, prot: RW, flags: ANON | MapFlag.FIXED })).toBe(a);
        await p.write(a, pattern(4 * P, a / G));
      }
      const mr = pd.regImplicitOdp(ALL);
      expect(mr.kind).toBe('implicit');
      expect(mr.childStats()).toEqual({ created: 0, freed: 0, live: 0 });
      const r = await RdmaRemote.create(pd);
      expectBytes(await r.read(mr.rkey, a0, 4 * P), pattern(4 * P, 4));
      expect(mr.childStats()).toEqual({ created: 1, freed: 0, live: 1 });
      expectBytes(await r.read(mr.rkey, a1, 4 * P), pattern(4 * P, 5));
      expect(mr.childStats()).toEqual({ created: 2, freed: 0, live: 2 });
      expect(mr.mappedPages()).toBe(8);
      // Part of a child invalidated: it stays.
      await p.madvise(a0, P, Madv.DONTNEED);
      await m.sched.sleep(1);
      expect(mr.childStats().live).toBe(2);
      expect(mr.mappedPages()).toBe(7);
      // The rest: the child is empty and freed by the work item.
      await p.munmap(a0, 4 * P);
      expect(mr.mappedPages()).toBe(4);
      await m.sched.sleep(1);
      expect(mr.childStats()).toEqual({ created: 2, freed: 1, live: 1 });
      expect(mr.stats.invalidations).toBe(4);
      // The other child is untouched.
      expectBytes(await r.read(mr.rkey, a1, 4 * P), pattern(4 * P, 5));
      // A later fault in the freed child's range recreates it.
      await p.mmap({ addr: a0, length: 4 * P, prot: RW, flags: ANON | MapFlag.FIXED });
      await p.write(a0 + P, pattern(P, 7));
      expectBytes(await r.read(mr.rkey, a0 + P, P), pattern(P, 7));
      expect(mr.childStats()).toEqual({ created: 3, freed: 1, live: 2 });
      await r.close();
      await pd.deregMr(mr);
      expect(mr.childStats()).toEqual({ created: 3, freed: 3, live: 0 });
      expect(mr.mappedPages()).toBe(0);
    });
  });

  it('a fault on a hole fails without leaving a child behind', async () => {
    await world(11, async ({ m, pd }) => {
      const mr = pd.regImplicitOdp(ALL);
      const r = await RdmaRemote.create(pd);
      expect(await errnoOf(r.read(mr.rkey, 7 * MLX5_IMR_CHILD_BYTES, P))).toBe('EFAULT');
      await m.sched.sleep(1);
      expect(mr.childStats().live).toBe(0);
      await r.close();
    });
  });
});

describe('prefetch after a fault of unknown length', () => {
  it('an RDMA WRITE to a cold ODP MR faults one packet, then prefetches up to 4 MiB', async () => {
    await world(12, async ({ hca, p, pd }) => {
      const len = 8 << 20;
      const a = await p.mmap({ length: len, prot: RW, flags: ANON });
      const mr = await pd.regMr(a, len, ODP);
      const r = await RdmaRemote.create(pd);
      const d = pattern(1 << 20, 8);
      await r.write(mr.rkey, a, d);
      expect(mr.stats.faultEvents).toBe(1);
      expect(mr.stats.faults).toBe(hca.mtu / P);
      expect(mr.stats.prefetchedPages).toBe(MLX5_MAX_PREFETCH_BYTES / P);
      expect(mr.mappedPages()).toBe(MLX5_MAX_PREFETCH_BYTES / P);
      expect(hca.stats().pageFaultEvents).toBe(1);
      expect(r.qp.stats.rnrNaksReceived).toBe(1);
      expectBytes(await p.read(a, d.length), d);
      // Mapped for write: the whole prefetched window is writable.
      expect(
        entries(mr, a, MLX5_MAX_PREFETCH_BYTES / P).every(
          ([, , perm]) => perm === (DevPerm.READ | DevPerm.WRITE),
        ),
      ).toBe(true);
      await r.close();
    });
  });

  it('the prefetch stops at the end of the VMA', async () => {
    await world(13, async ({ p, pd }) => {
      const a = await p.mmap({ length: 32 * P, prot: RW, flags: ANON });
      const imr = pd.regImplicitOdp(ALL);
      const r = await RdmaRemote.create(pd);
      await r.write(imr.rkey, a + 20 * P, pattern(P, 9));
      expect(imr.stats.prefetchedPages).toBe(12);
      expect(imr.mappedPages()).toBe(12);
      await r.close();
    });
  });
});

describe('ibv_advise_mr', () => {
  async function cold(w: World) {
    const a = await w.p.mmap({ length: 16 * P, prot: RW, flags: ANON });
    const mr = await w.pd.regMr(a, 16 * P, ODP);
    await w.p.write(a, pattern(10 * P, 10)); // pages 0..9 present, the MR cold
    return { a, mr };
  }
  const perms = (mr: Mlx5Mr, a: number) => entries(mr, a, 16).map(([i, , perm]) => [i, perm]);

  it('PREFETCH maps read-only, PREFETCH_WRITE writable, PREFETCH_NO_FAULT only present pages', async () => {
    await world(14, async (w) => {
      const { a, mr } = await cold(w);
      const sge = (i: number, n: number) => [{ lkey: mr.lkey, addr: a + i * P, length: n * P }];
      expect(await w.pd.adviseMr('PREFETCH', FLUSH, sge(0, 2))).toBe(2);
      expect(await w.pd.adviseMr('PREFETCH_WRITE', FLUSH, sge(2, 2))).toBe(2);
      expect(await w.pd.adviseMr('PREFETCH_NO_FAULT', FLUSH, sge(8, 8))).toBe(2);
      const RW_ = DevPerm.READ | DevPerm.WRITE;
      expect(perms(mr, a)).toEqual([
        [0, DevPerm.READ],
        [1, DevPerm.READ],
        [2, RW_],
        [3, RW_],
        [8, RW_],
        [9, RW_],
      ]);
      for (const [i, pfn] of entries(mr, a, 16)) expect(pfn).toBe(cpuPte(w.m, w.p, a + i * P).pfn);
      expect(cpuPte(w.m, w.p, a + 12 * P).pfn).toBe(-1); // NO_FAULT faulted nothing in
      expect(mr.stats).toEqual({ faults: 0, faultEvents: 0, invalidations: 0, prefetchedPages: 6 });
      // PREFETCH of absent pages faults them in (read-only).
      expect(await w.pd.adviseMr('PREFETCH', FLUSH, sge(12, 2))).toBe(2);
      expect(perms(mr, a).slice(-2)).toEqual([
        [12, DevPerm.READ],
        [13, DevPerm.READ],
      ]);
      expect(w.hca.stats().pageFaultEvents).toBe(0); // advice is not a device page fault
    });
  });

  it('without FLUSH the prefetch is queued and completes later', async () => {
    await world(15, async (w) => {
      const { a, mr } = await cold(w);
      expect(
        await w.pd.adviseMr('PREFETCH_WRITE', 0, [
          { lkey: mr.lkey, addr: a, length: 3 * P },
          { lkey: mr.lkey, addr: a + 5 * P, length: P },
        ]),
      ).toBe(0);
      expect(mr.mappedPages()).toBe(0);
      await w.m.sched.sleep(1_000_000);
      expect(perms(mr, a)).toEqual([0, 1, 2, 5].map((i) => [i, DevPerm.READ | DevPerm.WRITE]));
      expect(mr.stats.prefetchedPages).toBe(4);
      // A queued prefetch that fails drops the error.
      await w.p.munmap(a + 14 * P, 2 * P);
      expect(await w.pd.adviseMr('PREFETCH', 0, [{ lkey: mr.lkey, addr: a + 14 * P, length: 2 * P }])).toBe(
        0,
      );
      await w.m.sched.sleep(1_000_000);
      expect(mr.stats.prefetchedPages).toBe(4);
      // With FLUSH the same error is reported.
      expect(
        await errnoOf(w.pd.adviseMr('PREFETCH', FLUSH, [{ lkey: mr.lkey, addr: a + 14 * P, length: P }])),
      ).toBe('EFAULT');
    });
  });

  it('rejects bad advice without doing anything', async () => {
    await world(16, async (w) => {
      const { a, mr } = await cold(w);
      const pinned = await w.pd.regMr(a, 4 * P, ALL);
      const ro = await w.pd.regMr(a, 16 * P, IbAccess.REMOTE_READ | IbAccess.ON_DEMAND);
      const roBefore = ro.mappedPages();
      const otherP = w.m.createProcess('other');
      const otherPd = w.hca.allocPd(otherP);
      const b = await otherP.mmap({ length: 4 * P, prot: RW, flags: ANON });
      const foreign = await otherPd.regMr(b, 4 * P, ODP);
      const ok = { lkey: mr.lkey, addr: a, length: P };
      const cases: [AdviseMrAdvice, number, { lkey: number; addr: number; length: number }[], string][] = [
        ['PREFETCH', FLUSH, [{ lkey: 0xabcd00, addr: a, length: P }], 'EINVAL'],
        ['PREFETCH', FLUSH, [ok, { lkey: pinned.lkey, addr: a, length: P }], 'EINVAL'],
        ['PREFETCH', FLUSH, [ok, { lkey: mr.lkey, addr: a + 15 * P, length: 2 * P }], 'EINVAL'],
        ['PREFETCH', FLUSH, [{ lkey: mr.lkey, addr: a - P, length: P }], 'EINVAL'],
        ['PREFETCH', FLUSH, [{ lkey: mr.lkey, addr: a, length: 0 }], 'EINVAL'],
        ['PREFETCH', FLUSH, [{ lkey: foreign.lkey, addr: b, length: P }], 'EINVAL'],
        ['PREFETCH_WRITE', FLUSH, [ok, { lkey: ro.lkey, addr: a, length: P }], 'EPERM'],
        ['PREFETCH_WRITE', 0, [{ lkey: ro.lkey, addr: a, length: P }], 'EPERM'],
        ['PREFETCH', 2, [ok], 'EINVAL'],
        ['WILLNEED' as AdviseMrAdvice, FLUSH, [ok], 'EOPNOTSUPP'],
      ];
      for (const [advice, flags, sges, code] of cases) {
        expect(await errnoOf(w.pd.adviseMr(advice, flags, sges)), `${advice} ${JSON.stringify(sges)}`).toBe(
          code,
        );
      }
      await w.m.sched.sleep(1_000_000);
      expect(mr.stats).toEqual({ faults: 0, faultEvents: 0, invalidations: 0, prefetchedPages: 0 });
      expect(mr.mappedPages()).toBe(0);
      expect([ro.mappedPages(), ro.stats.prefetchedPages]).toEqual([roBefore, 0]);
      expect(foreign.mappedPages()).toBe(0);
      await otherPd.dealloc();
      await otherP.exit();
    });
  });
});

describe('deregistration', () => {
  it('deregMr twice is EINVAL; the key is gone after the first', async () => {
    await world(17, async ({ hca, p, pd }) => {
      const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
      await p.fill(a, 4 * P, 1);
      const keys = hca.mkeyCount;
      for (const access of [ODP, ALL]) {
        const mr = await pd.regMr(a, 4 * P, access);
        expect(hca.mkeyCount).toBe(keys + 1);
        await pd.deregMr(mr);
        expect(mr.destroyed).toBe(true);
        expect(hca.mkey(mr.lkey)).toBeUndefined();
        expect(hca.mkeyCount).toBe(keys);
        expect(hca.device.findMmu(mr.asid)).toBeUndefined();
        expect(await errnoOf(pd.deregMr(mr))).toBe('EINVAL');
        expect(await errnoOf(mr.pagefault(a, P, 0))).toMatch(/EINVAL|EFAULT/);
      }
      const imr = pd.regImplicitOdp(ALL);
      await pd.deregMr(imr);
      expect(await errnoOf(pd.deregMr(imr))).toBe('EINVAL');
      // RDMA on a deregistered key is refused.
      const r = await RdmaRemote.create(pd);
      expect(await errnoOf(r.read(imr.rkey, a, P))).toBe('EACCES');
      await r.close();
    });
  });
});

describe('pinned MR', () => {
  it('pins every page at registration, charges the pin time, unpins at deregistration', async () => {
    await world(18, async ({ m, p, pd }) => {
      const a = await p.mmap({ length: 16 * P, prot: RW, flags: ANON });
      const present = 6;
      await p.write(a, pattern(present * P, 11));
      expect(totalPins(m)).toBe(0);
      const t0 = m.sched.now;
      const mr = (await pd.regMr(a, 16 * P, ALL)) as PinnedMr;
      const took = m.sched.now - t0;
      expect(mr.kind).toBe('pinned');
      const cost = m.cost.rdma;
      const floor = present * cost.regPinPerPageNs + (16 - present) * cost.regPinFaultInPerPageNs;
      expect(mr.regNs).toBeGreaterThanOrEqual(floor);
      expect(took).toBeGreaterThanOrEqual(mr.regNs);
      expect(totalPins(m)).toBe(16);
      for (let i = 0; i < 16; i++) {
        const pfn = cpuPte(m, p, a + i * P).pfn;
        expect(mr.pfns[i]).toBe(pfn);
        expect(m.mm.mem.pincount[pfn]).toBe(1);
      }
      expect(mr.mappedPages()).toBe(16);
      expect(entries(mr, a, 16).map(([i, pfn]) => [i, pfn])).toEqual([...mr.pfns].map((pfn, i) => [i, pfn]));
      // Pinned pages are not invalidated by CPU-side events (MADV_DONTNEED drops the PTE, not the pin).
      await p.madvise(a, 2 * P, Madv.DONTNEED);
      expect(mr.mappedPages()).toBe(16);
      expect(mr.stats.invalidations).toBe(0);
      await pd.deregMr(mr);
      expect(totalPins(m)).toBe(0);
    });
  });

  it('a pinned registration over a hole fails with EFAULT and pins nothing', async () => {
    await world(19, async ({ m, hca, p, pd }) => {
      const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
      await p.fill(a, 8 * P, 2);
      await p.munmap(a + 5 * P, P);
      const keys = hca.mkeyCount;
      expect(await errnoOf(pd.regMr(a, 8 * P, ALL))).toBe('EFAULT');
      expect(totalPins(m)).toBe(0);
      expect(hca.mkeyCount).toBe(keys);
      expect(pd.mrs).toEqual([]);
      // Writable over read-only memory cannot be pinned either.
      const ro = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: ANON });
      expect(await errnoOf(pd.regMr(ro, 2 * P, ALL))).toBe('EFAULT');
      expect(totalPins(m)).toBe(0);
      // Registration argument checks.
      expect(await errnoOf(pd.regMr(a, 0, ALL))).toBe('EINVAL');
      expect(await errnoOf(pd.regMr(a, P, 0x1000))).toBe('EINVAL');
      expect(await errnoOf(pd.regMr(a, P, IbAccess.REMOTE_WRITE))).toBe('EINVAL');
      expect(hca.mkeyCount).toBe(keys);
    });
  });
});
