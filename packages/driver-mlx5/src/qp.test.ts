import { Machine, Madv, MapFlag, PAGE_SIZE, Prot, isHmmError } from '@hmm/core';
import type { HmmError, Process } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { Mlx5Cq, WcStatus } from './cq.js';
import type { IbWc } from './cq.js';
import { Mlx5Hca } from './hca.js';
import type { Mlx5HcaOptions } from './hca.js';
import { IbAccess } from './mr.js';
import type { Mlx5Mr } from './mr.js';
import type { Mlx5Pd } from './pd.js';
import type { Mlx5Qp } from './qp.js';
import { RNR_RETRY_INFINITE } from './qp.js';

const P = PAGE_SIZE;
const RW = Prot.READ | Prot.WRITE;
const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;
const ALL = IbAccess.LOCAL_WRITE | IbAccess.REMOTE_READ | IbAccess.REMOTE_WRITE;

type MrKindName = 'pinned' | 'odp' | 'implicit';

/** A deterministic byte pattern that differs per offset and per salt. */
function pattern(len: number, salt: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 13 + salt * 71 + (i >> 12) * 7 + 1) & 0xff);
}

/** Byte-for-byte equality naming the first differing byte (deep equality is slow on big arrays). */
function expectBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  const bad = got.findIndex((b, i) => b !== want[i]);
  expect(bad, `first differing byte ${bad}`).toBe(-1);
}

/** The HmmError code of a completion (fails the test if it has none). */
function codeOf(wc: IbWc): string {
  expect(wc.error).not.toBeNull();
  return (wc.error as HmmError).code;
}

async function anon(p: Process, pages: number, prot = RW): Promise<number> {
  return p.mmap({ length: pages * P, prot, flags: ANON });
}

async function reg(pd: Mlx5Pd, kind: MrKindName, addr: number, len: number, access = ALL): Promise<Mlx5Mr> {
  if (kind === 'implicit') return pd.regImplicitOdp(access);
  return pd.regMr(addr, len, kind === 'odp' ? access | IbAccess.ON_DEMAND : access);
}

/** One side of a connection: a process, its PD on `hca`, a buffer, CQs and a QP. */
interface Side {
  readonly hca: Mlx5Hca;
  readonly p: Process;
  readonly pd: Mlx5Pd;
  readonly buf: number;
  readonly scq: Mlx5Cq;
  readonly rcq: Mlx5Cq;
  readonly qp: Mlx5Qp;
}

interface Rig {
  readonly m: Machine;
  readonly hcas: readonly Mlx5Hca[];
  /** The requester. */
  readonly a: Side;
  /** The responder. */
  readonly b: Side;
}

interface RigOptions {
  readonly twoHcas?: boolean;
  readonly pages?: number;
  readonly rnrRetry?: number;
  /** Options of the responder's HCA (with `twoHcas`) or of the only HCA. */
  readonly responderHca?: Mlx5HcaOptions;
}

function side(m: Machine, hca: Mlx5Hca, name: string, buf: number, p: Process, rnrRetry?: number): Side {
  const pd = hca.allocPd(p);
  const scq = new Mlx5Cq(m.sched, `${name}.scq`);
  const rcq = new Mlx5Cq(m.sched, `${name}.rcq`);
  const qp = pd.createQp({
    sendCq: scq,
    recvCq: rcq,
    ...(rnrRetry === undefined ? {} : { rnrRetry }),
  });
  return { hca, p, pd, buf, scq, rcq, qp };
}

/** Two processes, each with a buffer of `pages` pages and a QP, connected (call inside a task). */
async function rig(m: Machine, o: RigOptions = {}): Promise<Rig> {
  const pages = o.pages ?? 16;
  const hb = new Mlx5Hca(m, { name: 'mlx5_b', ...o.responderHca });
  const ha = o.twoHcas === true ? new Mlx5Hca(m, { name: 'mlx5_a' }) : hb;
  const pa = m.createProcess('requester');
  const pb = m.createProcess('responder');
  const a = side(m, ha, 'a', await anon(pa, pages), pa, o.rnrRetry);
  const b = side(m, hb, 'b', await anon(pb, pages), pb);
  a.qp.connect(b.qp);
  return { m, hcas: ha === hb ? [ha] : [ha, hb], a, b };
}

/** Tears the rig down (PDs, processes, HCAs). */
async function teardown(r: Rig): Promise<void> {
  await r.a.pd.dealloc();
  await r.b.pd.dealloc();
  await r.a.p.exit();
  await r.b.p.exit();
  for (const h of r.hcas) await h.remove();
}

