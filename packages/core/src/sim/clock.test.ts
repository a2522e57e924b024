import { describe, it, expect } from 'vitest';
import { VirtualClock } from './clock.js';
import { HmmError } from '../errors/errno.js';

describe('VirtualClock', () => {
  it('starts at 0 and moves forward only when told', () => {
    const c = new VirtualClock();
    expect(c.now).toBe(0);
    c.advanceTo(100);
    c.advanceBy(50);
    c.advanceBy(0);
    c.advanceTo(150);
    expect(c.now).toBe(150);
  });

  it('rejects going back, non-finite times and negative deltas with EINVAL, leaving time unchanged', () => {
    const c = new VirtualClock();
    c.advanceTo(10);
    for (const bad of [
      () => c.advanceTo(9),
      () => c.advanceTo(Number.NaN),
      () => c.advanceTo(Infinity),
      () => c.advanceBy(-1),
      () => c.advanceBy(Number.NaN),
    ]) {
      expect(bad).toThrow(HmmError);
      expect(bad).toThrow(/EINVAL/);
    }
    expect(c.now).toBe(10);
  });
});
