import { describe, expect, it } from 'vitest';
import { ANCHORS } from '../anchors.js';
import { runFault2m } from './fault-2m.js';

describe('scenario fault-2m', () => {
  it('a 2 MiB GPU fault with 4 KiB pages takes ≈ 966 µs of simulated time (±25 %)', async () => {
    const r = await runFault2m();
    const total = r.figures.find((f) => f.id === 'totalUs')!;
    expect(total.anchor).toBe(ANCHORS.fault2mUs);
    expect(total.simulated).toBeGreaterThanOrEqual(0.75 * 966);
    expect(total.simulated).toBeLessThanOrEqual(1.25 * 966);
    expect(total.within).toBe(true);
    // It is what it claims: one batch, the whole block migrated, the data read from VRAM, intact.
    expect(r.details.batches).toBe(1);
    expect(r.details.pagesMigrated).toBe(512);
    expect(r.details.vramBytes).toBe(2 * 1024 * 1024);
    expect(r.details.mismatches).toBe(0);
    // Migration (CPU work of migrate_vma plus the copy) dominates, as in the Xe breakdown (942 of 966 µs).
    expect(r.details.migrateNs / r.details.totalNs).toBeGreaterThan(0.85);
  });
});