/** After the run: nothing leaked and the machine is consistent. */
function finish(m: Machine): void {
  m.checkInvariants();
  expect(m.mm.mem.allocatedFrames()).toEqual([]);
}

let nextWr = 1;

async function post(
  s: Side,
  opcode: 'RDMA_READ' | 'RDMA_WRITE' | 'SEND',
  lkey: number,
  addr: number,
  length: number,
  remote?: { rkey: number; addr: number },
): Promise<IbWc> {
  const wrId = nextWr++;
  s.qp.postSend({ wrId, opcode, sge: { lkey, addr, length }, ...(remote === undefined ? {} : { remote }) });
  const wc = await s.scq.waitFor(wrId);
  expect(wc.wrId).toBe(wrId);
  expect(wc.opcode).toBe(opcode);
  return wc;
}

const KIND_PAIRS: readonly (readonly [MrKindName, MrKindName])[] = [
  ['pinned', 'pinned'],
  ['pinned', 'odp'],
  ['odp', 'pinned'],
  ['odp', 'implicit'],
  ['implicit', 'odp'],
];

describe.each([
  ['loopback on one HCA', false],
  ['across two HCAs', true],
] as const)('RC data path, %s', (_name, twoHcas) => {
  it.each(KIND_PAIRS)(
    'RDMA WRITE, READ and SEND move the bytes exactly (local %s, remote %s)',
    async (lk, rk) => {
      const m = new Machine({ seed: 11 });
      await m.sched.runTask('t', async () => {
        const r = await rig(m, { twoHcas });
        const { a, b } = r;
        // ODP MRs are registered before the CPU writes, so their pages start cold.
        const lmr = await reg(a.pd, lk, a.buf, 16 * P);
        const rmr = await reg(b.pd, rk, b.buf, 16 * P);

        // RDMA WRITE: unaligned on both sides, several pages.
        const w = pattern(5 * P + 123, 1);
        await a.p.write(a.buf + 100, w);
        const wcW = await post(a, 'RDMA_WRITE', lmr.lkey, a.buf + 100, w.length, {
          rkey: rmr.rkey,
          addr: b.buf + 300,
        });
        expect([wcW.status, wcW.byteLen, wcW.error]).toEqual([WcStatus.SUCCESS, w.length, null]);
        expectBytes(await b.p.read(b.buf + 300, w.length), w);
        // The bytes around the target are untouched.
        expectBytes(await b.p.read(b.buf, 300), new Uint8Array(300));
        expectBytes(await b.p.read(b.buf + 300 + w.length, 50), new Uint8Array(50));

        // RDMA READ into the local buffer.
        const rd = pattern(3 * P + 17, 2);
        await b.p.write(b.buf + 8 * P + 7, rd);
        const wcR = await post(a, 'RDMA_READ', lmr.lkey, a.buf + 9 * P + 2000, rd.length, {
          rkey: rmr.rkey,
          addr: b.buf + 8 * P + 7,
        });
        expect([wcR.status, wcR.byteLen]).toEqual([WcStatus.SUCCESS, rd.length]);
        expectBytes(await a.p.read(a.buf + 9 * P + 2000, rd.length), rd);

        // SEND into a posted RECV.
        const s = pattern(2 * P + 5, 3);
        await a.p.write(a.buf + 6 * P, s);
        b.qp.postRecv({ wrId: 777, sge: { lkey: rmr.lkey, addr: b.buf + 12 * P + 50, length: 3 * P } });
        const wcS = await post(a, 'SEND', lmr.lkey, a.buf + 6 * P, s.length);
        expect([wcS.status, wcS.byteLen]).toEqual([WcStatus.SUCCESS, s.length]);
        const rwc = await b.rcq.next();
        expect([rwc.wrId, rwc.opcode, rwc.status, rwc.byteLen]).toEqual([
          777,
          'RECV',
          WcStatus.SUCCESS,
          s.length,
        ]);
        expectBytes(await b.p.read(b.buf + 12 * P + 50, s.length), s);

        expect(a.qp.stats.packets).toBeGreaterThanOrEqual(
          Math.ceil(w.length / P) + Math.ceil(rd.length / P) + Math.ceil(s.length / P),
        );
        expect([a.qp.state, b.qp.state]).toEqual(['RTS', 'RTS']);
        const wire = r.hcas.reduce((n, h) => n + h.stats().wireBytes, 0);
        expect(wire).toBe(w.length + rd.length + s.length);
        if (twoHcas) expect(r.hcas[1]!.stats().wireBytes).toBe(0); // the responder's HCA sent nothing
        await teardown(r);
      });
      finish(m);
    },
  );
});

