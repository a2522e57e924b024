import { PAGE_SIZE, defaultCommandLatency, createCostModel } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { MLX5_DEFAULT_MIN_RNR_TIMER_NS, MLX5_UMR_PER_ENTRY_NS } from './hca.js';
import { formatPinVsOdp, odpResidentBound, pinVsOdpLayout, runPinVsOdp } from './pin-vs-odp.js';
import type { PinVsOdpResult } from './pin-vs-odp.js';

const GIB = 1024 ** 3;
const PAGES = (4 * GIB) / PAGE_SIZE; // 1,048,576
const cost = createCostModel({});

describe('scenario: pinned registration vs ODP on a 4 GiB buffer, 5 % touched', () => {
  let r: PinVsOdpResult;

  it('runs both modes on 4 GiB and tears each down cleanly', async () => {
    r = await runPinVsOdp({
      bufferBytes: 4 * GIB,
      touchFraction: 0.05,
      regions: 4,
      messageBytes: 1024 * 1024,
    });
    console.log(`\n${formatPinVsOdp(r)}\n`);
    // runPinVsOdpMode checks m.checkInvariants() and that no frame is left after teardown.
    expect(r.pinned.pages).toBe(PAGES);
    expect(r.odp.pages).toBe(PAGES);
    expect(r.pinned.touchedPages).toBe(Math.round(PAGES * 0.05));
    expect(r.odp.touchedPages).toBe(r.pinned.touchedPages);
  }, 120_000);

  it('pinned registration costs ≈ 1M pages × the published pin + fault-in cost', () => {
    const p = r.pinned;
    // The buffer is untouched before registration: every page is faulted in, zeroed and pinned.
    expect(p.pinModelNs).toBe(PAGES * cost.rdma.regPinFaultInPerPageNs);
    const lat = defaultCommandLatency(cost);
    expect(p.umrModelNs).toBe(lat.mapBaseNs + PAGES * MLX5_UMR_PER_ENTRY_NS);
    // Registration = pin time + one UMR writing the whole MTT, and nothing else.
    expect(p.regNs).toBeCloseTo(p.pinModelNs + p.umrModelNs, 0);
    // Dominated by the per-page pin cost: within 1 % of 1M × 950 ns (the UMR is the rest).
    expect(p.regNs / p.pinModelNs).toBeGreaterThanOrEqual(1);
    expect(p.regNs / p.pinModelNs).toBeLessThan(1.01);
    expect(p.regNs).toBeGreaterThan(0.9e9); // ≈ 1 s of simulated time for 4 GiB
  });

  it('ODP registration is orders of magnitude cheaper and pins nothing', () => {
    expect(r.odp.regNs * 1000).toBeLessThan(r.pinned.regNs);
    expect(r.odp.afterReg).toEqual({ frames: 0, pinnedFrames: 0, rssPages: 0, mappedPages: 0 });
  });

  it('the pinned MR holds all 1,048,576 frames pinned from registration on', () => {
    for (const at of [r.pinned.afterReg, r.pinned.afterTouch]) {
      expect(at.pinnedFrames).toBe(PAGES);
      expect(at.frames).toBe(PAGES);
      expect(at.rssPages).toBe(PAGES);
      expect(at.mappedPages).toBe(PAGES);
    }
    // Its writes never fault.
    expect(r.pinned.hcaStats.pageFaultEvents).toBe(0);
    expect(r.pinned.rnrNaks).toBe(0);
    // Deregistration unpins every page.
    expect(r.pinned.deregNs).toBeGreaterThanOrEqual(PAGES * cost.gup.unpinPerPageNs);
  });

  it('the ODP MR pins nothing and holds ≈ 5 % resident after the writes', () => {
    const o = r.odp;
    expect(o.afterTouch.pinnedFrames).toBe(0);
    // Every touched page is resident; beyond it only the post-fault prefetch (≤ 4 MiB per fault event).
    expect(o.afterTouch.frames).toBeGreaterThanOrEqual(o.touchedPages);
    expect(o.afterTouch.frames).toBeLessThanOrEqual(odpResidentBound(o));
    expect(o.afterTouch.frames / PAGES).toBeGreaterThanOrEqual(0.05);
    expect(o.afterTouch.frames / PAGES).toBeLessThan(0.055);
    expect(o.afterTouch.rssPages).toBe(o.afterTouch.frames);
    expect(o.afterTouch.mappedPages).toBe(o.afterTouch.frames);
    // The writes faulted: one RNR NAK per page-fault event, every fault resolved.
    expect(o.hcaStats.pageFaultEvents).toBeGreaterThan(0);
    expect(o.hcaStats.pageFaultErrors).toBe(0);
    expect(o.hcaStats.pageFaultsResolved).toBe(o.hcaStats.pageFaultEvents);
    expect(o.rnrNaks).toBe(o.hcaStats.pageFaultEvents);
    expect(o.mrStats.faultEvents).toBe(o.hcaStats.pageFaultEvents);
    expect(o.mrStats.faults + o.mrStats.prefetchedPages).toBeGreaterThanOrEqual(o.afterTouch.mappedPages);
    // Faults cost time the pinned MR does not pay: the requester waits one RNR timer per fault
    // (the fault work, cost.odp.faultNs, and the prefetch run within it).
    expect(cost.odp.faultNs).toBeLessThan(MLX5_DEFAULT_MIN_RNR_TIMER_NS);
    expect(o.touchNs - r.pinned.touchNs).toBeGreaterThanOrEqual(
      0.999 * o.rnrNaks * MLX5_DEFAULT_MIN_RNR_TIMER_NS,
    );
    // The memory held is 20× smaller than the pinned MR's.
    expect(o.afterTouch.frames * 19).toBeLessThan(r.pinned.afterTouch.frames);
  });

  it('the data written is correct in both modes', () => {
    for (const x of [r.pinned, r.odp]) {
      expect(x.checkedBytes).toBeGreaterThan(0);
      expect(x.mismatches).toBe(0);
      expect(x.hcaStats.wireBytes).toBe(x.touchedPages * PAGE_SIZE);
    }
  });

  it('the layout spreads 5 % of the pages over evenly spaced runs', () => {
    const l = pinVsOdpLayout(4 * GIB, 0.05, 4, 1024 * 1024);
    const total = l.reduce((s, [, len]) => s + len, 0) / PAGE_SIZE;
    expect(total).toBe(Math.round(PAGES * 0.05));
    const starts = [...new Set(l.map(([off]) => Math.floor(off / GIB)))];
    expect(starts).toEqual([0, 1, 2, 3]);
    for (let i = 1; i < l.length; i++) expect(l[i]![0]).toBeGreaterThan(l[i - 1]![0]);
  });
});
