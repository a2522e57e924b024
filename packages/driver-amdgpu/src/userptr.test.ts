import { MapFlag, Madv, MmuNotifierSubscriptions, NotifyEvent, PAGE_SIZE, Prot, isHmmError } from '@hmm/core';
import type { Process } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { amdgpuCs } from './cs.js';
import { AMDGPU_HMM_STEP_BYTES, UserptrFlag, gemUserptr } from './userptr.js';
import type { UserptrBo } from './userptr.js';
import { anon, errno, withRig } from './testing/rig.js';

const P = PAGE_SIZE;
const RW = Prot.READ | Prot.WRITE;
const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;
const { READONLY, ANONONLY, VALIDATE, REGISTER } = UserptrFlag;

function subs(p: Process): number {
  return MmuNotifierSubscriptions.of(p.mm).subscriptions().length;
}

describe('GEM_USERPTR creation rules', () => {
  it('rejects unaligned ranges, unknown flags, and a writable BO without REGISTER', async () => {
    await withRig(async (_m, gpu) => {
      const p = _m.createProcess('app');
      const a = await anon(p, 8);
      expect(await errno(gemUserptr(gpu, p, { addr: a + 8, size: 4 * P, flags: REGISTER }))).toBe('EINVAL');
      expect(await errno(gemUserptr(gpu, p, { addr: a, size: 4 * P + 1, flags: REGISTER }))).toBe('EINVAL');
      expect(await errno(gemUserptr(gpu, p, { addr: a, size: 0, flags: REGISTER }))).toBe('EINVAL');
      expect(await errno(gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER | (1 << 4) }))).toBe(
        'EINVAL',
      );
      expect(await errno(gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: 0 }))).toBe('EACCES');
      expect(await errno(gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: VALIDATE | ANONONLY }))).toBe(
        'EACCES',
      );
      // A pinned BO takes no notifier.
      expect(await errno(gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER, mode: 'pin' }))).toBe(
        'EINVAL',
      );
      // Nothing was registered by the failures.
      expect(subs(p)).toBe(0);
      await p.exit();
    });
  });

  it('READONLY without REGISTER is allowed: no notifier, pages collected read-only, GPU writes fault', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 4);
      await p.fill(a, 4 * P, 7);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: READONLY | VALIDATE });
      expect(bo.notifier).toBeNull();
      expect(bo.writable).toBe(false);
      expect(bo.stats.collections).toBe(1);
      expect(subs(p)).toBe(0); // the walk's temporary notifier is gone
      const vm = gpu.vm(p);
      let seen = 0;
      const rd = await amdgpuCs(gpu, {
        vm,
        bos: [bo],
        job: {
          run(x) {
            seen = x.read(a + P, 4)[0]!;
          },
        },
      });
      await rd.wait();
      expect(seen).toBe(7);
      const wr = await amdgpuCs(gpu, { vm, bos: [bo], job: { run: (x) => x.write(a, new Uint8Array([1])) } });
      expect(await errno(wr.wait())).toBe('EFAULT');
      expect(wr.error?.message).toMatch(/VM fault, write/);
      expect(await p.readU32(a)).toBe(0x07070707);
      await bo.free();
      await p.exit();
    });
  });

  it('ANONONLY refuses file-backed memory (EPERM) at VALIDATE, and at the first collection without it', async () => {
    await withRig(
      async (m, gpu) => {
        const f = await m.createFile('data', new Uint8Array(8 * P).fill(1));
        const p = m.createProcess('app');
        const priv = await p.mmap({ length: 4 * P, prot: RW, flags: MapFlag.PRIVATE, file: f });
        const shared = await p.mmap({
          length: 4 * P,
          prot: RW,
          flags: MapFlag.SHARED,
          file: f,
          offset: 4 * P,
        });
        const shmem = await p.mmap({ length: 4 * P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
        const rss = p.mm.rssPages;
        // Private file mapping, VALIDATE: EPERM and no notifier left behind.
        const e1 = await gemUserptr(gpu, p, {
          addr: priv,
          size: 4 * P,
          flags: REGISTER | ANONONLY | VALIDATE,
        }).catch((e: unknown) => e);
        expect(isHmmError(e1, 'EPERM')).toBe(true);
        expect((e1 as Error).message).toMatch(/ANONONLY.*file-backed/);
        expect(subs(p)).toBe(0);
        // Shared file mapping without VALIDATE: created, then the first CS's collection fails.
        const bo = await gemUserptr(gpu, p, { addr: shared, size: 4 * P, flags: REGISTER | ANONONLY });
        expect(subs(p)).toBe(1);
        expect(await errno(amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo], job: {} }))).toBe('EPERM');
        expect(bo.stats.collections).toBe(0);
        await bo.free();
        // Shared anonymous memory is a shmem file: refused as well.
        expect(
          await errno(
            gemUserptr(gpu, p, { addr: shmem, size: 4 * P, flags: REGISTER | ANONONLY | VALIDATE }),
          ),
        ).toBe('EPERM');
        expect(p.mm.rssPages).toBe(rss); // the refusals faulted nothing in
        // Without ANONONLY the file mapping is fine.
        const ok = await gemUserptr(gpu, p, { addr: priv, size: 4 * P, flags: REGISTER | VALIDATE });
        expect(ok.stats.pagesWalked).toBe(4);
        expect(p.mm.rssPages).toBe(rss + 4);
        await ok.free();
        expect(subs(p)).toBe(0);
        await p.exit();
        await m.truncate(f, 0);
      },
      { leakCheck: false },
    );
  });

  it('VALIDATE over a hole fails with EFAULT and leaves no notifier behind', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 8);
      await p.munmap(a + 4 * P, P);
      const e = await gemUserptr(gpu, p, { addr: a, size: 8 * P, flags: REGISTER | VALIDATE }).catch(
        (x: unknown) => x,
      );
      expect(isHmmError(e, 'EFAULT')).toBe(true);
      expect((e as Error).message).toMatch(/not inside one VMA/);
      expect(subs(p)).toBe(0);
      // The same over a range with no mapping at all, and over PROT_NONE memory.
      expect(
        await errno(gemUserptr(gpu, p, { addr: 0x10_0000_0000, size: P, flags: REGISTER | VALIDATE })),
      ).toBe('EFAULT');
      const none = await p.mmap({ length: 2 * P, prot: Prot.NONE, flags: ANON });
      expect(await errno(gemUserptr(gpu, p, { addr: none, size: 2 * P, flags: REGISTER | VALIDATE }))).toBe(
        'EFAULT',
      );
      expect(subs(p)).toBe(0);
      await p.exit();
    });
  });
});