describe('RC loopback on one QP', () => {
  it('a QP connected to itself writes, reads and sends within one MR', async () => {
    const m = new Machine({ seed: 3 });
    await m.sched.runTask('t', async () => {
      const hca = new Mlx5Hca(m);
      const p = m.createProcess('self');
      const buf = await anon(p, 8);
      const s = side(m, hca, 'self', buf, p);
      s.qp.connect(s.qp);
      const mr = await s.pd.regMr(buf, 8 * P, ALL | IbAccess.ON_DEMAND);
      const d = pattern(2 * P, 9);
      await p.write(buf, d);
      expect(
        (await post(s, 'RDMA_WRITE', mr.lkey, buf, d.length, { rkey: mr.rkey, addr: buf + 4 * P })).status,
      ).toBe(WcStatus.SUCCESS);
      expectBytes(await p.read(buf + 4 * P, d.length), d);
      expect(
        (await post(s, 'RDMA_READ', mr.lkey, buf + 2 * P, P, { rkey: mr.rkey, addr: buf + 5 * P })).status,
      ).toBe(WcStatus.SUCCESS);
      expectBytes(await p.read(buf + 2 * P, P), d.subarray(P));
      s.qp.postRecv({ wrId: 5, sge: { lkey: mr.lkey, addr: buf + 6 * P, length: 2 * P } });
      expect((await post(s, 'SEND', mr.lkey, buf + 10, 100)).status).toBe(WcStatus.SUCCESS);
      expect((await s.rcq.next()).byteLen).toBe(100);
      expectBytes(await p.read(buf + 6 * P, 100), d.subarray(10, 110));
      await s.pd.dealloc();
      await p.exit();
      await hca.remove();
    });
    finish(m);
  });
});

