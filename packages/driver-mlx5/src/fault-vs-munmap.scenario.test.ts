/**
 * Scenario of issue 7: a page fault of the NIC races a munmap of the same range. A remote peer
 * RDMA-READs a cold buffer through an ODP MR (explicit or implicit), so the responder faults, while
 * another task unmaps the buffer after a seeded delay spanning the READ's duration. The READ either
 * completes with exactly the buffer's data or fails cleanly (REM_ACCESS_ERR carrying EFAULT, the
 * QP in the error state, a new QP working); the MR keeps no translation of the unmapped range, and
 * the sanitizer sees no device access to a stale or freed frame. A variant maps new data at the same
 * address right after the munmap: each page read is then the old or the new content of that page.
 */
import {
  HmmError,
  HmmSanitizer,
  Machine,
  MapFlag,
  MremapFlag,
  PAGE_SIZE,
  Prot,
  SeededRandom,
} from '@hmm/core';
import type { Process } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { IbAccess, Mlx5Hca, RdmaRemote, WcStatus } from './index.js';
import type { Mlx5Mr, Mlx5Pd } from './index.js';

const P = PAGE_SIZE;
const PAGES = 256; // 1 MiB: the transfer itself is a sizeable part of the READ
const LEN = PAGES * P;
const SEEDS = 30;
const ACCESS = IbAccess.LOCAL_WRITE | IbAccess.REMOTE_READ | IbAccess.REMOTE_WRITE;

type MrKind = 'explicit' | 'implicit';
/** `'munmap'`: the range stays unmapped. `'mremap'`: a prepared mapping with new data is moved onto it
 * (its content appears at once). `'mmap-fixed'`: a fresh anonymous mapping is made there and the CPU
 * then writes the new data (a page the NIC reads before the CPU wrote it holds zeros). */
type After = 'munmap' | 'mremap' | 'mmap-fixed';

/** Bytes of a buffer; `salt` tells generations apart (no page of one equals a page of another). */
function pattern(salt: number): Uint8Array {
  const d = new Uint8Array(LEN);
  for (let i = 0; i < LEN; i++) d[i] = ((i * 13 + (i >> 12) * 7 + salt * 101) & 0xff) | 0x80;
  return d;
}
const OLD = pattern(1);
const NEW = pattern(2);
const CAL = pattern(3);

async function anon(p: Process, data: Uint8Array, addr?: number): Promise<number> {
  const a = await p.mmap({
    length: data.length,
    prot: Prot.READ | Prot.WRITE,
    flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS | (addr === undefined ? 0 : MapFlag.FIXED),
    ...(addr === undefined ? {} : { addr }),
  });
  await p.write(a, data);
  return a;
}

/**
 * A buffer with `data` whose translation in `mr` is cold. An explicit MR is registered over the
 * empty mapping first (its snapshot pass finds nothing), then the CPU writes the data.
 */
async function coldBuffer(
  p: Process,
  pd: Mlx5Pd,
  kind: MrKind,
  implicit: Mlx5Mr | null,
  data: Uint8Array,
): Promise<{ a: number; mr: Mlx5Mr }> {
  const a = await p.mmap({
    length: data.length,
    prot: Prot.READ | Prot.WRITE,
    flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
  });
  const mr = kind === 'implicit' ? implicit! : await pd.regMr(a, data.length, ACCESS | IbAccess.ON_DEMAND);
  await p.write(a, data);
  if (mr.translate(a / P, false) >= 0) throw new Error('test setup: the buffer is not cold');
  return { a, mr };
}

/** Byte-for-byte equality (`toEqual` on big typed arrays is slow), naming the first difference. */
function expectBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  let bad = -1;
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      bad = i;
      break;
    }
  }
  expect(bad, `first differing byte ${bad}`).toBe(-1);
}

/** Per-page outcome of a successful READ of the raced range. */
type PageOrigin = 'old' | 'new' | 'zero' | 'other';

function origin(got: Uint8Array, page: number): PageOrigin {
  const eq = (want: Uint8Array | null): boolean => {
    for (let b = 0; b < P; b++)
      if (got[page * P + b] !== (want === null ? 0 : want[page * P + b])) return false;
    return true;
  };
  return eq(OLD) ? 'old' : eq(NEW) ? 'new' : eq(null) ? 'zero' : 'other';
}

