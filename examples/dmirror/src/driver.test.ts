import { MapFlag, PAGE_SIZE, Prot, System } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { dmirrorDriver } from './driver.js';

describe('dmirror as a registered driver', () => {
  it('is composed into a System, mirrors a process under the sanitizer, and shuts down cleanly', async () => {
    const sys = await System.create({ ramBytes: 64 * 2 ** 20, seed: 5, drivers: [dmirrorDriver] });
    const m = sys.machine;
    const drv = sys.driver('dmirror');
    expect(drv.capabilities).toEqual(['mirror']);
    expect(drv.devices.map((d) => d.name)).toEqual(['hmm_dmirror0']);
    const p = m.createProcess();
    await m.sched.runTask('case', async () => {
      const a = await p.mmap({
        length: 4 * PAGE_SIZE,
        prot: Prot.READ | Prot.WRITE,
        flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
      });
      await p.fill(a, 4 * PAGE_SIZE, 9);
      const mirror = await drv.mirror(p);
      expect(mirror.process).toBe(p);
      expect(await drv.devices[0]!.read(mirror.asid, a + PAGE_SIZE, 2)).toEqual(new Uint8Array([9, 9]));
      await p.munmap(a, 4 * PAGE_SIZE);
      await expect(drv.devices[0]!.read(mirror.asid, a, 1)).rejects.toMatchObject({ code: 'EFAULT' });
      await sys.shutdown();
    });
    expect(sys.sanitizer.violations).toEqual([]);
    expect(sys.sanitizer.checkAll()).toEqual([]);
    m.checkInvariants();
  });
});
