/**
 * The plugin interfaces a driver implements to mirror process address spaces into its device.
 *
 * Kernel history: `struct hmm_mirror` and `hmm_mirror_ops` (`sync_cpu_device_pagetables`,
 * `release`) in the HMM v19 series; today the same role is played by an `mmu_interval_notifier`
 * (its `invalidate` op), `hmm_range_fault` and the `mmu_interval_read_begin` / `read_retry` /
 * `set_seq` protocol, which is what an {@link HmmMirror} uses underneath.
 *
 * @module
 */
import type { DeviceFault, SimDevice } from '../device/device.js';
import type { MmuIntervalNotifier } from '../hmm/mmu-interval-notifier.js';
import type { MmuNotifierRange } from '../mm/mmu-notifier-hooks.js';
import type { Process } from '../mm/process.js';
import type { System } from '../system/system.js';

/** Capabilities a driver declares (what the conformance suite may run against it). */
export type DriverCapability =
  'mirror' | 'device-private' | 'device-coherent' | 'exclusive' | 'p2p-exporter' | 'p2p-importer' | 'userptr';

/**
 * One device's mirror of one process address space (a dmirror open, a nouveau SVM client, an
 * mlx5 ODP MR). It owns an interval notifier and a device address-space context (ASID).
 */
export interface HmmMirror {
  /** The mirrored process. */
  readonly process: Process;
  /** The device that mirrors it. */
  readonly device: SimDevice;
  /** The device address-space context used for this process. */
  readonly asid: number;
  /** The interval notifier this mirror subscribed. */
  readonly notifier: MmuIntervalNotifier;
  /**
   * Serves a device fault (`hmm_range_fault` under the sequence protocol, then a map command), so
   * the device can replay the access. Throws (e.g. EFAULT, EPERM) to cancel the access.
   */
  handleFault(fault: DeviceFault): Promise<void>;
  /**
   * The invalidate callback: call `mmuIntervalSetSeq` under the driver lock and remove the device's
   * mappings of the range before returning. Return false only when `range.blockable` is false and
   * the driver would have to sleep.
   */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean | Promise<boolean>;
  /** Tears the mirror down: remove the notifier, unmap everything (`hmm_mirror_unregister`). */
  release(): Promise<void>;
}

/** A driver: probes its device(s) on a system and mirrors processes. */
export interface HmmMirrorDriver {
  /** Unique name, e.g. `'dmirror'`, `'nouveau'`. */
  readonly name: string;
  /** What it supports. */
  readonly capabilities: readonly DriverCapability[];
  /** Its devices, once probed. */
  readonly devices: readonly SimDevice[];
  /** Creates and programs its devices (`probe`). Called once by {@link System}. */
  probe(system: System): Promise<void>;
  /** Starts mirroring a process on a device (default: the first). */
  mirror(process: Process, device?: SimDevice): Promise<HmmMirror>;
  /** Tears everything down (`remove`): every mirror released, devices removed. */
  remove(): Promise<void>;
}