interface RaceResult {
  readonly kind: MrKind;
  readonly after: After;
  readonly delayNs: number;
  readonly coldReadNs: number;
  /** Null on success, else the failure. */
  readonly error: HmmError | null;
  /** Packets the failed READ moved before failing (0 on success). */
  readonly packetsBeforeFailure: number;
  /** Page origins of a successful READ. */
  readonly origins: Record<PageOrigin, number>;
}

/** One seed: calibrate a cold READ, then race a cold READ of the buffer with its munmap. */
async function race(seed: number, kind: MrKind, after: After): Promise<RaceResult> {
  const m = new Machine({ seed });
  const rnd = new SeededRandom(seed * 104729 + 3);
  const hca = new Mlx5Hca(m, { name: 'mlx5_0' });
  const san = new HmmSanitizer(m.mm, 'record');
  const res = await m.sched.runTask('race', async () => {
    const p = m.createProcess('app');
    const pd = hca.allocPd(p);
    const implicit = kind === 'implicit' ? pd.regImplicitOdp(ACCESS) : null;
    const remote = await RdmaRemote.create(pd, { bufferBytes: LEN, name: 'peer' });

    // Calibration on a separate buffer: how long a cold READ of this size takes.
    const cal = await coldBuffer(p, pd, kind, implicit, CAL);
    const t0 = m.sched.now;
    const calRead = await remote.read(cal.mr.rkey, cal.a, LEN);
    const coldReadNs = m.sched.now - t0;
    expectBytes(calRead, CAL);

    const { a, mr } = await coldBuffer(p, pd, kind, implicit, OLD);
    san.watch(hca.device, mr.asid, p.mm, null);
    if (cal.mr !== mr) san.watch(hca.device, cal.mr.asid, p.mm, null);
    // A mapping with the new data prepared elsewhere, for the mremap variant.
    const spare = after === 'mremap' ? await anon(p, NEW) : -1;

    const delayNs = rnd.nextInt(Math.ceil(coldReadNs * 1.4));
    const qp = remote.qp;
    const responder = remote.responder;
    const packets0 = qp.stats.packets;
    let got: Uint8Array | null = null;
    let error: HmmError | null = null;
    const reader = m.sched.spawn('reader', async () => {
      try {
        got = await remote.read(mr.rkey, a, LEN);
      } catch (e) {
        if (!(e instanceof HmmError)) throw e;
        error = e;
      }
    });
    const unmapper = m.sched.spawn('unmapper', async () => {
      await m.sched.sleep(delayNs);
      await p.munmap(a, LEN);
      // Right after: the MR has no translation left for the range.
      for (let i = 0; i < PAGES; i++) expect(mr.translate(a / P + i, false)).toBe(-1);
      if (after === 'mremap') {
        expect(await p.mremap(spare, LEN, LEN, MremapFlag.MAYMOVE | MremapFlag.FIXED, a)).toBe(a);
      } else if (after === 'mmap-fixed') {
        expect(await anon(p, NEW, a)).toBe(a);
      }
    });
    await reader.join();
    await unmapper.join();

    const origins: Record<PageOrigin, number> = { old: 0, new: 0, zero: 0, other: 0 };
    let packetsBeforeFailure = 0;
    const failure = error as HmmError | null;
    if (failure === null) {
      const data = got as unknown as Uint8Array;
      expect(data.length).toBe(LEN);
      for (let i = 0; i < PAGES; i++) origins[origin(data, i)]++;
    } else {
      // A clean failure: REM_ACCESS_ERR with the fault's EFAULT; both QPs in the error state.
      packetsBeforeFailure = qp.stats.packets - packets0;
      expect(failure.code).toBe('EFAULT');
      expect(failure.message).toMatch(/hmm_range_fault: 0x[0-9a-f]+ is in no mapping/);
      expect(failure.address).toBeGreaterThanOrEqual(a);
      expect(failure.address).toBeLessThan(a + LEN);
      expect(remote.completions.get(WcStatus.REM_ACCESS_ERR)).toBe(1);
      expect(qp.state).toBe('ERR');
      expect(qp.error).toBe(failure);
      expect(responder.state).toBe('ERR');
      expect(hca.stats().pageFaultErrors).toBeGreaterThanOrEqual(1);
    }

    // The MR holds nothing of the range unless it was remapped and read again.
    if (after === 'munmap') {
      expect(mr.mappedPages() - (cal.mr === mr ? PAGES : 0)).toBe(0);
      for (let i = 0; i < PAGES; i++) expect(mr.translate(a / P + i, false)).toBe(-1);
      // The range is gone: a new READ of it fails, on a new QP.
      await expect(remote.read(mr.rkey, a, P)).rejects.toMatchObject({ code: 'EFAULT' });
    } else {
      // The MR follows the address space: a READ now returns the new data.
      expectBytes(await remote.read(mr.rkey, a, LEN), NEW);
    }
    // The QP works again: after a failure it is a new one (the old one stays in the error state).
    expectBytes(await remote.read(cal.mr.rkey, cal.a, LEN), CAL);
    expect(remote.qp.state).toBe('RTS');
    if (failure !== null) {
      expect(remote.qp).not.toBe(qp);
      expect(qp.state).toBe('ERR');
    }

    expect(san.checkAll()).toEqual([]);
    expect(san.violations).toEqual([]);
    await remote.close();
    await pd.dealloc();
    await p.exit();
    await hca.remove();
    return { kind, after, delayNs, coldReadNs, error: failure, packetsBeforeFailure, origins };
  });
  m.checkInvariants();
  expect(m.mm.mem.allocatedFrames()).toEqual([]);
  expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  expect(san.violations).toEqual([]);
  return res;
}

