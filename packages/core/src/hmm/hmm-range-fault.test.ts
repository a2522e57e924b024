import { describe, expect, it } from 'vitest';
import { ANON, P, RW } from '../testing/fixtures.js';
import { Machine } from '../system/machine.js';
import { MapFlag, Prot } from '../mm/constants.js';
import type { Process } from '../mm/process.js';
import { ZERO_PFN } from '../mm/physmem.js';
import {
  HmmPfn,
  hmmPfnFlags,
  hmmPfnMake,
  hmmPfnToMapOrder,
  hmmPfnToPfn,
  hmmRangeFault,
} from './hmm-range-fault.js';
import type { HmmRange } from './hmm-range-fault.js';
import {
  mmuIntervalNotifierInsert,
  mmuIntervalReadBegin,
  mmuIntervalSetSeq,
} from './mmu-interval-notifier.js';
import type { MmuIntervalNotifier } from './mmu-interval-notifier.js';

const { VALID, WRITE, ERROR, REQ_FAULT, REQ_WRITE } = HmmPfn;

async function setup(): Promise<{ m: Machine; p: Process; sub: MmuIntervalNotifier }> {
  const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P });
  const p = m.createProcess();
  const sub = mmuIntervalNotifierInsert(p.mm, 0x10000, 2 ** 47 - 0x20000, {
    invalidate: (s, _r, seq) => {
      mmuIntervalSetSeq(s, seq);
      return true;
    },
  });
  return { m, p, sub };
}

/** Runs hmm_range_fault over [start, start+n pages) under the mmap read lock; returns the flags and pfns. */
async function fault(p: Process, sub: MmuIntervalNotifier, start: number, n: number, defaultFlags = 0) {
  const range: HmmRange = {
    notifier: sub,
    notifierSeq: await mmuIntervalReadBegin(sub),
    start,
    end: start + n * P,
    hmmPfns: new Float64Array(n),
    defaultFlags,
    pfnFlagsMask: 0,
    devPrivateOwner: null,
  };
  await p.mm.mmapLock.read();
  try {
    await hmmRangeFault(range);
  } finally {
    p.mm.mmapLock.readUnlock();
  }
  return { flags: [...range.hmmPfns].map(hmmPfnFlags), pfns: [...range.hmmPfns].map(hmmPfnToPfn), range };
}

describe('hmm pfn words', () => {
  it('round-trip flags and pfns exactly', () => {
    const w = hmmPfnMake(VALID | WRITE | (9 << HmmPfn.ORDER_SHIFT), 0x7fff_ffff);
    expect(hmmPfnToPfn(w)).toBe(0x7fff_ffff);
    expect(hmmPfnFlags(w) & (VALID | WRITE)).toBe(VALID | WRITE);
    expect(hmmPfnToMapOrder(w)).toBe(9);
  });
});

