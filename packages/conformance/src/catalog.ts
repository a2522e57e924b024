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
 * importer).
 */
export type Capability = DriverCapability | 'two-devices' | 'p2p-exporter' | 'p2p-importer';

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

/** Every case: the kernel's, in its order, then the peer-to-peer cases. */
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
];

/** The case with this id; undefined if none. */
export function findCase(id: string): CaseInfo | undefined {
  return CASES.find((c) => c.id === id);
}
