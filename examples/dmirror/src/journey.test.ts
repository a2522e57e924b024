/**
 * The third-party journey (docs/your-first-driver.md), end to end, outside the workspace: pack
 * `@hmm/core` and `@hmm/conformance` with `pnpm pack`, install the tarballs with npm into a scratch
 * project, build this example driver there from its sources with the project's own TypeScript, and
 * run `npx hmm-conformance run` on it. Green means a stranger can do the same.
 */
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const work = mkdtempSync(join(tmpdir(), 'hmm-journey-'));

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

/** Runs a command, returning its stdout; throws with its output when it fails. */
function run(cmd: string, args: readonly string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, {
      cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 240_000,
    });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(
      `${cmd} ${args.join(' ')} failed in ${cwd}: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`,
    );
  }
}

describe('third-party journey: pack, install with npm, build the example driver, run the CLI', () => {
  it('packs, installs, builds and passes `npx hmm-conformance run`', () => {
    // The published packages are built from dist/: make sure it is current.
    run('npx', ['tsc', '-b', 'packages/core', 'packages/conformance'], repo);
    const tgz = join(work, 'tgz');
    mkdirSync(tgz);
    for (const pkg of ['core', 'conformance']) {
      run('npx', ['-y', 'pnpm@10', 'pack', '--pack-destination', tgz], join(repo, 'packages', pkg));
    }
    const tarballs = readdirSync(tgz).filter((f) => f.endsWith('.tgz'));
    expect(tarballs.sort()).toEqual(['hmm-conformance-0.0.0.tgz', 'hmm-core-0.0.0.tgz']);

    const app = join(work, 'my-driver');
    mkdirSync(join(app, 'src'), { recursive: true });
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'my-driver', private: true, type: 'module' }),
    );
    const typescript = (
      JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as {
        devDependencies: Record<string, string>;
      }
    ).devDependencies.typescript!;
    run(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        join(tgz, 'hmm-core-0.0.0.tgz'),
        join(tgz, 'hmm-conformance-0.0.0.tgz'),
        `typescript@${typescript}`,
      ],
      app,
    );

    // The driver's sources, as a third party would have them (tests left out), and an entry module.
    for (const f of readdirSync(here)) {
      if (f.endsWith('.ts') && !f.endsWith('.test.ts')) copyFileSync(join(here, f), join(app, 'src', f));
    }
    writeFileSync(
      join(app, 'src', 'conformance.ts'),
      "export { dmirrorFactory as factory, dmirrorManifest as manifest } from './factory.js';\n",
    );
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          outDir: 'dist',
          rootDir: 'src',
        },
        include: ['src'],
      }),
    );
    run('npx', ['tsc', '-p', '.'], app);

    const out = run('npx', ['hmm-conformance', 'run', './dist/conformance.js', '--json', 'report.json'], app);
    expect(out).toMatch(/passed/);
    const report = JSON.parse(readFileSync(join(app, 'report.json'), 'utf8')) as {
      driver: string;
      ok: boolean;
      counts: Record<string, number>;
      results: { id: string; status: string }[];
    };
    expect(report.driver).toBe('dmirror');
    expect(report.ok).toBe(true);
    expect(report.results.filter((r) => r.status === 'failed')).toEqual([]);
    // Every case dmirror can run ran and passed (the rest need THP or hugetlbfs).
    expect(report.results.filter((r) => r.status === 'passed').length).toBeGreaterThan(50);
  }, 600_000);
});
