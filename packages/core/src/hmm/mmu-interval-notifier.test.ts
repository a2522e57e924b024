import { describe, expect, it } from 'vitest';
import { ANON, P, RW } from '../testing/fixtures.js';
import { Machine } from '../system/machine.js';
import { Madv, Prot } from '../mm/constants.js';
import type { MmuNotifierRange } from '../mm/mmu-notifier-hooks.js';
import { NOTIFY_EVENT_NAMES } from '../mm/mmu-notifier-hooks.js';
import type { Process } from '../mm/process.js';
import {
  MmuNotifierSubscriptions,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
} from './mmu-interval-notifier.js';
import type { MmuIntervalNotifier } from './mmu-interval-notifier.js';

interface Seen {
  event: string;
  start: number;
  end: number;
  seq: number;
  blockable: boolean;
}

/** A driver that records every invalidation and sets the sequence, optionally sleeping or declining. */
function recorder(m: Machine, opts: { sleepNs?: number; declineNonblock?: boolean } = {}) {
  const seen: Seen[] = [];
  const ops = {
    invalidate(
      sub: MmuIntervalNotifier,
      range: MmuNotifierRange,
      curSeq: number,
    ): boolean | Promise<boolean> {
      if (!range.blockable && opts.declineNonblock) return false;
      seen.push({
        event: NOTIFY_EVENT_NAMES[range.event]!,
        start: range.start,
        end: range.end,
        seq: curSeq,
        blockable: range.blockable,
      });
      mmuIntervalSetSeq(sub, curSeq);
      if (opts.sleepNs !== undefined && range.blockable) return m.sched.sleep(opts.sleepNs).then(() => true);
      return true;
    },
  };
  return { seen, ops };
}

async function setup(pages = 16): Promise<{ m: Machine; p: Process; a: number }> {
  const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P });
  const p = m.createProcess();
  const a = await p.mmap({ length: pages * P, prot: RW, flags: ANON });
  return { m, p, a };
}

