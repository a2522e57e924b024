/**
 * The programmatic runner: plans every catalogue case against a driver's manifest, runs the ones
 * it can and reports the rest as skipped with the reason. No test framework needed. Known failures
 * are declared with {@link Expectations}; a case expected to fail that passes is an error.
 *
 * ```ts
 * const report = await runConformance(myFactory, { name: 'mine', capabilities: ['mirror'] }, {
 *   expectations: { 'hmm.anon_write_child': { expect: 'fail', reason: 'fork not handled yet' } },
 *   onProgress: (e) => e.type === 'case-finished' && console.log(e.result.status, e.result.id),
 * });
 * if (!report.ok) console.error(formatReport(report));
 * ```
 *
 * @module
 */
import { HmmSanitizer, TraceRecorder } from '@hmm/core';
import type { TraceEvent } from '@hmm/core';
import { CASES, findCase } from './catalog.js';
import type { Capability, CaseInfo, Variant } from './catalog.js';
import { ConformanceFailure } from './assert.js';
import { IMPLEMENTATIONS, groupOf } from './cases/index.js';
import type { CaseFn, GroupName } from './cases/index.js';
import { expectationFor, validateExpectations } from './expectations.js';
import type { Expectations } from './expectations.js';
import { setImporterWatch } from './reference/watch.js';
import type { ImporterWatch } from './reference/watch.js';
import type { ConformanceFactory, ConformanceManifest, ConformanceTarget, P2pTarget } from './target.js';

/** Default first seed of every case. */
export const DEFAULT_SEED = 1;
/** Default number of seeds a seed-exploring case (anon_teardown) runs over. */
export const DEFAULT_SEEDS = 20;

/** Options of {@link runConformance} and the vitest suite. */
export interface RunOptions {
  /** Only these case ids (unknown ids throw); default all. */
  readonly only?: readonly string[];
  /** Seeds for seed-exploring cases (default {@link DEFAULT_SEEDS}). */
  readonly seeds?: number;
  /** First seed of every case (default {@link DEFAULT_SEED}); a failure's seed reproduces it. */
  readonly seed?: number;
  /** Known failures and cases not to run ({@link runConformance} only; validated, unknown ids throw). */
  readonly expectations?: Expectations;
  /** Called when each planned case starts and when it finishes ({@link runConformance} only). */
  readonly onProgress?: (event: ProgressEvent) => void;
  /**
   * Keep the whole recorded trace of each failure's replay in {@link CaseReplay.events}, and record
   * the last case run even when it passes ({@link ConformanceReport.lastTrace}); for
   * `hmm-conformance run --trace` ({@link runConformance} only). Default false: a replay keeps only
   * its interleaving tail.
   */
  readonly trace?: boolean;
}

/** Events of the interleaving tail a failure's replay keeps ({@link CaseReplay.tail}). */
export const INTERLEAVING_TAIL = 30;

/**
 * A failed case run again at its failing seed with the machine's trace recorded: the simulation is
 * deterministic, so the replay takes the same interleaving and should fail the same way.
 */
export interface CaseReplay {
  /** The first seed of the replay (the failure's seed). */
  readonly seed: number;
  /** Seeds the replay ran over (1 when the failure was at one seed of a seed loop). */
  readonly seeds: number;
  /** Whether the replay failed with the same contract. */
  readonly reproduced: boolean;
  /** The last {@link INTERLEAVING_TAIL} events of the replay's busiest machine, oldest first. */
  readonly tail: readonly TraceEvent[];
  /** Every event of that machine, when {@link RunOptions.trace} asked for them; else null. */
  readonly events: readonly TraceEvent[] | null;
}

/**
 * How a planned case ended: `passed`; `failed`; `skipped` (the driver lacks a capability, or the
 * suite cannot run it); `expected-fail` (failed, as an expectation says: fine); `unexpected-pass`
 * (an expectation says it fails, but it passed: an error, the expectation is stale);
 * `expected-skip` (an expectation says not to run it: not run).
 */
