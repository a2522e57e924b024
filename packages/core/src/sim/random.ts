/**
 * Seeded pseudo-random numbers: the only randomness the simulator may use.
 *
 * @module
 */

import { HmmError } from '../errors/errno.js';

const TWO_POW_32 = 0x1_0000_0000;
const TWO_POW_53 = 2 ** 53;

/** splitmix32 step: turns a 32-bit state into a well-mixed 32-bit output (used only for seeding). */
function splitmix32(state: number): number {
  let z = (state + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
  z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
  return (z ^ (z >>> 15)) >>> 0;
}

/** Four 32-bit words of xoshiro128** state. */
export type RandomState = readonly [number, number, number, number];

/**
 * A small, fast, seeded PRNG: xoshiro128** (Blackman & Vigna), seeded through splitmix32 from an
 * integer. Same seed ⇒ same sequence, on every platform. Not cryptographic.
 *
 * Kernel counterpart: none exact; it plays the role of `prandom_u32_state()` (lib/random32.c), a
 * seedable per-user generator, so that every random choice of the simulation is reproducible.
 */
export class SeededRandom {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  /**
   * @param seed - any safe integer (negative and > 2^32 allowed); EINVAL otherwise.
   */
  constructor(seed = 1) {
    if (!Number.isSafeInteger(seed)) {
      throw new HmmError('EINVAL', `SeededRandom: seed must be a safe integer, got ${String(seed)}`);
    }
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    let x = (lo ^ splitmix32(hi ^ 0x5bd1e995)) >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      return splitmix32(x);
    };
    this.#s0 = next();
    this.#s1 = next();
    this.#s2 = next();
    this.#s3 = next();
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1; // all-zero state is a fixed point
  }

  /** A generator whose state is exactly `state` (for snapshots and test vectors). EINVAL if all zero or not u32. */
  static fromState(state: RandomState): SeededRandom {
    if (state.length !== 4 || !state.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32)) {
      throw new HmmError('EINVAL', 'SeededRandom.fromState: state must be four unsigned 32-bit integers');
    }
    if (state.every((w) => w === 0)) {
      throw new HmmError(
        'EINVAL',
        'SeededRandom.fromState: the all-zero state is a fixed point of xoshiro128**',
      );
    }
    const r = new SeededRandom(0);
    [r.#s0, r.#s1, r.#s2, r.#s3] = state;
    return r;
  }

  /** The current state; `SeededRandom.fromState(r.state())` continues the same sequence. */
  state(): RandomState {
    return [this.#s0, this.#s1, this.#s2, this.#s3];
  }

  /** Next unsigned 32-bit integer, uniform over [0, 2^32). */
  nextU32(): number {
    const s1 = this.#s1;
    const r = Math.imul(s1, 5);
    const result = Math.imul((r << 7) | (r >>> 25), 9) >>> 0;
    const t = s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= s1;
    this.#s1 = s1 ^ this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = (this.#s3 << 11) | (this.#s3 >>> 21);
    // keep every word unsigned so state() round-trips
    this.#s0 >>>= 0;
    this.#s1 >>>= 0;
    this.#s2 >>>= 0;
    this.#s3 >>>= 0;
    return result;
  }

  /**
   * Uniform integer in [0, n), without modulo bias (rejection sampling).
   * EINVAL unless `n` is an integer with 1 ≤ n ≤ 2^53.
   */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_53) {
      throw new HmmError('EINVAL', `nextInt(n): n must be an integer in [1, 2^53], got ${String(n)}`);
    }
    if (n <= TWO_POW_32) {
      // Largest multiple of n that fits in 2^32: values at or above it would bias the result.
      const limit = TWO_POW_32 - (TWO_POW_32 % n);
      for (;;) {
        const x = this.nextU32();
        if (x < limit) return x % n;
      }
    }
    const limit = TWO_POW_53 - (TWO_POW_53 % n);
    for (;;) {
      const x = this.#next53();
      if (x < limit) return x % n;
    }
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    return this.#next53() / TWO_POW_53;
  }

  /** True with probability `p`; EINVAL unless 0 ≤ p ≤ 1. `chance(0)` is always false, `chance(1)` always true. */
  chance(p: number): boolean {
    if (!(p >= 0 && p <= 1)) {
      throw new HmmError('EINVAL', `chance(p): p must be a probability in [0, 1], got ${String(p)}`);
    }
    return this.nextFloat() < p;
  }

  /** Shuffles `array` in place (Fisher–Yates, uniform over permutations) and returns it. */
  shuffle<T>(array: T[]): T[] {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = array[i] as T;
      array[i] = array[j] as T;
      array[j] = tmp;
    }
    return array;
  }

  #next53(): number {
    const hi = this.nextU32() >>> 11; // 21 bits
    const lo = this.nextU32(); // 32 bits
    return hi * TWO_POW_32 + lo;
  }
}