describe('SEND and RECV', () => {
  it('a SEND with no RECV posted gets RNR NAKs, then completes once a RECV is posted', async () => {
    const m = new Machine({ seed: 4 });
    await m.sched.runTask('t', async () => {
      // rnrRetry 6, not infinite: a failing check cannot leave the requester retrying forever.
      const r = await rig(m, { twoHcas: true, rnrRetry: 6 });
      const { a, b } = r;
      const lmr = await reg(a.pd, 'pinned', a.buf, 4 * P);
      const rmr = await reg(b.pd, 'pinned', b.buf, 4 * P);
      const d = pattern(P + 300, 5);
      await a.p.write(a.buf, d);
      const wrId = nextWr++;
      a.qp.postSend({ wrId, opcode: 'SEND', sge: { lkey: lmr.lkey, addr: a.buf, length: d.length } });
      const rnrNs = b.hca.minRnrTimerNs;
      await m.sched.sleep(3.5 * rnrNs);
      // Still waiting: no completion, RNR NAKs counted on both sides.
      expect(a.scq.length).toBe(0);
      expect(a.qp.stats.rnrNaksReceived).toBeGreaterThanOrEqual(3);
      expect(b.hca.stats().rnrNaksSent).toBe(a.qp.stats.rnrNaksReceived);
      expect(a.qp.stats.packets).toBe(0);
      const t0 = m.sched.now;
      b.qp.postRecv({ wrId: 42, sge: { lkey: rmr.lkey, addr: b.buf + 2 * P, length: 2 * P } });
      const wc = await a.scq.waitFor(wrId);
      expect([wc.status, wc.byteLen]).toEqual([WcStatus.SUCCESS, d.length]);
      // The requester noticed at its next retry: no later than one RNR timer (plus the transfer).
      expect(wc.at - t0).toBeLessThanOrEqual(rnrNs + 10_000);
      const rwc = await b.rcq.next();
      expect([rwc.wrId, rwc.status, rwc.byteLen]).toEqual([42, WcStatus.SUCCESS, d.length]);
      expectBytes(await b.p.read(b.buf + 2 * P, d.length), d);
      expect([a.qp.state, b.qp.state]).toEqual(['RTS', 'RTS']);
      await teardown(r);
    });
    finish(m);
  });

  it('a SEND into a RECV without LOCAL_WRITE fails: REM_OP_ERR at the requester, LOC_PROT_ERR at the receiver', async () => {
    const m = new Machine({ seed: 5 });
    await m.sched.runTask('t', async () => {
      const r = await rig(m);
      const { a, b } = r;
      const lmr = await reg(a.pd, 'pinned', a.buf, 4 * P);
      const rmr = await reg(b.pd, 'odp', b.buf, 4 * P, IbAccess.REMOTE_READ);
      b.qp.postRecv({ wrId: 1, sge: { lkey: rmr.lkey, addr: b.buf, length: 4 * P } });
      const wc = await post(a, 'SEND', lmr.lkey, a.buf, 2 * P);
      expect(wc.status).toBe(WcStatus.REM_OP_ERR);
      expect(codeOf(wc)).toBe('EACCES');
      const r1 = await b.rcq.next();
      expect([r1.wrId, r1.opcode, r1.status]).toEqual([1, 'RECV', WcStatus.LOC_PROT_ERR]);
      expect([a.qp.state, b.qp.state]).toEqual(['ERR', 'ERR']);
      await teardown(r);
    });
    finish(m);
  });

  it('a fault the requester gave up on is forgotten once its responder QP goes to the error state', async () => {
    const m = new Machine({ seed: 6 });
    await m.sched.runTask('t', async () => {
      const r = await rig(m, { rnrRetry: 0 });
      const { a, b } = r;
      const lmr = await reg(a.pd, 'pinned', a.buf, 4 * P);
      const rmr = await reg(b.pd, 'odp', b.buf, 4 * P);
      const wc = await post(a, 'RDMA_READ', lmr.lkey, a.buf, 4 * P, { rkey: rmr.rkey, addr: b.buf });
      expect(wc.status).toBe(WcStatus.RNR_RETRY_EXC_ERR);
      // The responder still holds its fault's token until a packet asks or the QP fails.
      expect(b.hca.trackedFaults).toBe(1);
      b.qp.destroy();
      await m.sched.sleep(1_000_000); // the work item resumes the fault meanwhile
      expect(b.hca.trackedFaults).toBe(0);
      expect(b.hca.pendingFaults).toBe(0);
      await teardown(r);
    });
    finish(m);
  });

  it('a SEND longer than the RECV fails: REM_INV_REQ_ERR at the requester, LOC_LEN_ERR at the receiver', async () => {
    const m = new Machine({ seed: 5 });
    await m.sched.runTask('t', async () => {
      const r = await rig(m);
      const { a, b } = r;
      const lmr = await reg(a.pd, 'pinned', a.buf, 4 * P);
      const rmr = await reg(b.pd, 'odp', b.buf, 4 * P);
      await b.p.write(b.buf, pattern(4 * P, 6));
      b.qp.postRecv({ wrId: 1, sge: { lkey: rmr.lkey, addr: b.buf, length: P } });
      b.qp.postRecv({ wrId: 2, sge: { lkey: rmr.lkey, addr: b.buf + P, length: 3 * P } });
      const wc = await post(a, 'SEND', lmr.lkey, a.buf, 2 * P);
      expect(wc.status).toBe(WcStatus.REM_INV_REQ_ERR);
      expect(codeOf(wc)).toBe('EINVAL');
      expect(wc.error!.message).toMatch(/does not fit/);
      const r1 = await b.rcq.next();
      expect([r1.wrId, r1.opcode, r1.status]).toEqual([1, 'RECV', WcStatus.LOC_LEN_ERR]);
      // The receiver's QP went to the error state: its other RECV is flushed.
      const r2 = await b.rcq.next();
      expect([r2.wrId, r2.status]).toEqual([2, WcStatus.WR_FLUSH_ERR]);
      expect([a.qp.state, b.qp.state]).toEqual(['ERR', 'ERR']);
      // Nothing was written into the RECV buffer.
      expectBytes(await b.p.read(b.buf, 4 * P), pattern(4 * P, 6));
      await teardown(r);
    });
    finish(m);
  });
});

