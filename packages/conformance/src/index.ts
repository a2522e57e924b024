/**
 * `@hmm/conformance`: the conformance suite for simulated HMM drivers. This first version holds the
 * catalogue of cases (the kernel's `hmm-tests.c`, with stable ids and kernel references) and the
 * `hmm-conformance list` command.
 *
 * @packageDocumentation
 */
export { CASES, findCase } from './catalog.js';
export type { CaseInfo, Variant } from './catalog.js';
export { main as cliMain } from './cli.js';