describe('hmm_range_fault', () => {
  it('snapshots without faulting: absent 0, zero page VALID read-only, written VALID|WRITE with the pfn', async () => {
    const { p, sub } = await setup();
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: ANON });
    await p.read(a + P, 1);
    await p.write(a + 2 * P, new Uint8Array([1]));
    const { flags, pfns } = await fault(p, sub, a, 3);
    expect(flags).toEqual([0, VALID, VALID | WRITE]);
    expect(pfns[1]).toBe(ZERO_PFN);
    const gup = await p.getUserPages(a + 2 * P, 1);
    expect(pfns[2]).toBe(gup[0]);
    p.putUserPages(gup);
  });

  it('reports holes, PROT_NONE and PFNMAP mappings as ERROR, and EFAULT if asked to fault them', async () => {
    const { p, sub } = await setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.munmap(a + P, P);
    await p.mprotect(a + 2 * P, P, Prot.NONE);
    const dev = await p.mmap({
      length: P,
      prot: RW,
      flags: MapFlag.SHARED,
      ops: { name: 'dev', fault: () => 5 },
    });
    expect((await fault(p, sub, a, 4)).flags).toEqual([0, ERROR, ERROR, 0]);
    expect((await fault(p, sub, dev, 1)).flags).toEqual([ERROR]);
    await expect(fault(p, sub, a + P, 1, REQ_FAULT)).rejects.toMatchObject({ code: 'EFAULT' });
    await expect(fault(p, sub, a + 2 * P, 1, REQ_FAULT)).rejects.toMatchObject({ code: 'EFAULT' });
    await expect(fault(p, sub, dev, 1, REQ_FAULT)).rejects.toMatchObject({ code: 'EFAULT' });
  });

  it('faults pages in: read → zero page read-only, write → a writable private page', async () => {
    const { p, sub, m } = await setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    expect((await fault(p, sub, a, 1, REQ_FAULT)).flags).toEqual([VALID]);
    const w = await fault(p, sub, a + P, 1, REQ_FAULT | REQ_WRITE);
    expect(w.flags).toEqual([VALID | WRITE]);
    expect(w.pfns[0]).not.toBe(ZERO_PFN);
    m.checkInvariants();
  });

  it('EPERM for a write request on a read-only mapping; read requests still work there', async () => {
    const { p, sub } = await setup();
    const a = await p.mmap({ length: P, prot: Prot.READ, flags: ANON });
    await expect(fault(p, sub, a, 1, REQ_FAULT | REQ_WRITE)).rejects.toMatchObject({ code: 'EPERM' });
    expect((await fault(p, sub, a, 1, REQ_FAULT)).flags).toEqual([VALID]);
  });

  it('EBUSY when the range was invalidated after read_begin (a COW fault counts too)', async () => {
    const { p, sub } = await setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.fill(a, P, 1);
    const seq = await mmuIntervalReadBegin(sub);
    await p.munmap(a, P);
    const b = await p.mmap({ length: P, prot: RW, flags: ANON });
    const range: HmmRange = {
      notifier: sub,
      notifierSeq: seq,
      start: b,
      end: b + P,
      hmmPfns: new Float64Array(1),
      defaultFlags: 0,
      pfnFlagsMask: 0,
      devPrivateOwner: null,
    };
    await p.mm.mmapLock.read();
    await expect(hmmRangeFault(range)).rejects.toMatchObject({ code: 'EBUSY' });
    p.mm.mmapLock.readUnlock();
    // A write fault that copies a page shared after fork invalidates the range itself: EBUSY, then success.
    await p.fill(b, P, 2);
    const child = await p.fork();
    await expect(fault(p, sub, b, 1, REQ_FAULT | REQ_WRITE)).rejects.toMatchObject({ code: 'EBUSY' });
    expect((await fault(p, sub, b, 1, REQ_FAULT | REQ_WRITE)).flags).toEqual([VALID | WRITE]);
    await child.exit();
  });

  it('honours per-page requests through pfnFlagsMask', async () => {
    const { p, sub } = await setup();
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: ANON });
    const seq = await mmuIntervalReadBegin(sub);
    const words = new Float64Array([0, hmmPfnMake(REQ_FAULT | REQ_WRITE), 0]);
    const range: HmmRange = {
      notifier: sub,
      notifierSeq: seq,
      start: a,
      end: a + 3 * P,
      hmmPfns: words,
      defaultFlags: 0,
      pfnFlagsMask: REQ_FAULT | REQ_WRITE,
      devPrivateOwner: null,
    };
    await p.mm.mmapLock.read();
    await hmmRangeFault(range);
    p.mm.mmapLock.readUnlock();
    expect([...words].map(hmmPfnFlags)).toEqual([0, VALID | WRITE, 0]);
  });

  it('checks its caller: mmap lock held, range inside the interval, one word per page, aligned', async () => {
    const { p, sub, m } = await setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    const base = {
      notifier: sub,
      notifierSeq: await mmuIntervalReadBegin(sub),
      defaultFlags: 0,
      pfnFlagsMask: 0,
      devPrivateOwner: null,
    };
    await expect(
      hmmRangeFault({ ...base, start: a, end: a + P, hmmPfns: new Float64Array(1) }),
    ).rejects.toThrow(/mmap lock/);
    await p.mm.mmapLock.read();
    await expect(
      hmmRangeFault({ ...base, start: a, end: a + P, hmmPfns: new Float64Array(2) }),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(
      hmmRangeFault({ ...base, start: a + 1, end: a + P, hmmPfns: new Float64Array(1) }),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(hmmRangeFault({ ...base, start: 0, end: P, hmmPfns: new Float64Array(1) })).rejects.toThrow(
      /inside the notifier/,
    );
    p.mm.mmapLock.readUnlock();
    void m;
  });

  it('EFAULT for a file page beyond end of file when a fault is requested', async () => {
    const { p, sub, m } = await setup();
    const f = await m.createFile('f', new Uint8Array(P).fill(3));
    const a = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    const ok = await fault(p, sub, a, 1, REQ_FAULT);
    expect(ok.flags).toEqual([VALID]);
    await expect(fault(p, sub, a + P, 1, REQ_FAULT)).rejects.toMatchObject({ code: 'EFAULT' });
  });
});
