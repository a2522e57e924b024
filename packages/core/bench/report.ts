/**
 * The bench's result rows, printed as an aligned table and optionally written as JSON.
 *
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, resolve } from 'node:path';

/** PASS/FAIL against a DESIGN §7 target, or null when the row has no target. */
export type Verdict = 'PASS' | 'FAIL' | null;

/**
 * Unit of a row's values: wall-clock nanoseconds or bytes per page, or GB/s (10^9 B/s) of simulated
 * time for a throughput row (the p2p rows).
 */
export type RowUnit = 'ns' | 'B' | 'GB/s';

/** One line of the table. */
export interface Row {
  /** Stable key for JSON consumers. */
  readonly id: string;
  readonly measurement: string;
  readonly unit: RowUnit;
  /** The simulator's figure per 4 KiB page (median of the measured runs for timings), or its GB/s. */
  readonly sim: number;
  /** The kernel's published figure per page (or in GB/s), or null ("n/a"). */
  readonly kernel: number | null;
  readonly kernelSource: string | null;
  /** `sim / kernel`, or a row-specific ratio (see `ratioText`). */
  readonly ratio: number | null;
  /** How the ratio column shows this row (default: `×ratio`). */
  readonly ratioText?: string;
  /** Target in words, e.g. "≤ 62 ns", or null. */
  readonly target: string | null;
  readonly verdict: Verdict;
  /** The measured runs (per-page values), when the row is a timing. */
  readonly samples?: readonly number[];
  /** Warm-up run value, when the row is a timing. */
  readonly warmup?: number;
  /** Extra facts printed under the table and kept in the JSON. */
  readonly details: readonly string[];
}

/** Metadata of a bench run (no timestamps: two runs on one machine differ only in their numbers). */
export interface BenchMeta {
  readonly node: string;
  readonly v8: string;
  readonly platform: string;
  readonly arch: string;
  readonly cpu: string;
  readonly cpus: number;
  readonly runs: number;
  readonly warmupRuns: number;
  readonly statistic: 'median';
  readonly gcExposed: boolean;
  readonly wallSeconds: number;
  readonly peakRssBytes: number;
}

/** Metadata of this process (wall time and peak RSS are filled in by the caller). */
export function hostMeta(runs: number, gcExposed: boolean): Omit<BenchMeta, 'wallSeconds' | 'peakRssBytes'> {
  const c = cpus();
  return {
    node: process.version,
    v8: process.versions.v8,
    platform: process.platform,
    arch: process.arch,
    cpu: c[0]?.model ?? 'unknown',
    cpus: c.length,
    runs,
    warmupRuns: 1,
    statistic: 'median',
    gcExposed,
  };
}

/** Formats a per-page value with its unit. */
export function fmtValue(v: number | null, unit: RowUnit): string {
  if (v === null) return 'n/a';
  if (unit === 'GB/s') return `${v.toFixed(2)} GB/s`;
  if (unit === 'B') return v < 100 ? `${v.toFixed(2)} B` : `${Math.round(v).toLocaleString('en-US')} B`;
  if (v >= 10_000) return `${(v / 1000).toFixed(1)} µs`;
  if (v >= 100) return `${Math.round(v).toLocaleString('en-US')} ns`;
  return `${v.toFixed(1)} ns`;
}

function ratioCell(r: Row): string {
  if (r.ratioText !== undefined) return r.ratioText;
  return r.ratio === null ? '—' : `×${r.ratio.toFixed(r.ratio < 10 ? 2 : 1)}`;
}

/** The table: one line per row, columns aligned (numbers right-aligned), then the row details. */
export function formatTable(rows: readonly Row[]): string {
  const header = ['measurement', 'sim / page', 'kernel / page', 'sim/kernel', 'target', 'verdict'];
  const cells = rows.map((r) => [
    r.measurement,
    fmtValue(r.sim, r.unit),
    fmtValue(r.kernel, r.unit),
    ratioCell(r),
    r.target ?? '—',
    r.verdict ?? '—',
  ]);
  const width = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const right = [false, true, true, true, false, false];
  const line = (c: readonly string[]): string =>
    c
      .map((s, i) => (right[i] ? s.padStart(width[i]!) : s.padEnd(width[i]!)))
      .join('  ')
      .trimEnd();
  const rule = width.map((w) => '─'.repeat(w)).join('  ');
  const out = [line(header), rule, ...cells.map(line), rule];
  const detailed = rows.filter(
    (r) => r.details.length > 0 || r.kernelSource !== null || r.samples !== undefined,
  );
  if (detailed.length > 0) out.push('', 'Details:');
  for (const r of detailed) {
    out.push(`- ${r.measurement}`);
    if (r.samples !== undefined) {
      const runs = r.samples.map((v) => fmtValue(v, r.unit)).join(', ');
      const warm = r.warmup === undefined ? '' : `; warm-up run ${fmtValue(r.warmup, r.unit)}`;
      out.push(`    runs: ${runs}${warm}`);
    }
    for (const d of r.details) out.push(`    ${d}`);
    if (r.kernelSource !== null) out.push(`    kernel figure: ${r.kernelSource}`);
  }
  return out.join('\n');
}

/**
 * Writes the rows as JSON to `path`, resolved against the directory the user ran the command from
 * (`INIT_CWD`, set by pnpm, which runs the script inside packages/core), else the current directory.
 * Returns the absolute path written.
 */
export function writeJson(path: string, meta: BenchMeta, rows: readonly Row[]): string {
  const abs = resolve(process.env.INIT_CWD ?? process.cwd(), path);
  mkdirSync(dirname(abs), { recursive: true });
  writeFileSync(abs, JSON.stringify({ meta, rows }, null, 2) + '\n');
  return abs;
}