describe('userptr notifier and page collection', () => {
  it('registers one interval notifier exactly the size of the BO', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 32);
      const bo = await gemUserptr(gpu, p, { addr: a + 4 * P, size: 8 * P, flags: REGISTER });
      const all = MmuNotifierSubscriptions.of(p.mm).subscriptions();
      expect(all).toHaveLength(1);
      expect(all[0]).toBe(bo.notifier);
      expect([bo.notifier!.start, bo.notifier!.end]).toEqual([a + 4 * P, a + 12 * P]);
      expect(bo.pages).toBe(8);
      // Registration alone collects nothing and faults nothing.
      expect(bo.stats.collections).toBe(0);
      expect(p.mm.rssPages).toBe(0);
      // An munmap outside the BO's range does not reach it.
      await p.munmap(a + 20 * P, 4 * P);
      expect(bo.stats.invalidations).toBe(0);
      await bo.free();
      expect(MmuNotifierSubscriptions.of(p.mm).subscriptions()).toHaveLength(0);
      await p.exit();
    });
  });

  it('charges pages × rangeFaultPerPresentPageNs + faulted × faultInZeroPerPageNs per collection', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const n = 64;
      const a = await anon(p, n);
      await p.fill(a, 16 * P, 5); // 16 pages present, 48 not yet
      const bo = await gemUserptr(gpu, p, { addr: a, size: n * P, flags: REGISTER });
      const { rangeFaultPerPresentPageNs: walk } = m.cost.hmm;
      const { faultInZeroPerPageNs: zero } = m.cost.cpu;
      let t0 = m.sched.now;
      expect(await bo.getUserPages()).toBe(true);
      expect(m.sched.now - t0).toBe(n * walk + 48 * zero);
      expect(bo.stats).toMatchObject({
        collections: 1,
        pagesWalked: n,
        pagesFaultedIn: 48,
        revalidations: 1,
      });
      expect(p.mm.rssPages).toBe(n);
      expect([...bo.pfns].every((pfn) => pfn > 0)).toBe(true);
      // A second collection faults nothing and finds the same frames: walk cost only, no rebind needed.
      t0 = m.sched.now;
      expect(await bo.getUserPages()).toBe(false);
      expect(m.sched.now - t0).toBe(n * walk);
      expect(bo.stats).toMatchObject({
        collections: 2,
        pagesWalked: 2 * n,
        pagesFaultedIn: 48,
        revalidations: 1,
      });
      // After DONTNEED the frames change: the next collection faults them back and reports a change.
      await p.madvise(a, 8 * P, Madv.DONTNEED);
      t0 = m.sched.now;
      expect(await bo.getUserPages()).toBe(true);
      expect(m.sched.now - t0).toBe(n * walk + 8 * zero);
      expect(bo.stats.revalidations).toBe(2);
      await bo.free();
      expect(await errno(bo.getUserPages())).toBe('EINVAL');
      await p.exit();
    });
  });

  it('walks a BO above 2 GiB in 2 GiB steps, yielding between them (with the mmap lock held)', async () => {
    // READONLY over untouched anonymous memory: the walk maps the zero page, so little RAM is needed.
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const observe = async (bo: UserptrBo): Promise<number> => {
        const t0 = m.sched.now;
        let held = 0;
        m.sched.spawn('observer', async () => {
          for (let i = 0; i < 4; i++) {
            if (m.sched.now === t0 && bo.stats.collections === 0)
              held = Math.max(held, p.mm.mmapLock.readers);
            await m.sched.yield();
          }
        });
        await bo.getUserPages();
        expect(m.sched.now - t0).toBe(bo.pages * m.cost.hmm.rangeFaultPerPresentPageNs);
        expect(bo.stats.pagesWalked).toBe(bo.pages);
        return held;
      };
      for (const size of [AMDGPU_HMM_STEP_BYTES, AMDGPU_HMM_STEP_BYTES + P]) {
        const a = await p.mmap({ length: size, prot: Prot.READ, flags: ANON });
        const bo = await gemUserptr(gpu, p, { addr: a, size, flags: READONLY | REGISTER });
        const held = await observe(bo);
        // One step: the observer first runs after the walk; two: it runs between the steps.
        expect(held).toBe(size > AMDGPU_HMM_STEP_BYTES ? 1 : 0);
        expect(p.mm.rssPages).toBe(0); // zero page only
        await bo.free();
        await p.munmap(a, size);
      }
      await p.exit();
    });
  });
});

