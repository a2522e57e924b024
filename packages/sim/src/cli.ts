/**
 * The `hmm-sim` command line (commander): `list`, `run <scenario...>`, `showcase`. {@link main} takes
 * the arguments and the output streams and resolves to the exit code: 0 when every anchored figure
 * lies within ±25 % of its published value, 1 when one does not (or a run failed), 2 for bad
 * arguments.
 *
 * @module
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { isHmmError, validateChromeTrace } from '@hmm/core';
import { ANCHOR_TOLERANCE } from './scenario.js';
import type { ScenarioResult, ScenarioSize } from './scenario.js';
import { anchorTally, formatList, formatSummary } from './format.js';
import { Progress } from './progress.js';
import type { ProgressStream } from './progress.js';
import { resolveScenarios, runScenarios, SHOWCASE_SCENARIOS, TRACE_FAULTS_PER_MM } from './runner.js';
import type { RunScenariosResult } from './runner.js';
import { SCENARIOS } from './scenarios/index.js';

/** Where {@link main} writes. */
export interface CliIo {
  readonly stdout: ProgressStream;
  readonly stderr: ProgressStream;
  /** Directory relative paths resolve against; default `process.cwd()`. */
  readonly cwd?: string;
}

/** Default trace file of `showcase`. */
export const SHOWCASE_TRACE_FILE = 'hmm-showcase.trace.json';

/** Version of the JSON report's shape. */
export const REPORT_VERSION = 1;

/** The JSON report of `run --json` and `showcase --json`. */
export interface SimReport {
  readonly tool: 'hmm-sim';
  readonly reportVersion: number;
  readonly command: 'run' | 'showcase';
  readonly seed: number;
  readonly size: ScenarioSize;
  readonly tolerance: number;
  readonly anchored: { readonly within: number; readonly outside: number };
  readonly results: readonly ScenarioResult[];
}

class UsageError extends Error {}

function parseSeed(v: string): number {
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw new InvalidArgumentError(`the seed must be an integer, got '${v}'.`);
  }
  return Number(v);
}

/** The JSON report of a run. */
export function simReport(
  command: 'run' | 'showcase',
  seed: number,
  size: ScenarioSize,
  results: readonly ScenarioResult[],
): SimReport {
  return {
    tool: 'hmm-sim',
    reportVersion: REPORT_VERSION,
    command,
    seed,
    size,
    tolerance: ANCHOR_TOLERANCE,
    anchored: anchorTally(results),
    results,
  };
}

interface RunFlags {
  seed: number;
  json?: string;
  trace?: string;
  full?: boolean;
  quick?: boolean;
}

