import { describe, expect, it } from 'vitest';
import { ANCHORS } from '../anchors.js';
import { runP2pVsStaged } from './p2p-vs-staged.js';

describe('scenario p2p-vs-staged', () => {
  it('peer-to-peer reads reach the published GPUDirect rates (±25 %) and beat staging through host memory', async () => {
    const r = await runP2pVsStaged();
    const f = Object.fromEntries(r.figures.map((x) => [x.id, x]));
    for (const [id, anchor] of [
      ['p2pGBs', ANCHORS.p2pSameSwitchGBs],
      ['crossRootGBs', ANCHORS.p2pCrossRootGBs],
      ['hostGBs', ANCHORS.hostGBs],
    ] as const) {
      expect(f[id]!.anchor).toBe(anchor);
      expect(f[id]!.ratio!, id).toBeGreaterThanOrEqual(0.75);
      expect(f[id]!.ratio!, id).toBeLessThanOrEqual(1.25);
      expect(f[id]!.within).toBe(true);
    }
    expect(r.details.p2pMapping).toBe('BUS_ADDR');
    expect(r.details.crossRootMapping).toBe('THRU_HOST_BRIDGE');
    expect(r.details.mismatches).toBe(0);
    // Staging pays the copy to host memory on top of the NIC's read.
    expect(f['p2pSpeedup']!.simulated).toBeGreaterThan(1.5);
  });
});
