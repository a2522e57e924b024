import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { SeededRandom } from './random.js';
import { isHmmError } from '../errors/errno.js';

const seedArb = fc.integer({ min: -(2 ** 40), max: 2 ** 40 });

function expectErrno(fn: () => unknown, code: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isHmmError(caught), `expected HmmError ${code}, got ${String(caught)}`).toBe(true);
  expect((caught as { code: string }).code).toBe(code);
}

describe('SeededRandom', () => {
  it('implements xoshiro128** (reference vector from state [1, 2, 3, 4])', () => {
    const r = SeededRandom.fromState([1, 2, 3, 4]);
    expect([r.nextU32(), r.nextU32(), r.nextU32(), r.nextU32()]).toEqual([11520, 0, 5927040, 70819200]);
  });

  it('same seed ⇒ same sequence, across every method', () => {
    fc.assert(
      fc.property(seedArb, (seed) => {
        const draw = (r: SeededRandom): number[] => [
          r.nextU32(),
          r.nextInt(7),
          r.nextInt(2 ** 40),
          r.nextFloat(),
          r.chance(0.5) ? 1 : 0,
          ...r.shuffle([1, 2, 3, 4, 5, 6]),
        ];
        expect(draw(new SeededRandom(seed))).toEqual(draw(new SeededRandom(seed)));
      }),
    );
  });

  it('different seeds give different streams', () => {
    const a = new SeededRandom(1);
    const b = new SeededRandom(2);
    const c = new SeededRandom(1 + 2 ** 32); // high bits matter too
    const take = (r: SeededRandom): number[] => Array.from({ length: 8 }, () => r.nextU32());
    const [sa, sb, sc] = [take(a), take(b), take(c)];
    expect(sa).not.toEqual(sb);
    expect(sa).not.toEqual(sc);
  });

  it('state() and fromState() continue the same sequence', () => {
    fc.assert(
      fc.property(seedArb, fc.nat(50), (seed, skip) => {
        const r = new SeededRandom(seed);
        for (let i = 0; i < skip; i++) r.nextU32();
        const copy = SeededRandom.fromState(r.state());
        for (let i = 0; i < 10; i++) expect(copy.nextU32()).toBe(r.nextU32());
      }),
    );
  });

  it('nextU32 stays in [0, 2^32) and nextFloat in [0, 1)', () => {
    fc.assert(
      fc.property(seedArb, (seed) => {
        const r = new SeededRandom(seed);
        for (let i = 0; i < 50; i++) {
          const u = r.nextU32();
          expect(Number.isInteger(u) && u >= 0 && u < 2 ** 32).toBe(true);
          const f = r.nextFloat();
          expect(f >= 0 && f < 1).toBe(true);
        }
      }),
    );
  });

  it('nextInt(n) is an integer in [0, n) for any n up to 2^53', () => {
    fc.assert(
      fc.property(
        seedArb,
        fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 2 ** 53 })),
        (seed, n) => {
          const r = new SeededRandom(seed);
          for (let i = 0; i < 20; i++) {
            const x = r.nextInt(n);
            expect(Number.isInteger(x)).toBe(true);
            expect(x).toBeGreaterThanOrEqual(0);
            expect(x).toBeLessThan(n);
          }
        },
      ),
    );
  });

  it('nextInt is close to uniform (chi-square, 10 buckets, fixed seed)', () => {
    const r = new SeededRandom(42);
    const buckets = new Array<number>(10).fill(0);
    const draws = 100_000;
    for (let i = 0; i < draws; i++) buckets[r.nextInt(10)]!++;
    const expected = draws / 10;
    const chi2 = buckets.reduce((s, o) => s + (o - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(27.88); // df = 9, p = 0.001
  });

  it('nextInt rejects n < 1, non-integers and n > 2^53 with EINVAL', () => {
    const r = new SeededRandom(1);
    for (const n of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53 + 2])
      expectErrno(() => r.nextInt(n), 'EINVAL');
  });

  it('chance(p): 0 never, 1 always, about p otherwise; EINVAL outside [0, 1]', () => {
    const r = new SeededRandom(7);
    let hits = 0;
    for (let i = 0; i < 1000; i++) {
      expect(r.chance(0)).toBe(false);
      expect(r.chance(1)).toBe(true);
      if (r.chance(0.25)) hits++;
    }
    expect(hits).toBeGreaterThan(200);
    expect(hits).toBeLessThan(300);
    for (const p of [-0.1, 1.01, Number.NaN]) expectErrno(() => r.chance(p), 'EINVAL');
  });

  it('shuffle permutes in place and returns the same array', () => {
    fc.assert(
      fc.property(seedArb, fc.array(fc.integer(), { maxLength: 40 }), (seed, xs) => {
        const copy = [...xs];
        const out = new SeededRandom(seed).shuffle(copy);
        expect(out).toBe(copy);
        expect([...out].sort((a, b) => a - b)).toEqual([...xs].sort((a, b) => a - b));
      }),
    );
  });

  it('shuffle reaches every permutation of 3 elements', () => {
    const r = new SeededRandom(3);
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(r.shuffle(['a', 'b', 'c']).join(''));
    expect(seen.size).toBe(6);
  });

  it('rejects bad seeds and states with EINVAL', () => {
    expectErrno(() => new SeededRandom(1.5), 'EINVAL');
    expectErrno(() => new SeededRandom(Number.NaN), 'EINVAL');
    expectErrno(() => SeededRandom.fromState([0, 0, 0, 0]), 'EINVAL');
    expectErrno(() => SeededRandom.fromState([1, 2, 3, 2 ** 32]), 'EINVAL');
  });
});
