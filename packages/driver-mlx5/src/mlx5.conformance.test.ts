/**
 * The mlx5-like driver run through the conformance suite: the mirror cases, the p2p importer cases
 * and the userptr cases (ODP MRs; the userptr group again with pinned MRs).
 */
import { MapFlag, PAGE_SIZE, Prot, isHmmError } from '@hmm/core';
import { USERPTR_CASES, planCases } from '@hmm/conformance';
import type { ConformanceFactory } from '@hmm/conformance';
import { defineConformanceSuite, defineUserptrGroup } from '@hmm/conformance/vitest';
import { describe, expect, it } from 'vitest';
import { Mlx5TestDevice, Mlx5UserptrTarget, mlx5Factory, mlx5Manifest } from './conformance.js';

defineConformanceSuite(mlx5Factory, mlx5Manifest);

/** The same target with pinned MRs (`ib_umem_get`) as the userptr objects. */
const mlx5PinnedMrFactory: ConformanceFactory = async (opts) => {
  const t = await mlx5Factory(opts);
  return { ...t, userptr: (t.userptr as Mlx5UserptrTarget).withKind('pinned') };
};
defineUserptrGroup(mlx5PinnedMrFactory, { ...mlx5Manifest, name: 'mlx5 (pinned MRs)' });

const P = PAGE_SIZE;
const RW = Prot.READ | Prot.WRITE;
const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;

describe('mlx5 conformance target', () => {
  it('skips only cases that need device memory, exclusive access or unsimulated features', () => {
    const skipped = planCases(mlx5Manifest).filter((c) => c.reason !== null);
    for (const c of skipped) {
      const needsWhatNicLacks =
        c.info.requires.some((r) => r === 'device-private' || r === 'exclusive') ||
        c.variant === 'device-coherent' ||
        c.info.unsupported !== null;
      expect(needsWhatNicLacks, `${c.info.id} [${c.variant}] skipped: ${c.reason}`).toBe(true);
    }
    const ran = planCases(mlx5Manifest)
      .filter((c) => c.reason === null)
      .map((c) => c.info.id);
    expect(ran).toContain('hmm.anon_teardown');
    expect(ran).toContain('p2p.exporter_moves');
    for (const c of USERPTR_CASES) expect(ran).toContain(c.id);
  });

  it('a failed RDMA request reports the fault errno; the next command works on new QPs; warm READs take no fault', async () => {
    const t = await mlx5Factory({ seed: 5, variant: 'device-private' });
    const m = t.machine;
    await m.sched.runTask('test', async () => {
      const p = m.createProcess('app');
      const dev = (await t.open(p)) as Mlx5TestDevice;
      const n = 8;
      const a = await p.mmap({ length: n * P, prot: RW, flags: ANON });
      const data = new Uint8Array(n * P).map((_, i) => i % 251);
      await p.write(a, data);
      const hole = await p.mmap({ length: P, prot: Prot.NONE, flags: ANON });
      const err: unknown = await dev.read(hole, 1).catch((e: unknown) => e);
      expect(isHmmError(err) && err.code).toBe('EFAULT');
      const cold = await dev.read(a, n);
      expect(cold.data).toEqual(data);
      expect(cold.faults).toBe(1);
      expect((await dev.read(a, n)).faults).toBe(0);
      expect(dev.remote.completions.get('REM_ACCESS_ERR')).toBe(1);
      await dev.close();
      await p.exit();
    });
    await t.teardown!();
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    m.checkInvariants();
  });
});
