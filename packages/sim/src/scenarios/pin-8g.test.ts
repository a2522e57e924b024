import { describe, expect, it } from 'vitest';
import { ANCHORS } from '../anchors.js';
import { runPin8g } from './pin-8g.js';

describe('scenario pin-8g', () => {
  it('pinning 8 GiB of pre-faulted pages takes ≈ 130 ms and unpinning ≈ 31.5 ms (±25 %)', async () => {
    const r = await runPin8g({ size: 'quick' });
    const pin = r.figures.find((f) => f.id === 'pinMs')!;
    const unpin = r.figures.find((f) => f.id === 'unpinMs')!;
    expect(pin.anchor).toBe(ANCHORS.pin8gPinMs);
    expect(unpin.anchor).toBe(ANCHORS.pin8gUnpinMs);
    for (const f of [pin, unpin]) {
      expect(f.ratio!).toBeGreaterThanOrEqual(0.75);
      expect(f.ratio!).toBeLessThanOrEqual(1.25);
      expect(f.within).toBe(true);
    }
    // The quick run pins 1 GiB and says so.
    expect(pin.note).toMatch(/1 GiB pinned, × 8/);
    // Pre-faulted: the pin faulted nothing in, and every page ended up pinned.
    expect(r.details.faultedIn).toBe(0);
    expect(r.details.pinnedFrames).toBe(r.details.pages);
  }, 60_000);
});