/** Runs the `hmm-sim` CLI with `argv` (without the node and script paths); resolves to the exit code. */
export async function main(argv: readonly string[], io?: CliIo): Promise<number> {
  const out = io?.stdout ?? process.stdout;
  const err = io?.stderr ?? process.stderr;
  const cwd = io?.cwd ?? process.cwd();
  let code = 0;

  const execute = async (
    command: 'run' | 'showcase',
    names: readonly string[],
    flags: RunFlags,
    traceFile: string | undefined,
  ): Promise<void> => {
    if (flags.full === true && flags.quick === true)
      throw new UsageError('--full and --quick exclude each other.');
    const size: ScenarioSize = flags.full === true ? 'full' : 'quick';
    let scenarios;
    try {
      scenarios = resolveScenarios(names);
    } catch (e) {
      if (isHmmError(e)) throw new UsageError(e.message.replace(/^E[A-Z]+: /, ''));
      throw e;
    }
    const progress = new Progress(err, scenarios.length);
    const traced = traceFile !== undefined;
    let run: RunScenariosResult;
    try {
      run = await runScenarios(scenarios, {
        seed: flags.seed,
        size,
        shareMachine: command === 'showcase' || traced,
        trace: traced,
        title: command === 'showcase' ? 'hmm-sim showcase' : `hmm-sim run ${names.join(' ')}`,
        onStart: (i, s) => progress.start(i, s.name),
        onStep: (d, t, label) => progress.step(d, t, label),
        onEnd: (_i, r) => {
          const anchored = r.figures.filter((f) => f.within !== null);
          const ok = anchored.filter((f) => f.within === true).length;
          progress.end(`${ok}/${anchored.length} anchored figures within ±25 %`);
        },
      });
    } finally {
      progress.done();
    }
    const { results } = run;
    if (command === 'showcase') {
      out.write(showcaseIntro(run));
    }
    out.write(`${formatSummary(results)}\n`);
    const tally = anchorTally(results);
    out.write(
      `\n${tally.within} of ${tally.within + tally.outside} anchored figures within ±25 % of the published value.\n`,
    );
    if (tally.outside > 0) code = 1;
    if (flags.json !== undefined) {
      const file = resolve(cwd, flags.json);
      writeFileSync(file, `${JSON.stringify(simReport(command, flags.seed, size, results), null, 2)}\n`);
      err.write(`wrote ${file}\n`);
    }
    if (traceFile !== undefined && run.trace === null) {
      err.write(
        `hmm-sim: no trace written: none of ${names.join(', ')} runs on a shared machine (they build machines of their own)\n`,
      );
    }
    if (traceFile !== undefined && run.trace !== null) {
      const problems = validateChromeTrace(run.trace);
      const file = resolve(cwd, traceFile);
      writeFileSync(file, JSON.stringify(run.trace));
      out.write(
        `\nTrace: ${file} (${run.traceEvents} events of ${run.traced.join(', ')}` +
          `${run.elidedFaults > 0 ? `; ${run.elidedFaults} CPU page faults beyond ${TRACE_FAULTS_PER_MM} per process left out` : ''}).\n` +
          `Open it in https://ui.perfetto.dev (Open trace file).\n`,
      );
      const skipped = names.filter((n) => !run.traced.includes(n));
      if (skipped.length > 0) {
        out.write(`Not in the trace (they build machines of their own): ${skipped.join(', ')}.\n`);
      }
      if (problems.length > 0) {
        err.write(
          `the trace has ${problems.length} structural problem(s): ${problems.slice(0, 5).join('; ')}\n`,
        );
        code = 1;
      }
    }
  };

  const program = new Command('hmm-sim')
    .description(
      'Scenarios of the HMM SDK that reproduce published measurements with the reference drivers, in simulated time.',
    )
    .exitOverride()
    .configureOutput({
      writeOut: (s) => out.write(s),
      writeErr: (s) => err.write(s),
    })
    .showHelpAfterError('(run hmm-sim --help for usage)');

  program
    .command('list')
    .description('list the scenarios with their published anchors')
    .option('--json', 'print the list as JSON')
    .action((flags: { json?: boolean }) => {
      if (flags.json === true) {
        const list = SCENARIOS.map((s) => ({ name: s.name, description: s.description, anchors: s.anchors }));
        out.write(`${JSON.stringify(list, null, 2)}\n`);
      } else {
        out.write(`${formatList(SCENARIOS)}\n`);
      }
    });

  const seedOption = (): Option => new Option('--seed <n>', 'scheduler seed').default(1).argParser(parseSeed);
  program
    .command('run')
    .description('run scenarios and print their figures beside the published ones')
    .argument('<scenario...>', `scenarios to run (${SCENARIOS.map((s) => s.name).join(', ')})`)
    .addOption(seedOption())
    .option('--json <file>', 'write the results as JSON')
    .option(
      '--trace <file>',
      'write a Chrome Trace Event (Perfetto) file of the scenarios that share a machine',
    )
    .option('--full', 'run at the published sizes (slower)')
    .option('--quick', 'run at the reduced sizes (the default)')
    .action(async (names: string[], flags: RunFlags) => {
      await execute('run', names, flags, flags.trace);
    });

  program
    .command('showcase')
    .description('several scenarios with all three reference drivers on one simulated machine, and its trace')
    .addOption(seedOption())
    .option('--json <file>', 'write the results as JSON')
    .option('--trace <file>', 'where to write the trace', SHOWCASE_TRACE_FILE)
    .action(async (flags: RunFlags) => {
      await execute(
        'showcase',
        SHOWCASE_SCENARIOS,
        { ...flags, quick: true },
        flags.trace ?? SHOWCASE_TRACE_FILE,
      );
    });

  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof UsageError) {
      err.write(`hmm-sim: ${e.message}\n(run hmm-sim --help for usage)\n`);
      return 2;
    }
    err.write(`hmm-sim: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  return code;
}

function showcaseIntro(run: RunScenariosResult): string {
  const lines = [
    'HMM SDK showcase: one simulated machine with the three reference drivers (nouveau-like GPU with SVM,',
    'amdgpu-like GPU with userptr and VRAM export, mlx5-like RDMA NIC with pinned, ODP and peer MRs),',
    `running ${run.traced.join(', ')};`,
    `then ${run.results
      .map((r) => r.scenario)
      .filter((n) => !run.traced.includes(n))
      .join(', ')} on a machine of its own. Every time is simulated, not measured on this computer.`,
    '',
  ];
  for (const r of run.results) lines.push(`- ${r.scenario}: ${r.setup}`);
  lines.push('', 'Simulated figures beside the published ones (ratio = simulated / published):', '');
  return `${lines.join('\n')}\n`;
}
