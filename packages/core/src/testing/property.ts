/**
 * Test-only: the environment knobs shared by the property tests. `HMM_PROP_RUNS` (default 200) sets
 * the runs, `HMM_PROP_SEED` replays a seed, `HMM_PROP_STATS` prints event counts after the run.
 *
 * @module
 */

/** Runs per property (`HMM_PROP_RUNS`, default 200). */
export const PROP_RUNS = Number(process.env.HMM_PROP_RUNS ?? 200);

/** fast-check parameters: the runs and, when `HMM_PROP_SEED` is set, the seed to replay. */
export function propParameters(): { numRuns: number; seed?: number } {
  const seed = process.env.HMM_PROP_SEED;
  return seed === undefined ? { numRuns: PROP_RUNS } : { numRuns: PROP_RUNS, seed: Number(seed) };
}

/** Event counts, kept only when `HMM_PROP_STATS` is set. */
export class PropStats {
  private readonly counts: Map<string, number> | null =
    process.env.HMM_PROP_STATS === undefined ? null : new Map();

  /** Counts `n` events of `key` (no-op when stats are off). */
  add(key: string, n = 1): void {
    if (this.counts !== null && n > 0) this.counts.set(key, (this.counts.get(key) ?? 0) + n);
  }

  /** Prints the counts, sorted by key (no-op when stats are off). */
  print(): void {
    if (this.counts === null) return;
    console.log(
      [...this.counts]
        .sort()
        .map(([k, v]) => `${k}: ${v}`)
        .join('\n'),
    );
  }
}
