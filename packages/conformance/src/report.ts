/**
 * Renderings of a {@link ConformanceReport}: a text report for people, JSON for tools, JUnit XML
 * for CI. All three are deterministic: the same run gives the same bytes (no wall-clock time; the
 * durations are simulated).
 *
 * @module
 */
import type { TraceEvent } from '@hmm/core';
import { findCase } from './catalog.js';
import { groupOf } from './cases/index.js';
import { CASE_STATUSES } from './runner.js';
import type { CaseResult, CaseStatus, ConformanceReport } from './runner.js';

/** Options of {@link formatReport}. */
export interface FormatOptions {
  /** The driver module as given on the command line, for the reproduce lines (default `<driver-module>`). */
  readonly module?: string;
}

const HEADINGS: Readonly<Record<CaseStatus, string>> = {
  failed: 'Failed',
  'unexpected-pass': 'Unexpected passes (expected to fail, but passed)',
  'expected-fail': 'Expected failures',
  passed: 'Passed',
  'expected-skip': 'Skipped by expectation',
  skipped: 'Skipped',
};

/** Order of the sections of the text report: what needs attention first. */
const SECTIONS: readonly CaseStatus[] = [
  'failed',
  'unexpected-pass',
  'expected-fail',
  'passed',
  'expected-skip',
  'skipped',
];

function head(r: CaseResult): string {
  return `${r.id} [${r.variant}]${r.kernelRef === null ? '' : ` (${r.kernelRef})`}`;
}

/** The command line that reruns `r` alone at its seed. */
export function reproduceCommand(r: CaseResult, module = '<driver-module>'): string {
  const seed = r.seed === null ? '' : ` --seed ${r.seed}`;
  // A replay at one seed of a seed loop is the one interleaving: one seed reproduces it.
  const one = r.replay !== null && r.replay.reproduced && r.replay.seeds === 1 ? ' --seeds 1' : '';
  const trace = r.replay !== null && r.replay.reproduced ? ' --trace trace.json' : '';
  return `hmm-conformance run ${module} --only ${r.id}${seed}${one}${trace}`;
}

/**
 * One trace event as a line: simulated time in µs, the event type and its payload
 * (`  1234.567 µs  sched.block  task=3 name=hmm-tests on=mutex driver`).
 */
export function formatTraceEvent(e: TraceEvent): string {
  const fields = Object.entries(e)
    .filter(([k]) => k !== 'type' && k !== 'ts')
    .map(
      ([k, v]) =>
        `${k}=${typeof v === 'number' && v > 0xffff && Number.isInteger(v) ? `0x${v.toString(16)}` : String(v)}`,
    )
    .join(' ');
  return `${(e.ts / 1000).toFixed(3).padStart(12)} µs  ${e.type.padEnd(18)} ${fields}`;
}

/** The interleaving lines of a failure's replay (empty when it has none). */
function interleavingLines(r: CaseResult): string[] {
  const rp = r.replay;
  if (rp === null) return [];
  const how = rp.reproduced
    ? 'the replay failed the same way'
    : 'the replay did NOT fail the same way: the case or driver is not deterministic';
  const out = [
    `      replay at seed ${rp.seed} (${rp.seeds} seed${rp.seeds === 1 ? '' : 's'}): ${how}; its last ${rp.tail.length} events:`,
  ];
  for (const e of rp.tail) out.push(`        ${formatTraceEvent(e)}`);
  return out;
}

/** One line of counts: `12 cases: 9 passed, 1 failed, 2 skipped`. */
export function summaryLine(report: ConformanceReport): string {
  const parts = CASE_STATUSES.filter((s) => report.counts[s] > 0).map((s) => `${report.counts[s]} ${s}`);
  return `${report.counts.total} cases: ${parts.length === 0 ? 'none run' : parts.join(', ')}`;
}

/**
 * The human report: a header, then one section per status (failures first). A failure shows the
 * contract broken, the kernel reference and the command reproducing it (`--only <id> --seed <s>`);
 * a skip shows the missing capability or the expectation's reason. Ends with the counts and the
 * verdict.
 */
export function formatReport(report: ConformanceReport, opts: FormatOptions = {}): string {
  const lines: string[] = [
    `@hmm/conformance report for driver '${report.driver}' (seed ${report.seed}, seeds ${report.seeds})`,
  ];
  for (const status of SECTIONS) {
    const rs = report.results.filter((r) => r.status === status);
    if (rs.length === 0) continue;
    lines.push('', `${HEADINGS[status]} (${rs.length}):`);
    for (const r of rs) {
      switch (status) {
        case 'failed':
        case 'unexpected-pass':
        case 'expected-fail':
          lines.push(`  ${head(r)}`);
          if (r.reason !== null) lines.push(`      expectation: ${r.reason}`);
          lines.push(`      contract broken: ${r.contract ?? '(none)'}`);
          if (r.kernelRef !== null) lines.push(`      kernel reference: ${r.kernelRef}`);
          lines.push(`      reproduce: ${reproduceCommand(r, opts.module)}`);
          lines.push(...interleavingLines(r));
          break;
        case 'passed':
          lines.push(`  ${head(r)}`);
          break;
        case 'expected-skip':
        case 'skipped':
          lines.push(`  ${r.id} [${r.variant}]: ${r.reason ?? 'skipped'}`);
          break;
      }
    }
  }
  lines.push('', summaryLine(report), report.ok ? 'Result: OK' : 'Result: FAILED');
  return `${lines.join('\n')}\n`;
}