export type CaseStatus =
  'passed' | 'failed' | 'skipped' | 'expected-fail' | 'unexpected-pass' | 'expected-skip';

/** Every {@link CaseStatus}, in report order. */
export const CASE_STATUSES: readonly CaseStatus[] = [
  'passed',
  'failed',
  'unexpected-pass',
  'expected-fail',
  'expected-skip',
  'skipped',
];

/** Whether a case ending with `status` makes the run fail (`failed`, `unexpected-pass`). */
export function isErrorStatus(status: CaseStatus): boolean {
  return status === 'failed' || status === 'unexpected-pass';
}

/** What {@link RunOptions.onProgress} receives: one `case-started` then one `case-finished` per planned case. */
export type ProgressEvent =
  | {
      readonly type: 'case-started';
      /** 0-based position in the plan. */
      readonly index: number;
      readonly total: number;
      readonly id: string;
      readonly variant: Variant;
      /** Whether it will run (false for a skip). */
      readonly runs: boolean;
    }
  | {
      readonly type: 'case-finished';
      readonly index: number;
      readonly total: number;
      readonly result: CaseResult;
    };

/** One planned run of a case in a variant: runnable (`run`) or skipped (`reason`). */
export interface PlannedCase {
  readonly info: CaseInfo;
  readonly group: GroupName;
  readonly variant: Variant;
  /** The implementation, or null when skipped. */
  readonly run: CaseFn | null;
  /** Why it is skipped, or null when runnable. */
  readonly reason: string | null;
  /** The capabilities the driver declared (handed to the case). */
  readonly capabilities: readonly Capability[];
}

/** The outcome of one case in one variant. */
export interface CaseResult {
  readonly id: string;
  readonly kernelRef: string | null;
  readonly title: string;
  readonly variant: Variant;
  readonly status: CaseStatus;
  /**
   * Why it was skipped (the missing capability), or the expectation's reason (`expected-fail`,
   * `unexpected-pass`, `expected-skip`); null otherwise.
   */
  readonly reason: string | null;
  /**
   * The failure (`failed`, `expected-fail`), or for `unexpected-pass` one saying the expectation is
   * stale; null otherwise.
   */
  readonly error: ConformanceFailure | null;
  /** The contract broken (`error.contract`), or null. */
  readonly contract: string | null;
  /** The seed that reproduces the outcome (the failure's seed, else the run's first seed); null when not run. */
  readonly seed: number | null;
  /** Simulated time the case took (ns, summed over the machines it built); null when not run. */
  readonly simNs: number | null;
  /** For a `failed` case, its replay at the failing seed with the trace recorded; null otherwise. */
  readonly replay: CaseReplay | null;
}

/** Results per {@link CaseStatus}, and their total. */
export type ReportCounts = Readonly<Record<CaseStatus, number>> & { readonly total: number };

/** What {@link runConformance} returns. */
export interface ConformanceReport {
  readonly driver: string;
  /** The first seed of every case. */
  readonly seed: number;
  /** Seeds of the seed-exploring cases. */
  readonly seeds: number;
  /** Every planned case in plan order (catalogue order, then variant). */
  readonly results: CaseResult[];
  readonly counts: ReportCounts;
  /** True when no case failed and no expectation went stale (the CLI's exit code 0). */
  readonly ok: boolean;
  /** The results with status `passed`. */
  readonly passed: CaseResult[];
  /** The results with status `failed`. */
  readonly failed: CaseResult[];
  /** The results with status `skipped`. */
  readonly skipped: CaseResult[];
  /**
   * With {@link RunOptions.trace}: the recorded events of the last case that ran (its busiest
   * machine) and the case's id, variant and seed; null otherwise.
   */
  readonly lastTrace: {
    readonly id: string;
    readonly variant: Variant;
    readonly seed: number;
    readonly events: readonly TraceEvent[];
  } | null;
}

