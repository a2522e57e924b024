/**
 * Text output: the summary table of figures against their anchors, and the scenario list.
 *
 * @module
 */
import type { Figure, Scenario, ScenarioResult } from './scenario.js';

/** A number with about four significant digits, thousands grouped. */
export function formatValue(v: number): string {
  const a = Math.abs(v);
  if (a === 0) return '0';
  const digits = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : a >= 1 ? 3 : 4;
  const s = v.toFixed(digits);
  const [int, frac] = s.split('.');
  const grouped = int!.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return frac === undefined ? grouped : `${grouped}.${frac}`;
}

/** `value unit`, with no space before `×`. */
export function withUnit(v: number, unit: string): string {
  return unit === '×' ? `${formatValue(v)}×` : `${formatValue(v)} ${unit}`;
}

/** Lays out rows as aligned columns (first column left, the others right), with a rule under the head. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i <= 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function verdict(f: Figure): string {
  if (f.within === null) return '';
  return f.within ? 'yes' : 'NO';
}

/**
 * The summary table: one row per figure (simulated, published anchor, ratio, within ±25 %?), then
 * the anchors' sources, numbered.
 */
export function formatSummary(results: readonly ScenarioResult[]): string {
  const sources: string[] = [];
  const rows: string[][] = [];
  for (const r of results) {
    let first = true;
    for (const f of r.figures) {
      let ref = '';
      if (f.anchor !== null) {
        const src = `[${f.anchor.tag}] ${f.anchor.source}`;
        let k = sources.indexOf(src);
        if (k < 0) k = sources.push(src) - 1;
        ref = ` [${k + 1}]`;
      }
      rows.push([
        first ? r.scenario : '',
        f.note === undefined ? f.label : `${f.label} *`,
        withUnit(f.simulated, f.unit),
        f.anchor === null ? '' : withUnit(f.anchor.value, f.anchor.unit) + ref,
        f.ratio === null ? '' : f.ratio.toFixed(2),
        verdict(f),
      ]);
      first = false;
    }
  }
  const notes = results.flatMap((r) =>
    r.figures.filter((f) => f.note !== undefined).map((f) => `* ${r.scenario} ${f.label}: ${f.note}`),
  );
  const out = [
    table(['scenario', 'figure', 'simulated', 'published', 'ratio', '±25 %'], rows),
    '',
    ...(notes.length > 0 ? [...new Set(notes)] : []),
    ...sources.map((s, i) => `[${i + 1}] ${s}`),
  ];
  return out.join('\n');
}

/** Counts of anchored figures inside and outside the band. */
export function anchorTally(results: readonly ScenarioResult[]): { within: number; outside: number } {
  let within = 0;
  let outside = 0;
  for (const r of results) {
    for (const f of r.figures) {
      if (f.within === true) within++;
      else if (f.within === false) outside++;
    }
  }
  return { within, outside };
}

/** `hmm-sim list`: each scenario, its description and its anchors. */
export function formatList(scenarios: readonly Scenario<object>[]): string {
  const out: string[] = [];
  for (const s of scenarios) {
    out.push(`${s.name}`);
    out.push(`  ${s.description}`);
    for (const a of s.anchors)
      out.push(`  anchor: ${withUnit(a.value, a.unit)}, ${a.what} [${a.tag}] ${a.source}`);
  }
  return out.join('\n');
}