/** The JSON form of one result (the failure reduced to its message and contract). */
export interface CaseResultJson {
  readonly id: string;
  readonly variant: string;
  readonly kernelRef: string | null;
  readonly title: string;
  readonly status: CaseStatus;
  readonly reason: string | null;
  readonly contract: string | null;
  readonly message: string | null;
  readonly seed: number | null;
  readonly simNs: number | null;
  /** A failure's replay: its seed(s), whether it reproduced, and its last events as text lines. */
  readonly replay: {
    readonly seed: number;
    readonly seeds: number;
    readonly reproduced: boolean;
    readonly tail: readonly string[];
  } | null;
}

/** The JSON form of a report ({@link reportToJson}). */
export interface ConformanceReportJson {
  readonly driver: string;
  readonly seed: number;
  readonly seeds: number;
  readonly ok: boolean;
  readonly counts: ConformanceReport['counts'];
  readonly results: readonly CaseResultJson[];
}

/** The report as a plain object (what {@link reportToJson} serialises). */
export function reportToObject(report: ConformanceReport): ConformanceReportJson {
  return {
    driver: report.driver,
    seed: report.seed,
    seeds: report.seeds,
    ok: report.ok,
    counts: report.counts,
    results: report.results.map((r) => ({
      id: r.id,
      variant: r.variant,
      kernelRef: r.kernelRef,
      title: r.title,
      status: r.status,
      reason: r.reason,
      contract: r.contract,
      message: r.error?.message ?? null,
      seed: r.seed,
      simNs: r.simNs,
      replay:
        r.replay === null
          ? null
          : {
              seed: r.replay.seed,
              seeds: r.replay.seeds,
              reproduced: r.replay.reproduced,
              tail: r.replay.tail.map(formatTraceEvent),
            },
    })),
  };
}

/** The report as JSON text (indented, newline-terminated). */
export function reportToJson(report: ConformanceReport): string {
  return `${JSON.stringify(reportToObject(report), null, 2)}\n`;
}

/** Escapes text for XML content or a double-quoted attribute; drops characters XML 1.0 forbids. */
export function xmlEscape(text: string): string {
  return (
    text
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
      .replace(/'/g, '&apos;')
      .replace(/\n/g, '&#10;')
      .replace(/\r/g, '&#13;')
      .replace(/\t/g, '&#9;')
  );
}

/**
 * The report as JUnit XML: one `<testsuite>` (inside `<testsuites>`) with a `<testcase>` per result,
 * `classname` `hmm-conformance.<group>`, `name` `<id> [<variant>]`. A failure or an unexpected
 * pass has a `<failure message="<contract>">` whose text is the located message and the reproduce
 * command; a skip, an expected skip and an expected failure (as pytest's xfail) have
 * `<skipped message="...">`. No `time` attributes: the report is deterministic.
 */
export function reportToJunit(report: ConformanceReport, opts: FormatOptions = {}): string {
  const failures = report.counts.failed + report.counts['unexpected-pass'];
  const skipped = report.counts.skipped + report.counts['expected-skip'] + report.counts['expected-fail'];
  const a = (s: string): string => `"${xmlEscape(s)}"`;
  const suite = `@hmm/conformance: ${report.driver}`;
  const counts = `tests="${report.counts.total}" failures="${failures}" errors="0" skipped="${skipped}"`;
  const out: string[] = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name=${a('@hmm/conformance')} ${counts}>`,
    `  <testsuite name=${a(suite)} ${counts}>`,
    '    <properties>',
    `      <property name="seed" value="${report.seed}"/>`,
    `      <property name="seeds" value="${report.seeds}"/>`,
    '    </properties>',
  ];
  for (const r of report.results) {
    const info = findCase(r.id);
    const group = info === undefined ? 'unknown' : groupOf(info);
    const open = `    <testcase classname=${a(`hmm-conformance.${group}`)} name=${a(`${r.id} [${r.variant}]`)}`;
    switch (r.status) {
      case 'passed':
        out.push(`${open}/>`);
        break;
      case 'failed':
      case 'unexpected-pass': {
        const body = [
          r.error?.message ?? r.contract ?? '',
          r.reason === null ? null : `expectation: ${r.reason}`,
          `reproduce: ${reproduceCommand(r, opts.module)}`,
        ].filter((s) => s !== null);
        const type = r.status === 'failed' ? 'ConformanceFailure' : 'UnexpectedPass';
        out.push(
          `${open}>`,
          `      <failure message=${a(r.contract ?? '')} type="${type}">${xmlEscape(body.join('\n'))}</failure>`,
          '    </testcase>',
        );
        break;
      }
      case 'expected-fail':
        out.push(
          `${open}>`,
          `      <skipped message=${a(`expected failure (${r.reason ?? ''}): ${r.contract ?? ''}`)}/>`,
          '    </testcase>',
        );
        break;
      case 'expected-skip':
      case 'skipped':
        out.push(`${open}>`, `      <skipped message=${a(r.reason ?? 'skipped')}/>`, '    </testcase>');
        break;
    }
  }
  out.push('  </testsuite>', '</testsuites>');
  return `${out.join('\n')}\n`;
}
