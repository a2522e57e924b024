import { describe, expect, it } from 'vitest';
import { KFD_DEFAULT_PREEMPT_NS, KFD_DEFAULT_RESUME_NS } from './kfd.js';
import { formatLongJob, formatNs, runLongJobScenario } from './long-job.js';

const HOUR = 3600e9;
const MS = 1e6;

describe('scenario: a long-running job on a userptr BO while another thread munmaps part of it', () => {
  it('graphics waits for the job, compute pays one preemption, pinning does not wait but holds the memory', async () => {
    const r = await runLongJobScenario({ jobNs: HOUR, munmapAfterNs: HOUR / 4, pages: 256, munmapPages: 64 });
    console.log(`\n${formatLongJob(r)}\n`);
    const gfx = r.gfx!;
    const hsa = r.hsa!;
    const pin = r.pin!;
    for (const x of [gfx, hsa, pin]) {
      expect(x.jobRemainingAtMunmapNs).toBeCloseTo(x.jobTotalNs - HOUR / 4, 0);
      expect(x.jobError).toBeNull();
      expect(x.leakedFrames).toBe(0);
    }

    // Graphics: the munmap takes the job's remaining time (45 min), plus the VM unmap after it.
    expect(gfx.munmapNs).toBeGreaterThanOrEqual(gfx.jobRemainingAtMunmapNs);
    expect(gfx.munmapNs - gfx.jobRemainingAtMunmapNs).toBeLessThan(50_000);
    expect(gfx.jobDelayNs).toBeCloseTo(0, 0);
    expect(gfx.pagesPinnedAfter).toBe(0);
    expect(gfx.unmappedFramesStillAllocated).toBe(0);
    // The BO's range is no longer one VMA: the next CS fails collecting its pages.
    expect(gfx.nextAccess).toBe('EFAULT');
    expect(gfx.reclaimedPages).toBe(192);

    // Compute: the munmap takes one context save; the job loses the quiesced interval
    // (save + 1 ms restore delay + the restore's work) and one context restore.
    expect(hsa.preemptNs).toBe(KFD_DEFAULT_PREEMPT_NS);
    expect(hsa.munmapNs).toBeGreaterThanOrEqual(hsa.preemptNs);
    expect(hsa.munmapNs - hsa.preemptNs).toBeLessThan(20_000);
    expect(hsa.jobDelayNs).toBeGreaterThanOrEqual(hsa.preemptNs + MS + KFD_DEFAULT_RESUME_NS);
    expect(hsa.jobDelayNs).toBeLessThan(hsa.preemptNs + MS + KFD_DEFAULT_RESUME_NS + 50_000);
    expect(hsa.pagesPinnedAfter).toBe(0);
    expect(hsa.unmappedFramesStillAllocated).toBe(0);
    // The restore could not collect the broken range: the BO stays invalid, and touching it faults.
    expect(hsa.nextAccess).toBe('EFAULT');
    expect(hsa.reclaimedPages).toBe(192);

    // Pinning: the munmap does not wait; every page stays pinned, the munmapped frames stay
    // allocated, reclaim takes nothing, and freeing the BO releases them.
    expect(pin.munmapNs).toBeLessThan(20_000);
    expect(pin.jobDelayNs).toBeCloseTo(0, 0);
    expect(pin.pagesPinnedAfter).toBe(256);
    expect(pin.unmappedFramesStillAllocated).toBe(64);
    expect(pin.nextAccess).toBe('ok');
    expect(pin.reclaimedPages).toBe(0);
    expect(pin.pinnedFramesAfterReclaim).toBe(256);
    expect(pin.framesReleasedByFree).toBe(64);

    // Side by side.
    expect(gfx.munmapNs / hsa.munmapNs).toBeGreaterThan(1e7);
    expect(hsa.munmapNs).toBeGreaterThan(pin.munmapNs);

    const table = formatLongJob(r);
    expect(table).toContain('graphics (fence wait)');
    expect(table).toContain('compute (KFD)');
    expect(table).toContain('pinned');
    expect(table.split('\n').find((l) => l.startsWith('munmap took'))).toContain(formatNs(gfx.munmapNs));
  });

  it('scales with the job: a 1 s job munmapped at 100 ms waits 900 ms in graphics mode only', async () => {
    const r = await runLongJobScenario({
      jobNs: 1e9,
      munmapAfterNs: 100 * MS,
      pages: 32,
      munmapPages: 8,
      modes: ['gfx', 'hsa'],
    });
    expect(r.pin).toBeUndefined();
    expect(r.gfx!.jobRemainingAtMunmapNs).toBeCloseTo(900 * MS + r.gfx!.jobTotalNs - 1e9, 0);
    expect(Math.abs(r.gfx!.munmapNs - r.gfx!.jobRemainingAtMunmapNs)).toBeLessThan(50_000);
    expect(r.hsa!.munmapNs).toBeLessThan(r.hsa!.preemptNs + 20_000);
  });

  it('rejects a munmap that would not overlap the running job', async () => {
    await expect(runLongJobScenario({ jobNs: 1e6, munmapAfterNs: 2e6 })).rejects.toMatchObject({
      code: 'EINVAL',
    });
    await expect(runLongJobScenario({ pages: 4, munmapPages: 4 })).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('formats durations in readable units', () => {
    expect(formatNs(2700e9)).toBe('45.00 min');
    expect(formatNs(1.5e9)).toBe('1.500 s');
    expect(formatNs(1_150_000)).toBe('1.150 ms');
    expect(formatNs(105_000)).toBe('105.0 µs');
    expect(formatNs(12)).toBe('12 ns');
  });
});
