/**
 * What a driver supplies to the conformance suite: a factory that builds one fresh, isolated
 * {@link ConformanceTarget} per case, and a {@link ConformanceManifest} declaring its capabilities.
 * The device-side operations follow the kernel's test device `dmirror` (lib/test_hmm.c), so any
 * driver that can copy pages through its device can be checked against the ported `hmm-tests.c`.
 *
 * @module
 */
import type { Machine, P2pMapTypeId, PciEndpoint, PciTopology, Process, SimDevice } from '@hmm/core';
import type { Capability, Variant } from './catalog.js';

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

/** What MIGRATE_TO_DEV and EXCLUSIVE report: the pages read back through the device, as READ does. */
export interface ReadBackResult extends CommandResult {
  /** The read-back of the whole range (`cmd.ptr` of the uapi): `npages` pages. */
  readonly data: Uint8Array;
}

/**
 * One open device file bound to one process (a `dmirror` open of `/dev/hmm_dmirror<N>`). Every
 * command rejects with an `HmmError` carrying the errno the kernel's dmirror returns (EFAULT for a
 * hole or PROT_NONE, EPERM for a write to read-only memory, ...).
 *
 * READ, WRITE and SNAPSHOT are mandatory. The device-memory commands (`migrateToDevice`,
 * `migrateToSystem`, `release`, `failNextAlloc`) are needed by the cases that require the
 * `device-private` capability (and, in the device-coherent variant, `device-coherent`); the
 * exclusive-access commands (`exclusive`, `checkExclusive`) by the cases that require `exclusive`.
 * A driver that declares a capability but lacks one of its commands fails the cases that use it.
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
   * `HMM_DMIRROR_MIGRATE_TO_DEV`: migrates the `npages` pages at `addr` to this device's memory and
   * reads them back through the device. `cpages` counts the pages read back, each of which must now
   * be in this device's memory. Rejects EINVAL for a range with a hole or an unreadable (PROT_NONE)
   * VMA, ENOENT if a page did not land in this device's memory (shared memory, a page on another
   * device, an allocation failure).
   */
  migrateToDevice?(addr: number, npages: number): Promise<ReadBackResult>;
  /**
   * `HMM_DMIRROR_MIGRATE_TO_SYS`: migrates this device's pages among the `npages` pages at `addr`
   * back to system memory; `cpages` counts the pages moved. EINVAL as for `migrateToDevice`.
   */
  migrateToSystem?(addr: number, npages: number): Promise<CommandResult>;
  /**
   * `HMM_DMIRROR_EXCLUSIVE`: makes each page exclusive to the device (`make_device_exclusive`),
   * maps it for atomics and reads the range back through the device (`cpages` = pages read).
   */
  exclusive?(addr: number, npages: number): Promise<ReadBackResult>;
  /**
   * `HMM_DMIRROR_CHECK_EXCLUSIVE`: resolves if no page of the range is still mapped for atomics by
   * the device, rejects EPERM if one is.
   */
  checkExclusive?(addr: number, npages: number): Promise<void>;
  /** `HMM_DMIRROR_RELEASE`: the device evicts all its memory to system memory and frees it. */
  release?(): Promise<void>;
  /** `HMM_DMIRROR_FLAGS` with `HMM_DMIRROR_FLAG_FAIL_ALLOC`: the next device-page allocation fails. */
  failNextAlloc?(): void;
  /**
   * Fault injection (drivers declaring `fault-injection`): the next transfer of the device's copy
   * engine between system and device memory (either way) stops after `afterPages` pages, as
   * `CopyEngine.failNext` does: a prefix arrives, the rest does not. The driver must then migrate
   * only the pages that were copied (a destination left empty is not migrated) and lose no byte.
   */
  failNextCopy?(afterPages: number): void;
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
   * the driver's device. `owner` is the device-memory owner the driver passes to `migrate_vma` and
   * `make_device_exclusive`: the MIGRATE and EXCLUSIVE invalidations it causes itself, which its
   * notifier may skip, are then not reported.
   */
  readonly binding?: {
    readonly device: SimDevice;
    readonly asid: number;
    /** More contexts of the same device the mirror uses (e.g. one per memory region); each is watched. */
    readonly asids?: readonly number[];
    readonly owner?: unknown;
  };
}

/** Options of {@link ConformanceTarget.open}. */
export interface OpenOptions {
  /**
   * Which of the target's devices to open: 0 (default; the kernel's `hmm_dmirror0`, or
   * `hmm_dmirror2` in the device-coherent variant) or 1 (`hmm_dmirror1` / `hmm_dmirror3`, for the
   * `hmm2` cases; needs the `two-devices` capability).
   */
  readonly device?: 0 | 1;
}

