import { describe, expect, it } from 'vitest';
import { ANCHORS } from '../anchors.js';
import {
  BUFFER_BYTES,
  MIRROR_TOUCH_BYTES,
  MUNMAP_BYTES,
  USERPTR_JOB_NS,
  USERPTR_MUNMAP_AT_NS,
  runPinVsUserptrVsMirror,
} from './pin-vs-userptr-vs-mirror.js';

const PAGES = BUFFER_BYTES / 4096;

describe('scenario pin-vs-userptr-vs-mirror (1 GiB)', () => {
  it('pinning costs ≈ 0.94 µs per page up front (±25 % of the VFIO figure); userptr, then mirroring, cost less and hold less', async () => {
    const r = await runPinVsUserptrVsMirror();
    const f = Object.fromEntries(r.figures.map((x) => [x.id, x]));
    const setup = f['pinnedSetupMs']!;
    expect(setup.anchor).toBe(ANCHORS.pinnedSetupMs);
    expect(setup.ratio!).toBeGreaterThanOrEqual(0.75);
    expect(setup.ratio!).toBeLessThanOrEqual(1.25);
    expect(setup.within).toBe(true);

    const { pinned, userptr, mirror } = r.details;
    // Pinning: all 1 GiB pinned; the munmap does not wait but frees nothing.
    expect(pinned.heldPages).toBe(PAGES);
    expect(pinned.pinnedPages).toBe(PAGES);
    expect(pinned.unmappedStillHeld).toBe(MUNMAP_BYTES / 4096);
    expect(pinned.munmapNs).toBeLessThan(50_000);
    // Userptr: the first CS faults the whole BO in, every later one walks it; nothing is pinned,
    // and the munmap waits for the running job.
    expect(userptr.heldPages).toBe(PAGES);
    expect(userptr.pinnedPages).toBe(0);
    expect(userptr.steadyCsNs).toBeLessThan(userptr.setupNs / 10);
    expect(userptr.jobRemainingAtMunmapNs).toBe(USERPTR_JOB_NS - USERPTR_MUNMAP_AT_NS);
    expect(userptr.munmapNs).toBeGreaterThanOrEqual(userptr.jobRemainingAtMunmapNs);
    expect(userptr.unmappedStillHeld).toBe(0);
    // Mirroring: nothing up front, only what the GPU touched, and a munmap in microseconds.
    expect(mirror.setupNs).toBe(0);
    expect(mirror.heldPages).toBe(MIRROR_TOUCH_BYTES / 4096);
    expect(mirror.faults).toBe(MIRROR_TOUCH_BYTES / 4096);
    expect(mirror.munmapNs).toBeLessThan(userptr.munmapNs / 100);
    expect(mirror.unmappedStillHeld).toBe(0);
  }, 120_000);
});
