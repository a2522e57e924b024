import { defineConfig } from 'vitest/config';

/** One root config over every package: tests live beside the code as `*.test.ts`. */
export default defineConfig({
  resolve: {
    conditions: ['@hmm/source', 'module', 'import', 'default'],
  },
  ssr: {
    resolve: {
      conditions: ['@hmm/source', 'module', 'import', 'default'],
    },
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'examples/*/src/**/*.test.ts'],
    environment: 'node',
    pool: 'threads',
    testTimeout: 60_000,
  },
});
