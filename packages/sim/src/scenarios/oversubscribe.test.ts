import { describe, expect, it } from 'vitest';
import { ANCHORS } from '../anchors.js';
import { runOversubscribe } from './oversubscribe.js';

describe('scenario oversubscribe', () => {
  it('on demand reads input at ≈ 5.6 GB/s (±25 %); migrating with eviction re-migrates everything each pass', async () => {
    const r = await runOversubscribe({ size: 'quick' });
    const rate = r.figures.find((f) => f.id === 'onDemandGBs')!;
    expect(rate.anchor).toBe(ANCHORS.onDemandGBs);
    expect(rate.ratio!).toBeGreaterThanOrEqual(0.75);
    expect(rate.ratio!).toBeLessThanOrEqual(1.25);
    expect(rate.within).toBe(true);

    const { onDemand, evicting, fitting, workingSetBytes } = r.details;
    for (const w of [onDemand, evicting, fitting]) expect(w.wrong).toBe(0);
    expect(evicting.vramBytes * 1.5).toBe(workingSetBytes);
    // On demand: nothing moves, the second pass reads system memory again.
    expect(onDemand.migration).toBeNull();
    expect(onDemand.systemRead[1]).toBe(workingSetBytes);
    // Fitting: the second pass runs from VRAM without a fault.
    expect(fitting.faults[1]).toBe(0);
    expect(fitting.migration!.blocksEvicted).toBe(0);
    // Oversubscribed: the second pass faults, evicts and migrates every block again.
    const blocks = workingSetBytes / (2 * 1024 * 1024);
    expect(evicting.migration!.blocksIn).toBe(2 * blocks);
    expect(evicting.migration!.blocksEvicted).toBe(2 * blocks - evicting.vramBytes / (2 * 1024 * 1024));
    expect(evicting.passNs[1]).toBeGreaterThan(50 * fitting.passNs[1]);
  }, 60_000);
});
