import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DEVICE_MMU_VPN_LIMIT, DeviceMmu, DevPerm } from './device-mmu.js';

const MAX_VPN = DEVICE_MMU_VPN_LIMIT - 1;
const RW = DevPerm.READ | DevPerm.WRITE;

function entries(mmu: DeviceMmu, start = 0, end = DEVICE_MMU_VPN_LIMIT): [number, number, number][] {
  const out: [number, number, number][] = [];
  mmu.forEachEntry(start, end, (vpn, pfn, perm) => out.push([vpn, pfn, perm]));
  return out;
}

describe('DeviceMmu', () => {
  it('sets, looks up, replaces and clears entries', () => {
    const mmu = new DeviceMmu(3);
    expect(mmu.asid).toBe(3);
    expect(mmu.lookup(5)).toBe(0);
    expect(mmu.pfnOf(5)).toBe(-1);
    mmu.set(5, 42, DevPerm.READ);
    mmu.set(MAX_VPN, 0xffff_ffff, RW | DevPerm.ATOMIC);
    expect(mmu.size).toBe(2);
    expect(mmu.lookup(5)).toBe(DevPerm.READ);
    expect(mmu.pfnOf(5)).toBe(42);
    expect(mmu.pfnOf(MAX_VPN)).toBe(0xffff_ffff);
    mmu.set(5, 43, RW); // replace: size unchanged
    expect(mmu.size).toBe(2);
    expect(entries(mmu)).toEqual([
      [5, 43, RW],
      [MAX_VPN, 0xffff_ffff, 7],
    ]);
    expect(mmu.clearRange(0, 5)).toBe(0);
    expect(mmu.clearRange(5, 6)).toBe(1);
    expect(mmu.lookup(5)).toBe(0);
    expect(mmu.clearAll()).toBe(1);
    expect(mmu.size).toBe(0);
    expect(mmu.leafCount).toBe(0);
  });

  it('frees an emptied leaf and reuses its slot without growing', () => {
    const mmu = new DeviceMmu(0);
    for (let i = 0; i < 4; i++) mmu.set(i * 512, i, DevPerm.READ);
    const bytes = mmu.metadataBytes;
    expect(mmu.leafCount).toBe(4);
    expect(mmu.clearRange(512, 1024)).toBe(1);
    expect(mmu.leafCount).toBe(3);
    mmu.set(10 * 512 + 7, 9, DevPerm.WRITE);
    expect(mmu.leafCount).toBe(4);
    expect(mmu.metadataBytes).toBe(bytes);
    expect(mmu.pfnOf(10 * 512 + 7)).toBe(9);
    expect(mmu.lookup(10 * 512 + 6)).toBe(0); // the reused leaf came back clean
  });

  it('rejects bad input and changes nothing', () => {
    const mmu = new DeviceMmu(0);
    expect(() => mmu.set(-1, 1, 1)).toThrow(/EINVAL.*virtual page number/);
    expect(() => mmu.set(DEVICE_MMU_VPN_LIMIT, 1, 1)).toThrow(/EINVAL/);
    expect(() => mmu.set(1.5, 1, 1)).toThrow(/EINVAL/);
    expect(() => mmu.set(1, 2 ** 32, 1)).toThrow(/EINVAL.*u32/);
    expect(() => mmu.set(1, 1, 0)).toThrow(/EINVAL.*DevPerm/);
    expect(() => mmu.set(1, 1, 8)).toThrow(/EINVAL.*DevPerm/);
    expect(() => mmu.clearRange(5, 4)).toThrow(/EINVAL.*above/);
    expect(() => mmu.forEachEntry(0, DEVICE_MMU_VPN_LIMIT + 1, () => {})).toThrow(/EINVAL/);
    expect(mmu.size).toBe(0);
    expect(mmu.leafCount).toBe(0);
  });

  it('a sparse table over the whole range costs leaves only where entries are', () => {
    const mmu = new DeviceMmu(0);
    mmu.set(0, 1, 1);
    mmu.set(MAX_VPN, 2, 1);
    expect(mmu.leafCount).toBe(2);
    // A range of 2^35 pages is walked through the two live leaves, not 2^26 probes.
    expect(entries(mmu).map((e) => e[0])).toEqual([0, MAX_VPN]);
    expect(mmu.clearRange(0, DEVICE_MMU_VPN_LIMIT)).toBe(2);
  });

  it('property: behaves like a Map under random set / clearRange / clearAll', () => {
    const vpnArb = fc.oneof(
      fc.integer({ min: 0, max: 2048 }),
      fc.integer({ min: MAX_VPN - 2048, max: MAX_VPN }),
      fc.integer({ min: 0, max: MAX_VPN }),
    );
    const opArb = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.record({
          kind: fc.constant('set' as const),
          vpn: vpnArb,
          pfn: fc.integer({ min: 0, max: 0xffff_ffff }),
          perm: fc.integer({ min: 1, max: 7 }),
        }),
      },
      {
        weight: 3,
        arbitrary: fc
          .tuple(vpnArb, fc.integer({ min: 0, max: 3000 }))
          .map(([start, n]) => ({ kind: 'clear' as const, start, end: Math.min(start + n, MAX_VPN + 1) })),
      },
      { weight: 1, arbitrary: fc.constant({ kind: 'clearAll' as const }) },
    );
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 120 }), vpnArb, vpnArb, (ops, a, b) => {
        const mmu = new DeviceMmu(1);
        const model = new Map<number, [number, number]>();
        for (const op of ops) {
          if (op.kind === 'set') {
            mmu.set(op.vpn, op.pfn, op.perm);
            model.set(op.vpn, [op.pfn, op.perm]);
          } else if (op.kind === 'clear') {
            let n = 0;
            for (const vpn of [...model.keys()]) {
              if (vpn >= op.start && vpn < op.end) {
                model.delete(vpn);
                n++;
              }
            }
            expect(mmu.clearRange(op.start, op.end)).toBe(n);
          } else {
            expect(mmu.clearAll()).toBe(model.size);
            model.clear();
          }
          expect(mmu.size).toBe(model.size);
        }
        const sorted = [...model.entries()]
          .sort((x, y) => x[0] - y[0])
          .map(([vpn, [pfn, perm]]) => [vpn, pfn, perm]);
        expect(entries(mmu)).toEqual(sorted);
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        expect(entries(mmu, lo, hi)).toEqual(sorted.filter(([vpn]) => vpn! >= lo && vpn! < hi));
        for (const [vpn, [pfn, perm]] of model) {
          expect(mmu.lookup(vpn)).toBe(perm);
          expect(mmu.pfnOf(vpn)).toBe(pfn);
        }
        expect(mmu.lookup(lo)).toBe(model.get(lo)?.[1] ?? 0);
        // Every live leaf holds at least one entry (empty leaves are freed).
        const leaves = new Set([...model.keys()].map((v) => Math.floor(v / 512)));
        expect(mmu.leafCount).toBe(leaves.size);
      }),
      { numRuns: 200, seed: 20260101 },
    );
  });
});
