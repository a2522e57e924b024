/**
 * Timing helpers shared by the measurements. Wall-clock time is allowed here (bench code), never in
 * `src/`: the simulator itself only knows simulated time.
 *
 * Every measurement runs once as a warm-up (JIT, host page faults on first use of memory), then
 * `runs` more times; the reported figure is the median of those `runs`.
 *
 * @module
 */

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

/** Settings of one benchmark run. */
export interface BenchConfig {
  /** Measured runs per measurement, after one warm-up run (env `BENCH_RUNS`, default 3). */
  readonly runs: number;
  /** Prints progress lines while measuring. */
  readonly log: (line: string) => void;
}

/** Reads `BENCH_RUNS` (a positive integer; default 3). */
export function readRuns(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.BENCH_RUNS;
  if (raw === undefined || raw === '') return 3;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new Error(`BENCH_RUNS must be a positive integer, got '${raw}'`);
  return n;
}

const gcFn = (globalThis as { gc?: () => void }).gc;

/** True when node runs with `--expose-gc` (the `bench` script passes it). */
export const gcExposed = gcFn !== undefined;

/** Runs a full garbage collection if exposed, so one run's garbage is not collected in the next run's timing. */
export function collect(): void {
  gcFn?.();
}

/** Wall-clock nanoseconds taken by `fn` (after a full GC, outside the timing). */
export async function timeNs(fn: () => Promise<unknown> | unknown): Promise<number> {
  collect();
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0);
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error('median of nothing');
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Values of one measurement: the warm-up run and the measured runs. */
export interface Series {
  readonly warmup: number;
  readonly samples: readonly number[];
  readonly median: number;
}

/**
 * Calls `one(run)` for run 0 (warm-up) then runs 1..`cfg.runs`. `one` does its own setup and returns
 * the named values of that run (usually timed wall-clock ns per page of the measured parts); each name
 * gets a {@link Series}.
 */
export async function repeat<K extends string>(
  cfg: BenchConfig,
  what: string,
  one: (run: number) => Promise<Record<K, number>>,
): Promise<Record<K, Series>> {
  const warm = await one(0);
  const runs: Record<K, number>[] = [];
  for (let r = 1; r <= cfg.runs; r++) runs.push(await one(r));
  const out = {} as Record<K, Series>;
  for (const k of Object.keys(warm) as K[]) {
    const samples = runs.map((v) => v[k]);
    out[k] = { warmup: warm[k], samples, median: median(samples) };
    const list = samples.map((s) => s.toFixed(1)).join(', ');
    cfg.log(
      `  ${what} ${k}: [${list}] (warm-up ${warm[k].toFixed(1)}) → median ${median(samples).toFixed(1)}`,
    );
  }
  return out;
}

/** Bytes as a short human string (binary units). */
export function fmtBytes(n: number): string {
  const abs = Math.abs(n);
  if (abs >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (abs >= MiB) return `${(n / MiB).toFixed(2)} MiB`;
  if (abs >= KiB) return `${(n / KiB).toFixed(1)} KiB`;
  return `${n} B`;
}

/** Integer with thousands separators. */
export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}
