/**
 * What a scenario is and what it returns: simulated figures, each beside the published anchor it
 * reproduces (if any), the ratio and whether it lies within the ±25 % band.
 *
 * @module
 */
import { HmmError } from '@hmm/core';
import type { Machine } from '@hmm/core';
import type { Anchor } from './anchors.js';

/** Relative band a simulated figure must fall in around its anchor: ±25 %. */
export const ANCHOR_TOLERANCE = 0.25;

/** Run sizes: `quick` keeps a run to seconds (the showcase and tests); `full` uses the published sizes. */
export type ScenarioSize = 'quick' | 'full';

/** Options every scenario accepts. */
export interface ScenarioRunOptions {
  /** Scheduler seed; default 1. */
  readonly seed?: number;
  /** Default `'quick'`. */
  readonly size?: ScenarioSize;
  /**
   * Run on this machine instead of a fresh one (the showcase shares one machine between scenarios).
   * Scenarios that need a machine of their own shape ignore it (see {@link Scenario.sharesMachine}).
   */
  readonly machine?: Machine;
  /** Told of progress: `done` of `total` steps, with a label. */
  readonly onProgress?: (done: number, total: number, label: string) => void;
}

/** One simulated figure. */
export interface Figure {
  /** Stable id within the scenario. */
  readonly id: string;
  /** Human label. */
  readonly label: string;
  readonly unit: string;
  /** The simulated value, in {@link unit}. */
  readonly simulated: number;
  /** The published figure it reproduces, or null (a figure shown for comparison only). */
  readonly anchor: Anchor | null;
  /** `simulated / anchor.value`, or null without an anchor. */
  readonly ratio: number | null;
  /** Whether the ratio lies in [0.75, 1.25]; null without an anchor. */
  readonly within: boolean | null;
  /** How the figure was obtained when it is not a direct measurement (e.g. scaled from a smaller run). */
  readonly note?: string;
}

/** What a scenario run returns. */
export interface ScenarioResult<D = object> {
  readonly scenario: string;
  readonly seed: number;
  readonly size: ScenarioSize;
  /** What was run, in one line (sizes, devices). */
  readonly setup: string;
  readonly figures: readonly Figure[];
  /** Scenario-specific measurements (JSON-safe). */
  readonly details: D;
}

/** A built-in scenario. */
export interface Scenario<D = object> {
  readonly name: string;
  /** One line. */
  readonly description: string;
  /** The anchors its figures are checked against. */
  readonly anchors: readonly Anchor[];
  /** Rough number of progress steps of a run (for the progress bar). */
  readonly steps: number;
  /** True if {@link run} honours {@link ScenarioRunOptions.machine}. */
  readonly sharesMachine: boolean;
  /** RAM a shared machine needs for this scenario (see {@link sharesMachine}). */
  ramBytes(size: ScenarioSize): number;
  run(opts?: ScenarioRunOptions): Promise<ScenarioResult<D>>;
}

/** A figure with its ratio and band check computed. */
export function figure(
  id: string,
  label: string,
  unit: string,
  simulated: number,
  anchor: Anchor | null,
  note?: string,
): Figure {
  if (!Number.isFinite(simulated)) {
    throw new HmmError('EINVAL', `figure ${id}: the simulated value ${String(simulated)} is not a number`);
  }
  if (anchor !== null && anchor.unit !== unit) {
    throw new HmmError('EINVAL', `figure ${id}: unit ${unit} differs from its anchor's (${anchor.unit})`);
  }
  const ratio = anchor === null ? null : simulated / anchor.value;
  return {
    id,
    label,
    unit,
    simulated,
    anchor,
    ratio,
    within: ratio === null ? null : Math.abs(ratio - 1) <= ANCHOR_TOLERANCE + 1e-12,
    ...(note === undefined ? {} : { note }),
  };
}

/** The seed and size of a run, with the defaults applied; EINVAL for a seed that is not a safe integer. */
export function runParams(opts: ScenarioRunOptions | undefined): { seed: number; size: ScenarioSize } {
  const seed = opts?.seed ?? 1;
  if (!Number.isSafeInteger(seed)) {
    throw new HmmError('EINVAL', `scenario seed ${String(seed)} is not an integer`);
  }
  return { seed, size: opts?.size ?? 'quick' };
}

/** Leak check after a scenario: every RAM and device frame must be free again (EIO otherwise). */
export function assertNoLeaks(m: Machine, what: string): void {
  m.checkInvariants();
  const ram = m.mm.mem.allocatedFrames().length;
  const dev = m.mm.mem.allocatedDeviceFrames().length;
  if (ram !== 0 || dev !== 0) {
    throw new HmmError('EIO', `${what}: ${ram} RAM and ${dev} device frames still in use after teardown`);
  }
}

/** Sizes in readable units. */
export function formatBytes(n: number): string {
  const GiB = 1024 ** 3;
  const MiB = 1024 ** 2;
  if (n >= GiB && n % (GiB / 4) === 0) return `${n / GiB} GiB`;
  if (n >= MiB) return `${+(n / MiB).toFixed(2)} MiB`;
  return `${+(n / 1024).toFixed(2)} KiB`;
}
