import { createCostModel, isHmmError, PAGE_SIZE } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { CS_THROUGHPUT_SIZES, formatCsThroughput, runCsThroughput } from './cs-throughput.js';

const MiB = 1024 * 1024;
const cost = createCostModel({});

describe('CS throughput: userptr collection vs on-demand faults (issue 8)', () => {
  it('userptr per-CS cost grows with the BO size; on-demand cost stays with the pages touched', async () => {
    const r = await runCsThroughput();
    console.log(formatCsThroughput(r));
    expect(r.rows.map((x) => x.size)).toEqual([...CS_THROUGHPUT_SIZES]);
    const K = 16;
    const touched = K * r.pagesPerJob;
    for (const row of r.rows) {
      expect(row.submissions).toBe(K);
      // Userptr: every CS walks the whole BO; the first one faults it all in; no EAGAIN here.
      expect(row.amdgpu.pagesHandled).toBe(K * row.pages);
      expect(row.amdgpu.pagesFaultedIn).toBe(row.pages);
      expect(row.amdgpu.attempts).toBe(K);
      // Steady-state CS = the walk of every page (+ the job's own small time).
      const walk = row.pages * cost.hmm.rangeFaultPerPresentPageNs;
      expect(row.amdgpu.steadyNs).toBeGreaterThanOrEqual(walk);
      expect(row.amdgpu.steadyNs).toBeLessThan(walk * 1.05 + 50_000);
      expect(row.amdgpu.firstNs).toBeGreaterThan(row.pages * cost.cpu.faultInZeroPerPageNs);
      // On demand: only the touched pages are faulted, once each.
      expect(row.nouveau.pagesHandled).toBe(touched);
      expect(row.nouveau.pagesFaultedIn).toBe(touched);
      expect(row.nouveau.batches).toBeGreaterThanOrEqual(K);
    }
    const first = r.rows[0]!;
    const last = r.rows[r.rows.length - 1]!;
    // ~linear in the BO size: ×1024 in size → well over ×100 in per-CS time, and every step grows
    // the time by at least 60 % of its size factor.
    expect(last.amdgpu.meanNs / first.amdgpu.meanNs).toBeGreaterThan(100);
    for (let i = 1; i < r.rows.length; i++) {
      const grow = r.rows[i]!.size / r.rows[i - 1]!.size;
      expect(r.rows[i]!.amdgpu.meanNs / r.rows[i - 1]!.amdgpu.meanNs).toBeGreaterThan(0.6 * grow);
    }
    // Flat across sizes for on-demand faults.
    const nouveau = r.rows.map((x) => x.nouveau.meanNs);
    expect(Math.max(...nouveau) / Math.min(...nouveau)).toBeLessThan(2);
    // Small BOs: userptr is competitive; 1 GiB: it is far slower.
    expect(first.ratio).toBeLessThan(2);
    expect(last.ratio).toBeGreaterThan(100);
    expect(formatCsThroughput(r)).toMatch(/1 GiB/);
  });

  it('rejects a buffer too small for K disjoint windows', async () => {
    const e = await runCsThroughput({ sizes: [16 * PAGE_SIZE], submissions: 2 }).catch((x: unknown) => x);
    expect(isHmmError(e, 'EINVAL')).toBe(true);
    await expect(runCsThroughput({ sizes: [MiB], pagesPerJob: 0 })).rejects.toThrow(/pagesPerJob/);
  });
});