describe('protection errors move the QP to the error state', () => {
  interface Case {
    readonly name: string;
    readonly status: string;
    readonly code: string;
    readonly message: RegExp;
    /** The responder's QP fails too. */
    readonly remote: boolean;
    run(r: Rig, lmr: Mlx5Mr, rmr: Mlx5Mr, other: Mlx5Mr): Promise<IbWc>;
  }
  const cases: Case[] = [
    {
      name: 'unknown lkey',
      status: WcStatus.LOC_PROT_ERR,
      code: 'EINVAL',
      message: /lkey/,
      remote: false,
      run: (r, _l, rmr) => post(r.a, 'RDMA_WRITE', 0xdead00, r.a.buf, P, { rkey: rmr.rkey, addr: r.b.buf }),
    },
    {
      name: "lkey of another PD's MR",
      status: WcStatus.LOC_PROT_ERR,
      code: 'EINVAL',
      message: /protection domain/,
      remote: false,
      run: (r, _l, rmr, other) =>
        post(r.a, 'RDMA_WRITE', other.lkey, r.b.buf, P, { rkey: rmr.rkey, addr: r.b.buf }),
    },
    {
      name: 'local SGE outside its MR',
      status: WcStatus.LOC_PROT_ERR,
      code: 'EFAULT',
      message: /leave MR/,
      remote: false,
      run: (r, lmr, rmr) =>
        post(r.a, 'RDMA_WRITE', lmr.lkey, r.a.buf + 3 * P, 2 * P, { rkey: rmr.rkey, addr: r.b.buf }),
    },
    {
      name: 'RDMA READ into an MR without LOCAL_WRITE',
      status: WcStatus.LOC_PROT_ERR,
      code: 'EACCES',
      message: /need/,
      remote: false,
      run: async (r, _l, rmr) => {
        const ro = await r.a.pd.regMr(r.a.buf + 8 * P, P, 0);
        return post(r.a, 'RDMA_READ', ro.lkey, r.a.buf + 8 * P, P, { rkey: rmr.rkey, addr: r.b.buf });
      },
    },
    {
      name: 'unknown rkey',
      status: WcStatus.REM_ACCESS_ERR,
      code: 'EACCES',
      message: /rkey/,
      remote: true,
      run: (r, lmr) => post(r.a, 'RDMA_READ', lmr.lkey, r.a.buf, P, { rkey: 0xbeef00, addr: r.b.buf }),
    },
    {
      name: 'RDMA READ of an MR without REMOTE_READ',
      status: WcStatus.REM_ACCESS_ERR,
      code: 'EACCES',
      message: /without the access/,
      remote: true,
      run: async (r, lmr) => {
        const wo = await r.b.pd.regMr(r.b.buf + 8 * P, P, IbAccess.LOCAL_WRITE | IbAccess.REMOTE_WRITE);
        return post(r.a, 'RDMA_READ', lmr.lkey, r.a.buf, P, { rkey: wo.rkey, addr: r.b.buf + 8 * P });
      },
    },
    {
      name: 'RDMA WRITE to an MR without REMOTE_WRITE',
      status: WcStatus.REM_ACCESS_ERR,
      code: 'EACCES',
      message: /without the access/,
      remote: true,
      run: async (r, lmr) => {
        const ro = await r.b.pd.regMr(r.b.buf + 8 * P, P, IbAccess.REMOTE_READ | IbAccess.ON_DEMAND);
        return post(r.a, 'RDMA_WRITE', lmr.lkey, r.a.buf, P, { rkey: ro.rkey, addr: r.b.buf + 8 * P });
      },
    },
    {
      name: 'remote range past the end of the MR',
      status: WcStatus.REM_ACCESS_ERR,
      code: 'EFAULT',
      message: /leave MR/,
      remote: true,
      run: (r, lmr, rmr) =>
        post(r.a, 'RDMA_READ', lmr.lkey, r.a.buf, 2 * P, { rkey: rmr.rkey, addr: r.b.buf + 3 * P }),
    },
    {
      name: 'responder page fault on unmapped memory',
      status: WcStatus.REM_ACCESS_ERR,
      code: 'EFAULT',
      message: /./,
      remote: true,
      run: async (r, lmr) => {
        const odp = await r.b.pd.regMr(r.b.buf + 8 * P, 4 * P, ALL | IbAccess.ON_DEMAND);
        await r.b.p.munmap(r.b.buf + 8 * P, 4 * P);
        return post(r.a, 'RDMA_READ', lmr.lkey, r.a.buf, P, { rkey: odp.rkey, addr: r.b.buf + 9 * P });
      },
    },
    {
      name: 'local page fault for write on read-only memory',
      status: WcStatus.LOC_PROT_ERR,
      code: 'EPERM',
      message: /./,
      remote: false,
      run: async (r, _l, rmr) => {
        const ro = await r.a.p.mmap({ length: 2 * P, prot: Prot.READ, flags: ANON });
        const odp = await r.a.pd.regMr(ro, 2 * P, IbAccess.LOCAL_WRITE | IbAccess.ON_DEMAND);
        return post(r.a, 'RDMA_READ', odp.lkey, ro, P, { rkey: rmr.rkey, addr: r.b.buf });
      },
    },
  ];

  it.each(cases)('$name → $status ($code)', async (c) => {
    const m = new Machine({ seed: 6 });
    await m.sched.runTask('t', async () => {
      const r = await rig(m, { twoHcas: true });
      const lmr = await reg(r.a.pd, 'pinned', r.a.buf, 4 * P);
      const rmr = await reg(r.b.pd, 'odp', r.b.buf, 4 * P);
      const other = await reg(r.b.pd, 'pinned', r.b.buf + 4 * P, P);
      const before = pattern(4 * P, 8);
      await r.b.p.write(r.b.buf, before);
      // Two more requests queued behind the failing one are flushed, in order.
      const failing = c.run(r, lmr, rmr, other);
      const q1 = nextWr++;
      const q2 = nextWr++;
      const good = { lkey: lmr.lkey, addr: r.a.buf, length: P };
      const wc = await failing;
      expect(wc.status).toBe(c.status);
      expect(isHmmError(wc.error)).toBe(true);
      expect(codeOf(wc)).toBe(c.code);
      expect(wc.error!.message).toMatch(c.message);
      expect(wc.byteLen).toBe(0);
      expect(r.a.qp.state).toBe('ERR');
      expect(r.a.qp.error).toBe(wc.error);
      expect(r.b.qp.state).toBe(c.remote ? 'ERR' : 'RTS');
      // Later posts complete at once with WR_FLUSH_ERR and move nothing.
      const packets = r.a.qp.stats.packets;
      r.a.qp.postSend({
        wrId: q1,
        opcode: 'RDMA_WRITE',
        sge: good,
        remote: { rkey: rmr.rkey, addr: r.b.buf },
      });
      r.a.qp.postSend({ wrId: q2, opcode: 'SEND', sge: good });
      expect(r.a.scq.poll().map((w) => [w.wrId, w.status])).toEqual([
        [q1, WcStatus.WR_FLUSH_ERR],
        [q2, WcStatus.WR_FLUSH_ERR],
      ]);
      r.a.qp.postRecv({ wrId: 99, sge: good });
      expect(r.a.rcq.poll().map((w) => [w.wrId, w.status])).toEqual([[99, WcStatus.WR_FLUSH_ERR]]);
      await m.sched.sleep(1_000_000);
      expect(r.a.qp.stats.packets).toBe(packets);
      expect(r.a.scq.length).toBe(0);
      expectBytes(await r.b.p.read(r.b.buf, 4 * P), before);
      await teardown(r);
    });
    finish(m);
  });

  it('requests queued behind a failing one are flushed in order', async () => {
    const m = new Machine({ seed: 7 });
    await m.sched.runTask('t', async () => {
      const r = await rig(m);
      const lmr = await reg(r.a.pd, 'pinned', r.a.buf, 4 * P);
      const rmr = await reg(r.b.pd, 'pinned', r.b.buf, 4 * P);
      const sge = { lkey: lmr.lkey, addr: r.a.buf, length: P };
      r.a.qp.postSend({ wrId: 1, opcode: 'RDMA_WRITE', sge, remote: { rkey: rmr.rkey, addr: r.b.buf } });
      r.a.qp.postSend({ wrId: 2, opcode: 'RDMA_WRITE', sge, remote: { rkey: 0x1234500, addr: r.b.buf } });
      r.a.qp.postSend({ wrId: 3, opcode: 'RDMA_WRITE', sge, remote: { rkey: rmr.rkey, addr: r.b.buf } });
      r.a.qp.postSend({ wrId: 4, opcode: 'RDMA_READ', sge, remote: { rkey: rmr.rkey, addr: r.b.buf } });
      const got: [number, string][] = [];
      for (let i = 0; i < 4; i++) {
        const wc = await r.a.scq.next();
        got.push([wc.wrId, wc.status]);
      }
      expect(got).toEqual([
        [1, WcStatus.SUCCESS],
        [2, WcStatus.REM_ACCESS_ERR],
        [3, WcStatus.WR_FLUSH_ERR],
        [4, WcStatus.WR_FLUSH_ERR],
      ]);
      expect(r.a.qp.stats.packets).toBe(1);
      await teardown(r);
    });
    finish(m);
  });
});

