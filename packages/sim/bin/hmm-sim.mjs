#!/usr/bin/env node
// Entry point of the hmm-sim CLI: runs the built code or, inside this repository's workspace where
// dist/ may not be built yet, the TypeScript sources through tsx (with the workspace's source
// condition, so the other @hmm packages are read from source too).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
if (existsSync(dist)) {
  const { main } = await import(dist);
  process.exitCode = await main(process.argv.slice(2));
} else {
  const src = fileURLToPath(new URL('../src/main.ts', import.meta.url));
  const tsx = import.meta.resolve('tsx/esm');
  const r = spawnSync(
    process.execPath,
    ['--conditions=@hmm/source', '--import', tsx, src, ...process.argv.slice(2)],
    {
      stdio: 'inherit',
    },
  );
  process.exitCode = r.status ?? 1;
}