/** What a factory returns for one case: a fresh machine with the driver's device(s) on it. */
export interface ConformanceTarget {
  /** The simulated machine; the cases create their processes on it. */
  readonly machine: Machine;
  /**
   * Opens a test device for `process` (the kernel test's `hmm_open`): the first device, or the
   * second one with `{ device: 1 }` (drivers declaring `two-devices`). Both devices are of the
   * case's variant (device-private or device-coherent memory).
   */
  open(process: Process, opts?: OpenOptions): Promise<TestDevice>;
  /**
   * Peer-to-peer side of the target (needed by the p2p cases, which run for drivers declaring
   * `p2p-exporter` or `p2p-importer`): an exporter (the driver's own, or for an importer-only driver
   * any exporter it imports from), and the driver's importer if it declares `p2p-importer`.
   */
  readonly p2p?: P2pTarget;
  /**
   * User-pointer objects (needed by the userptr cases, which run for drivers declaring `userptr`):
   * the driver registers a process's memory as a device object (a GPU userptr BO, an RDMA memory
   * region), pinned or mirrored.
   */
  readonly userptr?: UserptrTarget;
  /**
   * Fault injection (drivers declaring `fault-injection`): hot-removes the target's first device, as
   * the driver's remove path does (`dmirror_device_remove`): its device memory is evicted to system
   * memory (`migrate_device_range`), its mirrors stop (device mappings dropped, notifiers removed;
   * later commands of its open `TestDevice`s reject with a typed error, closing them still works),
   * its pagemap is unregistered and the device goes away. Runs inside a task. A second call rejects
   * with EINVAL or ENODEV and changes nothing; {@link teardown} still works after it.
   */
  removeDevice?(): Promise<void>;
  /** Called once after the case, passed or failed. */
  teardown?(): Promise<void>;
}

/** Where an exported object lives: in the exporter's BAR (peer memory) or in system memory. */
export type P2pPlace = 'bar' | 'system';

/**
 * Where an importer sits relative to the exporter: `'peer'` has a peer path to the exporter's BAR
 * (e.g. below the same switch: `pci_p2pdma_distance` gives `PCI_P2PDMA_MAP_BUS_ADDR`); `'no-peer-path'`
 * has none (e.g. under a host bridge that forwards no peer traffic: `PCI_P2PDMA_MAP_NOT_SUPPORTED`).
 */
export type P2pPosition = 'peer' | 'no-peer-path';

/**
 * One exported object of a driver (the exporter side of the 2019 linux-mm `p2p_map` proposal): an
 * object of `pages` pages that a process maps by `mmap` of the device file (a VM_PFNMAP mapping
 * whose `VmOperations` implement `fault`, `p2pMap` and `p2pUnmap`). Its `p2pMap` must return the
 * object's current frames: BAR frames (`type` the topology's distance type) when the importer can
 * reach the BAR and the object is, or can be placed, there; system pages (`type`
 * `P2pMapType.NOT_SUPPORTED`) otherwise. Every relocation revokes the importers first
 * (`zapVmaPtes` over every mapping). Each method runs inside a task of the machine's scheduler.
 */
export interface P2pExporterHandle {
  /** Pages of the object. */
  readonly pages: number;
  /** Where the object is now. */
  readonly place: P2pPlace;
  /**
   * `mmap` of the device file by `process`: the whole object, shared, read-write; resolves to the
   * address. The CPU reads and writes the object through it.
   */
  mmap(process: Process): Promise<number>;
  /**
   * Moves the object to `to` (revoke every mapping with `zapVmaPtes`, copy, free the old place);
   * `'bar'` falls back to `'system'` when the BAR has no room. Resolves to where it went.
   */
  move(to: P2pPlace): Promise<P2pPlace>;
  /** Fills the free part of the BAR (`pci_alloc_p2pmem` of every free page) so nothing fits. */
  exhaustBar(): void;
  /** Frees what {@link exhaustBar} took. */
  releaseBar(): void;
  /**
   * Exporter teardown: revokes every importer (`zapVmaPtes`; their notifiers drop their device
   * mappings and give the peer mappings back), then frees the object's memory. Later `p2pMap`
   * calls and CPU faults on the device file fail (ENODEV).
   */
  teardown(): Promise<void>;
}

/**
 * A driver's importer of one range of one process (the importer side of `p2p_map`): a device
 * context whose faults on the range call `p2pMap` under the interval-notifier sequence protocol,
 * and whose invalidate callback removes its device entries, waits for them to be gone, and calls
 * `p2pUnmap`.
 */
export interface P2pImporterHandle {
  /**
   * The device reads `len` bytes at `addr` (inside the range), faulting the mapping in through
   * `p2pMap` when it has none. A transfer of several pages takes simulated time (it crosses the
   * bus page by page), so an invalidation can land in the middle of it.
   */
  read(addr: number, len: number): Promise<Uint8Array>;
  /** The peer mapping it holds now (`P2pMapping` from `p2pMap`), or null when it holds none. */
  readonly mapping: { readonly type: P2pMapTypeId } | null;
  /** `p2pMap` calls it has made so far. */
  readonly maps: number;
  /** Device page-table entries it has over its range now (0 once revoked). */
  devicePages(): number;
  /** Importer teardown: drops its device entries, gives the mapping back, removes its notifier. */
  close(): Promise<void>;
  /** The device and context, so that the runner's sanitizer watches every access (optional). */
  readonly binding?: { readonly device: SimDevice; readonly asid: number };
}

