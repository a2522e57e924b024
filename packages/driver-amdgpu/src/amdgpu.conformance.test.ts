/**
 * The amdgpu-like driver run through the conformance suite: the mirror cases, the p2p exporter cases
 * and the userptr cases (graphics-mode BOs; the userptr group again with pinned BOs).
 */
import { DevPerm, MapFlag, PAGE_SIZE, Prot, isHmmError } from '@hmm/core';
import { P2P_CASES, USERPTR_CASES, planCases } from '@hmm/conformance';
import type { ConformanceFactory } from '@hmm/conformance';
import { defineConformanceSuite, defineUserptrGroup } from '@hmm/conformance/vitest';
import { describe, expect, it } from 'vitest';
import { AmdgpuTestDevice, AmdgpuUserptrTarget, amdgpuFactory, amdgpuManifest } from './conformance.js';

defineConformanceSuite(amdgpuFactory, amdgpuManifest);

/** The same target with userptr BOs in pinning mode (pinned at creation, no notifier). */
const amdgpuPinnedUserptrFactory: ConformanceFactory = async (opts) => {
  const t = await amdgpuFactory(opts);
  return { ...t, userptr: (t.userptr as AmdgpuUserptrTarget).withMode('pin') };
};
defineUserptrGroup(amdgpuPinnedUserptrFactory, { ...amdgpuManifest, name: 'amdgpu (pinned userptr)' });

const P = PAGE_SIZE;
const RW = Prot.READ | Prot.WRITE;
const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;

describe('amdgpu conformance target', () => {
  it('skips only cases that need device memory, exclusive access, two devices or unsimulated features', () => {
    const planned = planCases(amdgpuManifest);
    for (const c of planned.filter((x) => x.reason !== null)) {
      const needsWhatAmdgpuLacks =
        c.info.requires.some((r) => r === 'device-private' || r === 'exclusive' || r === 'two-devices') ||
        c.variant === 'device-coherent' ||
        c.info.unsupported !== null;
      expect(needsWhatAmdgpuLacks, `${c.info.id} [${c.variant}] skipped: ${c.reason}`).toBe(true);
    }
    const ran = planned.filter((c) => c.reason === null).map((c) => c.info.id);
    expect(ran).toContain('hmm.anon_teardown');
    expect(ran).toContain('hmm.mixedmap');
    expect(ran).toContain('hmm2.snapshot');
    // Every p2p case runs (exporter-only: the suite's reference importer imports).
    for (const c of P2P_CASES) expect(ran).toContain(c.id);
    for (const c of USERPTR_CASES) expect(ran).toContain(c.id);
  });

  it('a warm command reuses the bound BO (no fault); an invalidation or an overlapping command makes the next one fault; opens of one process share its VM', async () => {
    const t = await amdgpuFactory({ seed: 3, variant: 'device-private' });
    const m = t.machine;
    await m.sched.runTask('test', async () => {
      const p = m.createProcess('app');
      const dev = (await t.open(p)) as AmdgpuTestDevice;
      const n = 8;
      const a = await p.mmap({ length: n * P, prot: RW, flags: ANON });
      const data = new Uint8Array(n * P).map((_, i) => i % 253);
      await p.write(a, data);
      const cold = await dev.read(a, n);
      expect([cold.cpages, cold.faults]).toEqual([n, 1]);
      expect(cold.data).toEqual(data);
      const warm = await dev.read(a, n);
      expect([warm.faults, dev.bos.length, dev.bos[0]!.stats.collections]).toEqual([0, 1, 2]);
      expect(Array.from(dev.devicePerms(a, n))).toEqual(new Array<number>(n).fill(DevPerm.READ));
      // mprotect invalidates: the BO is unbound, the next READ collects and binds again.
      await p.mprotect(a, n * P, Prot.READ);
      expect(Array.from(dev.devicePerms(a, n))).toEqual(new Array<number>(n).fill(0));
      expect((await dev.read(a, n)).faults).toBe(1);
      // A WRITE to read-only memory fails at collection with EPERM and writes nothing.
      const err: unknown = await dev.write(a, new Uint8Array(P).fill(9)).catch((e: unknown) => e);
      expect(isHmmError(err) && err.code).toBe('EPERM');
      expect(await p.read(a, n * P)).toEqual(data);
      // The WRITE's BO overlapped the READ's: the READ BO was freed (one BO per range in the VM).
      expect(dev.bos.map((b) => [b.addr, b.size, b.writable])).toEqual([[a, P, true]]);
      await p.mprotect(a, n * P, RW);
      expect((await dev.write(a, new Uint8Array(P).fill(9))).faults).toBe(1);
      expect(await p.read(a, P)).toEqual(new Uint8Array(P).fill(9));
      expect(dev.devicePerms(a, 2)[0]).toBe(DevPerm.READ | DevPerm.WRITE);
      // A second open shares the VM; closing it leaves the first one working.
      const other = (await t.open(p)) as AmdgpuTestDevice;
      expect(other.vm).toBe(dev.vm);
      await other.close();
      expect((await dev.read(a + P, 1)).data).toEqual(data.subarray(P, 2 * P));
      await dev.close();
      await expect(dev.read(a, 1)).rejects.toMatchObject({ code: 'EBADF' });
      await p.exit();
    });
    await t.teardown!();
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    m.checkInvariants();
  });
});