describe('graphics-mode invalidation', () => {
  const JOB_NS = 1_000_000;
  const ops: readonly [string, (p: Process, a: number) => Promise<void>][] = [
    ['munmap', (p, a) => p.munmap(a + 4 * P, 4 * P)],
    ['mprotect', (p, a) => p.mprotect(a, 8 * P, Prot.READ)],
    ['madvise(DONTNEED)', (p, a) => p.madvise(a + 2 * P, 2 * P, Madv.DONTNEED)],
  ];
  for (const [name, op] of ops) {
    it(`${name} of the range during a job waits for the job's fence`, async () => {
      await withRig(async (m, gpu) => {
        const p = m.createProcess('app');
        const a = await anon(p, 8);
        await p.fill(a, 8 * P, 1);
        const bo = await gemUserptr(gpu, p, { addr: a, size: 8 * P, flags: REGISTER });
        const vm = gpu.vm(p);
        const job = await amdgpuCs(gpu, { vm, bos: [bo], job: { ns: JOB_NS } });
        expect(vm.mappedPages(a / P, a / P + 8)).toBe(8);
        await m.sched.sleep(JOB_NS / 4);
        const t0 = m.sched.now;
        expect(job.fence.signaled).toBe(false);
        await op(p, a);
        expect(job.fence.signaled).toBe(true);
        const end = job.fence.signaledAt!;
        expect(end).toBeGreaterThan(t0);
        expect(m.sched.now).toBeGreaterThanOrEqual(end);
        expect(bo.stats.invalidations).toBe(1);
        expect(bo.stats.invalidationWaitNs).toBeGreaterThanOrEqual(end - t0);
        expect(end - t0).toBeGreaterThanOrEqual((3 * JOB_NS) / 4 - 1);
        // The VM entries were dropped and the next CS sees the BO stale until it collects again.
        expect(bo.bound).toBe(false);
        expect(vm.mappedPages(a / P, a / P + 8)).toBe(0);
        expect(bo.stale()).toBe(true);
        await bo.free();
        await p.exit();
      });
    });
  }

  it('an invalidation with no job in flight does not wait', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 8);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 8 * P, flags: REGISTER });
      const job = await amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo], job: { ns: 1_000 } });
      await job.wait();
      const t0 = m.sched.now;
      await p.munmap(a, 8 * P);
      expect(bo.stats.invalidations).toBe(1);
      expect(m.sched.now - t0).toBeLessThan(100_000); // the unbind only, no fence wait
      expect(bo.stats.invalidationWaitNs).toBeLessThan(100_000);
      await bo.free();
      await p.exit();
    });
  });

  it('declines a non-blockable invalidation (the OOM reaper skips the range)', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 8);
      await p.fill(a, 8 * P, 9);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 8 * P, flags: REGISTER | VALIDATE });
      const job = await amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo], job: { ns: 1_000_000 } });
      const rss = p.mm.rssPages;
      expect(m.oomReap(p)).toBe(false);
      expect(p.mm.rssPages).toBe(rss);
      expect(bo.stats.invalidations).toBe(0);
      expect(bo.stale()).toBe(false);
      // The callback itself, called directly with blockable = false, answers false at once.
      const sub = bo.notifier!;
      const r = sub.ops.invalidate(
        sub,
        { mm: p.mm, start: a, end: a + 8 * P, event: NotifyEvent.CLEAR, blockable: false, owner: null },
        sub.invalidateSeq + 1,
      );
      expect(r).toBe(false);
      expect(bo.stale()).toBe(false);
      await job.wait();
      expect(await p.readU32(a)).toBe(0x09090909);
      await bo.free();
      await p.exit();
    });
  });
});

