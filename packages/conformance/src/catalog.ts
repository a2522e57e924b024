/**
 * The catalogue of conformance cases: every case of the kernel's
 * `tools/testing/selftests/mm/hmm-tests.c` with a stable id, its kernel reference, the
 * capabilities it needs and the variants it runs in. Cases this version cannot run yet are listed
 * too, so that a report shows them as skipped with the reason, never hides them.
 *
 * @module
 */
import type { DriverCapability } from '@hmm/core';

/**
 * A capability a case may require: a driver capability, or `two-devices` (the target can open a
 * second device of the same kind for the same process: `ConformanceTarget.open(p, { device: 1 })`,
 * what the kernel's `hmm2` fixture needs), `p2p-exporter` (the target's `ConformanceTarget.p2p`
 * exports a device-file object, which the p2p cases import through `p2p_map`), `p2p-importer` (it
 * also imports, with `P2pTarget.createImporter`; without it the cases use the suite's reference
 * importer), `fault-injection` (the driver's test device implements `TestDevice.failNextCopy` and its
 * target `ConformanceTarget.removeDevice`: the fault cases that fail its copy engine and remove its
 * device run), `userptr` (the target's `ConformanceTarget.userptr` registers a process's memory as a
 * device object, pinned or mirrored: a GPU userptr BO, an RDMA memory region; the userptr cases run).
 */
export type Capability =
  DriverCapability | 'two-devices' | 'p2p-exporter' | 'p2p-importer' | 'fault-injection' | 'userptr';

/** Memory variant a case runs in, as the kernel's fixtures do (`hmm_device_private`, `hmm_device_coherent`). */
export type Variant = 'device-private' | 'device-coherent';

/** Metadata of one case. */
export interface CaseInfo {
  /**
   * Stable id: `hmm.<name>` or `hmm2.<name>` (two devices), as the kernel's fixture names them;
   * `p2p.<name>` for the peer-to-peer cases, which go beyond the kernel's tests.
   */
  readonly id: string;
  /**
   * Kernel reference, e.g. `hmm-tests.c:anon_read`; for the p2p cases the 2019 linux-mm `p2p_map`
   * proposal and/or the drivers/pci/p2pdma.c functions they model.
   */
  readonly kernelRef: string | null;
  /** One line: what the case checks. */
  readonly title: string;
  /** Capabilities the driver must declare, all of them. */
  readonly requires: readonly Capability[];
  /**
   * Capabilities of which the driver must declare at least one (empty: no such condition). The p2p
   * cases run for an exporter, an importer, or both.
   */
  readonly requiresAny: readonly Capability[];
  /** Variants it runs in (the kernel runs every case in both). */
  readonly variants: readonly Variant[];
  /** Devices it needs (hmm2 cases need two). */
  readonly devices: 1 | 2;
  /** Needs features the SDK does not simulate yet (THP, hugetlbfs), or null. */
  readonly unsupported: string | null;
}

const BOTH: readonly Variant[] = ['device-private', 'device-coherent'];

function k(
  name: string,
  title: string,
  requires: readonly Capability[],
  opts: { devices?: 1 | 2; unsupported?: string } = {},
): CaseInfo {
  const devices = opts.devices ?? 1;
  return {
    id: `${devices === 2 ? 'hmm2' : 'hmm'}.${name}`,
    kernelRef: `hmm-tests.c:${name}`,
    title,
    requires,
    requiresAny: [],
    variants: BOTH,
    devices,
    unsupported: opts.unsupported ?? null,
  };
}

const M: readonly Capability[] = ['mirror'];
const MIG: readonly Capability[] = ['mirror', 'device-private'];
const MIG2: readonly Capability[] = ['mirror', 'device-private', 'two-devices'];
const EXC: readonly Capability[] = ['mirror', 'exclusive'];
const THP = 'transparent huge pages are not simulated yet';
const HTLB = 'hugetlbfs is not simulated yet';

/**
 * The p2p cases run for a driver that exports, imports, or both: a driver without an importer of
 * its own (no `p2p-importer`) is checked against the suite's reference importer; an importer-only
 * driver supplies an exporter to import from in its target (any exporter, e.g. a GPU's BAR).
 */
const P2P_ANY: readonly Capability[] = ['p2p-exporter', 'p2p-importer'];
/** The p2p cases do not depend on the device-memory variant: they run once. */
const ONCE: readonly Variant[] = ['device-private'];
/** The 2019 linux-mm RFC adding `p2p_map` / `p2p_unmap` to `vm_operations_struct`. */
const PROPOSAL = 'linux-mm 2019 p2p_map/p2p_unmap proposal';

