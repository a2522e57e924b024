import { describe, expect, it } from 'vitest';
import { runVecAddScenario } from './vecadd.js';

/**
 * perf-anchors.md §2: a GTX 1080 on PCIe 3 runs vec_add over 3 × 1 GiB of CPU-initialised memory in
 * 386.6 ms on demand (31,774 fault groups) and in 13.3 ms once the data is prefetched: 29.5× slower.
 * The model must land within ±25 % of that ratio, with a correct result vector both ways.
 */
const ANCHOR_RATIO = 386.6 / 13.3;
const GiB = 1024 ** 3;

describe('scenario: 3 × 1 GiB vector add, on demand versus prefetch-then-run (PCIe 3)', () => {
  it('on demand is ≈29× slower in simulated time and both results are correct', async () => {
    const r = await runVecAddScenario({ bytes: GiB });
    expect(r.onDemand.wrong).toBe(0);
    expect(r.prefetched.wrong).toBe(0);
    // Every page of the three vectors faults once on demand; none after the prefetch.
    expect(r.onDemand.job.faults).toBe((3 * GiB) / 4096);
    expect(r.prefetched.job.faults).toBe(0);
    expect(r.onDemand.job.bytes.system).toBe(3 * GiB);
    expect(r.prefetched.job.bytes.vram).toBe(3 * GiB);
    const ratio = r.onDemand.job.ns / r.prefetched.job.ns;
    expect(ratio).toBeGreaterThanOrEqual(ANCHOR_RATIO * 0.75);
    expect(ratio).toBeLessThanOrEqual(ANCHOR_RATIO * 1.25);
    // The absolute times stay near the anchors too (13.3 ms and 386.6 ms).
    expect(r.prefetched.job.ns / 1e6).toBeCloseTo(13.3, 0);
    expect(r.onDemand.job.ns / 1e6).toBeGreaterThan(386.6 * 0.75);
    expect(r.onDemand.job.ns / 1e6).toBeLessThan(386.6 * 1.25);
  }, 300_000);
});
