/**
 * Keeps `docs/cost-model.md` in step with the code: every parameter of the cost model, and every
 * time, bandwidth or default constant of `@hmm/core` and the reference drivers, has a row there
 * with the code's value (and, for the cost model, its unit and source tag); every row names
 * something that exists.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { COST_SOURCES, DEFAULT_COST_MODEL } from './cost-model.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const DOC_PATH = join(ROOT, 'docs', 'cost-model.md');
const DOC = readFileSync(DOC_PATH, 'utf8');

/** The cells of every table row whose first cell is one code span: name → cells after it. */
function tableRows(md: string): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of md.split('\n')) {
    const m = /^\|\s*`([^`]+)`\s*\|(.*)\|\s*$/.exec(line);
    if (m === null) continue;
    const name = m[1]!;
    expect(rows.has(name), `docs/cost-model.md has two rows for \`${name}\``).toBe(false);
    rows.set(
      name,
      m[2]!.split('|').map((c) => c.trim()),
    );
  }
  return rows;
}

const ROWS = tableRows(DOC);

/** The number a value cell starts with (`2097152 (2 MiB)` → 2097152), or NaN. */
function leadingNumber(cell: string): number {
  const m = /^-?\d+(\.\d+)?/.exec(cell);
  return m === null ? Number.NaN : Number(m[0]);
}

/** Value of a constant's initialiser made of numbers, `*` and `**` (`8 * 1024 ** 3`), or null. */
function evalNumeric(expr: string): number | null {
  const e = expr.replace(/_/g, '').trim();
  if (!/^[\d.\s*]+$/.test(e) || e === '') return null;
  const product = e.split(/(?<!\*)\*(?!\*)/).map((factor) => {
    const powers = factor.split('**').map((t) => Number(t.trim()));
    return powers.reduceRight((exp, base) => base ** exp);
  });
  const v = product.reduce((a, b) => a * b, 1);
  return Number.isFinite(v) ? v : null;
}

/** Library sources of `@hmm/core` and the reference drivers (no tests, no test-only helpers). */
function librarySources(): string[] {
  const pkgs = readdirSync(join(ROOT, 'packages')).filter((d) => d === 'core' || d.startsWith('driver-'));
  const files: string[] = [];
  for (const pkg of pkgs) {
    const src = join(ROOT, 'packages', pkg, 'src');
    for (const f of readdirSync(src, { recursive: true, encoding: 'utf8' })) {
      if (!f.endsWith('.ts') || f.endsWith('.test.ts') || f.split(/[\\/]/).includes('testing')) continue;
      files.push(join(src, f));
    }
  }
  return files;
}

interface NumericConstant {
  readonly name: string;
  readonly value: number;
  readonly file: string;
}

/** Every `export const NAME = <numeric expression>;` of the library sources. */
function numericConstants(): NumericConstant[] {
  const out: NumericConstant[] = [];
  for (const file of librarySources()) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^export const ([A-Z][A-Z0-9_]*)(?:: number)? = ([^;\n]+);/gm)) {
      const value = evalNumeric(m[2]!);
      if (value !== null) out.push({ name: m[1]!, value, file: relative(ROOT, file) });
    }
  }
  return out;
}

const CONSTANTS = numericConstants();

/** Names that are a cost or a default: a time, a bandwidth, or `DEFAULT` in the name. */
const COST_LIKE = /(^|_)(DEFAULT|NS|MS|GBS)(_|$)/;

describe('docs/cost-model.md', () => {
  it('finds the constants it checks (the scan of the sources works)', () => {
    expect(CONSTANTS.map((c) => c.name)).toContain('HMM_RANGE_DEFAULT_TIMEOUT_NS');
    expect(CONSTANTS.find((c) => c.name === 'HMM_RANGE_DEFAULT_TIMEOUT_NS')?.value).toBe(1_000_000_000);
    expect(evalNumeric('8 * 1024 ** 3')).toBe(8 * 1024 ** 3);
    expect(evalNumeric('2 * 1024 * 1024')).toBe(2 * 1024 * 1024);
    expect(evalNumeric('242.3')).toBe(242.3);
    expect(evalNumeric("'x'")).toBeNull();
  });

  it('has a row for every cost-model parameter, with its default, unit and source tag', () => {
    const missing: string[] = [];
    for (const s of COST_SOURCES) {
      const cells = ROWS.get(s.key);
      if (cells === undefined) {
        missing.push(s.key);
        continue;
      }
      const [value, unit, tag] = cells;
      expect(leadingNumber(value ?? ''), `${s.key}: default`).toBe(s.value);
      expect(unit, `${s.key}: unit`).toBe(s.unit);
      expect(tag, `${s.key}: source tag`).toBe(`[${s.tag}]`);
    }
    expect(missing, 'cost-model parameters without a row in docs/cost-model.md').toEqual([]);
  });

  it('covers every leaf of DEFAULT_COST_MODEL (COST_SOURCES is complete)', () => {
    const leaves = Object.entries(DEFAULT_COST_MODEL).flatMap(([group, leaves]) =>
      Object.keys(leaves as object).map((leaf) => `${group}.${leaf}`),
    );
    expect(leaves.filter((k) => !ROWS.has(k))).toEqual([]);
  });

  it('names no cost-model parameter that does not exist', () => {
    const groups = new Set(Object.keys(DEFAULT_COST_MODEL));
    const keys = new Set(COST_SOURCES.map((s) => s.key as string));
    const stale = [...ROWS.keys()].filter((k) => groups.has(k.split('.')[0]!) && !keys.has(k));
    expect(stale).toEqual([]);
  });

  it('has a row for every time, bandwidth and default constant of core and the drivers', () => {
    const missing = CONSTANTS.filter((c) => COST_LIKE.test(c.name) && !ROWS.has(c.name)).map(
      (c) => `${c.name} (${c.file})`,
    );
    expect(missing, 'constants without a row in docs/cost-model.md').toEqual([]);
  });

  it('gives every constant it lists the value the code has', () => {
    const byName = new Map(CONSTANTS.map((c) => [c.name, c]));
    for (const [name, cells] of ROWS) {
      if (!/^[A-Z][A-Z0-9_]*$/.test(name)) continue;
      const c = byName.get(name);
      expect(c, `docs/cost-model.md lists \`${name}\`, which no library source exports`).toBeDefined();
      expect(leadingNumber(cells[0] ?? ''), `${name} (${c!.file})`).toBe(c!.value);
    }
  });
});
