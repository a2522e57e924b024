/**
 * The `hmm-conformance` command line. This version has `list`; `run` comes with the runner.
 *
 * ```sh
 * hmm-conformance list            # a table of every case
 * hmm-conformance list --json     # the same as JSON
 * ```
 *
 * @module
 */
import { parseArgs } from 'node:util';
import { CASES } from './catalog.js';

const USAGE = `usage: hmm-conformance list [--json]

Commands:
  list      every conformance case with its id, kernel reference, required capabilities and variants

Options:
  --json    print JSON instead of a table
  -h, --help`;

/** Runs the CLI with `argv` (without node and the script); returns the exit code. */
export function main(
  argv: readonly string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
): number {
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
    out(`hmm-conformance: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const [cmd] = parsed.positionals;
  if (parsed.values.help || cmd === undefined) {
    out(`${USAGE}\n`);
    return cmd === undefined && !parsed.values.help ? 2 : 0;
  }
  if (cmd !== 'list') {
    out(`hmm-conformance: unknown command '${cmd}'\n${USAGE}\n`);
    return 2;
  }
  if (parsed.values.json) {
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
