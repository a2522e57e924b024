import { describe, expect, it } from 'vitest';
import { mmuIntervalNotifierInsert, mmuIntervalSetSeq } from '../hmm/mmu-interval-notifier.js';
import { ANON, P, RW, setup } from '../testing/fixtures.js';
import { NOTIFY_EVENT_NAMES } from './mmu-notifier-hooks.js';

describe('soft-dirty (clear_refs 4)', () => {
  it('clears the bits, fires SOFT_DIRTY, and a later write marks just that page again', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.fill(a, 4 * P, 1);
    expect(p.softDirtyPages(a, 4)).toEqual([true, true, true, true]);
    const events: string[] = [];
    mmuIntervalNotifierInsert(p.mm, a, 4 * P, {
      invalidate: (s, r, seq) => {
        events.push(NOTIFY_EVENT_NAMES[r.event]!);
        mmuIntervalSetSeq(s, seq);
        return true;
      },
    });
    await p.clearSoftDirty();
    expect(events).toEqual(['SOFT_DIRTY']);
    expect(p.softDirtyPages(a, 4)).toEqual([false, false, false, false]);
    await p.write(a + 2 * P, new Uint8Array([7]));
    expect(p.softDirtyPages(a, 4)).toEqual([false, false, true, false]);
    expect(await p.read(a + 2 * P, 2)).toEqual(new Uint8Array([7, 1]));
    expect(await p.read(a, 1)).toEqual(new Uint8Array([1]));
    m.checkInvariants();
  });
});