describe('pinning mode and GEM_CLOSE', () => {
  it('pins the pages at creation (FOLL_LONGTERM), munmap does not wait, freeing unpins', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 8);
      await p.fill(a, 8 * P, 4);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 8 * P, flags: 0, mode: 'pin' });
      const mem = m.mm.mem;
      const pfns = [...bo.pfns];
      expect(bo.notifier).toBeNull();
      expect(subs(p)).toBe(0);
      expect(pfns.every((pfn) => mem.pincount[pfn] === 1)).toBe(true);
      const job = await amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo], job: { ns: 1_000_000 } });
      expect(bo.stats.collections).toBe(0); // never collected again
      const t0 = m.sched.now;
      await p.munmap(a, 8 * P);
      expect(m.sched.now - t0).toBeLessThan(100_000);
      expect(job.fence.signaled).toBe(false);
      // The frames outlive the mapping: still pinned and allocated.
      const used = new Set(mem.allocatedFrames());
      expect(pfns.every((pfn) => used.has(pfn) && mem.pincount[pfn] === 1)).toBe(true);
      await job.wait();
      await bo.free();
      expect(pfns.every((pfn) => mem.pincount[pfn] === 0)).toBe(true);
      expect(mem.allocatedFrames().filter((pfn) => pfns.includes(pfn))).toEqual([]);
      await p.exit();
    });
  });

  it('free twice is EINVAL; free waits for the BO jobs', async () => {
    await withRig(async (m, gpu) => {
      const p = m.createProcess('app');
      const a = await anon(p, 4);
      const bo = await gemUserptr(gpu, p, { addr: a, size: 4 * P, flags: REGISTER });
      const job = await amdgpuCs(gpu, { vm: gpu.vm(p), bos: [bo], job: { ns: 500_000 } });
      await bo.free();
      expect(job.fence.signaled).toBe(true);
      expect(bo.freed).toBe(true);
      expect(subs(p)).toBe(0);
      const e = await bo.free().catch((x: unknown) => x);
      expect(isHmmError(e, 'EINVAL')).toBe(true);
      expect((e as Error).message).toMatch(/already freed/);
      await p.exit();
    });
  });
});
