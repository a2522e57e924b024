import { MapFlag, PAGE_SIZE, Prot, System } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import type { Dmirror } from './dmirror.js';
import { dmirrorDriver } from './driver.js';

describe('dmirror as a registered driver', () => {
  it('is composed into a System, mirrors a process under the sanitizer, and shuts down cleanly', async () => {
    const sys = await System.create({ ramBytes: 64 * 2 ** 20, seed: 5, drivers: [dmirrorDriver] });
    const m = sys.machine;
    const drv = sys.driver('dmirror');
    expect(drv.capabilities).toEqual(['mirror', 'device-private', 'device-coherent', 'exclusive']);
    expect(drv.devices.map((d) => d.name)).toEqual([
      'hmm_dmirror0',
      'hmm_dmirror1',
      'hmm_dmirror2',
      'hmm_dmirror3',
    ]);
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

  it('migrates to its private and coherent devices under the sanitizer; shutdown gives all memory back', async () => {
    const sys = await System.create({ ramBytes: 64 * 2 ** 20, seed: 6, drivers: [dmirrorDriver] });
    const m = sys.machine;
    const drv = sys.driver('dmirror');
    const p = m.createProcess();
    await m.sched.runTask('case', async () => {
      const n = 8;
      const a = await p.mmap({
        length: 2 * n * PAGE_SIZE,
        prot: Prot.READ | Prot.WRITE,
        flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
      });
      await p.fill(a, 2 * n * PAGE_SIZE, 4);
      const priv = (await drv.mirror(p, drv.devices[0])) as Dmirror;
      const coh = (await drv.mirror(p, drv.devices[2])) as Dmirror;
      expect((await priv.migrateToDevice(a, n)).cpages).toBe(n);
      expect((await coh.migrateToDevice(a + n * PAGE_SIZE, n)).cpages).toBe(n);
      // Each device reads the other's pages: private ones come back to RAM, coherent ones in place.
      expect((await coh.read(a, n)).data.every((b) => b === 4)).toBe(true);
      expect((await priv.read(a + n * PAGE_SIZE, n)).data.every((b) => b === 4)).toBe(true);
      expect(m.mm.mem.allocatedDeviceFrames()).toHaveLength(n);
      expect((await p.read(a, 2 * n * PAGE_SIZE)).every((b) => b === 4)).toBe(true);
      await sys.shutdown();
      expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
      expect((await p.read(a, 2 * n * PAGE_SIZE)).every((b) => b === 4)).toBe(true);
    });
    expect(sys.sanitizer.violations).toEqual([]);
    expect(sys.sanitizer.checkAll()).toEqual([]);
    m.checkInvariants();
  });
});
