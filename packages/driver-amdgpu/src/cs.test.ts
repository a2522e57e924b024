import { Machine, Madv, PAGE_SIZE, isHmmError } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { amdgpuCs, amdgpuCsRetry, csStats } from './cs.js';
import { DmaResvUsage } from './fence.js';
import { AmdgpuDevice } from './gpu.js';
import { UserptrFlag, gemUserptr } from './userptr.js';
import { anon, errno, withRig } from './testing/rig.js';

const P = PAGE_SIZE;
const MiB = 1024 * 1024;
const { REGISTER } = UserptrFlag;

/**
 * Schedules `invalidate` to run `afterNs` from now, in its own task: placed inside the window
 * between a CS's page walk and its check under the notifier lock (the collection's charged time).
 */
function invalidateIn(m: Machine, afterNs: number, invalidate: () => Promise<void>): { fired: boolean } {
  const state = { fired: false };
  m.sched.spawn('invalidator', async () => {
    await m.sched.sleep(afterNs);
    await invalidate();
    state.fired = true;
  });
  return state;
}

describe('amdgpu CS', () => {
  it('fails with EAGAIN when a userptr is invalidated between collection and submit; nothing is queued', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const n = 64;
      const a = await anon(p, n);
      await p.fill(a, n * P, 2);
      const bo = await gemUserptr(gpu, p, { addr: a, size: n * P, flags: REGISTER });
      // The walk is instantaneous; the collection then charges n × 60 ns: the invalidation lands there.
      const walkNs = n * m.cost.hmm.rangeFaultPerPresentPageNs;
      const inv = invalidateIn(m, walkNs / 2, () => p.madvise(a + 3 * P, P, Madv.DONTNEED));
      let ran = false;
      const e = await amdgpuCs(gpu, {
        vm: gpu.vm(p),
        bos: [bo],
        job: {
          run() {
            ran = true;
          },
        },
      }).catch((x: unknown) => x);
      expect(inv.fired).toBe(true);
      expect(isHmmError(e, 'EAGAIN')).toBe(true);
      expect((e as Error).message).toMatch(/invalidated after its pages were collected/);
      expect(csStats(gpu)).toEqual({ submitted: 0, eagain: 1 });
      expect(gpu.gfx.pending).toBe(0);
      expect(bo.resv.fences()).toEqual([]);
      expect(bo.stats.invalidations).toBe(1);
      await m.sched.sleep(1_000);
      expect(ran).toBe(false);
      // A plain reissue now succeeds.
      const job = await amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo], job: {} });
      await job.wait();
      expect(csStats(gpu)).toEqual({ submitted: 1, eagain: 1 });
      await bo.free();
      await p.exit();
    });
  });

  it('EAGAIN also when another BO of the list is invalidated while a later one is collected', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 4);
      const b = await anon(p, 64);
      await p.fill(a, 4 * P, 1);
      await p.fill(b, 64 * P, 1);
      const boA = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER });
      const boB = await gemUserptr(gpu, p, { addr: b, size: 64 * P, flags: REGISTER });
      // boA's collection charges 4 × 60 ns; boB's then 64 × 60: hit boA during boB's.
      invalidateIn(m, 4 * 60 + 1_000, () => p.madvise(a, P, Madv.DONTNEED));
      expect(await errno(amdgpuCs(gpu, { vm: gpu.vm(p), bos: [boA, boB], job: {} }))).toBe('EAGAIN');
      expect(boA.stats.invalidations).toBe(1);
      expect(boB.stats.invalidations).toBe(0);
      await boA.free();
      await boB.free();
      await p.exit();
    });
  });

  it('amdgpuCsRetry reissues after EAGAIN and the job sees the current data', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const n = 64;
      const a = await anon(p, n);
      await p.fill(a, n * P, 2);
      const bo = await gemUserptr(gpu, p, { addr: a, size: n * P, flags: REGISTER });
      const walkNs = n * m.cost.hmm.rangeFaultPerPresentPageNs;
      invalidateIn(m, walkNs / 2, () => p.madvise(a + 3 * P, P, Madv.DONTNEED));
      const seen: number[] = [];
      const { job, attempts } = await amdgpuCsRetry(gpu, {
        vm: gpu.vm(p),
        bos: [bo],
        job: {
          run(x) {
            for (let i = 0; i < 5; i++) seen.push(x.read(a + i * P, 1)[0]!);
            x.write(a + 3 * P, new Uint8Array([0xab, 0xcd]));
          },
        },
      });
      expect(attempts).toBe(2);
      await job.wait();
      // Page 3 was dropped: the job read the fresh zero-filled page the retry faulted in.
      expect(seen).toEqual([2, 2, 2, 0, 2]);
      expect(await p.read(a + 3 * P, 3)).toEqual(new Uint8Array([0xab, 0xcd, 0]));
      expect(csStats(gpu)).toEqual({ submitted: 1, eagain: 1 });
      expect(bo.stats.collections).toBe(2);
      expect(bo.bound).toBe(true);
      // With a bound on the attempts, the EAGAIN comes back.
      invalidateIn(m, walkNs / 2, () => p.madvise(a, P, Madv.DONTNEED));
      expect(await errno(amdgpuCsRetry(gpu, { vm: gpu.vm(p), bos: [bo], job: {} }, { maxAttempts: 1 }))).toBe(
        'EAGAIN',
      );
      expect(csStats(gpu).eagain).toBe(2);
      await bo.free();
      await p.exit();
    });
  });

  it("a job's VM fault (an address no BO of the VM maps) fails the job with EFAULT; the ring goes on", async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 4);
      const other = await anon(p, 4);
      await p.fill(other, 4 * P, 3);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER });
      const vm = gpu.vm(p);
      const bad = await amdgpuCs(gpu, { vm, bos: [bo], job: { run: (x) => void x.read(other + 8, 4) } });
      const e = await bad.wait().catch((x: unknown) => x);
      expect(isHmmError(e, 'EFAULT')).toBe(true);
      expect((e as Error).message).toMatch(/VM fault, read at 0x[0-9a-f]+ has no mapping/);
      expect(bad.error).toBe(e);
      expect(bad.fence.signaled).toBe(true);
      const good = await amdgpuCs(gpu, {
        vm,
        bos: [bo],
        job: { run: (x) => x.write(a, new Uint8Array([5])) },
      });
      await good.wait();
      expect(good.error).toBeNull();
      expect(await p.readU32(a)).toBe(5);
      expect(csStats(gpu).submitted).toBe(2);
      await bo.free();
      await p.exit();
    });
  });

  it('rejects a freed BO, a BO of another process, and a BO of another device with EINVAL', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const q = m.createProcess('other');
      const a = await anon(p, 4);
      const b = await anon(q, 4);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER });
      const boQ = await gemUserptr(gpu, q, { addr: b, size: 4 * P, flags: REGISTER });
      const gpu2 = new AmdgpuDevice(m, { name: 'second' });
      const bo2 = await gemUserptr(gpu2, p, { addr: a, size: 4 * P, flags: REGISTER });
      expect(await errno(amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo, boQ], job: {} }))).toBe('EINVAL');
      expect(await errno(amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo2], job: {} }))).toBe('EINVAL');
      await bo.free();
      const e = await amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo], job: {} }).catch((x: unknown) => x);
      expect(isHmmError(e, 'EINVAL')).toBe(true);
      expect((e as Error).message).toMatch(/freed/);
      expect(csStats(gpu)).toEqual({ submitted: 0, eagain: 0 });
      expect(p.mm.rssPages).toBe(0); // nothing was collected by the refused submissions
      await boQ.free();
      await bo2.free();
      await gpu2.remove();
      await q.exit();
      await p.exit();
    });
  });

  it("adds the job's fence to every BO's reservation; a bounded wait times out before the job ends", async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 4);
      const b = await anon(p, 4);
      const boA = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER });
      const boB = await gemUserptr(gpu, p, { addr: b, size: 4 * P, flags: REGISTER });
      const JOB = 1_000_000;
      const job = await amdgpuCs(gpu, { vm: gpu.vm(p), bos: [boA, boB], job: { ns: JOB } });
      for (const bo of [boA, boB]) {
        expect(bo.resv.fences()).toEqual([job.fence]);
        expect(bo.resv.fences(DmaResvUsage.BOOKKEEP)).toEqual([job.fence]);
        // Added as BOOKKEEP: a wait for writers only does not see it.
        expect(bo.resv.testSignaled(DmaResvUsage.WRITE)).toBe(true);
        expect(bo.resv.testSignaled()).toBe(false);
      }
      let t0 = m.sched.now;
      expect(await boA.resv.waitTimeout(DmaResvUsage.BOOKKEEP, 100_000)).toBe(false);
      expect(m.sched.now - t0).toBe(100_000);
      expect(job.fence.signaled).toBe(false);
      t0 = m.sched.now;
      expect(await boB.resv.waitTimeout(DmaResvUsage.BOOKKEEP, 10 * JOB)).toBe(true);
      expect(m.sched.now).toBe(job.fence.signaledAt);
      expect(m.sched.now - t0).toBeLessThan(JOB);
      expect(boA.resv.testSignaled()).toBe(true);
      expect(boA.resv.fences()).toEqual([]);
      // Already signaled: returns true at once, even with a zero timeout.
      t0 = m.sched.now;
      expect(await boA.resv.waitTimeout(DmaResvUsage.BOOKKEEP, 0)).toBe(true);
      expect(m.sched.now).toBe(t0);
      expect(await errno(boA.resv.waitTimeout(DmaResvUsage.BOOKKEEP, -1))).toBe('EINVAL');
      await boA.free();
      await boB.free();
      await p.exit();
    });
  });

  it('runs the jobs of a ring in FIFO order, one at a time; the other ring runs alongside', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 4);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER });
      const vm = gpu.vm(p);
      const order: string[] = [];
      const mk = (name: string, ns: number) => ({ name, ns, run: () => void order.push(name) });
      const jobs = [];
      for (const [name, ns] of [
        ['j1', 300_000],
        ['j2', 100_000],
        ['j3', 200_000],
      ] as const) {
        jobs.push((await amdgpuCsRetry(gpu, { vm, bos: [bo], job: mk(name, ns) })).job);
      }
      const comp = await amdgpuCs(gpu, { vm, ring: 'compute', bos: [bo], job: mk('c1', 50_000) });
      expect(gpu.gfx.pending).toBe(3);
      for (const j of [...jobs, comp]) await j.wait();
      expect(order.filter((x) => x !== 'c1')).toEqual(['j1', 'j2', 'j3']);
      const [j1, j2, j3] = jobs as [(typeof jobs)[0], (typeof jobs)[0], (typeof jobs)[0]];
      expect(j2.startedAt).toBe(j1.fence.signaledAt);
      expect(j3.startedAt).toBe(j2.fence.signaledAt);
      expect(j1.fence.signaledAt! - j1.startedAt).toBe(300_000);
      expect(j3.fence.signaledAt! - j3.startedAt).toBe(200_000);
      expect(j1.fence.seqno).toBeLessThan(j2.fence.seqno);
      // The compute ring did not wait behind the graphics jobs.
      expect(comp.fence.signaledAt!).toBeLessThan(j1.fence.signaledAt!);
      expect(gpu.gfx.completed).toBe(3);
      expect(gpu.compute.completed).toBe(1);
      expect(csStats(gpu).submitted).toBe(4);
      await bo.free();
      await p.exit();
    });
  });

  it('CS on a removed device is ENODEV', async () => {
    const m = new Machine({ seed: 1, ramBytes: 64 * MiB });
    const gpu = new AmdgpuDevice(m);
    await m.sched.runTask('test', async () => {
      const p = m.createProcess('app');
      const a = await anon(p, 4);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER });
      const vm = gpu.vm(p);
      await bo.free();
      await gpu.remove();
      expect(await errno(amdgpuCs(gpu, { vm, bos: [], job: {} }))).toBe('ENODEV');
      await p.exit();
    });
    m.checkInvariants();
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
  });
});