function p2p(name: string, title: string, ref: string): CaseInfo {
  return {
    id: `p2p.${name}`,
    kernelRef: ref,
    title,
    requires: [],
    requiresAny: P2P_ANY,
    variants: ONCE,
    devices: 2,
    unsupported: null,
  };
}

/**
 * The peer-to-peer cases (beyond the kernel's tests): an exporter's device-file object imported by
 * another device through `p2pMap` (the driver's importer if it declares `p2p-importer`, else the
 * suite's `ReferenceP2pImporter`).
 */
export const P2P_CASES: readonly CaseInfo[] = [
  p2p(
    'map_read',
    "an importer below the exporter's switch maps the BAR (BUS_ADDR) and reads the data byte for byte",
    `${PROPOSAL}; p2pdma.c:pci_p2pdma_map_type`,
  ),
  p2p(
    'bar_exhausted_fallback',
    'with the BAR full the object falls back to system memory with the same data; freed, it maps the BAR',
    `${PROPOSAL}; p2pdma.c:pci_alloc_p2pmem`,
  ),
  p2p(
    'topology_fallback',
    'an importer without a peer path gets system memory (NOT_SUPPORTED) with the same data',
    `${PROPOSAL}; p2pdma.c:calc_map_type_and_dist`,
  ),
  p2p(
    'zap_mid_transfer',
    'a zap during a transfer: the old mapping is given back, nothing stale is read, the next read maps again',
    `${PROPOSAL}; mm/memory.c:zap_vma_ptes`,
  ),
  p2p(
    'exporter_moves',
    'the exporter moves the object ten times under a running importer: every read matches',
    `${PROPOSAL}; p2pdma.c:pci_free_p2pmem`,
  ),
  p2p(
    'importer_teardown',
    'an importer closed while mapped gives its mapping back; the exporter then tears down cleanly',
    `${PROPOSAL} (p2p_unmap)`,
  ),
  p2p(
    'exporter_teardown',
    'exporter teardown while imported revokes every importer, then frees its memory',
    `${PROPOSAL}; p2pdma.c:pci_p2pdma_release`,
  ),
];

/**
 * A case beyond the kernel's tests that checks one obligation of a mirroring driver in a group of
 * its own (`race.*`, `fault.*`, `userptr.*`): runs once (the device-memory variant does not change
 * it) unless `variants` says otherwise.
 */
function g(
  id: string,
  title: string,
  kernelRef: string,
  requires: readonly Capability[],
  opts: { variants?: readonly Variant[]; devices?: 1 | 2; requiresAny?: readonly Capability[] } = {},
): CaseInfo {
  return {
    id,
    kernelRef,
    title,
    requires,
    requiresAny: opts.requiresAny ?? [],
    variants: opts.variants ?? ONCE,
    devices: opts.devices ?? 1,
    unsupported: null,
  };
}

/** The sequence protocol the race cases check. */
const SEQ_REF =
  'include/linux/mmu_notifier.h:mmu_interval_read_retry, mmu_interval_set_seq; Documentation/mm/hmm.rst';

/**
 * The race group: seeded exploration of the interval-notifier sequence protocol. Each case runs
 * over `seeds` seeds; every seed draws where an invalidation lands relative to the driver's walk and
 * commit, so a driver that skips `mmu_interval_read_retry`, `mmu_interval_set_seq` or commits
 * before the walk ends is caught on some seed.
 */
export const RACE_CASES: readonly CaseInfo[] = [
  g(
    'race.dontneed_read',
    'MADV_DONTNEED between a device READ walk and its commit: the zapped frames are never mapped',
    `${SEQ_REF}; mm/madvise.c:madvise_dontneed_single_vma`,
    M,
  ),
  g(
    'race.dontneed_write',
    'MADV_DONTNEED between a device WRITE walk and its commit: no byte the device writes is lost',
    `${SEQ_REF}; mm/madvise.c:madvise_dontneed_single_vma`,
    M,
  ),
  g(
    'race.cow_read',
    "a COW break (the parent writes after fork) between a device READ walk and its commit: the device reads the parent's new pages",
    `${SEQ_REF}; mm/memory.c:wp_page_copy`,
    M,
  ),
  g(
    'race.livelock',
    'an invalidation after every walk: the device fault gives up within a bounded time (HMM_RANGE_DEFAULT_TIMEOUT)',
    `${SEQ_REF}; include/linux/hmm.h:HMM_RANGE_DEFAULT_TIMEOUT`,
    M,
  ),
];

