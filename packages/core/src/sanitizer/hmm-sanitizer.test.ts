import { describe, expect, it } from 'vitest';
import { SimDevice } from '../device/device.js';
import { DevPerm } from '../device/device-mmu.js';
import { HmmPfn, hmmPfnFlags, hmmPfnToPfn } from '../hmm/hmm-range-fault.js';
import { hmmRangeFaultLoop } from '../hmm/hmm-range-fault-loop.js';
import { mmuIntervalNotifierInsert, mmuIntervalSetSeq } from '../hmm/mmu-interval-notifier.js';
import { MapFlag, PAGE_SIZE, Prot } from '../mm/constants.js';
import { Mutex } from '../sim/locks.js';
import { Machine } from '../system/machine.js';
import { HmmSanitizer, SanitizerViolation } from './hmm-sanitizer.js';

const P = PAGE_SIZE;
const ASID = 1;

/** A tiny mirror of `pages` pages; `dropOnInvalidate: false` makes it ignore invalidations (broken). */
async function rig(pages: number, dropOnInvalidate: boolean) {
  const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P });
  const p = m.createProcess();
  const a = await p.mmap({
    length: pages * P,
    prot: Prot.READ | Prot.WRITE,
    flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
  });
  await p.fill(a, pages * P, 3);
  const dev = new SimDevice(m.mm, { name: 'gpu0' });
  const lock = new Mutex(m.sched, 'mirror');
  const sub = mmuIntervalNotifierInsert(p.mm, a, pages * P, {
    async invalidate(s, range, seq) {
      await lock.lock();
      mmuIntervalSetSeq(s, seq);
      const start = Math.max(range.start, a) / P;
      const end = Math.min(range.end, a + pages * P) / P;
      const fence =
        dropOnInvalidate && start < end
          ? dev.queue.submit({ op: 'unmap', asid: ASID, startVpn: start, endVpn: end })
          : null;
      lock.unlock();
      await fence?.wait();
      return true;
    },
  });
  const san = new HmmSanitizer(m.mm);
  san.watch(dev, ASID, p.mm);
  /** Mirrors the whole buffer; `forceWrite` grants write regardless of what the CPU allows (a bug). */
  const mirror = (forceWrite = false) =>
    hmmRangeFaultLoop({
      notifier: sub,
      start: a,
      end: a + pages * P,
      defaultFlags: HmmPfn.REQ_FAULT,
      driverLock: lock,
      commit: async (range) => {
        const vpns: number[] = [];
        const pfns: number[] = [];
        const perms: number[] = [];
        range.hmmPfns.forEach((w, i) => {
          const f = hmmPfnFlags(w);
          if ((f & HmmPfn.VALID) === 0) return;
          vpns.push(a / P + i);
          pfns.push(hmmPfnToPfn(w));
          perms.push(DevPerm.READ | ((f & HmmPfn.WRITE) !== 0 || forceWrite ? DevPerm.WRITE : 0));
        });
        await dev.queue.submit({ op: 'map', asid: ASID, vpns, pfns, perms }).wait();
      },
    });
  return { m, p, a, dev, san, mirror };
}

describe('HmmSanitizer', () => {
  it('stays clean for a driver that keeps the contract', async () => {
    const { m, p, a, dev, san, mirror } = await rig(4, true);
    await m.sched.runTask('t', async () => {
      await mirror();
      expect(await dev.read(ASID, a, 4)).toEqual(new Uint8Array([3, 3, 3, 3]));
      await p.munmap(a, 2 * P);
      await p.madvise(a + 2 * P, P, 4);
      await expect(dev.read(ASID, a, 1)).rejects.toMatchObject({ code: 'EFAULT' }); // unmapped: a plain device fault
    });
    expect(san.violations).toEqual([]);
    expect(san.checkAll()).toEqual([]);
  });

  it('catches a driver that ignores invalidations: stale mapping after UNMAP, stale access, freed frame', async () => {
    const { m, p, a, dev, san, mirror } = await rig(4, false);
    san.mode = 'throw';
    await m.sched.runTask('t', async () => {
      await mirror();
      await p.munmap(a, P);
      expect(san.violations[0]).toBeInstanceOf(SanitizerViolation);
      expect(san.violations[0]).toMatchObject({
        rule: 'stale-mapping',
        vaddr: a,
        invalidation: { event: 'UNMAP', start: a },
      });
      const err = await dev.read(ASID, a, 1).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SanitizerViolation);
      expect((err as SanitizerViolation).rule).toBe('freed-frame');
      await p.madvise(a + P, P, 4); // DONTNEED: a CLEAR invalidation the driver ignores too
    });
    expect(san.violations.map((v) => v.rule)).toEqual(['stale-mapping', 'freed-frame', 'stale-mapping']);
    expect(san.violations[2]!.invalidation?.event).toBe('CLEAR');
  });

  it('catches a device write where the CPU page is copy-on-write', async () => {
    const { m, p, a, dev, san, mirror } = await rig(2, true);
    await m.sched.runTask('t', async () => {
      const child = await p.fork(); // both PTEs read-only now
      await mirror(true);
      const err = await dev.write(ASID, a, new Uint8Array([9])).catch((e: unknown) => e);
      expect((err as SanitizerViolation).rule).toBe('write-beyond-cpu');
      expect(await child.read(a, 1)).toEqual(new Uint8Array([3])); // the child's data was not touched
      await child.exit();
    });
    expect(san.checkAll().map((v) => v.rule)).toContain('write-beyond-cpu');
  });

  it('exempts frames the driver holds pinned', async () => {
    const { m, p, a, san, mirror } = await rig(2, false);
    await m.sched.runTask('t', async () => {
      await mirror();
      const pins = await p.pinUserPages(a, 2);
      await p.munmap(a, 2 * P);
      expect(san.violations).toEqual([]);
      expect(san.checkAll()).toEqual([]);
      p.unpinUserPages(pins);
      expect(san.checkAll().map((v) => v.rule)).toEqual(['freed-frame', 'freed-frame']);
    });
  });
});