function skipReason(info: CaseInfo, variant: Variant, manifest: ConformanceManifest): string | null {
  const missing = info.requires.filter((c) => !manifest.capabilities.includes(c));
  if (missing.length > 0) return `driver '${manifest.name}' lacks capability ${missing.join(', ')}`;
  if (info.requiresAny.length > 0 && !info.requiresAny.some((c) => manifest.capabilities.includes(c))) {
    return `driver '${manifest.name}' lacks every one of ${info.requiresAny.join(', ')}`;
  }
  if (variant === 'device-coherent' && !manifest.capabilities.includes('device-coherent')) {
    return `variant device-coherent needs the 'device-coherent' capability`;
  }
  if (info.unsupported !== null) return `not simulated yet: ${info.unsupported}`;
  if (IMPLEMENTATIONS[info.id] === undefined) return 'not implemented in this version of @hmm/conformance';
  return null;
}

/** Every planned run for `manifest`, optionally of one group and of the `only` ids. */
export function planCases(
  manifest: ConformanceManifest,
  opts: { readonly group?: GroupName; readonly only?: readonly string[] } = {},
): PlannedCase[] {
  for (const id of opts.only ?? []) {
    if (findCase(id) === undefined) throw new Error(`@hmm/conformance: unknown case id '${id}'`);
  }
  const only = opts.only === undefined ? null : new Set(opts.only);
  const out: PlannedCase[] = [];
  for (const info of CASES) {
    const group = groupOf(info);
    if (opts.group !== undefined && group !== opts.group) continue;
    if (only !== null && !only.has(info.id)) continue;
    for (const variant of info.variants) {
      const reason = skipReason(info, variant, manifest);
      out.push({
        info,
        group,
        variant,
        reason,
        run: reason === null ? IMPLEMENTATIONS[info.id]! : null,
        capabilities: manifest.capabilities,
      });
    }
  }
  return out;
}

/**
 * Runs one planned case on fresh targets from `factory` and tears them down. Resolves when it
 * passes; rejects with a located {@link ConformanceFailure} when it fails.
 */
export async function runPlannedCase(
  planned: PlannedCase,
  factory: ConformanceFactory,
  opts: { readonly seed?: number; readonly seeds?: number } = {},
): Promise<void> {
  const { failure } = await executePlannedCase(planned, factory, opts);
  if (failure !== null) throw failure;
}