describe('RNR retry budget', () => {
  /** One RDMA READ of 4 cold ODP pages at a responder whose fault takes longer than its RNR timer. */
  async function coldRead(rnrRetry: number, responderHca: Mlx5HcaOptions) {
    const m = new Machine({ seed: 8 });
    const out = await m.sched.runTask('t', async () => {
      const r = await rig(m, { twoHcas: true, rnrRetry, responderHca });
      const lmr = await reg(r.a.pd, 'pinned', r.a.buf, 4 * P);
      const rmr = await reg(r.b.pd, 'odp', r.b.buf, 4 * P);
      const d = pattern(4 * P, 10);
      await r.b.p.write(r.b.buf, d);
      await r.b.p.madvise(r.b.buf, 4 * P, Madv.DONTNEED); // the pages and the MR go cold
      await r.b.p.write(r.b.buf, d);
      expect(rmr.mappedPages()).toBe(0);
      const wc = await post(r.a, 'RDMA_READ', lmr.lkey, r.a.buf, 4 * P, { rkey: rmr.rkey, addr: r.b.buf });
      const data = await r.a.p.read(r.a.buf, 4 * P);
      const res = {
        status: wc.status,
        error: wc.error,
        rnr: r.a.qp.stats.rnrNaksReceived,
        sent: r.b.hca.stats().rnrNaksSent,
        ok: Buffer.compare(data, d) === 0,
        state: r.a.qp.state,
        responderState: r.b.qp.state,
      };
      // Let the responder's fault finish before tearing down.
      await m.sched.sleep(m.cost.odp.faultNs * 2);
      await teardown(r);
      return res;
    });
    finish(m);
    return out;
  }

  it('a responder fault longer than the RNR timer exhausts a small budget: RNR_RETRY_EXC_ERR, ETIMEDOUT', async () => {
    const res = await coldRead(3, { minRnrTimerNs: 1000 });
    expect(res.status).toBe(WcStatus.RNR_RETRY_EXC_ERR);
    expect(res.error?.code).toBe('ETIMEDOUT');
    expect(res.error?.message).toMatch(/rnr_retry 3 exhausted/);
    expect(res.error?.message).toMatch(/4 times/);
    expect(res.rnr).toBe(4);
    expect(res.sent).toBe(4);
    expect(res.state).toBe('ERR');
    expect(res.responderState).toBe('RTS');
    expect(res.ok).toBe(false);
  });

  it('rnrRetry 0 fails on the first RNR NAK of a cold ODP MR', async () => {
    const res = await coldRead(0, {});
    expect(res.status).toBe(WcStatus.RNR_RETRY_EXC_ERR);
    expect(res.error?.code).toBe('ETIMEDOUT');
    expect(res.error?.message).toMatch(/rnr_retry 0 exhausted/);
    expect(res.rnr).toBe(1);
  });

  it('rnrRetry 1 is enough when the fault is shorter than the RNR timer', async () => {
    const res = await coldRead(1, {});
    expect(res.status).toBe(WcStatus.SUCCESS);
    expect(res.rnr).toBe(1);
    expect(res.ok).toBe(true);
  });

  it('rnrRetry 7 (infinite) lets the same request succeed', async () => {
    const res = await coldRead(RNR_RETRY_INFINITE, { minRnrTimerNs: 1000 });
    expect(res.status).toBe(WcStatus.SUCCESS);
    expect(res.error).toBeNull();
    expect(res.ok).toBe(true);
    expect(res.rnr).toBeGreaterThan(4);
    expect(res.sent).toBe(res.rnr);
    expect(res.state).toBe('RTS');
  });
});

