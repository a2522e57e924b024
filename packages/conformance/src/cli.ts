/**
 * The `hmm-conformance` command line.
 *
 * ```sh
 * hmm-conformance list                        # a table of every case
 * hmm-conformance list --json                 # the same as JSON
 * hmm-conformance run ./dist/conformance.js   # run the suite on a driver module
 * hmm-conformance run ./driver.mjs --only hmm.anon_read,hmm.migrate --seed 7 --junit out/junit.xml
 * ```
 *
 * A driver module is an ES module exporting `factory` (a `ConformanceFactory`), `manifest` (a
 * `ConformanceManifest`) and optionally `expectations` (`Expectations`). Plain node loads `.js` and
 * `.mjs` modules; a `.ts` module loads only when the process runs under tsx (`npx tsx` or
 * `NODE_OPTIONS='--import tsx'`, or inside this repository's workspace before `dist/` is built).
 *
 * Exit codes: 0 when every planned case passed or met its expectation, 1 on a failure or an
 * unexpected pass, 2 on a usage error (bad option, unknown case id, a module that cannot be loaded
 * or lacks `factory` / `manifest`, an invalid expectation).
 *
 * @module
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { toChromeTrace } from '@hmm/core';
import { CASES, findCase } from './catalog.js';
import { validateExpectations } from './expectations.js';
import type { Expectations } from './expectations.js';
import { formatReport, reportToJson, reportToJunit } from './report.js';
import { runConformance } from './runner.js';
import type { ProgressEvent, RunOptions } from './runner.js';
import type { ConformanceFactory, ConformanceManifest } from './target.js';

/** The usage text (`hmm-conformance --help`). */
export const USAGE = `usage: hmm-conformance list [--json]
       hmm-conformance run <driver-module> [--seeds N] [--seed S] [--only id,...] [--json file] [--junit file]
                           [--trace file]

Commands:
  list      every conformance case with its id, kernel reference, required capabilities and variants
  run       run the suite on a driver module: an ES module exporting \`factory\` (ConformanceFactory),
            \`manifest\` (ConformanceManifest) and optionally \`expectations\` (known failures and skips).
            The path is resolved from the current directory. .js/.mjs modules load under plain node;
            a .ts module needs the process to run under tsx (e.g. NODE_OPTIONS='--import tsx').
            One progress line per case goes to stderr, the report to stdout.

Options:
  --json            list: print JSON instead of a table
  --json <file>     run: also write the report as JSON to <file>
  --junit <file>    run: also write the report as JUnit XML to <file>
  --seeds <N>       run: seeds of the seed-exploring cases (default 20)
  --seed <S>        run: first seed of every case (default 1); a failure prints the seed reproducing it
  --only <id,...>   run: only these case ids (see \`list\`)
  --trace <file>    run: write a Chrome Trace Event / Perfetto JSON timeline (open it in
                    https://ui.perfetto.dev) of the first failure's replay at its seed, or of the
                    last case run when none failed; e.g. --only <id> --seed S --seeds 1 --trace t.json
  -h, --help

Exit status: 0 every case passed or met its expectation, 1 a case failed or passed against an
expectation of failure, 2 usage error.`;

/** Where the CLI writes text (stdout or stderr). */
export type CliWrite = (s: string) => void;

function usageError(err: CliWrite, message: string): number {
  err(`hmm-conformance: ${message}\n${USAGE}\n`);
  return 2;
}

/** A driver-module problem: a usage error (exit 2), without the whole usage text. */
function moduleError(err: CliWrite, message: string): number {
  err(
    `hmm-conformance: ${message}\nA driver module exports \`factory\` and \`manifest\` (see 'hmm-conformance --help').\n`,
  );
  return 2;
}

function list(json: boolean, out: CliWrite): number {
  if (json) {
    out(`${JSON.stringify({ cases: CASES }, null, 2)}\n`);
    return 0;
  }
  const rows = CASES.map((c) => [
    c.id,
    c.kernelRef ?? '—',
    [c.requires.join('+'), c.requiresAny.join('|')].filter((s) => s !== '').join('+'),
    c.variants.join(','),
    c.unsupported ?? '',
  ]);
  const head = ['id', 'kernel reference', 'requires', 'variants', 'not simulated yet'];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: readonly string[]): string =>
    r
      .map((cell, i) => cell.padEnd(width[i]!))
      .join('  ')
      .trimEnd();
  out(
    `${[line(head), line(width.map((w) => '─'.repeat(w))), ...rows.map(line)].join('\n')}\n${CASES.length} cases\n`,
  );
  return 0;
}

/** What a driver module exports, once checked. */
interface DriverModule {
  readonly factory: ConformanceFactory;
  readonly manifest: ConformanceManifest;
  readonly expectations?: Expectations;
}

/** Checks the exports of a loaded driver module; the problem, or null. */
function driverModuleProblem(mod: Record<string, unknown>): string | null {
  const missing: string[] = [];
  if (typeof mod.factory !== 'function') missing.push('`factory` (a ConformanceFactory function)');
  const m = mod.manifest as Partial<ConformanceManifest> | undefined;
  if (typeof m !== 'object' || m === null || typeof m.name !== 'string' || !Array.isArray(m.capabilities)) {
    missing.push('`manifest` (a ConformanceManifest: { name, capabilities })');
  }
  if (missing.length > 0) return `it must export ${missing.join(' and ')}`;
  if (mod.expectations !== undefined) {
    try {
      validateExpectations(mod.expectations);
    } catch (e) {
      return `its \`expectations\` are invalid: ${(e as Error).message}`;
    }
  }
  return null;
}

