import { describe, it, expect } from 'vitest';
import {
  COST_SOURCES,
  DEFAULT_COST_MODEL,
  bandwidthNs,
  costValue,
  createCostModel,
  dmaTransferNs,
} from './cost-model.js';
import type { CostModel, DeepPartial } from './cost-model.js';
import { HmmError } from '../errors/errno.js';

function leafKeys(model: object, prefix = ''): string[] {
  return Object.entries(model).flatMap(([k, v]) =>
    typeof v === 'object' && v !== null ? leafKeys(v as object, `${prefix}${k}.`) : [`${prefix}${k}`],
  );
}

function expectEinval(fn: () => unknown, text: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(HmmError);
  expect((caught as HmmError).code).toBe('EINVAL');
  expect((caught as HmmError).message).toContain(text);
}

describe('cost model defaults', () => {
  it('every leaf of the defaults has exactly one source row, and every row names a leaf', () => {
    const leaves = leafKeys(DEFAULT_COST_MODEL).sort();
    const sourced = COST_SOURCES.map((s) => s.key).sort();
    expect(sourced).toEqual(leaves);
    expect(new Set(sourced).size).toBe(sourced.length);
  });

  it('each source row carries the default value, a unit, a tag and a non-trivial citation', () => {
    for (const row of COST_SOURCES) {
      expect(row.value, row.key).toBe(costValue(DEFAULT_COST_MODEL, row.key));
      expect(['P', 'S', 'D', 'E'], row.key).toContain(row.tag);
      expect(row.source.length, row.key).toBeGreaterThan(15);
      expect(row.unit.length, row.key).toBeGreaterThan(0);
    }
  });

  it('matches the perf-anchors table', () => {
    const d = DEFAULT_COST_MODEL;
    expect(d.cpu.pageWalkNs).toBe(350);
    expect(d.gup.pinPerPageNs).toBe(62);
    expect(d.gup.unpinPerPageNs).toBe(15);
    expect(d.cpu.faultInZeroPerPageNs).toBe(950);
    expect(d.hmm.rangeFaultPerPresentPageNs).toBe(60);
    expect([d.notifier.cpuShootdownNs, d.notifier.cpuShootdownPerCpuNs, d.notifier.deviceTlbInvalNs]).toEqual(
      [1000, 200, 5000],
    );
    expect([d.gpuFault.batchSize, d.gpuFault.maxBatchesPerService, d.gpuFault.serviceBaseNs]).toEqual([
      256, 20, 45_000,
    ]);
    expect([d.gpuFault.prefetchThreshold, d.gpuFault.vaBlockBytes, d.gpuFault.prefetchLeafBytes]).toEqual([
      0.51,
      2 << 20,
      64 << 10,
    ]);
    expect(d.gpuFault.thrashingWindowNs).toBe(500_000);
    expect([
      d.migrate.cpuPerPageNs,
      d.migrate.cpuPer2MiBNs,
      d.migrate.setupNs4K,
      d.migrate.setupNsTHP,
    ]).toEqual([1400, 22_000, 19_000, 3000]);
    expect([d.link.pcie3PeakGBs, d.link.pcie4PeakGBs, d.link.pcie5PeakGBs]).toEqual([15.75, 31.5, 63]);
    expect([
      d.link.pcieEfficiency,
      d.link.p2pCrossRootPenalty,
      d.link.nvlinkC2CH2DGBs,
      d.link.nvlinkC2CD2HGBs,
    ]).toEqual([0.75, 0.5, 375, 297]);
    expect([d.mem.gpuHbmGBs, d.mem.hostGBs]).toEqual([2500, 200]);
    expect([d.odp.faultNs, d.odp.pathologicalMultiplier]).toEqual([100_000, 1000]);
    expect([d.rdma.regPinPerPageNs, d.rdma.regPinFaultInPerPageNs]).toEqual([62, 950]);
    expect(COST_SOURCES.find((s) => s.key === 'hmm.rangeFaultPerPresentPageNs')?.tag).toBe('E');
    expect(COST_SOURCES.find((s) => s.key === 'gpuFault.batchSize')?.tag).toBe('P');
    expect(COST_SOURCES.filter((s) => s.key.startsWith('swap.')).every((s) => s.tag === 'E')).toBe(true);
  });

  it('reproduces calibration check (c): 8 GiB of 4 KiB long-term pins ≈ 130 ms', () => {
    const pages = (8 * 2 ** 30) / 4096;
    const ms = (pages * DEFAULT_COST_MODEL.gup.pinPerPageNs) / 1e6;
    expect(ms).toBeGreaterThan(125);
    expect(ms).toBeLessThan(135);
  });

  it('is frozen, deeply', () => {
    expect(Object.isFrozen(DEFAULT_COST_MODEL)).toBe(true);
    expect(Object.isFrozen(DEFAULT_COST_MODEL.cpu)).toBe(true);
    expect(Object.isFrozen(COST_SOURCES)).toBe(true);
  });
});

