/**
 * The programmatic runner: plans every catalogue case against a driver's manifest, runs the ones
 * it can and reports the rest as skipped with the reason. No test framework needed.
 *
 * ```ts
 * const report = await runConformance(myFactory, { name: 'mine', capabilities: ['mirror'] });
 * if (report.failed.length > 0) console.error(report.failed.map((r) => r.error?.message));
 * ```
 *
 * @module
 */
import { HmmSanitizer } from '@hmm/core';
import { CASES, findCase } from './catalog.js';
import type { Capability, CaseInfo, Variant } from './catalog.js';
import { ConformanceFailure } from './assert.js';
import { IMPLEMENTATIONS, groupOf } from './cases/index.js';
import type { CaseFn, GroupName } from './cases/index.js';
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
}

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
  readonly status: 'passed' | 'failed' | 'skipped';
  /** Why it was skipped, or null. */
  readonly reason: string | null;
  /** The failure, or null. */
  readonly error: ConformanceFailure | null;
}

/** What {@link runConformance} returns. */
export interface ConformanceReport {
  readonly driver: string;
  readonly passed: CaseResult[];
  readonly failed: CaseResult[];
  readonly skipped: CaseResult[];
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
  const { info, variant, run } = planned;
  if (run === null)
    throw new Error(`@hmm/conformance: ${info.id} [${variant}] is skipped: ${planned.reason}`);
  const seed = opts.seed ?? DEFAULT_SEED;
  const where = { caseId: info.id, kernelRef: info.kernelRef, variant, seed };
  const targets: ConformanceTarget[] = [];
  const sanitizers: HmmSanitizer[] = [];
  const create = async (s: number): Promise<ConformanceTarget> => {
    const made = await factory({ seed: s, variant });
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
  if (failure !== null) throw failure;
}

/** A one-line title: `<id> [variant] (<kernelRef>)`. */
export function caseTitle(planned: PlannedCase): string {
  const ref = planned.info.kernelRef === null ? '' : ` (${planned.info.kernelRef})`;
  return `${planned.info.id} [${planned.variant}]${ref}`;
}

/**
 * Runs the suite on the driver built by `factory`: every catalogue case (or `opts.only`) in each
 * variant, one after another, each on a fresh target. Never throws for a failing case: the report
 * lists it with its {@link ConformanceFailure}.
 */
export async function runConformance(
  factory: ConformanceFactory,
  manifest: ConformanceManifest,
  opts: RunOptions = {},
): Promise<ConformanceReport> {
  const report: ConformanceReport = { driver: manifest.name, passed: [], failed: [], skipped: [] };
  for (const planned of planCases(manifest, opts.only === undefined ? {} : { only: opts.only })) {
    const base = {
      id: planned.info.id,
      kernelRef: planned.info.kernelRef,
      title: planned.info.title,
      variant: planned.variant,
    };
    if (planned.run === null) {
      report.skipped.push({ ...base, status: 'skipped', reason: planned.reason, error: null });
      continue;
    }
    try {
      await runPlannedCase(planned, factory, opts.seeds === undefined ? {} : { seeds: opts.seeds });
      report.passed.push({ ...base, status: 'passed', reason: null, error: null });
    } catch (e) {
      const error = e instanceof ConformanceFailure ? e : ConformanceFailure.from(e, {});
      report.failed.push({ ...base, status: 'failed', reason: null, error });
    }
  }
  return report;
}