function positiveInt(name: string, v: string | undefined): number | undefined | string {
  if (v === undefined) return undefined;
  if (!/^[1-9]\d*$/.test(v) || !Number.isSafeInteger(Number(v))) {
    return `--${name} takes a positive integer, got '${v}'`;
  }
  return Number(v);
}

/** One progress line: `[ 3/90] passed      hmm.anon_read [device-private]`. */
function progressLine(e: ProgressEvent): string | null {
  if (e.type !== 'case-finished') return null;
  const w = String(e.total).length;
  const r = e.result;
  return `[${String(e.index + 1).padStart(w)}/${e.total}] ${r.status.padEnd(15)} ${r.id} [${r.variant}]\n`;
}

async function run(argv: readonly string[], out: CliWrite, err: CliWrite): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        json: { type: 'string' },
        junit: { type: 'string' },
        seeds: { type: 'string' },
        seed: { type: 'string' },
        only: { type: 'string' },
        trace: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    return usageError(err, (e as Error).message);
  }
  const v = parsed.values;
  if (v.trace === '') return usageError(err, '--trace needs a file name');
  if (v.help) {
    out(`${USAGE}\n`);
    return 0;
  }
  const [, modulePath, ...extra] = parsed.positionals;
  if (modulePath === undefined) return usageError(err, 'run needs a driver module');
  if (extra.length > 0) return usageError(err, `unexpected argument '${extra[0]}'`);
  const seeds = positiveInt('seeds', v.seeds);
  const seed = positiveInt('seed', v.seed);
  if (typeof seeds === 'string') return usageError(err, seeds);
  if (typeof seed === 'string') return usageError(err, seed);
  let only: string[] | undefined;
  if (v.only !== undefined) {
    only = v.only
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (only.length === 0) return usageError(err, '--only needs at least one case id');
    const unknown = only.filter((id) => findCase(id) === undefined);
    if (unknown.length > 0) {
      return usageError(err, `unknown case id ${unknown.map((id) => `'${id}'`).join(', ')} (see 'list')`);
    }
  }

  const file = resolve(process.cwd(), modulePath);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    const hint =
      /\.[cm]?tsx?$/.test(file) || code === 'ERR_UNKNOWN_FILE_EXTENSION'
        ? ' (TypeScript loads only when the process runs under tsx, e.g. NODE_OPTIONS="--import tsx"; or build the driver to .js)'
        : '';
    return moduleError(err, `cannot load driver module '${modulePath}': ${(e as Error).message}${hint}`);
  }
  const problem = driverModuleProblem(mod);
  if (problem !== null) return moduleError(err, `driver module '${modulePath}': ${problem}`);
  const driver = mod as unknown as DriverModule;

  const opts: RunOptions = {
    ...(only === undefined ? {} : { only }),
    ...(seeds === undefined ? {} : { seeds }),
    ...(seed === undefined ? {} : { seed }),
    ...(driver.expectations === undefined ? {} : { expectations: driver.expectations }),
    ...(v.trace === undefined ? {} : { trace: true }),
    onProgress: (e) => {
      const line = progressLine(e);
      if (line !== null) err(line);
    },
  };
  const report = await runConformance(driver.factory, driver.manifest, opts);
  out(formatReport(report, { module: modulePath }));
  const lt = report.lastTrace;
  if (v.trace !== undefined && lt === null) err('hmm-conformance: --trace: no case ran, no trace written\n');
  const writes: [string | undefined, string, string][] = [
    [v.json, 'JSON', reportToJson(report)],
    [v.junit, 'JUnit', reportToJunit(report, { module: modulePath })],
    [
      lt === null ? undefined : v.trace,
      'trace',
      lt === null
        ? ''
        : `${JSON.stringify(
            toChromeTrace(lt.events, {
              title: `${report.driver}: ${lt.id} [${lt.variant}] seed ${lt.seed}`,
            }),
          )}\n`,
    ],
  ];
  for (const [target, kind, text] of writes) {
    if (target === undefined) continue;
    const path = resolve(process.cwd(), target);
    try {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, text);
    } catch (e) {
      err(`hmm-conformance: cannot write the ${kind} report to '${target}': ${(e as Error).message}\n`);
      return 2;
    }
    err(
      kind === 'trace'
        ? `wrote the trace of ${lt!.id} [${lt!.variant}] at seed ${lt!.seed} to ${target} (open it in https://ui.perfetto.dev)\n`
        : `wrote the ${kind} report to ${target}\n`,
    );
  }
  return report.ok ? 0 : 1;
}

/**
 * Runs the CLI with `argv` (without node and the script); resolves to the exit code. `out` gets the
 * listing or the report, `err` the progress lines and usage errors.
 */
export async function main(
  argv: readonly string[],
  out: CliWrite = (s) => process.stdout.write(s),
  err: CliWrite = (s) => process.stderr.write(s),
): Promise<number> {
  const cmd = argv.find((a) => !a.startsWith('-'));
  if (cmd === 'run') return run(argv, out, err);
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    return usageError(err, (e as Error).message);
  }
  if (parsed.values.help) {
    out(`${USAGE}\n`);
    return 0;
  }
  if (cmd === undefined) return usageError(err, 'no command');
  if (cmd !== 'list') return usageError(err, `unknown command '${cmd}'`);
  if (parsed.positionals.length > 1) return usageError(err, `unexpected argument '${parsed.positionals[1]}'`);
  return list(parsed.values.json, out);
}
