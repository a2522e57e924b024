/**
 * What a driver supplies to the conformance suite: a factory that builds one fresh, isolated
 * {@link ConformanceTarget} per case, and a {@link ConformanceManifest} declaring its capabilities.
 * The device-side operations follow the kernel's test device `dmirror` (lib/test_hmm.c), so any
 * driver that can copy pages through its device can be checked against the ported `hmm-tests.c`.
 *
 * @module
 */
import type { DriverCapability, Machine, Process, SimDevice } from '@hmm/core';
import type { Variant } from './catalog.js';

/**
 * Snapshot byte values, one per page, as `HMM_DMIRROR_SNAPSHOT` reports them
 * (`enum { HMM_DMIRROR_PROT_* }` in the kernel's lib/test_hmm_uapi.h).
 */
export const SnapshotByte = {
  /** No VMA, or a mapping `hmm_range_fault` cannot walk (PFNMAP/IO). */
  ERROR: 0xff,
  /** Valid VMA, page not present. */
  NONE: 0x00,
  READ: 0x01,
  WRITE: 0x02,
  /** Mapped at PMD order (or'ed with READ/WRITE). */
  PMD: 0x04,
  /** Mapped at PUD order. */
  PUD: 0x08,
  /** The shared zero page (or'ed with READ). */
  ZERO: 0x10,
  DEV_PRIVATE_LOCAL: 0x20,
  DEV_PRIVATE_REMOTE: 0x30,
  DEV_COHERENT_LOCAL: 0x40,
  DEV_COHERENT_REMOTE: 0x50,
} as const;

/** One of the {@link SnapshotByte} values (or a combination of the flag bits). */
export type SnapshotByteValue = (typeof SnapshotByte)[keyof typeof SnapshotByte];

/** What READ / WRITE report besides the data (`cmd.cpages`, `cmd.faults` of the dmirror uapi). */
export interface CommandResult {
  /** Pages copied. */
  readonly cpages: number;
  /** Device fault rounds taken to serve the command (1 for a cold range, 0 if all was mapped). */
  readonly faults: number;
}

/**
 * One open device file bound to one process (a `dmirror` open of `/dev/hmm_dmirror<N>`). Every
 * command rejects with an `HmmError` carrying the errno the kernel's dmirror returns (EFAULT for a
 * hole or PROT_NONE, EPERM for a write to read-only memory, ...).
 *
 * This version has the commands the mirror cases need. Later versions add `migrate` (to device
 * and back to system memory), `exclusive` / `checkExclusive`, `release` and `flags` (fail the next
 * allocation), each needed only by cases whose capabilities the driver declares.
 */
export interface TestDevice {
  /** `HMM_DMIRROR_READ`: the device reads `npages` pages at `addr` (faulting them in as needed). */
  read(addr: number, npages: number): Promise<CommandResult & { readonly data: Uint8Array }>;
  /** `HMM_DMIRROR_WRITE`: the device writes `data` (whole pages) at `addr`. */
  write(addr: number, data: Uint8Array): Promise<CommandResult>;
  /** `HMM_DMIRROR_SNAPSHOT`: one {@link SnapshotByte} per page, without faulting anything in. */
  snapshot(addr: number, npages: number): Promise<Uint8Array>;
  /** `release()` of the file: stops mirroring and drops every device mapping. */
  close(): Promise<void>;
  /**
   * Optional introspection: the device page-table permission (`DevPerm` bits, 0 = not mapped) of
   * each of `npages` pages at `addr`, read synchronously. With it the cases also check that
   * invalidations removed device mappings and what READ / WRITE mapped; without it those checks
   * are left out.
   */
  devicePerms?(addr: number, npages: number): Uint8Array;
  /**
   * The device and address-space context this mirror uses. With it the runner's sanitizer watches
   * every device access and invalidation of the case and fails the case on a violation (stale or
   * freed-frame mappings, writes beyond the CPU's permission); without it the sanitizer cannot see
   * the driver's device.
   */
  readonly binding?: { readonly device: SimDevice; readonly asid: number };
}

/** What a factory returns for one case: a fresh machine with the driver's device(s) on it. */
export interface ConformanceTarget {
  /** The simulated machine; the cases create their processes on it. */
  readonly machine: Machine;
  /** Opens the test device for `process` (the kernel test's `hmm_open`). */
  open(process: Process): Promise<TestDevice>;
  /** Called once after the case, passed or failed. */
  teardown?(): Promise<void>;
}

/** Options a factory receives. */
export interface ConformanceFactoryOptions {
  /** Seed for the machine (the case's seed; seed-exploring cases call the factory once per seed). */
  readonly seed: number;
  /** The memory variant the case runs in; drivers without device memory may ignore it. */
  readonly variant: Variant;
}

/** Builds one fresh, isolated target; called once per case, variant and seed. */
export type ConformanceFactory = (opts: ConformanceFactoryOptions) => Promise<ConformanceTarget>;

/** What the driver declares: its name and capabilities (the cases it cannot run are skipped). */
export interface ConformanceManifest {
  readonly name: string;
  readonly capabilities: readonly DriverCapability[];
}
