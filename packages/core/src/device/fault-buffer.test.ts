import { describe, expect, it } from 'vitest';
import { HmmError } from '../errors/errno.js';
import { PAGE_SIZE } from '../mm/constants.js';
import { Machine } from '../system/machine.js';
import { FaultAccess, FaultBatch, FaultBuffer } from './fault-buffer.js';

describe('FaultBuffer', () => {
  it('drains entries oldest first with page-aligned addresses, moving GET up to PUT', async () => {
    const m = new Machine({ ramBytes: 16 * PAGE_SIZE });
    const fb = new FaultBuffer(m.sched, { entries: 4 });
    expect(fb.push(7, 3 * PAGE_SIZE + 12, FaultAccess.WRITE)).toBe(true);
    expect(fb.push(2, PAGE_SIZE, FaultAccess.READ)).toBe(true);
    expect([fb.getPtr, fb.putPtr, fb.pending]).toEqual([0, 2, 2]);
    const out = new FaultBatch(8);
    expect(fb.drain(out)).toBe(2);
    expect([...out.inst.subarray(0, 2)]).toEqual([7, 2]);
    expect([...out.addr.subarray(0, 2)]).toEqual([3 * PAGE_SIZE, PAGE_SIZE]);
    expect([...out.access.subarray(0, 2)]).toEqual([FaultAccess.WRITE, FaultAccess.READ]);
    expect([fb.getPtr, fb.putPtr, fb.pending]).toEqual([2, 2, 0]);
    // The ring wraps.
    for (let i = 0; i < 4; i++) expect(fb.push(1, i * PAGE_SIZE, FaultAccess.READ)).toBe(true);
    expect(fb.push(1, 9 * PAGE_SIZE, FaultAccess.READ)).toBe(false);
    expect(fb.stats().overflows).toBe(1);
    expect(fb.drain(out, 3)).toBe(3);
    expect([...out.addr.subarray(0, 3)]).toEqual([0, PAGE_SIZE, 2 * PAGE_SIZE]);
    expect(fb.pending).toBe(1);
  });

  it('stalls accesses until the replay, and fails a cancelled instance until it is reset', async () => {
    const m = new Machine({ ramBytes: 16 * PAGE_SIZE });
    const fb = new FaultBuffer(m.sched, { entries: 16 });
    const log: string[] = [];
    const access = (inst: number) =>
      m.sched.spawn(`gpu${inst}`, async () => {
        fb.push(inst, PAGE_SIZE * inst, FaultAccess.READ);
        try {
          await fb.waitReplay(inst);
          log.push(`${inst} replayed @${m.sched.now}`);
        } catch (e) {
          log.push(`${inst} ${(e as HmmError).code}`);
        }
      });
    access(1);
    access(2);
    m.sched.spawn('driver', async () => {
      await fb.waitInterrupt();
      await m.sched.sleep(100);
      const out = new FaultBatch(16);
      expect(fb.drain(out)).toBe(2);
      fb.cancel(2, new HmmError('EFAULT', 'instance 2 killed'));
      fb.replay();
    });
    await m.sched.run();
    expect(log.sort()).toEqual(['1 replayed @100', '2 EFAULT']);
    // Still cancelled for later faults, until reset.
    await expect(m.sched.runTask('late', () => fb.waitReplay(2))).rejects.toThrow('instance 2 killed');
    fb.reset(2);
    expect(fb.cancelledWith(2)).toBeUndefined();
  });

  it('abort fails stalled accesses and the waiting driver with ENODEV', async () => {
    const m = new Machine({ ramBytes: 16 * PAGE_SIZE });
    const fb = new FaultBuffer(m.sched);
    const errs: string[] = [];
    m.sched.spawn('gpu', async () => {
      fb.push(1, 0, FaultAccess.ATOMIC);
      await fb.waitReplay(1).catch((e: HmmError) => errs.push(`gpu ${e.code}`));
    });
    m.sched.spawn('irq', async () => {
      const out = new FaultBatch(4);
      await fb.waitInterrupt();
      fb.drain(out);
      await fb.waitInterrupt().catch((e: HmmError) => errs.push(`irq ${e.code}`));
    });
    m.sched.spawn('remove', async () => {
      await m.sched.sleep(10);
      fb.abort();
    });
    await m.sched.run();
    expect(errs.sort()).toEqual(['gpu ENODEV', 'irq ENODEV']);
    expect(() => fb.push(1, 0, FaultAccess.READ)).toThrow(/removed/);
  });

  it('rejects bad entries without writing them', () => {
    const m = new Machine({ ramBytes: 16 * PAGE_SIZE });
    const fb = new FaultBuffer(m.sched, { entries: 2 });
    expect(() => fb.push(-1, 0, FaultAccess.READ)).toThrow(/instance/);
    expect(() => fb.push(0x10000, 0, FaultAccess.READ)).toThrow(/instance/);
    expect(() => fb.push(1, -4096, FaultAccess.READ)).toThrow(/address/);
    expect(() => fb.push(1, 0, 9 as never)).toThrow(/access type/);
    expect(fb.pending).toBe(0);
    expect(() => new FaultBuffer(m.sched, { entries: 0 })).toThrow(/entries/);
    expect(() => fb.cancel(1, new Error('x') as HmmError)).toThrow(/HmmError/);
  });
});
