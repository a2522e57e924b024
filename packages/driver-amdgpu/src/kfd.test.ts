import { describe, expect, it } from 'vitest';
import { Machine, Madv, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import type { Process } from '@hmm/core';
import { AmdgpuDevice } from './gpu.js';
import {
  AMDGPU_USERPTR_RESTORE_DELAY_MS,
  KFD_DEFAULT_PREEMPT_NS,
  KFD_DEFAULT_RESUME_NS,
  kfdProcess,
} from './kfd.js';
import type { KfdProcess } from './kfd.js';
import { UserptrFlag, gemUserptr } from './userptr.js';
import type { UserptrBo } from './userptr.js';

const P = PAGE_SIZE;
const MS = 1_000_000;
const PREEMPT = 100_000;
const RESUME = 50_000;

interface World {
  readonly m: Machine;
  readonly gpu: AmdgpuDevice;
  readonly p: Process;
  readonly kfd: KfdProcess;
  mapBuf(pages: number, fill?: number): Promise<number>;
  hsaBo(addr: number, pages: number, flags?: number): Promise<UserptrBo>;
  sleepUntil(t: number): Promise<void>;
}

/** Runs `fn` in a task on a fresh machine, then checks invariants and that nothing leaked. */
async function sim(fn: (w: World) => Promise<void>): Promise<void> {
  const m = new Machine({ seed: 7 });
  await m.sched.runTask('test', async () => {
    const gpu = new AmdgpuDevice(m);
    const p = m.createProcess('app');
    const kfd = kfdProcess(gpu, p, { preemptNs: PREEMPT, resumeNs: RESUME });
    const w: World = {
      m,
      gpu,
      p,
      kfd,
      async mapBuf(pages, fill = 5) {
        const a = await p.mmap({
          length: pages * P,
          prot: Prot.READ | Prot.WRITE,
          flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
        });
        await p.fill(a, pages * P, fill);
        return a;
      },
      async hsaBo(addr, pages, flags = UserptrFlag.REGISTER) {
        const bo = await gemUserptr(gpu, p, { addr, size: pages * P, flags, mode: 'hsa' });
        await kfd.registerUserptr(bo);
        return bo;
      },
      async sleepUntil(t) {
        expect(t).toBeGreaterThanOrEqual(m.sched.now);
        if (t > m.sched.now) await m.sched.sleep(t - m.sched.now);
      },
    };
    await fn(w);
    await kfd.destroy();
    await p.exit();
    await gpu.remove();
  });
  m.checkInvariants();
  expect(m.mm.mem.allocatedFrames()).toEqual([]);
}

describe('KFD queues: preemption', () => {
  it('keeps the exact remaining time across a quiesce (10 ms job, stopped 3 ms at 2 ms)', async () => {
    await sim(async ({ m, kfd, sleepUntil }) => {
      const q = kfd.createQueue();
      const t0 = m.sched.now;
      const job = q.dispatch({ name: 'long', ns: 10 * MS });
      const next = q.dispatch({ name: 'next', ns: 1 * MS });
      expect(job.remainingNs).toBe(10 * MS);
      await sleepUntil(t0 + 2 * MS);
      expect(job.startedAt).toBe(t0);
      expect(job.remainingNs).toBe(8 * MS);
      await q.quiesce();
      // The quiesce returns once the context is saved; the job stopped progressing at once.
      expect(m.sched.now).toBe(t0 + 2 * MS + PREEMPT);
      expect(q.quiesced).toBe(true);
      expect(job.remainingNs).toBe(8 * MS);
      await sleepUntil(t0 + 5 * MS);
      expect(job.fence.signaled).toBe(false);
      expect(job.remainingNs).toBe(8 * MS);
      q.resume();
      await job.wait();
      expect(job.fence.signaledAt).toBe(t0 + 13 * MS + RESUME);
      expect(job.preemptions).toBe(1);
      await next.wait();
      expect(next.startedAt).toBe(t0 + 13 * MS + RESUME);
      expect(next.fence.signaledAt).toBe(t0 + 14 * MS + RESUME);
      expect(next.preemptions).toBe(0);
      expect(q.completed).toBe(2);
      expect(kfd.stats.preemptions).toBe(1);
    });
  });

  it('counts no progress during a context restore, nests quiesces, and an idle queue preempts for free', async () => {
    await sim(async ({ m, kfd, sleepUntil }) => {
      const q = kfd.createQueue();
      const t0 = m.sched.now;
      const job = q.dispatch({ ns: 10 * MS });
      await sleepUntil(t0 + 1 * MS);
      await q.quiesce();
      await q.quiesce(); // nested: no second context save
      expect(m.sched.now).toBe(t0 + 1 * MS + PREEMPT);
      await sleepUntil(t0 + 2 * MS);
      q.resume();
      expect(q.quiesced).toBe(true);
      await sleepUntil(t0 + 3 * MS);
      expect(job.remainingNs).toBe(9 * MS);
      q.resume();
      // Preempted again 20 µs into the context restore: nothing executed in between.
      await sleepUntil(t0 + 3 * MS + 20_000);
      await q.quiesce();
      expect(job.remainingNs).toBe(9 * MS);
      await sleepUntil(t0 + 4 * MS);
      q.resume();
      await job.wait();
      expect(job.preemptions).toBe(2);
      expect(job.fence.signaledAt).toBe(t0 + 4 * MS + RESUME + 9 * MS);
      // An idle queue: the quiesce costs nothing.
      const t1 = m.sched.now;
      await q.quiesce();
      expect(m.sched.now).toBe(t1);
      // A job dispatched while quiesced waits for the resume, without a context restore.
      const late = q.dispatch({ ns: 1 * MS });
      await sleepUntil(t1 + 2 * MS);
      expect(late.startedAt).toBe(-1);
      q.resume();
      await late.wait();
      expect(late.startedAt).toBe(t1 + 2 * MS);
      expect(late.fence.signaledAt).toBe(t1 + 3 * MS);
      expect(() => q.resume()).toThrow(expect.objectContaining({ code: 'EINVAL' }) as Error);
      expect(() => q.dispatch({ ns: -1 })).toThrow(expect.objectContaining({ code: 'EINVAL' }) as Error);
    });
  });

  it('exports the documented defaults', () => {
    expect(AMDGPU_USERPTR_RESTORE_DELAY_MS).toBe(1);
    expect(KFD_DEFAULT_PREEMPT_NS).toBe(100_000);
    expect(KFD_DEFAULT_RESUME_NS).toBe(50_000);
  });
});

describe('KFD userptr eviction and restore', () => {
  it('munmap of part of a compute BO waits only for the preemption; the range is gone, so the BO stays invalid and its next access faults', async () => {
    await sim(async ({ m, p, kfd, mapBuf, hsaBo, sleepUntil }) => {
      const n = 64;
      const a = await mapBuf(n);
      const bo = await hsaBo(a, n);
      expect(bo.bound).toBe(true);
      expect(kfd.invalid(bo)).toBe(0);
      const q = kfd.createQueue();
      const idle = kfd.createQueue();
      let sum = 0;
      const job = q.dispatch({
        ns: 50 * MS,
        run: (x) => {
          sum = x.read(a, n * P).reduce((s, b) => s + b, 0);
        },
      });
      await sleepUntil(job.startedAt + 10 * MS);
      const remainingBefore = job.remainingNs;
      const t0 = m.sched.now;
      await p.munmap(a + 48 * P, 16 * P);
      const munmapNs = m.sched.now - t0;
      // ≈ the context save, not the 40 ms the job has left (plus a VM unmap and the munmap itself).
      expect(munmapNs).toBeGreaterThanOrEqual(PREEMPT);
      expect(munmapNs).toBeLessThan(PREEMPT + 20_000);
      expect(kfd.stats).toMatchObject({ evictions: 1, quiesces: 1, preemptions: 1, preemptWaitNs: PREEMPT });
      expect(q.quiesced && idle.quiesced).toBe(true);
      expect(kfd.invalid(bo)).toBe(1);
      expect(bo.bound).toBe(false);
      expect(kfd.restoreAt).toBeGreaterThan(t0 + PREEMPT + MS - 1);
      expect(kfd.restoreAt).toBeLessThanOrEqual(t0 + munmapNs + MS);
      const frozen = job.remainingNs;
      await sleepUntil(kfd.restoreAt! - 1);
      expect(job.remainingNs).toBe(frozen);
      await job.wait();
      // The collection failed with EFAULT: the queues resumed anyway, the BO stays invalid.
      expect(kfd.stats).toMatchObject({ restores: 1, restoreRetries: 0, restoreFaults: 1 });
      expect(kfd.evicted).toBe(0);
      expect(q.quiesced || idle.quiesced).toBe(false);
      expect(kfd.invalid(bo)).toBe(1);
      expect(bo.bound).toBe(false);
      expect(kfd.stats.quiesceNs).toBeGreaterThanOrEqual(PREEMPT + MS);
      expect(kfd.stats.quiesceNs).toBeLessThan(PREEMPT + MS + 20_000);
      // Exact accounting: the job lost the quiesced interval plus one context restore.
      expect(job.fence.signaledAt).toBeCloseTo(t0 + remainingBefore + kfd.stats.quiesceNs + RESUME, 3);
      expect(sum).toBe(5 * n * P);
      // The next job touching the BO (even its still-mapped part) takes a VM fault: EFAULT, no hang.
      const touch = q.dispatch({ run: (x) => x.write(a, new Uint8Array(P).fill(1)) });
      await expect(touch.wait()).rejects.toMatchObject({ code: 'EFAULT' });
      expect(kfd.stats.vmFaults).toBe(1);
      const after = q.dispatch({ ns: MS });
      await after.wait();
      expect(after.error).toBeNull();
      await bo.free();
    });
  });

  it('madvise(DONTNEED) on a compute BO: quiesce in ≈ preemptNs, restore 1 ms later re-collects, rebinds and resumes', async () => {
    await sim(async ({ m, p, kfd, mapBuf, hsaBo, sleepUntil }) => {
      const n = 64;
      const a = await mapBuf(n);
      const bo = await hsaBo(a, n);
      const q = kfd.createQueue();
      const job = q.dispatch({ ns: 20 * MS });
      await sleepUntil(job.startedAt + 5 * MS);
      const remainingBefore = job.remainingNs;
      const collections = bo.stats.collections;
      const t0 = m.sched.now;
      await p.madvise(a, 4 * P, Madv.DONTNEED);
      expect(m.sched.now - t0).toBeGreaterThanOrEqual(PREEMPT);
      expect(m.sched.now - t0).toBeLessThan(PREEMPT + 20_000);
      expect(bo.stats.invalidations).toBe(1);
      expect(bo.stats.invalidationWaitNs).toBeLessThan(PREEMPT + 20_000);
      // A queue created while evicted starts quiesced.
      const late = kfd.createQueue();
      const lateJob = late.dispatch({ ns: MS, run: (x) => x.read(a, P) });
      const restoreAt = kfd.restoreAt!;
      await sleepUntil(restoreAt - 1);
      expect(lateJob.startedAt).toBe(-1);
      expect(q.quiesced).toBe(true);
      await job.wait();
      expect(kfd.stats).toMatchObject({ evictions: 1, restores: 1, restoreRetries: 0, restoreFaults: 0 });
      expect(bo.stats.collections).toBe(collections + 1);
      expect(bo.stats.pagesFaultedIn).toBeGreaterThanOrEqual(4);
      expect(kfd.invalid(bo)).toBe(0);
      expect(bo.bound).toBe(true);
      // Resumed ≈ 1 ms after the quiesce: the restore's collection and bind only.
      expect(kfd.stats.quiesceNs).toBeGreaterThanOrEqual(PREEMPT + MS);
      expect(kfd.stats.quiesceNs).toBeLessThan(PREEMPT + MS + 30_000);
      expect(job.fence.signaledAt).toBeCloseTo(t0 + remainingBefore + kfd.stats.quiesceNs + RESUME, 3);
      await lateJob.wait();
      expect(lateJob.startedAt).toBeLessThan(restoreAt + 30_000);
      // The GPU sees the zeroed pages and the rest, and the CPU sees the GPU's write.
      let seen: Uint8Array = new Uint8Array(0);
      const check = q.dispatch({
        run: (x) => {
          seen = x.read(a, n * P);
          x.write(a + 10 * P, new Uint8Array(8).fill(0xab));
        },
      });
      await check.wait();
      expect(seen.subarray(0, 4 * P).every((b) => b === 0)).toBe(true);
      expect(seen.subarray(4 * P).every((b) => b === 5)).toBe(true);
      expect([...(await p.read(a + 10 * P, 8))]).toEqual(new Array(8).fill(0xab));
      await bo.free();
    });
  });

  it('mprotect: a read-only BO restores; a writable BO cannot (EPERM), stays invalid, and the next restore retries it', async () => {
    await sim(async ({ m, p, kfd, mapBuf, hsaBo, sleepUntil }) => {
      const n = 16;
      const ra = await mapBuf(n);
      const wa = await mapBuf(n);
      const ro = await hsaBo(ra, n, UserptrFlag.READONLY | UserptrFlag.REGISTER);
      const rw = await hsaBo(wa, n);
      const q = kfd.createQueue();
      const job = q.dispatch({ ns: 30 * MS });
      await sleepUntil(job.startedAt + MS);
      let t0 = m.sched.now;
      await p.mprotect(ra, n * P, Prot.READ);
      expect(m.sched.now - t0).toBeLessThan(PREEMPT + 20_000);
      await sleepUntil(kfd.restoreAt! + 100_000);
      expect(kfd.stats).toMatchObject({ evictions: 1, restores: 1, restoreFaults: 0 });
      expect(kfd.invalid(ro)).toBe(0);
      expect(ro.bound && rw.bound).toBe(true);
      t0 = m.sched.now;
      await p.mprotect(wa, n * P, Prot.READ);
      expect(m.sched.now - t0).toBeLessThan(PREEMPT + 20_000);
      await sleepUntil(kfd.restoreAt! + 100_000);
      // The write collection fails: the queues resume all the same, the BO stays invalid.
      expect(kfd.stats).toMatchObject({ evictions: 2, restores: 2, restoreFaults: 1 });
      expect(q.quiesced).toBe(false);
      expect(kfd.invalid(rw)).toBe(1);
      expect(rw.bound).toBe(false);
      // Raising the protection sends no invalidation; the next eviction's restore retries the BO.
      await p.mprotect(wa, n * P, Prot.READ | Prot.WRITE);
      await p.madvise(ra, P, Madv.DONTNEED);
      await sleepUntil(kfd.restoreAt! + 100_000);
      expect(kfd.stats).toMatchObject({ evictions: 3, restores: 3, restoreFaults: 1 });
      expect(kfd.invalid(rw)).toBe(0);
      expect(kfd.invalid(ro)).toBe(0);
      expect(rw.bound && ro.bound).toBe(true);
      await job.wait();
      expect(job.preemptions).toBe(3);
      await ro.free();
      await rw.free();
    });
  });

  it('an invalidation during the restore makes it reschedule itself 1 ms later', async () => {
    await sim(async ({ m, p, kfd, mapBuf, hsaBo, sleepUntil }) => {
      const n = 64;
      const a = await mapBuf(n);
      const bo = await hsaBo(a, n);
      const q = kfd.createQueue();
      const job = q.dispatch({ ns: 20 * MS });
      await sleepUntil(job.startedAt + MS);
      await p.madvise(a, P, Madv.DONTNEED);
      const first = kfd.restoreAt!;
      // Lands inside the restore's page collection (after its walk read the sequence).
      const racer = m.sched.spawn('racer', async () => {
        await m.sched.sleep(first + 1 - m.sched.now);
        await p.madvise(a + P, P, Madv.DONTNEED);
      });
      await racer.join();
      await sleepUntil(first + 100_000);
      expect(kfd.stats).toMatchObject({ evictions: 2, quiesces: 1, restores: 0, restoreRetries: 1 });
      expect(q.quiesced).toBe(true);
      const second = kfd.restoreAt!;
      expect(second).toBeGreaterThan(first + MS);
      expect(second).toBeLessThan(first + MS + 100_000);
      await job.wait();
      expect(kfd.stats).toMatchObject({ restores: 1, restoreRetries: 1 });
      expect(kfd.invalid(bo)).toBe(0);
      expect(bo.bound).toBe(true);
      expect(kfd.stats.quiesceNs).toBeGreaterThan(2 * MS);
      await bo.free();
    });
  });

  it('declines a non-blockable invalidation (OOM reaper): no eviction, the job runs on', async () => {
    await sim(async ({ m, p, kfd, mapBuf, hsaBo, sleepUntil }) => {
      const n = 8;
      const a = await mapBuf(n, 9);
      const bo = await hsaBo(a, n);
      const q = kfd.createQueue();
      const t0 = m.sched.now;
      const job = q.dispatch({ ns: 5 * MS });
      await sleepUntil(t0 + MS);
      expect(m.oomReap(p)).toBe(false);
      expect(kfd.stats.evictions).toBe(0);
      expect(bo.stats.invalidations).toBe(0);
      expect(q.quiesced).toBe(false);
      expect(bo.bound).toBe(true);
      await job.wait();
      expect(job.fence.signaledAt).toBe(t0 + 5 * MS);
      expect((await p.read(a, n * P)).every((b) => b === 9)).toBe(true);
      await bo.free();
    });
  });
});

describe('KFD registration and teardown', () => {
  it('rejects BOs it cannot track, and a failed collection registers nothing', async () => {
    await sim(async ({ gpu, p, kfd, mapBuf }) => {
      expect(kfdProcess(gpu, p)).toBe(kfd);
      const a = await mapBuf(4);
      const gfx = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: UserptrFlag.REGISTER });
      await expect(kfd.registerUserptr(gfx)).rejects.toMatchObject({ code: 'EINVAL' });
      const noNotifier = await gemUserptr(gpu, p, {
        addr: a,
        size: 4 * P,
        flags: UserptrFlag.READONLY,
        mode: 'hsa',
      });
      await expect(kfd.registerUserptr(noNotifier)).rejects.toMatchObject({ code: 'EINVAL' });
      const ok = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: UserptrFlag.REGISTER, mode: 'hsa' });
      await kfd.registerUserptr(ok);
      await expect(kfd.registerUserptr(ok)).rejects.toMatchObject({ code: 'EINVAL' });
      const other = gpu.machine.createProcess('other');
      const b = await other.mmap({
        length: 4 * P,
        prot: Prot.READ | Prot.WRITE,
        flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
      });
      const foreign = await gemUserptr(gpu, other, {
        addr: b,
        size: 4 * P,
        flags: UserptrFlag.REGISTER,
        mode: 'hsa',
      });
      await expect(kfd.registerUserptr(foreign)).rejects.toMatchObject({ code: 'EINVAL' });
      // A range that is not mapped: EFAULT from the collection, nothing left registered.
      const hole = await gemUserptr(gpu, p, {
        addr: a + 64 * P,
        size: 4 * P,
        flags: UserptrFlag.REGISTER,
        mode: 'hsa',
      });
      await expect(kfd.registerUserptr(hole)).rejects.toMatchObject({ code: 'EFAULT' });
      expect(hole.hsaEvict).toBeNull();
      expect(() => kfd.invalid(hole)).toThrow(expect.objectContaining({ code: 'EINVAL' }) as Error);
      kfd.unregisterUserptr(ok);
      expect(ok.hsaEvict).toBeNull();
      expect(() => kfd.unregisterUserptr(ok)).toThrow(expect.objectContaining({ code: 'EINVAL' }) as Error);
      for (const bo of [gfx, noNotifier, ok, foreign, hole]) await bo.free();
      await other.exit();
      await gpu.closeVm(other);
    });
  });

  it('destroy while evicted cancels the restore and fails unfinished jobs; later invalidations do not evict', async () => {
    await sim(async ({ p, kfd, mapBuf, hsaBo, sleepUntil }) => {
      const n = 8;
      const a = await mapBuf(n);
      const bo = await hsaBo(a, n);
      const q = kfd.createQueue();
      const job = q.dispatch({ ns: 10 * MS });
      const queued = q.dispatch({ ns: MS });
      await sleepUntil(job.startedAt + MS);
      await p.madvise(a, P, Madv.DONTNEED);
      expect(kfd.evicted).toBe(1);
      const restoreAt = kfd.restoreAt!;
      await kfd.destroy();
      expect(kfd.destroyed && q.destroyed).toBe(true);
      expect(kfd.restoreAt).toBeNull();
      await expect(job.wait()).rejects.toMatchObject({ code: 'ENODEV' });
      await expect(queued.wait()).rejects.toMatchObject({ code: 'ENODEV' });
      await sleepUntil(restoreAt + MS);
      expect(kfd.stats.restores).toBe(0);
      expect(bo.hsaEvict).toBeNull();
      await p.madvise(a + P, P, Madv.DONTNEED);
      expect(kfd.stats.evictions).toBe(1);
      expect(() => kfd.createQueue()).toThrow(expect.objectContaining({ code: 'ENODEV' }) as Error);
      expect(() => q.dispatch({ ns: 1 })).toThrow(expect.objectContaining({ code: 'ENODEV' }) as Error);
      // A new KFD process for the same process and GPU can be opened.
      const again = kfdProcess(bo.gpu, p);
      expect(again).not.toBe(kfd);
      await again.destroy();
      await bo.free();
    });
  });
});