/**
 * The fault-injection group: a failure injected at each point a driver must recover from (device
 * allocation, copy engine, BAR, callbacks, non-blockable invalidation, exit, device removal). Each
 * ends with no byte lost, no frame leaked and a clean sanitizer.
 */
export const FAULT_CASES: readonly CaseInfo[] = [
  g(
    'fault.devmem_alloc_failure',
    'a device-page allocation fails during MIGRATE_TO_DEV: that page stays in RAM with its data; READ and a later migrate work',
    'lib/test_hmm.c:dmirror_migrate_alloc_and_copy (HMM_DMIRROR_FLAG_FAIL_ALLOC)',
    MIG,
  ),
  g(
    'fault.copy_failure_mid_migration',
    'the copy engine fails after k pages, to the device and back: only copied pages migrate, no byte is lost',
    'mm/migrate_device.c:migrate_vma_pages (destinations left empty are not migrated)',
    ['mirror', 'device-private', 'fault-injection'],
  ),
  g(
    'fault.bar_exhausted',
    'the BAR fills up under a mapped importer: it follows the object to system memory and back; a fresh importer too',
    `${PROPOSAL}; p2pdma.c:pci_alloc_p2pmem`,
    [],
    { requiresAny: P2P_ANY, devices: 2 },
  ),
  g(
    'fault.callback_throws',
    "another subscriber's invalidate callback throws: munmap, mprotect and migration still reach the driver",
    'mm/mmu_notifier.c:mn_itree_invalidate',
    M,
  ),
  g(
    'fault.oom_reap',
    'the OOM reaper invalidates non-blockably: the driver declines or complies without sleeping; nothing is lost',
    'include/linux/mmu_notifier.h:mmu_notifier_range_blockable; mm/oom_kill.c:__oom_reap_task_mm',
    M,
  ),
  g(
    'fault.exit_with_faults_in_flight',
    'the process exits while device READs fault: each ends (data or a typed error), nothing leaks',
    'kernel/exit.c:do_exit; mm/mmu_notifier.c:__mmu_notifier_release',
    M,
  ),
  g(
    'fault.remove_with_pages_migrated',
    'the device is removed with pages in its memory: every byte comes back to RAM; a second removal fails',
    'lib/test_hmm.c:dmirror_device_remove_chunks; mm/migrate_device.c:migrate_device_range',
    ['mirror', 'device-private', 'fault-injection'],
  ),
];

/** The capability of the userptr cases. */
const UP: readonly Capability[] = ['userptr'];

/** The userptr group: a driver's user-pointer objects (pinned or mirrored) against CPU changes. */
export const USERPTR_CASES: readonly CaseInfo[] = [
  g(
    'userptr.read_write',
    'a registered object: the device reads the CPU data, then the CPU update; the CPU sees the device write',
    'drivers/gpu/drm/amd/amdgpu/amdgpu_hmm.c:amdgpu_hmm_range_get_pages; drivers/infiniband/core/umem_odp.c:ib_umem_odp_map_dma_and_lock; mm/gup.c:pin_user_pages',
    UP,
  ),
  g(
    'userptr.fork_cow',
    "fork, then the parent writes: the device sees the parent's data, the child keeps its own, also after a device write",
    'mm/memory.c:copy_present_page (page_needs_cow_for_dma); mm/memory.c:wp_page_copy',
    UP,
  ),
  g(
    'userptr.munmap',
    'munmap under a registered object: a mirrored one fails with EFAULT, a pinned one reads the old data; never other bytes',
    'mm/mmap.c:do_vmi_munmap; mm/gup.c:pin_user_pages (FOLL_LONGTERM); drivers/infiniband/core/umem_odp.c:ib_umem_odp_map_dma_and_lock',
    UP,
  ),
  g(
    'userptr.readonly',
    'a writable registration of read-only memory fails (EFAULT or EPERM) leaving nothing behind; a read-only one works',
    'mm/gup.c:check_vma_flags; mm/hmm.c:hmm_vma_fault (EPERM)',
    UP,
  ),
  g(
    'userptr.release_unpins',
    'a 4 MiB object registered and released again and again leaves no pin, frame, notifier or device translation',
    'mm/gup.c:unpin_user_pages; drivers/infiniband/core/umem.c:ib_umem_release; drivers/gpu/drm/amd/amdgpu/amdgpu_hmm.c:amdgpu_hmm_unregister',
    UP,
  ),
  g(
    'userptr.reclaim',
    'reclaim under a registered object: a mirrored one lets its pages be swapped out and reads the same data; a pinned one keeps them',
    'mm/vmscan.c:shrink_folio_list (folio_maybe_dma_pinned); mm/rmap.c:try_to_unmap_one',
    UP,
  ),
];