describe('mmu_interval_notifier', () => {
  it('validates the range and refuses a second removal', async () => {
    const { p, a, m } = await setup();
    const { ops } = recorder(m);
    expect(() => mmuIntervalNotifierInsert(p.mm, a + 1, P, ops)).toThrow(/page aligned/);
    expect(() => mmuIntervalNotifierInsert(p.mm, a, 0, ops)).toThrow(/not a range/);
    expect(() => mmuIntervalNotifierInsert(p.mm, 2 ** 47 - P, 2 * P, ops)).toThrow(
      /inside the address space/,
    );
    const sub = mmuIntervalNotifierInsert(p.mm, a, P, ops);
    await mmuIntervalNotifierRemove(sub);
    await expect(mmuIntervalNotifierRemove(sub)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('fires the kernel event of each operation, only for overlapping intervals, with an odd sequence', async () => {
    const { m, p, a } = await setup();
    const { seen, ops } = recorder(m);
    const far = recorder(m);
    mmuIntervalNotifierInsert(p.mm, a, 16 * P, ops);
    mmuIntervalNotifierInsert(p.mm, 0x10000, P, far.ops);
    await p.fill(a, 16 * P, 1);
    expect(seen).toEqual([]);
    const child = await p.fork();
    await p.mprotect(a, 2 * P, Prot.READ);
    await p.madvise(a + 4 * P, P, Madv.DONTNEED);
    await p.writeU32(a + 8 * P, 5); // COW after fork: the page is replaced
    await p.munmap(a + 15 * P, P);
    await m.reclaim(64);
    await child.exit();
    await p.exit();
    const events = seen.map((s) => s.event);
    expect(events.slice(0, 5)).toEqual(['PROTECTION_PAGE', 'PROTECTION_VMA', 'CLEAR', 'CLEAR', 'UNMAP']);
    expect(events).toContain('RELEASE');
    expect(seen.every((s) => s.seq % 2 === 1)).toBe(true);
    expect(seen[2]).toMatchObject({ start: a + 4 * P, end: a + 5 * P });
    expect(far.seen).toEqual([
      { event: 'RELEASE', start: 0, end: 2 ** 47, seq: expect.any(Number), blockable: true },
    ]);
  });

  it('keeps the sequence odd during an invalidation; read_begin waits it out and read_retry sees it', async () => {
    const { m, p, a } = await setup();
    const { ops } = recorder(m, { sleepNs: 1000 });
    const sub = mmuIntervalNotifierInsert(p.mm, a, 16 * P, ops);
    await p.fill(a, 16 * P, 1);
    const subs = MmuNotifierSubscriptions.of(p.mm);
    expect(subs.invalidateSeq % 2).toBe(0);
    const seq0 = await mmuIntervalReadBegin(sub);
    const log: string[] = [];
    m.sched.spawn('munmap', async () => {
      await p.munmap(a, P);
      log.push(`munmap done at ${m.sched.now}`);
    });
    m.sched.spawn('reader', async () => {
      await m.sched.yield();
      while (!subs.invalidating) await m.sched.yield();
      log.push(`odd while invalidating: ${subs.invalidateSeq % 2 === 1}`);
      const seq1 = await mmuIntervalReadBegin(sub);
      log.push(
        `read_begin returned at ${m.sched.now}, seq ${seq1 === sub.invalidateSeq ? 'current' : 'stale'}`,
      );
    });
    await m.sched.run();
    expect(log).toEqual([
      'odd while invalidating: true',
      'munmap done at 1000',
      'read_begin returned at 1000, seq current',
    ]);
    expect(mmuIntervalReadRetry(sub, seq0)).toBe(true);
    expect(subs.invalidateSeq % 2).toBe(0);
  });

  it('defers an insert during an invalidation and makes remove wait for it; no callback after remove', async () => {
    const { m, p, a } = await setup();
    const first = recorder(m, { sleepNs: 500 });
    const late = recorder(m);
    const sub = mmuIntervalNotifierInsert(p.mm, a, 16 * P, first.ops);
    await p.fill(a, 16 * P, 1);
    const log: string[] = [];
    let lateSub: MmuIntervalNotifier | null = null;
    m.sched.spawn('munmap', async () => {
      await p.munmap(a, P);
    });
    m.sched.spawn('driver', async () => {
      while (first.seen.length === 0) await m.sched.yield();
      lateSub = mmuIntervalNotifierInsert(p.mm, a, 16 * P, late.ops);
      log.push(`inserted, active ${lateSub.active}`);
      await mmuIntervalNotifierRemove(sub);
      log.push(`removed at ${m.sched.now}`);
    });
    await m.sched.run();
    expect(log).toEqual(['inserted, active false', 'removed at 500']);
    expect(lateSub!.active).toBe(true);
    expect(late.seen).toEqual([]); // it was not in the tree when the munmap started
    await p.munmap(a + P, P);
    expect(first.seen).toHaveLength(1);
    expect(late.seen.map((s) => s.event)).toEqual(['UNMAP']);
  });

  it('a blockable invalidation must not be declined: recorded as a failure, the munmap goes on', async () => {
    const { m, p, a } = await setup();
    mmuIntervalNotifierInsert(p.mm, a, P, { invalidate: () => false });
    await p.fill(a, P, 1);
    await p.munmap(a, P);
    const subs = MmuNotifierSubscriptions.of(p.mm);
    expect(subs.callbackFailures.map((f) => f.error.code)).toEqual(['EINVAL']);
    expect(subs.activeInvalidateRanges).toBe(0);
    m.checkInvariants();
  });

  it('non-blockable: a driver that would sleep declines, the OOM reaper skips, nothing is lost', async () => {
    const { m, p, a } = await setup();
    const { seen, ops } = recorder(m, { declineNonblock: true });
    mmuIntervalNotifierInsert(p.mm, a, 16 * P, ops);
    await p.fill(a, 16 * P, 7);
    expect(m.oomReap(p)).toBe(false);
    expect(seen).toEqual([]);
    expect(MmuNotifierSubscriptions.of(p.mm).activeInvalidateRanges).toBe(0);
    expect(await p.read(a, 4)).toEqual(new Uint8Array([7, 7, 7, 7]));
    m.checkInvariants();
    // A driver that does not need to sleep lets the reaper through.
    const ok = recorder(m);
    const q = m.createProcess();
    const b = await q.mmap({ length: 4 * P, prot: RW, flags: ANON });
    mmuIntervalNotifierInsert(q.mm, b, 4 * P, ok.ops);
    await q.fill(b, 4 * P, 9);
    expect(m.oomReap(q)).toBe(true);
    expect(ok.seen.map((s) => [s.event, s.blockable])).toEqual([['CLEAR', false]]);
    expect(await q.read(b, 1)).toEqual(new Uint8Array([0]));
  });

  it('a non-blockable callback that sleeps is a contract violation', async () => {
    const { m, p, a } = await setup();
    mmuIntervalNotifierInsert(p.mm, a, P, { invalidate: () => Promise.resolve(true) });
    await p.fill(a, P, 1);
    expect(() => m.oomReap(p)).toThrow(/non-blockable/);
    expect(MmuNotifierSubscriptions.of(p.mm).activeInvalidateRanges).toBe(0);
  });
});
