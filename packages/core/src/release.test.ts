/**
 * Release hygiene of the monorepo, checked on every test run: every published package (each
 * `packages/*` that is not private) has the same version, a README with install, usage and links,
 * `license`, `repository`, an exports map whose every entry gives `types` and `import`, a `files`
 * list, and is in the changesets `fixed` group (versions in lockstep), in the API docs and in the
 * publint check. The publint run itself is `pnpm lint:packages`.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

interface PackageJson {
  readonly name: string;
  readonly version?: string;
  readonly private?: boolean;
  readonly license?: string;
  readonly repository?: { readonly type?: string; readonly url?: string; readonly directory?: string };
  readonly exports?: Record<string, unknown>;
  readonly publishConfig?: { readonly access?: string; readonly exports?: Record<string, unknown> };
  readonly files?: readonly string[];
  readonly scripts?: Record<string, string>;
}

function readJson<T>(...path: string[]): T {
  return JSON.parse(readFileSync(join(ROOT, ...path), 'utf8')) as T;
}

/** Every package under `packages/` with its directory name. */
const PACKAGES = readdirSync(join(ROOT, 'packages'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(ROOT, 'packages', d.name, 'package.json')))
  .map((d) => ({ dir: d.name, pkg: readJson<PackageJson>('packages', d.name, 'package.json') }));

const PUBLISHED = PACKAGES.filter((p) => p.pkg.private !== true);

const CHANGESET = readJson<{ fixed: string[][]; linked: string[][]; ignore: string[] }>(
  '.changeset',
  'config.json',
);
const ROOT_PKG = readJson<PackageJson>('package.json');
const TYPEDOC = readJson<{ entryPoints: string[] }>('typedoc.json');

/** Each subpath of an exports map with its conditions (a string target counts as no conditions). */
function exportEntries(exportsMap: Record<string, unknown>): [string, Record<string, unknown>][] {
  return Object.entries(exportsMap).map(([sub, v]) => [
    sub,
    typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {},
  ]);
}

describe('release hygiene', () => {
  it('finds the published packages', () => {
    expect(PUBLISHED.map((p) => p.pkg.name)).toEqual(
      expect.arrayContaining(['@hmm/core', '@hmm/conformance']),
    );
    for (const { dir, pkg } of PUBLISHED) expect(pkg.name, `packages/${dir}`).toMatch(/^@hmm\//);
  });

  it('keeps every published package at the same version (lockstep)', () => {
    const versions = new Map(PUBLISHED.map((p) => [p.pkg.name, p.pkg.version]));
    const distinct = new Set(versions.values());
    expect(distinct.size, `versions differ: ${JSON.stringify(Object.fromEntries(versions))}`).toBe(1);
    expect([...distinct][0]).toMatch(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
  });

  it('puts every published package, and nothing else, in one changesets fixed group', () => {
    const names = PUBLISHED.map((p) => p.pkg.name).sort();
    const groups = CHANGESET.fixed.filter((g) => g.some((n) => names.includes(n)));
    expect(groups, 'one fixed group holds the @hmm packages').toHaveLength(1);
    expect([...groups[0]!].sort()).toEqual(names);
    expect(CHANGESET.linked).toEqual([]);
  });

  for (const { dir, pkg } of PUBLISHED) {
    describe(pkg.name, () => {
      it('has license, repository, files and public access', () => {
        expect(pkg.license).toBe(ROOT_PKG.license);
        expect(pkg.repository?.type).toBe('git');
        expect(pkg.repository?.url).toMatch(/^git\+https:\/\/.+\.git$/);
        expect(pkg.repository?.directory).toBe(`packages/${dir}`);
        expect(pkg.files?.length ?? 0).toBeGreaterThan(0);
        expect(pkg.files).toContain('dist');
        expect(pkg.publishConfig?.access).toBe('public');
      });

      it('exports every entry with types and import, also as published', () => {
        for (const [which, map] of [
          ['exports', pkg.exports],
          ['publishConfig.exports', pkg.publishConfig?.exports],
        ] as const) {
          expect(map, `${which} is missing`).toBeDefined();
          const entries = exportEntries(map!).filter(([sub]) => sub !== './package.json');
          expect(entries.length, `${which} has no entry point`).toBeGreaterThan(0);
          for (const [sub, cond] of entries) {
            expect(cond.types, `${which}["${sub}"].types`).toMatch(/^\.\/dist\/.+\.d\.ts$/);
            expect(cond.import, `${which}["${sub}"].import`).toMatch(/^\.\/dist\/.+\.js$/);
          }
        }
        // What is published resolves without the workspace's source condition.
        expect(JSON.stringify(pkg.publishConfig?.exports)).not.toContain('@hmm/source');
      });

      it('has a README with install, usage and links', () => {
        const path = join(ROOT, 'packages', dir, 'README.md');
        expect(existsSync(path), `packages/${dir}/README.md`).toBe(true);
        const readme = readFileSync(path, 'utf8');
        expect(readme.startsWith(`# ${pkg.name}\n`), 'the title is the package name').toBe(true);
        expect(readme).toMatch(/^## Install$/m);
        expect(readme).toContain(`npm install`);
        expect(readme).toContain(pkg.name);
        expect(readme, 'a usage example').toMatch(/```(ts|sh)\n/);
        expect(readme).toMatch(/^## Links$/m);
      });

      it('is in the API docs and in the publint check', () => {
        expect(TYPEDOC.entryPoints).toContain(`packages/${dir}`);
        expect(existsSync(join(ROOT, 'packages', dir, 'typedoc.json'))).toBe(true);
      });
    });
  }

  it('runs publint --strict on every package from lint, which CI runs', () => {
    const scripts = ROOT_PKG.scripts ?? {};
    expect(scripts['lint:packages']).toMatch(/^tsc -b && /);
    expect(scripts['lint:packages']).toContain('publint --strict');
    expect(scripts['lint:packages']).toContain('./packages/*');
    expect(scripts.lint).toContain('pnpm lint:packages');
    expect(scripts.test).toContain('pnpm lint');
  });

  it('names only published packages in pending changesets', () => {
    const names = new Set(PUBLISHED.map((p) => p.pkg.name));
    const dir = join(ROOT, '.changeset');
    for (const f of readdirSync(dir).filter((f) => f.endsWith('.md') && f !== 'README.md')) {
      const front = /^---\n([\s\S]*?)\n---/.exec(readFileSync(join(dir, f), 'utf8'));
      expect(front, `.changeset/${f} has no front matter`).not.toBeNull();
      for (const line of front![1]!.split('\n').filter((l) => l.trim() !== '')) {
        const m = /^['"]?(@[^'"]+)['"]?:\s*(major|minor|patch)\s*$/.exec(line.trim());
        expect(m, `.changeset/${f}: '${line}'`).not.toBeNull();
        expect(names.has(m![1]!), `.changeset/${f} names ${m![1]}, not a published package`).toBe(true);
      }
    }
  });
});