describe('createCostModel', () => {
  it('returns the defaults when given no overrides, as a new frozen object', () => {
    const m = createCostModel();
    expect(m).toEqual(DEFAULT_COST_MODEL);
    expect(m).not.toBe(DEFAULT_COST_MODEL);
    expect(Object.isFrozen(m.gpuFault)).toBe(true);
  });

  it('merges nested overrides and leaves the rest (and the defaults) alone', () => {
    const m = createCostModel({ cpu: { pageWalkNs: 500 }, link: { pcieEfficiency: 0.9 } });
    expect(m.cpu.pageWalkNs).toBe(500);
    expect(m.cpu.faultInZeroPerPageNs).toBe(950);
    expect(m.link.pcieEfficiency).toBe(0.9);
    expect(m.link.pcie4PeakGBs).toBe(31.5);
    expect(DEFAULT_COST_MODEL.cpu.pageWalkNs).toBe(350);
    expect(Object.isFrozen(m.cpu)).toBe(true);
    expect(createCostModel({ notifier: { deviceTlbInvalNs: 0 } }).notifier.deviceTlbInvalNs).toBe(0);
  });

  it('rejects unknown groups and keys with EINVAL', () => {
    expectEinval(
      () => createCostModel({ gpu: { x: 1 } } as unknown as DeepPartial<CostModel>),
      "unknown cost group 'gpu'",
    );
    expectEinval(
      () => createCostModel({ cpu: { pageWalkUs: 1 } } as unknown as DeepPartial<CostModel>),
      "unknown cost 'cpu.pageWalkUs'",
    );
    expectEinval(
      () => createCostModel(JSON.parse('{"__proto__": {"x": 1}}') as DeepPartial<CostModel>),
      'unknown cost group',
    );
    expectEinval(
      () => createCostModel({ cpu: { toString: 1 } } as unknown as DeepPartial<CostModel>),
      'unknown cost',
    );
  });

  it('rejects non-finite, negative and out-of-range values with EINVAL', () => {
    expectEinval(() => createCostModel({ cpu: { pageWalkNs: -1 } }), 'cpu.pageWalkNs must not be negative');
    expectEinval(() => createCostModel({ cpu: { pageWalkNs: Number.NaN } }), 'finite');
    expectEinval(() => createCostModel({ mem: { hostGBs: Infinity } }), 'finite');
    expectEinval(() => createCostModel({ cpu: { pageWalkNs: '5' as unknown as number } }), 'finite');
    expectEinval(() => createCostModel({ mem: { hostGBs: 0 } }), '> 0');
    expectEinval(() => createCostModel({ gpuFault: { batchSize: 2.5 } }), 'integer');
    expectEinval(() => createCostModel({ gpuFault: { prefetchThreshold: 1.2 } }), 'fraction');
    expectEinval(
      () => createCostModel({ cpu: 3 as unknown as DeepPartial<CostModel['cpu']> }),
      'must be an object',
    );
  });
});

describe('dmaTransferNs (UVMSmart size curve)', () => {
  // a = efficiency × link = 0.75 × 16 = 12, as in UVMSmart's 16 GB/s configuration
  const cost = DEFAULT_COST_MODEL;
  const link16 = 16;
  const within = (actual: number, expected: number, tol = 0.05): void => {
    expect(Math.abs(actual - expected) / expected, `${actual} vs ${expected}`).toBeLessThan(tol);
  };

  it('reproduces the perf-anchors derived points within 5%', () => {
    within(dmaTransferNs(cost, 4096, link16), 1_800); // 4 KiB ≈ 1.8 µs (2.17 GB/s)
    within(dmaTransferNs(cost, 64 * 1024, link16), 5_900); // 64 KiB ≈ 5.9 µs (10.4 GB/s)
    within(dmaTransferNs(cost, 2 * 1024 * 1024, link16), 164_000); // 2 MiB ≈ 164 µs (11.9 GB/s)
  });

  it('is monotonic in size and faster per byte for larger transfers, and scales with the link', () => {
    let prevNs = 0;
    let prevNsPerByte = Infinity;
    for (let bytes = 4096; bytes <= 64 << 20; bytes *= 2) {
      const ns = dmaTransferNs(cost, bytes, link16);
      expect(ns).toBeGreaterThan(prevNs);
      expect(ns / bytes).toBeLessThan(prevNsPerByte);
      prevNs = ns;
      prevNsPerByte = ns / bytes;
    }
    within(dmaTransferNs(cost, 2 << 20, 32) * 2, dmaTransferNs(cost, 2 << 20, 16), 1e-9);
    expect(dmaTransferNs(cost, 0, link16)).toBe(0);
  });

  it('rejects bad sizes and links with EINVAL', () => {
    expectEinval(() => dmaTransferNs(cost, -1, link16), 'bytes');
    expectEinval(() => dmaTransferNs(cost, Number.NaN, link16), 'bytes');
    expectEinval(() => dmaTransferNs(cost, 4096, 0), 'link bandwidth');
    expectEinval(
      () => dmaTransferNs(createCostModel({ link: { pcieEfficiency: 0 } }), 4096, 16),
      'link bandwidth',
    );
  });

  it('bandwidthNs: GB/s is bytes per ns', () => {
    expect(bandwidthNs(2500, 2500)).toBe(1);
    expect(bandwidthNs(0, 1)).toBe(0);
    expectEinval(() => bandwidthNs(1, 0), 'bandwidth');
  });
});
