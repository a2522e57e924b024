/**
 * The suite's own assertions (no test framework needed): each failed check throws a
 * {@link ConformanceFailure} naming the broken contract; the runner adds the case id, kernel
 * reference, variant and seed.
 *
 * @module
 */
import { isHmmError } from '@hmm/core';
import type { Variant } from './catalog.js';

/** Where a failure happened; filled in by the runner (a seed loop sets its own seed first). */
export interface FailureLocation {
  readonly caseId: string | null;
  readonly kernelRef: string | null;
  readonly variant: Variant | null;
  readonly seed: number | null;
}

/** A case broke a contract: which case, its kernel reference, the contract and the seed. */
export class ConformanceFailure extends Error {
  override readonly name = 'ConformanceFailure';
  readonly caseId: string | null;
  readonly kernelRef: string | null;
  readonly variant: Variant | null;
  readonly seed: number | null;

  constructor(
    /** The broken contract, e.g. `device READ returns the CPU's data: int[512] is 0, expected 512`. */
    readonly contract: string,
    where: Partial<FailureLocation> = {},
    options?: { cause?: unknown },
  ) {
    super(ConformanceFailure.format(contract, where), options);
    this.caseId = where.caseId ?? null;
    this.kernelRef = where.kernelRef ?? null;
    this.variant = where.variant ?? null;
    this.seed = where.seed ?? null;
  }

  /** The same failure with the missing location fields filled from `where`. */
  locate(where: Partial<FailureLocation>): ConformanceFailure {
    return new ConformanceFailure(
      this.contract,
      {
        caseId: this.caseId ?? where.caseId ?? null,
        kernelRef: this.kernelRef ?? where.kernelRef ?? null,
        variant: this.variant ?? where.variant ?? null,
        seed: this.seed ?? where.seed ?? null,
      },
      { cause: this.cause },
    );
  }

  /**
   * `e` as a failure at `where`: a {@link ConformanceFailure} is located, anything else (an
   * unexpected rejection, a sanitizer report) becomes one whose contract is to run without it.
   */
  static from(e: unknown, where: Partial<FailureLocation>): ConformanceFailure {
    if (e instanceof ConformanceFailure) return e.locate(where);
    const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    return new ConformanceFailure(`the case runs without an unexpected error, got ${text}`, where, {
      cause: e,
    });
  }

  private static format(contract: string, where: Partial<FailureLocation>): string {
    const head = [
      where.caseId ?? null,
      where.variant != null ? `[${where.variant}]` : null,
      where.kernelRef != null ? `(${where.kernelRef})` : null,
      where.seed != null ? `seed ${where.seed}` : null,
    ].filter((s) => s !== null);
    return head.length === 0 ? contract : `${head.join(' ')}: ${contract}`;
  }
}

/** Throws a {@link ConformanceFailure} with `contract` unless `cond`. */
export function check(cond: boolean, contract: string): asserts cond {
  if (!cond) throw new ConformanceFailure(contract);
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v instanceof Uint8Array) return `[${Array.from(v).join(', ')}]`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b) || Array.isArray(a) || Array.isArray(b)) {
    const x = Array.from(a as ArrayLike<unknown>);
    const y = Array.from(b as ArrayLike<unknown>);
    return x.length === y.length && x.every((v, i) => deepEqual(v, y[i]));
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return (
    ka.length === kb.length &&
    ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
  );
}

/** Throws unless `actual` deeply equals `expected` (arrays, typed arrays, plain objects). */
export function checkEqual<T>(actual: T, expected: T, what: string): void {
  if (!deepEqual(actual, expected)) {
    throw new ConformanceFailure(`${what}: got ${show(actual)}, expected ${show(expected)}`);
  }
}

/** Throws unless `promise` rejects with an `HmmError` of errno `code`. */
export async function checkRejects(
  promise: Promise<unknown>,
  code: string,
  what = 'the command',
): Promise<void> {
  let got: string;
  try {
    await promise;
    got = 'success';
  } catch (e) {
    if (!isHmmError(e)) throw e;
    got = e.code;
  }
  if (got !== code) throw new ConformanceFailure(`${what} fails with ${code}, got ${got}`);
}

/** Runs `body`; a failure (or error) inside it is reported at `seed`. */
export async function withSeed(seed: number, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    throw ConformanceFailure.from(e, { seed });
  }
}