/** Runs one planned case; its failure (or null) and the simulated ns of its machines. */
async function executePlannedCase(
  planned: PlannedCase,
  factory: ConformanceFactory,
  opts: { readonly seed?: number; readonly seeds?: number; readonly record?: boolean },
): Promise<{ failure: ConformanceFailure | null; simNs: number; events: TraceEvent[] | null }> {
  const { info, variant, run } = planned;
  if (run === null)
    throw new Error(`@hmm/conformance: ${info.id} [${variant}] is skipped: ${planned.reason}`);
  const seed = opts.seed ?? DEFAULT_SEED;
  const where = { caseId: info.id, kernelRef: info.kernelRef, variant, seed };
  const targets: ConformanceTarget[] = [];
  const sanitizers: HmmSanitizer[] = [];
  const recorders: TraceRecorder[] = [];
  const create = async (s: number): Promise<ConformanceTarget> => {
    const made = await factory({ seed: s, variant });
    if (opts.record === true) recorders.push(new TraceRecorder(made.machine.trace));
    // The sanitizer is on for every case: each device a case opens is watched.
    const san = new HmmSanitizer(made.machine.mm, 'record');
    sanitizers.push(san);
    const p2p = made.p2p;
    // Importers are watched too: a stale peer mapping or a frame outside the BAR is a violation.
    const watchImporter: ImporterWatch = (imp, process) => {
      const b = imp.binding;
      if (b !== undefined) san.watch(b.device, b.asid, process.mm, null);
    };
    let wrapped: P2pTarget | undefined;
    if (p2p !== undefined) {
      const createImporter = p2p.createImporter?.bind(p2p);
      wrapped = {
        topology: p2p.topology,
        ...(p2p.exporterEndpoint === undefined ? {} : { exporterEndpoint: p2p.exporterEndpoint }),
        createExporter: (pages) => p2p.createExporter(pages),
        // Left out when the driver has no importer: the case then uses the reference importer.
        ...(createImporter === undefined
          ? {}
          : {
              createImporter: async (process, addr, pages, position) => {
                const imp = await createImporter(process, addr, pages, position);
                watchImporter(imp, process);
                return imp;
              },
            }),
      };
      setImporterWatch(wrapped, watchImporter);
    }
    const t: ConformanceTarget = {
      ...made,
      open: async (process, o) => {
        const dev = await made.open(process, o);
        const b = dev.binding;
        if (b !== undefined) {
          for (const asid of [b.asid, ...(b.asids ?? [])])
            san.watch(b.device, asid, process.mm, b.owner ?? null);
        }
        return dev;
      },
      ...(wrapped === undefined ? {} : { p2p: wrapped }),
    };
    targets.push(t);
    return t;
  };
  let failure: ConformanceFailure | null = null;
  try {
    const t = await create(seed);
    await run(t, {
      seed,
      variant,
      seeds: opts.seeds ?? DEFAULT_SEEDS,
      capabilities: planned.capabilities,
      createTarget: create,
      sanitize: () => {
        for (const san of sanitizers) san.checkAll();
        return sanitizers.flatMap((san) => san.violations);
      },
    });
  } catch (e) {
    failure = ConformanceFailure.from(e, where);
  }
  for (const san of sanitizers) {
    san.checkAll();
    const v = san.violations;
    if (failure === null && v.length > 0) {
      failure = new ConformanceFailure(
        `the driver keeps the mirroring contract (the sanitizer found ${v.length} violation(s); first: ${v[0]!.message})`,
        where,
        { cause: v[0] },
      );
    }
  }
  for (const t of targets) {
    try {
      await t.teardown?.();
    } catch (e) {
      failure ??= ConformanceFailure.from(e, where);
    }
  }
  const simNs = targets.reduce((n, t) => n + t.machine.sched.now, 0);
  for (const r of recorders) r.stop();
  // The busiest machine is the one the case raced on (a seed loop's extra targets stay idle).
  const busiest = recorders.reduce<TraceRecorder | null>(
    (best, r) => (best === null || r.events.length > best.events.length ? r : best),
    null,
  );
  return { failure, simNs, events: busiest?.events ?? null };
}

/**
 * Runs a failed case again at its failing seed with the trace recorded: at that one seed first (the
 * interleaving of a seed loop's failing seed), then, if that does not fail the same way (a check
 * over all the seeds), over the run's seeds from there.
 */
async function replayFailure(
  planned: PlannedCase,
  factory: ConformanceFactory,
  failure: ConformanceFailure,
  run: { readonly seed: number; readonly seeds: number; readonly keep: boolean },
): Promise<CaseReplay> {
  const seed = failure.seed ?? run.seed;
  const attempt = async (seeds: number): Promise<CaseReplay> => {
    let again: ConformanceFailure | null;
    let events: TraceEvent[] = [];
    try {
      const r = await executePlannedCase(planned, factory, { seed, seeds, record: true });
      again = r.failure;
      events = r.events ?? [];
    } catch (e) {
      again = ConformanceFailure.from(e, { seed });
    }
    return {
      seed,
      seeds,
      reproduced: again !== null && again.contract === failure.contract,
      tail: events.slice(-INTERLEAVING_TAIL),
      events: run.keep ? events : null,
    };
  };
  const one = await attempt(1);
  return one.reproduced || run.seeds === 1 ? one : attempt(run.seeds);
}

/** A one-line title: `<id> [variant] (<kernelRef>)`. */
export function caseTitle(planned: PlannedCase): string {
  const ref = planned.info.kernelRef === null ? '' : ` (${planned.info.kernelRef})`;
  return `${planned.info.id} [${planned.variant}]${ref}`;
}

function checkSeed(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) {
    throw new Error(`@hmm/conformance: ${name} must be a positive integer, got ${v}`);
  }
}

/** The contract of an unexpected pass: the expectation went stale. */
function stalePass(reason: string): string {
  return `the case fails as the driver's expectation says ('${reason}'), but it passed: remove the stale expectation`;
}

