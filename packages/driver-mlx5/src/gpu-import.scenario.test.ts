import { describe, expect, it } from 'vitest';
import { runGpuImportScenario } from './gpu-import.js';
import type { GpuImportResult } from './gpu-import.js';

const PAGES = 16;

/** What holds in every variant: correct bytes, consistent mappings, counters that add up. */
function expectCommon(r: GpuImportResult): void {
  expect(r.failedReads).toBe(0);
  expect(r.mismatches).toBe(0);
  expect(r.bytesRead).toBeGreaterThan(r.reads);
  expect(r.inconsistencies).toEqual([]);
  expect(r.sanitizerViolations).toEqual([]);
  // The GPU moved the object under the NIC, and the NIC was revoked and refaulted.
  expect(r.moverMoves).toBe(40);
  expect(r.objectMoves).toBeGreaterThanOrEqual(r.moverMoves);
  expect(r.moveNotifications).toBeGreaterThan(10);
  expect(r.moveNotifications).toBeLessThanOrEqual(r.objectMoves);
  // Every move notification zapped the whole MR.
  expect(r.invalidations).toBe(r.moveNotifications * PAGES);
  // Each fault made exactly one mapping; each counted notification removed one.
  expect(r.faultEvents).toBe(r.moveNotifications + (r.mappedAtEnd ? 1 : 0));
  expect(r.maps).toBeGreaterThanOrEqual(r.faultEvents);
  expect(r.rnrNaks).toBeGreaterThanOrEqual(r.faultEvents);
  // Some reads were in flight when the object moved.
  expect(r.readsSpanningMove).toBeGreaterThan(0);
  expect(r.wireBytes).toBe(r.bytesRead);
  expect(r.simNs).toBeGreaterThan(0);
}

describe('scenario: the NIC RDMA-reads a GPU-exported buffer while the GPU moves it', () => {
  it.each([1, 2, 3])(
    'BAR with room (seed %i): every byte matches, the NIC maps BAR frames by bus address',
    async (seed) => {
      const r = await runGpuImportScenario({ seed, bar: 'free' });
      expectCommon(r);
      expect(r.reads).toBeGreaterThanOrEqual(100);
      // Every read that completed with a live mapping saw the object in the BAR, mapped BUS_ADDR.
      expect(r.mappingTypes.BUS_ADDR + r.mappingTypes.revoked).toBe(r.reads);
      expect(r.mappingTypes.BUS_ADDR).toBeGreaterThan(0);
      expect(r.mappingTypes.NOT_SUPPORTED).toBe(0);
      expect(r.mappingTypes.THRU_HOST_BRIDGE).toBe(0);
      // The mover sent it to system memory; the NIC's next fault brought it back (p2pMap moves).
      expect(r.objectMoves).toBeGreaterThan(r.moverMoves);
    },
  );

  it.each([1, 2, 3])(
    'BAR full (seed %i): the same bytes through the system-memory fallback',
    async (seed) => {
      const r = await runGpuImportScenario({ seed, bar: 'full' });
      expectCommon(r);
      // Before any move, with the BAR exhausted, every read went through the fallback.
      expect(r.fallbackPhase).toEqual({ BUS_ADDR: 0, THRU_HOST_BRIDGE: 0, NOT_SUPPORTED: 8, revoked: 0 });
      // Then the NIC kept switching between the peer path and the fallback as the BAR filled and emptied.
      expect(r.mappingTypes.NOT_SUPPORTED).toBeGreaterThan(0);
      expect(r.mappingTypes.BUS_ADDR).toBeGreaterThan(0);
      expect(r.fallbackWhileFull).toBeGreaterThan(0);
      expect(r.mappingTypes.THRU_HOST_BRIDGE).toBe(0);
    },
  );

  it('with the requester on a second HCA as well', async () => {
    const r = await runGpuImportScenario({ seed: 4, bar: 'full', secondHca: true });
    expectCommon(r);
    expect(r.mappingTypes.NOT_SUPPORTED).toBeGreaterThan(0);
    expect(r.mappingTypes.BUS_ADDR).toBeGreaterThan(0);
  });
});