describe('postSend / postRecv / createQp validation', () => {
  it('rejects malformed requests with EINVAL and queues nothing', async () => {
    const m = new Machine({ seed: 9 });
    await m.sched.runTask('t', async () => {
      const r = await rig(m);
      const lmr = await reg(r.a.pd, 'pinned', r.a.buf, 4 * P);
      const rmr = await reg(r.b.pd, 'pinned', r.b.buf, 4 * P);
      const sge = { lkey: lmr.lkey, addr: r.a.buf, length: P };
      const remote = { rkey: rmr.rkey, addr: r.b.buf };
      const bad: unknown[] = [
        { wrId: 1, opcode: 'ATOMIC_CMP_SWP', sge, remote },
        { wrId: 2, opcode: 'RDMA_WRITE', sge: { ...sge, length: 0 }, remote },
        { wrId: 3, opcode: 'RDMA_WRITE', sge: { ...sge, lkey: 1.5 }, remote },
        { wrId: 4, opcode: 'RDMA_WRITE', sge: { ...sge, addr: Number.NaN }, remote },
        { wrId: 5, opcode: 'RDMA_WRITE', sge },
        { wrId: 6, opcode: 'RDMA_READ', sge, remote: { rkey: rmr.rkey, addr: 0.5 } },
        { wrId: 7, opcode: 'SEND' },
      ];
      for (const wr of bad) {
        let err: unknown = null;
        try {
          r.a.qp.postSend(wr as Parameters<Mlx5Qp['postSend']>[0]);
        } catch (e) {
          err = e;
        }
        expect(isHmmError(err) && err.code === 'EINVAL', JSON.stringify(wr)).toBe(true);
      }
      expect(() => r.b.qp.postRecv({ wrId: 8, sge: { ...sge, length: -1 } })).toThrow(/EINVAL/);
      // A QP not connected yet.
      const lone = r.a.pd.createQp({ sendCq: r.a.scq });
      expect(lone.state).toBe('RESET');
      expect(() => lone.postSend({ wrId: 9, opcode: 'SEND', sge })).toThrow(/not connected/);
      expect(() => r.a.pd.createQp({ sendCq: r.a.scq, rnrRetry: 8 })).toThrow(/EINVAL/);
      expect(() => r.a.pd.createQp({ sendCq: r.a.scq, rnrRetry: -1 })).toThrow(/EINVAL/);
      // Connecting a connected QP is refused.
      expect(() => lone.connect(r.b.qp)).toThrow(/EINVAL/);
      await m.sched.sleep(5_000_000);
      expect([r.a.scq.total, r.b.rcq.total, r.a.qp.stats.packets]).toEqual([0, 0, 0]);
      expect([r.a.qp.state, r.b.qp.state]).toEqual(['RTS', 'RTS']);
      // The QP still works.
      expect((await post(r.a, 'RDMA_WRITE', lmr.lkey, r.a.buf, P, remote)).status).toBe(WcStatus.SUCCESS);
      await teardown(r);
    });
    finish(m);
  });
});

