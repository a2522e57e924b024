// @ts-check
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

/** Shown with every determinism violation in library code. */
const DETERMINISM =
  'the core must be deterministic (same seed -> same trace, byte for byte): use the simulated clock ' +
  '(virtual time in ns) and the seeded scheduler / seeded PRNG from the sim layer instead.';

export default defineConfig(
  // Generated and third-party output is never linted.
  globalIgnores(['**/node_modules/', '**/dist/', 'docs/api/', '**/coverage/']),

  js.configs.recommended,
  tseslint.configs.recommended,

  {
    files: ['**/*.{js,mjs,cjs}'],
    languageOptions: {
      // Plain JS here is Node tooling (configs, scripts); declare the few Node globals it may use.
      globals: { process: 'readonly', console: 'readonly', URL: 'readonly' },
    },
  },

  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
    },
  },

  {
    // Determinism: library code may not read wall-clock time, use unseeded randomness or real timers.
    files: ['packages/*/src/**/*.ts'],
    ignores: ['packages/*/src/**/*.test.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'Math', property: 'random', message: `Math.random() is unseeded; ${DETERMINISM}` },
        { object: 'Date', property: 'now', message: `Date.now() reads the wall clock; ${DETERMINISM}` },
        {
          object: 'performance',
          property: 'now',
          message: `performance.now() reads the wall clock; ${DETERMINISM}`,
        },
        {
          object: 'process',
          property: 'hrtime',
          message: `process.hrtime() reads the wall clock; ${DETERMINISM}`,
        },
        {
          object: 'crypto',
          property: 'getRandomValues',
          message: `crypto.getRandomValues() is unseeded; ${DETERMINISM}`,
        },
        {
          object: 'crypto',
          property: 'randomUUID',
          message: `crypto.randomUUID() is unseeded; ${DETERMINISM}`,
        },
        ...['setTimeout', 'setInterval', 'setImmediate'].map((property) => ({
          object: 'globalThis',
          property,
          message: `real timers run in wall-clock time; ${DETERMINISM}`,
        })),
      ],
      'no-restricted-globals': [
        'error',
        ...['setTimeout', 'setInterval', 'setImmediate'].map((name) => ({
          name,
          message: `${name}() runs in wall-clock time; ${DETERMINISM}`,
        })),
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: "NewExpression[callee.name='Date'][arguments.length=0]",
          message: `new Date() reads the wall clock; ${DETERMINISM}`,
        },
        {
          selector: "CallExpression[callee.name='Date']",
          message: `Date() reads the wall clock; ${DETERMINISM}`,
        },
      ],
      'no-restricted-imports': [
        'error',
        {
          paths: [
            'timers',
            'node:timers',
            'timers/promises',
            'node:timers/promises',
            'perf_hooks',
            'node:perf_hooks',
          ].map((name) => ({
            name,
            message: `wall-clock timers and clocks are not allowed in library code; ${DETERMINISM}`,
          })),
        },
      ],
    },
  },
);