/** Every case: the kernel's, in its order, then the peer-to-peer, race, fault-injection and userptr cases. */
export const CASES: readonly CaseInfo[] = [
  k('open_close', 'open and close a mirror', M),
  k('anon_read', 'device READ of anonymous memory: zero page, read-only region, data', M),
  k('anon_read_prot', 'device READ of PROT_NONE memory fails with EFAULT, data intact', M),
  k('anon_write', 'device WRITE of untouched anonymous memory; the CPU sees the data', M),
  k('anon_write_prot', 'device WRITE to PROT_READ memory fails with EPERM until mprotect RW', M),
  k('anon_write_child', 'after fork the child device-writes its copy; the parent keeps its data', M),
  k('anon_write_child_shared', 'MAP_SHARED anonymous: the parent sees the child device write', M),
  k('anon_write_huge', 'device WRITE of one PMD of an MADV_HUGEPAGE region', M, { unsupported: THP }),
  k('anon_write_hugetlbfs', 'device WRITE into MAP_HUGETLB memory', M, { unsupported: HTLB }),
  k('file_read', 'device READ of a shared read-only file mapping', M),
  k('file_write', 'device WRITE of a shared file mapping, seen through the mapping and pread', M),
  k('migrate', 'migrate to device memory; read-back matches', MIG),
  k('migrate_file_private', 'CPU-dirtied private file pages (anonymous COW copies) migrate', MIG),
  k('migrate_fault', 'migrate, CPU reads half back, migrate all again', MIG),
  k('migrate_release', 'migrate, release device memory, CPU data correct', MIG),
  k('migrate_shared', 'shared anonymous memory is not migratable (ENOENT)', MIG),
  k('migrate_mixed', 'migration errors: PROT_NONE, holes, pages on another device', MIG2, { devices: 2 }),
  k('migrate_multiple', 'ten rounds of migrate and back', MIG),
  k('anon_read_multiple', 'ten fresh buffers each read by the device', M),
  k('anon_teardown', 'munmap racing a device READ; data correct when READ succeeds', M),
  k('mixedmap', 'a snapshot of a driver-inserted (special) mapping', M),
  // Runs for any mirror; with device memory and two devices it also checks the device-page encodings.
  k('snapshot', 'snapshot encodings: ERROR, ZERO|READ, READ, WRITE, device pages', M, { devices: 2 }),
  k('compound', 'snapshot of hugetlbfs pages reports PMD/PUD order', M, { unsupported: HTLB }),
  k('double_map', 'two devices read a region; after migrating to one the other still reads it', MIG2, {
    devices: 2,
  }),
  k('exclusive', 'exclusive access for atomics, restored by CPU access', EXC),
  k('exclusive_mprotect', 'exclusive, mprotect read-only, WRITE fails with EPERM', EXC),
  k('exclusive_cow', 'exclusive then fork: parent and child each keep their data', EXC),
  k('hmm_gup_test', 'GUP on migrated pages brings them back (private) or keeps them (coherent)', MIG),
  k('hmm_cow_in_device', 'migrate, fork, parent writes: all pages back in RAM', MIG),
  k('migrate_anon_huge_empty', 'an untouched PMD region migrates', MIG, { unsupported: THP }),
  k('migrate_anon_huge_zero', 'the huge zero page migrates', MIG, { unsupported: THP }),
  k('migrate_anon_huge_free', 'migrated THP then MADV_FREE', MIG, { unsupported: THP }),
  k('migrate_anon_huge_fault', 'MADV_COLLAPSE, migrate, CPU read restores data', MIG, { unsupported: THP }),
  k('migrate_partial_unmap_fault', 'munmap half a PMD of device-resident memory', MIG, { unsupported: THP }),
  k('migrate_remap_fault', 'mremap combinations around migration', MIG, { unsupported: THP }),
  k('migrate_anon_huge_err', 'allocation failure forces base-page migration of a THP', MIG, {
    unsupported: THP,
  }),
  k('migrate_anon_huge_zero_err', 'the same for empty and zero THPs', MIG, { unsupported: THP }),
  k('benchmark_thp_migration', 'THP migration timings', MIG, { unsupported: THP }),
  ...P2P_CASES,
  ...RACE_CASES,
  ...FAULT_CASES,
  ...USERPTR_CASES,
];

/** The case with this id; undefined if none. */
export function findCase(id: string): CaseInfo | undefined {
  return CASES.find((c) => c.id === id);
}
