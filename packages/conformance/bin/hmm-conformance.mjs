#!/usr/bin/env node
// Entry point of the hmm-conformance CLI: runs the built code, or the TypeScript sources through tsx
// inside this repository's workspace (where dist/ may not be built yet).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
let mod;
if (existsSync(dist)) {
  mod = await import(dist);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  mod = await import(new URL('../src/cli.ts', import.meta.url).href);
}
process.exitCode = await mod.main(process.argv.slice(2));