/**
 * Runs the suite on the driver built by `factory`: every catalogue case (or `opts.only`) in each
 * variant, one after another, each on a fresh target, applying `opts.expectations`. Never throws
 * for a failing case: the report lists it with its {@link ConformanceFailure}. Throws for bad
 * options (an unknown case id, an invalid expectation, a seed that is not a positive integer).
 */
export async function runConformance(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): Promise<ConformanceReport> {
  checkSeed('seed', opts.seed);
  checkSeed('seeds', opts.seeds);
  if (opts.expectations !== undefined) validateExpectations(opts.expectations);
  const seed = opts.seed ?? DEFAULT_SEED;
  const seeds = opts.seeds ?? DEFAULT_SEEDS;
  const plan = planCases(manifest, opts.only === undefined ? {} : { only: opts.only });
  const results: CaseResult[] = [];
  let lastTrace: ConformanceReport['lastTrace'] = null;
  let failedTrace = false;
  for (const [index, planned] of plan.entries()) {
    const { info, variant } = planned;
    const expectation = expectationFor(opts.expectations, info.id, variant);
    const runs = planned.run !== null && expectation?.expect !== 'skip';
    opts.onProgress?.({ type: 'case-started', index, total: plan.length, id: info.id, variant, runs });
    const base = { id: info.id, kernelRef: info.kernelRef, title: info.title, variant };
    const notRun = { error: null, contract: null, seed: null, simNs: null, replay: null };
    let result: CaseResult;
    if (planned.run === null) {
      result = { ...base, status: 'skipped', reason: planned.reason, ...notRun };
    } else if (expectation?.expect === 'skip') {
      result = { ...base, status: 'expected-skip', reason: expectation.reason, ...notRun };
    } else {
      const where = { caseId: info.id, kernelRef: info.kernelRef, variant, seed };
      let failure: ConformanceFailure | null;
      let simNs: number | null = null;
      let events: TraceEvent[] | null = null;
      try {
        ({ failure, simNs, events } = await executePlannedCase(planned, factory, {
          seed,
          seeds,
          record: opts.trace === true,
        }));
      } catch (e) {
        failure = ConformanceFailure.from(e, where);
      }
      if (events !== null && !failedTrace) lastTrace = { id: info.id, variant, seed, events };
      if (failure !== null) {
        const replay =
          expectation === null
            ? await replayFailure(planned, factory, failure, { seed, seeds, keep: opts.trace === true })
            : null;
        if (replay?.events != null && !failedTrace) {
          // The first failure's replay is the trace worth opening; later cases do not replace it.
          lastTrace = { id: info.id, variant, seed: replay.seed, events: replay.events };
          failedTrace = true;
        }
        result = {
          ...base,
          status: expectation === null ? 'failed' : 'expected-fail',
          reason: expectation?.reason ?? null,
          error: failure,
          contract: failure.contract,
          seed: failure.seed ?? seed,
          simNs,
          replay,
        };
      } else if (expectation !== null) {
        const error = new ConformanceFailure(stalePass(expectation.reason), where);
        result = {
          ...base,
          status: 'unexpected-pass',
          reason: expectation.reason,
          error,
          contract: error.contract,
          seed,
          simNs,
          replay: null,
        };
      } else {
        result = {
          ...base,
          status: 'passed',
          reason: null,
          error: null,
          contract: null,
          seed,
          simNs,
          replay: null,
        };
      }
    }
    results.push(result);
    opts.onProgress?.({ type: 'case-finished', index, total: plan.length, result });
  }
  const counts = { total: results.length } as Record<CaseStatus, number> & { total: number };
  for (const st of CASE_STATUSES) counts[st] = results.filter((r) => r.status === st).length;
  const only = (st: CaseStatus): CaseResult[] => results.filter((r) => r.status === st);
  return {
    driver: manifest.name,
    seed,
    seeds,
    results,
    counts,
    ok: counts.failed === 0 && counts['unexpected-pass'] === 0,
    passed: only('passed'),
    failed: only('failed'),
    skipped: only('skipped'),
    lastTrace,
  };
}