describe('WQE page faults on the requester', () => {
  it.each([false, true])(
    'a cold ODP source buffer stalls the QP on a local fault, then resumes (two HCAs: %s)',
    async (twoHcas) => {
      const m = new Machine({ seed: 10 });
      await m.sched.runTask('t', async () => {
        const r = await rig(m, { twoHcas });
        const lmr = await reg(r.a.pd, 'odp', r.a.buf, 8 * P);
        const rmr = await reg(r.b.pd, 'pinned', r.b.buf, 8 * P);
        expect(lmr.mappedPages()).toBe(0);
        const d = pattern(4 * P, 12);
        await r.a.p.write(r.a.buf + P, d); // the CPU touches the pages; the MR stays cold
        expect(lmr.mappedPages()).toBe(0);
        const before = r.a.hca.stats();
        const t0 = m.sched.now;
        const wc = await post(r.a, 'RDMA_WRITE', lmr.lkey, r.a.buf + P, d.length, {
          rkey: rmr.rkey,
          addr: r.b.buf,
        });
        expect(wc.status).toBe(WcStatus.SUCCESS);
        // The local fault cost at least the fault service time.
        expect(wc.at - t0).toBeGreaterThanOrEqual(m.cost.odp.faultNs);
        expectBytes(await r.b.p.read(r.b.buf, d.length), d);
        expect(r.a.qp.stats.pageFaultStalls).toBe(1);
        expect(r.a.qp.stats.rnrNaksReceived).toBe(0);
        const after = r.a.hca.stats();
        expect(after.pageFaultEvents - before.pageFaultEvents).toBe(1);
        expect(after.pageFaultsResolved - before.pageFaultsResolved).toBe(1);
        expect(after.pageFaultErrors).toBe(before.pageFaultErrors);
        if (twoHcas) expect(r.b.hca.stats().pageFaultEvents).toBe(0);
        // The fault covered the rest of the message: one event, four pages.
        expect([lmr.stats.faultEvents, lmr.stats.faults]).toEqual([1, 4]);
        expect(lmr.mappedPages()).toBe(4);

        // RDMA READ into a cold ODP destination: a WQE fault for write.
        const src = pattern(2 * P, 13);
        await r.b.p.write(r.b.buf + 4 * P, src);
        const wc2 = await post(r.a, 'RDMA_READ', lmr.lkey, r.a.buf + 6 * P, 2 * P, {
          rkey: rmr.rkey,
          addr: r.b.buf + 4 * P,
        });
        expect(wc2.status).toBe(WcStatus.SUCCESS);
        expect(r.a.qp.stats.pageFaultStalls).toBe(2);
        expectBytes(await r.a.p.read(r.a.buf + 6 * P, 2 * P), src);
        // Warm now: the same write does not stall again.
        await post(r.a, 'RDMA_WRITE', lmr.lkey, r.a.buf + P, d.length, { rkey: rmr.rkey, addr: r.b.buf });
        expect(r.a.qp.stats.pageFaultStalls).toBe(2);
        await teardown(r);
      });
      finish(m);
    },
  );
});