function summary(rs: readonly RaceResult[]): string {
  const ok = rs.filter((r) => r.error === null).length;
  const mid = rs.filter((r) => r.error !== null && r.packetsBeforeFailure > 0).length;
  return `${rs.length} races: ${ok} completed, ${rs.length - ok} failed (${mid} after moving data); cold READ ${(
    rs[0]!.coldReadNs / 1000
  ).toFixed(1)} µs`;
}

describe('scenario: a NIC page fault races a munmap of the same range', () => {
  it(`munmap: over ${SEEDS} seeds the READ completes with the original data or fails cleanly`, async () => {
    const rs: RaceResult[] = [];
    for (let seed = 1; seed <= SEEDS; seed++) {
      rs.push(await race(seed, seed % 2 === 0 ? 'explicit' : 'implicit', 'munmap'));
    }
    console.log(`munmap: ${summary(rs)}`);
    for (const r of rs) {
      // Nothing stale: a completed READ returned exactly the buffer.
      if (r.error === null) expect(r.origins).toEqual({ old: PAGES, new: 0, zero: 0, other: 0 });
    }
    // Both outcomes occur, for both kinds of ODP MR.
    for (const kind of ['explicit', 'implicit'] as const) {
      const mine = rs.filter((r) => r.kind === kind);
      expect(mine.some((r) => r.error === null)).toBe(true);
      expect(mine.some((r) => r.error !== null)).toBe(true);
    }
    // Some munmaps landed while data was moving: the READ failed part way, cleanly.
    expect(rs.some((r) => r.error !== null && r.packetsBeforeFailure > 0)).toBe(true);
  });

  it(`munmap then a new mapping at the address: each page read is its old or its new content`, async () => {
    const rs: RaceResult[] = [];
    for (let seed = 1; seed <= SEEDS; seed++) {
      const after: After = seed % 2 === 0 ? 'mremap' : 'mmap-fixed';
      rs.push(await race(100 + seed, (seed >> 1) % 2 === 0 ? 'explicit' : 'implicit', after));
    }
    console.log(`remap: ${summary(rs)}`);
    for (const r of rs) {
      if (r.error !== null) continue;
      expect(r.origins.other).toBe(0);
      // The mremap'd mapping brings its data at once; a fresh mmap holds zeros until the CPU writes.
      if (r.after === 'mremap') expect(r.origins.zero).toBe(0);
      expect(r.origins.old + r.origins.new + r.origins.zero).toBe(PAGES);
    }
    const done = rs.filter((r) => r.error === null);
    // The ODP MR follows the address space: some READs finished before the munmap (all old), some
    // faulted after the remap (all new), and some were cut by the munmap part way and refaulted
    // onto the new mapping (old pages, then new ones), for both kinds of MR.
    expect(done.some((r) => r.origins.old === PAGES)).toBe(true);
    expect(done.some((r) => r.origins.new === PAGES)).toBe(true);
    const mixed = done.filter((r) => r.origins.old > 0 && r.origins.new > 0);
    expect(mixed.length).toBeGreaterThan(0);
    for (const kind of ['explicit', 'implicit'] as const) {
      expect(done.some((r) => r.kind === kind && r.origins.new > 0)).toBe(true);
    }
  });
});
