import { describe, expect, it } from 'vitest';
import { ANCHORS } from '../anchors.js';
import { runVecAdd, VECADD_BYTES } from './vecadd.js';

describe('scenario vecadd', () => {
  it('on demand is ≈ 29.5× slower than prefetched (within ±25 %), with correct results', async () => {
    const r = await runVecAdd({ size: 'quick' });
    const ratio = r.figures.find((f) => f.id === 'ratio')!;
    expect(ratio.anchor).toBe(ANCHORS.vecaddRatio);
    expect(ratio.simulated).toBeGreaterThanOrEqual(0.75 * ANCHORS.vecaddRatio.value);
    expect(ratio.simulated).toBeLessThanOrEqual(1.25 * ANCHORS.vecaddRatio.value);
    expect(ratio.within).toBe(true);
    expect(r.details.wrongElements).toBe(0);
    // Every page of the three vectors faulted once on demand, none after the prefetch.
    expect(r.details.onDemandFaults).toBe((3 * VECADD_BYTES.quick) / 4096);
    expect(r.details.prefetchedFaults).toBe(0);
    // The absolute times are anchored only at the published size.
    expect(r.figures.filter((f) => f.anchor !== null)).toHaveLength(1);
  }, 120_000);
});
