/**
 * Shared pieces of the cases: the case signature, the kernel fixture (`FIXTURE_SETUP(hmm)`: a
 * process and an open device; teardown closes it and checks the machine) and int buffers.
 *
 * @module
 */
import { MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import type { Machine, Process } from '@hmm/core';
import type { Capability, Variant } from '../catalog.js';
import { ConformanceFailure, check } from '../assert.js';
import type { ConformanceTarget, TestDevice } from '../target.js';

/** The page size. */
export const P = PAGE_SIZE;
/** HMM_BUFFER_SIZE (4 MiB in the kernel), shrunk to 1 MiB to stay fast. */
export const SIZE = 1 << 20;
/** Pages of a {@link SIZE} buffer. */
export const NPAGES = SIZE / P;
/** Ints of a {@link SIZE} buffer. */
export const INTS = SIZE / 4;
/** Ints per page. */
export const PAGE_INTS = P / 4;
export const RW = Prot.READ | Prot.WRITE;
export const PRIV_ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;
/** NTIMES of the kernel test. */
export const NTIMES = 10;

/** What a case receives besides its target. */
export interface CaseContext {
  /** The seed the target was built with. */
  readonly seed: number;
  /** The memory variant. */
  readonly variant: Variant;
  /** Seeds a seed-exploring case runs over (from `seed` on). */
  readonly seeds: number;
  /** The capabilities the driver declared (cases with optional parts look at them). */
  readonly capabilities: readonly Capability[];
  /** A further fresh target (seed-exploring cases); torn down by the runner after the case. */
  createTarget(seed: number): Promise<ConformanceTarget>;
  /**
   * Runs the sanitizer's full check now over every device mapping of the case's targets (freed
   * frames, stale mappings, write beyond the CPU). Returns every violation recorded so far (oldest
   * first); each also fails the case when it ends. Cases call it where a transient violation would
   * otherwise be overwritten, and at the end of each seed to report a violation at its seed.
   */
  sanitize(): readonly Error[];
}

/** One runnable case. Throws a {@link ConformanceFailure} when the driver breaks a contract. */
export type CaseFn = (t: ConformanceTarget, ctx: CaseContext) => Promise<void>;

/** Fixture of one kernel test: the target, the test process and its open device. */
export interface Fixture {
  readonly t: ConformanceTarget;
  readonly p: Process;
  readonly dev: TestDevice;
}

/**
 * FIXTURE_SETUP/TEARDOWN(hmm): creates the process, opens the device, runs `body` in a task of the
 * machine's scheduler, closes the device and checks the machine's invariants (`extraRefs` counts
 * references the case itself holds).
 */
export async function withDevice(
  t: ConformanceTarget,
  body: (f: Fixture) => Promise<void>,
  extraRefs?: (pfn: number) => number,
): Promise<void> {
  const m = t.machine;
  await m.sched.runTask('hmm-tests', async () => {
    const p = m.createProcess('hmm-tests');
    const dev = await t.open(p);
    try {
      await body({ t, p, dev });
    } finally {
      await dev.close();
    }
  });
  checkMachine(m, extraRefs);
}

/**
 * Checks the machine's invariants (`Machine.checkInvariants`, `extraRefs` counting references the
 * case itself holds) as a contract of the case: a {@link ConformanceFailure} if one is broken.
 */
export function checkMachine(m: Machine, extraRefs?: (pfn: number) => number): void {
  try {
    m.checkInvariants(extraRefs);
  } catch (e) {
    throw new ConformanceFailure(
      `the machine is consistent after the case: ${e instanceof Error ? e.message : String(e)}`,
      {},
      { cause: e },
    );
  }
}

/** Fixture of a two-device kernel test (`FIXTURE(hmm2)`): one process, a file of each device. */
export interface Fixture2 {
  readonly t: ConformanceTarget;
  readonly p: Process;
  readonly dev0: TestDevice;
  readonly dev1: TestDevice;
}

/**
 * FIXTURE_SETUP/TEARDOWN(hmm2): as {@link withDevice}, with the target's two devices opened by the
 * same process (`open(p)` and `open(p, { device: 1 })`).
 */
export async function withDevices2(
  t: ConformanceTarget,
  body: (f: Fixture2) => Promise<void>,
): Promise<void> {
  await withDevice(t, async ({ p, dev }) => {
    const dev1 = await t.open(p, { device: 1 });
    try {
      await body({ t, p, dev0: dev, dev1 });
    } finally {
      await dev1.close();
    }
  });
}

/** True if the driver declared device memory usable in this case's variant. */
export function hasDeviceMemory(ctx: CaseContext): boolean {
  return ctx.capabilities.includes(ctx.variant === 'device-coherent' ? 'device-coherent' : 'device-private');
}

/** The optional commands of a {@link TestDevice}. */
type OptionalCommand =
  'migrateToDevice' | 'migrateToSystem' | 'exclusive' | 'checkExclusive' | 'release' | 'failNextAlloc';

/**
 * The optional command `name` of `dev`, bound to it; a {@link ConformanceFailure} if the driver
 * declared the capability that needs it but does not implement it.
 */
export function command<K extends OptionalCommand>(dev: TestDevice, name: K): NonNullable<TestDevice[K]> {
  const fn = dev[name];
  if (typeof fn !== 'function') {
    throw new ConformanceFailure(
      `the driver declares the capability this case needs, so its TestDevice implements ${name}()`,
    );
  }
  return (fn as (...args: unknown[]) => unknown).bind(dev) as NonNullable<TestDevice[K]>;
}

/** Little-endian int32 bytes with `int[i] = f(i)` for `n` ints. */
export function ints(n: number, f: (i: number) => number): Uint8Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return new Uint8Array(a.buffer);
}

/** Checks `int[i] === f(i)` for every int of `b` from `from` on, reporting the first mismatch. */
export function checkInts(b: Uint8Array, f: (i: number) => number, what: string, from = 0): void {
  const v = new Int32Array(b.buffer, b.byteOffset, b.byteLength >> 2);
  check(v.length > from, `${what}: ${v.length} ints, expected more than ${from}`);
  for (let i = from; i < v.length; i++) {
    if (v[i] !== f(i)) throw new ConformanceFailure(`${what}: int[${i}] is ${v[i]}, expected ${f(i)}`);
  }
}

/**
 * Device mappings over `npages` pages at `addr` (via the optional {@link TestDevice.devicePerms}),
 * or null if the driver does not expose them.
 */
export function devicePerms(dev: TestDevice, addr: number, npages: number): Uint8Array | null {
  return dev.devicePerms?.(addr, npages) ?? null;
}

/** Checks, if the driver exposes its mappings, that none of `npages` pages at `addr` is mapped. */
export function checkUnmapped(dev: TestDevice, addr: number, npages: number, what: string): void {
  const perms = devicePerms(dev, addr, npages);
  if (perms === null) return;
  const mapped = perms.reduce((n, x) => n + (x !== 0 ? 1 : 0), 0);
  check(mapped === 0, `${what}: ${mapped} of ${npages} pages still mapped on the device`);
}
