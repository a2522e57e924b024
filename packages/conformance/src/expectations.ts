/**
 * Known-failure expectations (in the manner of web-platform-tests' expectation files): a driver
 * declares, per case, that it is known to fail or must not be run, with the reason. A case expected
 * to fail that passes is an error, so that expectations cannot go stale.
 *
 * ```ts
 * export const expectations: Expectations = {
 *   'hmm.exclusive_cow': { expect: 'fail', reason: 'fork of exclusive entries not done yet' },
 *   'hmm.migrate [device-coherent]': { expect: 'skip', reason: 'hangs on the coherent arena' },
 * };
 * ```
 *
 * @module
 */
import { findCase } from './catalog.js';
import type { Variant } from './catalog.js';

/** One expectation: the case is known to fail (it still runs) or is not run at all. */
export interface Expectation {
  readonly expect: 'fail' | 'skip';
  /** Why (shown in the report). */
  readonly reason: string;
}

/**
 * Expectations by case id (`hmm.anon_read`, every variant) or by case id and variant
 * (`hmm.anon_read [device-coherent]`, which wins over the bare id).
 */
export type Expectations = Readonly<Record<string, Expectation>>;

const KEY = /^(\S+)(?: \[(device-private|device-coherent)\])?$/;

/** The key of `id` in `variant`: `<id> [<variant>]`. */
export function expectationKey(id: string, variant: Variant): string {
  return `${id} [${variant}]`;
}

/**
 * Checks that every key names a catalogue case (and one of its variants) and every value is
 * `{ expect: 'fail' | 'skip', reason }` with a non-empty reason. Throws an `Error` naming the
 * first bad entry: an expectation about a case that does not exist is stale.
 */
export function validateExpectations(expectations: unknown): asserts expectations is Expectations {
  if (typeof expectations !== 'object' || expectations === null || Array.isArray(expectations)) {
    throw new Error('@hmm/conformance: expectations must be an object keyed by case id');
  }
  for (const [key, value] of Object.entries(expectations as Record<string, unknown>)) {
    const m = KEY.exec(key);
    const info = m === null ? undefined : findCase(m[1]!);
    if (m === null || info === undefined) {
      throw new Error(
        `@hmm/conformance: expectation '${key}' names no case (use '<id>' or '<id> [<variant>]')`,
      );
    }
    const variant = m[2] as Variant | undefined;
    if (variant !== undefined && !info.variants.includes(variant)) {
      throw new Error(`@hmm/conformance: expectation '${key}': ${info.id} does not run in ${variant}`);
    }
    const v = value as Partial<Expectation> | null;
    if (
      typeof v !== 'object' ||
      v === null ||
      (v.expect !== 'fail' && v.expect !== 'skip') ||
      typeof v.reason !== 'string' ||
      v.reason.trim() === ''
    ) {
      throw new Error(
        `@hmm/conformance: expectation '${key}' must be { expect: 'fail' | 'skip', reason: '<why>' }`,
      );
    }
  }
}

/** The expectation of case `id` in `variant` (the variant key first, then the bare id), or null. */
export function expectationFor(
  expectations: Expectations | undefined,
  id: string,
  variant: Variant,
): Expectation | null {
  if (expectations === undefined) return null;
  return expectations[expectationKey(id, variant)] ?? expectations[id] ?? null;
}