/**
 * What the peer-to-peer cases need of a target. An exporter-only driver (`p2p-exporter` without
 * `p2p-importer`) leaves out {@link createImporter} and gives {@link exporterEndpoint}: the cases
 * then import through the suite's `ReferenceP2pImporter`, placed on {@link topology} next to the
 * exporter (`'peer'`: a new device below the exporter's switch) or far from it (`'no-peer-path'`: a
 * new device below a new host bridge that forwards no peer traffic). A driver declaring
 * `p2p-importer` must supply {@link createImporter}; the cases fail otherwise.
 */
export interface P2pTarget {
  /** The PCI topology the exporter and importers sit in. */
  readonly topology: PciTopology;
  /**
   * The exporter's device on {@link topology} (needed without {@link createImporter}: the
   * reference importers are placed relative to it; for `'peer'` its parent must be a switch).
   */
  readonly exporterEndpoint?: PciEndpoint;
  /** Creates an exporter of an object of `pages` pages (in system memory at first). */
  createExporter(pages: number): Promise<P2pExporterHandle>;
  /**
   * The driver's importer (drivers declaring `p2p-importer`): creates one at `position` relative to
   * the exporter, bound to `process` and the `pages` pages at `addr` (a mapping of the exporter's
   * device file).
   */
  createImporter?(
    process: Process,
    addr: number,
    pages: number,
    position: P2pPosition,
  ): Promise<P2pImporterHandle>;
}

/** How a {@link UserptrHandle} keeps the device's view of the memory valid. */
export type UserptrHandleMode = 'pinned' | 'mirrored';

/** Options of {@link UserptrTarget.register}. */
export interface UserptrRegisterOptions {
  /** The device may write the object (a writable BO, an MR with write access); else read only. */
  readonly write: boolean;
}

/**
 * One user-pointer object: pages of a process's memory the device reaches as one object. The suite
 * holds each mode to its own contract:
 *
 * - `'pinned'` (`pin_user_pages` with FOLL_LONGTERM: `ib_umem_get`, a pinning GPU driver): the
 *   object keeps the frames it pinned at registration until released. Reclaim cannot take them;
 *   fork gives the child copies and leaves the pinned frames to the parent; after munmap the
 *   device still reaches them (the data as it was).
 * - `'mirrored'` (an interval notifier and `hmm_range_fault` before use: amdgpu userptr BOs, ODP
 *   MRs): the object holds no page reference; after an invalidation it collects the pages again, so
 *   the device sees what the CPU maps at the address now (the parent's copy after a COW break, a
 *   page swapped back in), and an access after munmap fails with EFAULT.
 *
 * Each method runs inside a task of the machine's scheduler.
 */
export interface UserptrHandle {
  readonly mode: UserptrHandleMode;
  /**
   * The device reads the whole object now; resolves to the bytes it saw. Rejects with the driver's
   * errno (EFAULT when the memory is gone).
   */
  read(): Promise<Uint8Array>;
  /** Objects registered with `write`: the device writes `data` (the whole object) now. */
  write?(data: Uint8Array): Promise<void>;
  /**
   * Releases the object (`GEM_CLOSE`, `ibv_dereg_mr`): once it resolves, no pin, page reference,
   * notifier or device translation of the object is left.
   */
  release(): Promise<void>;
  /**
   * The device and address-space context the object's translations live in (optional): with it the
   * cases watch them with the sanitizer (a pinned frame is exempt from the stale-mapping rule).
   */
  readonly binding?: { readonly device: SimDevice; readonly asid: number };
}

/** What the userptr cases need of a target (drivers declaring `userptr`). */
export interface UserptrTarget {
  /**
   * Registers the `npages` pages at `addr` of `process` as a device object. Resolves once it is
   * registered and its pages were checked once (pinned, or collected with `hmm_range_fault` as
   * amdgpu's `AMDGPU_GEM_USERPTR_VALIDATE` or a flushed ODP prefetch does). Rejects, leaving nothing
   * registered, with the driver's errno: EFAULT for a hole or PROT_NONE memory, EPERM or EFAULT for
   * a `write` object over read-only memory. The cases never hold two objects over overlapping ranges
   * of one process at once.
   */
  register(
    process: Process,
    addr: number,
    npages: number,
    opts: UserptrRegisterOptions,
  ): Promise<UserptrHandle>;
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
  /** Driver capabilities, plus `two-devices` if the target opens a second device. */
  readonly capabilities: readonly Capability[];
}
