import { describe, it, expect } from 'vitest';
import type { Machine } from '../system/machine.js';
import { Madv, MapFlag, MremapFlag, Prot } from './constants.js';
import type { NotifyEventId } from './mmu-notifier-hooks.js';
import { NOTIFY_EVENT_NAMES, NotifyEvent } from './mmu-notifier-hooks.js';
import type { Process } from './process.js';
import type { HookRecorder } from '../testing/fixtures.js';
import { ANON, P, RW, recordHooks, setup } from '../testing/fixtures.js';

/** {@link setup} with a {@link HookRecorder} subscribed to the process. */
function setupRecorded(): { m: Machine; p: Process; rec: HookRecorder } {
  const { m, p } = setup();
  return { m, p, rec: recordHooks(p) };
}

const ev = (e: NotifyEventId): string => NOTIFY_EVENT_NAMES[e]!;

describe('MMU notifier hook points', () => {
  it('faults that only add entries fire nothing', async () => {
    const { m, p, rec } = setupRecorded();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.read(a, P);
    await p.fill(a + P, 2 * P, 1);
    const f = await m.createFile('f', new Uint8Array(P));
    const b = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED, file: f });
    await p.read(b, 1);
    await p.fill(b, 1, 1); // write-notify upgrade of the shared page
    expect(rec.take()).toEqual([]);
  });

  it('munmap fires UNMAP over the range; unmapping a hole fires nothing', async () => {
    const { p, rec } = setupRecorded();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.munmap(a + P, 2 * P);
    expect(rec.take()).toEqual([[ev(NotifyEvent.UNMAP), a + P, a + 3 * P]]);
    await p.munmap(a + P, 2 * P);
    expect(rec.take()).toEqual([]);
  });

  it('MAP_FIXED over an existing mapping fires UNMAP', async () => {
    const { p, rec } = setupRecorded();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.mmap({ addr: a, length: 2 * P, prot: Prot.READ, flags: ANON | MapFlag.FIXED });
    expect(rec.take()).toEqual([[ev(NotifyEvent.UNMAP), a, a + 2 * P]]);
  });

  it('mremap fires UNMAP on the old range when moving and on the tail when shrinking', async () => {
    const { p, rec } = setupRecorded();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 1);
    await p.mremap(a, 4 * P, 2 * P);
    expect(rec.take()).toEqual([[ev(NotifyEvent.UNMAP), a + 2 * P, a + 4 * P]]);
    const b = await p.mremap(a, 2 * P, 2 * P, MremapFlag.MAYMOVE | MremapFlag.FIXED, 0x1000_0000);
    expect(b).toBe(0x1000_0000);
    expect(rec.take()).toEqual([[ev(NotifyEvent.UNMAP), a, a + 2 * P]]);
  });

  it('MADV_DONTNEED and MADV_FREE fire CLEAR', async () => {
    const { p, rec } = setupRecorded();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 1);
    await p.madvise(a, 2 * P, Madv.DONTNEED);
    expect(rec.take()).toEqual([[ev(NotifyEvent.CLEAR), a, a + 2 * P]]);
    await p.madvise(a + 2 * P, 2 * P, Madv.FREE);
    expect(rec.take()).toEqual([[ev(NotifyEvent.CLEAR), a + 2 * P, a + 4 * P]]);
  });

  it('a copy-on-write fault fires CLEAR on the one page, after fork and from the zero page', async () => {
    const { p, rec } = setupRecorded();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.read(a + P, 1);
    await p.fill(a + P, 1, 1);
    expect(rec.take()).toEqual([[ev(NotifyEvent.CLEAR), a + P, a + 2 * P]]);
    await p.fill(a, 1, 1);
    const c = await p.fork();
    rec.take();
    await p.fill(a, 1, 2);
    expect(rec.take()).toEqual([[ev(NotifyEvent.CLEAR), a, a + P]]);
    // Writing an exclusive page again reuses it: no event.
    await p.fill(a, 1, 3);
    expect(rec.take()).toEqual([]);
    expect(c.mm.notifier).toBeNull(); // subscriptions are not inherited
  });

  it('a private write to a file page fires CLEAR when it replaces a mapped cache page', async () => {
    const { m, p, rec } = setupRecorded();
    const f = await m.createFile('f', new Uint8Array(P).fill(1));
    const a = await p.mmap({ length: P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    await p.read(a, 1);
    await p.fill(a, 1, 2);
    expect(rec.take()).toEqual([[ev(NotifyEvent.CLEAR), a, a + P]]);
  });

  it('mprotect fires PROTECTION_VMA only when it removes a permission', async () => {
    const { p, rec } = setupRecorded();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 1);
    await p.mprotect(a + P, 2 * P, Prot.READ);
    expect(rec.take()).toEqual([[ev(NotifyEvent.PROTECTION_VMA), a + P, a + 3 * P]]);
    await p.mprotect(a + P, 2 * P, RW);
    expect(rec.take()).toEqual([]);
    await p.mprotect(a, 4 * P, RW | Prot.EXEC);
    expect(rec.take()).toEqual([]);
    await p.mprotect(a, P, Prot.WRITE | Prot.EXEC); // removes READ only
    expect(rec.take()).toEqual([[ev(NotifyEvent.PROTECTION_VMA), a, a + P]]);
  });

  it('fork fires PROTECTION_PAGE on the parent for each private mapping with entries', async () => {
    const { p, rec } = setupRecorded();
    const a = await p.mmap({ addr: 0x1000_0000, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    const b = await p.mmap({ addr: 0x2000_0000, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    await p.mmap({ addr: 0x3000_0000, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED }); // untouched
    await p.fill(a, 1, 1);
    await p.fill(b + P, 1, 1);
    await p.fork();
    expect(rec.take()).toEqual([
      [ev(NotifyEvent.PROTECTION_PAGE), a, a + 2 * P],
      [ev(NotifyEvent.PROTECTION_PAGE), b, b + 2 * P],
    ]);
  });

  it('truncate and reclaim fire CLEAR', async () => {
    const { m, p, rec } = setupRecorded();
    const f = await m.createFile('f', new Uint8Array(2 * P).fill(1));
    const a = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: MapFlag.SHARED, file: f });
    await p.read(a, 2 * P);
    await m.truncate(f, P);
    expect(rec.take()).toEqual([[ev(NotifyEvent.CLEAR), a + P, a + 2 * P]]);
    await m.reclaim(100);
    expect(rec.take()).toEqual([[ev(NotifyEvent.CLEAR), a, a + P]]);
  });

  it('exit calls release once and no invalidation', async () => {
    const { p, rec } = setupRecorded();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 1);
    const mm = p.mm;
    await p.exit();
    expect(rec.released).toEqual([mm]);
    expect(rec.take()).toEqual([]);
  });

  it('with no hooks installed every operation still works', async () => {
    const { m, p } = setupRecorded();
    p.mm.notifier = null;
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 1);
    await p.fork();
    await p.fill(a, 1, 2);
    await p.mprotect(a, P, Prot.READ);
    await p.madvise(a + P, P, Madv.DONTNEED);
    await p.munmap(a, 2 * P);
    m.checkInvariants();
  });
});
