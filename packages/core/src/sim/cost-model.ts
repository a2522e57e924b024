/**
 * The cost model: how much simulated time each kernel and hardware operation takes. Every default
 * cites its source with a tag, as in `shared/reference/perf-anchors.md`:
 * **[P]** primary (paper, kernel mail/commit, driver source, vendor spec), **[S]** secondary (a
 * summary of a primary), **[D]** derived by arithmetic from cited figures, **[E]** estimate, no
 * source found. {@link COST_SOURCES} holds the same citations in machine-readable form.
 *
 * Units: times in ns; bandwidths in GB/s (10^9 B/s, so 1 GB/s moves 1 byte per ns); sizes in bytes.
 *
 * @module
 */

import { HmmError } from '../errors/errno.js';

/** CPU-side costs. */
export interface CpuCosts {
  /**
   * One page-table walk of a range, ns. Default 350.
   * [D] ">1000 CPU cycles" per walk at ~3 GHz (M. Penttilä, "[PATCH v5 0/6] Migrate on fault for device pages", LKML 2026).
   */
  readonly pageWalkNs: number;
  /**
   * Anonymous first touch: fault in and zero one 4 KiB page, ns. Default 950.
   * [D] VFIO pin + fault-in + zero of 120 GB in 29.69 s ≈ 0.94 µs per 4 KiB page (commit 4d83de6da265 "vfio/type1: Batch page pinning").
   */
  readonly faultInZeroPerPageNs: number;
  /**
   * CPU copy of one 4 KiB page (`copy_page()`), ns. Default 410.
   * [E] 4 KiB at ~10 GB/s, a single core's streaming copy; {@link MemCosts.hostGBs} is a socket's
   * aggregate, which one core's copy does not reach. No source found.
   */
  readonly copyPageNs: number;
}

/** get_user_pages / pin_user_pages costs. */
export interface GupCosts {
  /**
   * `pin_user_pages(FOLL_LONGTERM)` per present 4 KiB page, ns. Default 62.
   * [D] gup_test -LT: 8 GiB pinned in ≈130 ms (Li Zhe, "gup: optimize longterm pin_user_pages() for large folio", LKML 2025-06).
   */
  readonly pinPerPageNs: number;
  /**
   * Pin cost per 4 KiB-equivalent when the range is backed by 2 MiB pages, ns. Default 2.
   * [D] gup_test -HL: 8 GiB in 13.6–14.4 ms → 4.1–4.9 ms with the large-folio patch, ≈6.7 → 2 ns per 4 KiB (Li Zhe, as above).
   */
  readonly pinPerPageHugeBackedNs: number;
  /**
   * `unpin_user_pages()` per 4 KiB page, ns. Default 15.
   * [D] gup_test put: 8 GiB in ≈31.5 ms (Li Zhe, as above).
   */
  readonly unpinPerPageNs: number;
}

/** hmm_range_fault costs. */
export interface HmmCosts {
  /**
   * `hmm_range_fault()` per page already present (no fault), ns. Default 60.
   * [E] assumed ≈ GUP walk cost; no hmm_range_fault benchmark found.
   */
  readonly rangeFaultPerPresentPageNs: number;
}

/** MMU-notifier invalidation costs. */
export interface NotifierCosts {
  /**
   * CPU TLB shootdown IPI, base cost, ns. Default 1000.
   * [S] ~1 µs base + ~0.2 µs per receiving CPU (https://unseel.com/cs/tlb-shootdown ; newsletter.onedfrk.com, blog-level).
   */
  readonly cpuShootdownNs: number;
  /**
   * CPU TLB shootdown, added per receiving CPU, ns. Default 200.
   * [S] as {@link cpuShootdownNs}.
   */
  readonly cpuShootdownPerCpuNs: number;
  /**
   * MMU-notifier invalidate → device TLB invalidation, ns. Default 5000.
   * [E] not found in any source.
   */
  readonly deviceTlbInvalNs: number;
}

/** GPU replayable-fault servicing (UVM / SVM) parameters. */
export interface GpuFaultCosts {
  /**
   * Faults fetched and serviced per batch. Default 256.
   * [P] `uvm_perf_fault_batch_count`, NVIDIA/open-gpu-kernel-modules kernel-open/nvidia-uvm/uvm_gpu_replayable_faults.c.
   */
  readonly batchSize: number;
  /**
   * Batches serviced per bottom half. Default 20.
   * [P] `uvm_perf_fault_max_batches_per_service`, same file.
   */
  readonly maxBatchesPerService: number;
  /**
   * Per-batch service cost excluding copies, ns. Default 45000.
   * [P] UVMSmart far-fault latency 66,645 cycles = 45 µs @1481 MHz (DebashisGanguly/gpgpu-sim_UVMSmart
   * src/gpgpu-sim/gpu-sim.cc, configs/GeForceGTX1080Ti/gpgpusim.config); real hardware ≥10 µs [S], ≈12 µs per fault group [D].
   */
  readonly serviceBaseNs: number;
  /**
   * Prefetch a region when more than this fraction of it is resident. Default 0.51.
   * [P] UVM tree prefetcher, `uvm_perf_prefetch.c`.
   */
  readonly prefetchThreshold: number;
  /**
   * VA block size, bytes. Default 2 MiB.
   * [P] `uvm_va_block_types.h`.
   */
  readonly vaBlockBytes: number;
  /**
   * Prefetch tree leaf size, bytes. Default 64 KiB.
   * [P] UVM source (`uvm_perf_prefetch.c`); leaf size per [S] engineered.at "Forest" summary.
   */
  readonly prefetchLeafBytes: number;
  /**
   * Thrashing detection lapse, ns. Default 500000.
   * [P] `uvm_perf_thrashing.c` defaults, NVIDIA/open-gpu-kernel-modules @10d538d (older trees 100/250 µs).
   */
  readonly thrashingWindowNs: number;
  /**
   * Events within the lapse that mark a page as thrashing. Default 3.
   * [P] `uvm_perf_thrashing.c` defaults, as above.
   */
  readonly thrashingThreshold: number;
}

/** migrate_vma costs (CPU side; the copy itself is a DMA, see {@link dmaTransferNs}). */
export interface MigrateCosts {
  /**
   * CPU overhead of `migrate_vma` per 4 KiB page, ns. Default 1400.
   * [D] Xe SVM 2 MiB fault without THP: (942 − 223 µs) / 512 (F. Dugast, "[PATCH v2 5/5] drm/pagemap: Enable THP support for GPU memory migration", dri-devel 2026-01-05).
   */
  readonly cpuPerPageNs: number;
  /**
   * CPU overhead of migrating one 2 MiB THP, ns. Default 22000.
   * [D] Xe SVM 2 MiB fault with THP: migrate 128 µs incl. copy 106 µs (Dugast, as above).
   */
  readonly cpuPer2MiBNs: number;
  /**
   * Fault setup (get_pages + bind) for a 4 KiB-page range, ns. Default 19000.
   * [P] Xe GT stats: get_pages 9 + bind 10 µs (Dugast, as above).
   */
  readonly setupNs4K: number;
  /**
   * Fault setup (get_pages + bind) for a THP range, ns. Default 3000.
   * [P] Xe GT stats: get_pages 1 + bind 2 µs (Dugast, as above).
   */
  readonly setupNsTHP: number;
}

/** DMA transfer-size curve. */
export interface DmaCosts {
  /**
   * Coefficient `b` of the size curve speed = (2a/π)·atan(b·KB), per KiB. Default 0.07292.
   * [P] UVMSmart `calculate_transfer_time` (DebashisGanguly/gpgpu-sim_UVMSmart src/gpgpu-sim/gpu-sim.cc), curve-fit to measured transfers.
   */
  readonly curvePerKB: number;
}

/** Interconnect bandwidths, per direction. */
export interface LinkCosts {
  /** PCIe 3.0 x16 peak, GB/s. Default 15.75. [S] hpc-notes.pages.dev/reference/pcie (Wikipedia table). */
  readonly pcie3PeakGBs: number;
  /** PCIe 4.0 x16 peak, GB/s. Default 31.5. [S] hpc-notes.pages.dev/reference/pcie (Wikipedia table). */
  readonly pcie4PeakGBs: number;
  /** PCIe 5.0 x16 peak, GB/s. Default 63. [S] hpc-notes.pages.dev/reference/pcie (Wikipedia table). */
  readonly pcie5PeakGBs: number;
  /**
   * Asymptotic fraction of a link's peak reached by large DMA (the curve's `a` = efficiency × link). Default 0.75.
   * [D] UVMSmart a/link = 12/16; cf. Xe 2 MiB copy ≈19.8 GB/s [D].
   */
  readonly pcieEfficiency: number;
  /**
   * Bandwidth factor for peer-to-peer across PCIe root complexes. Default 0.5.
   * [D] linux-rdma/perftest#241: GPU↔GPU 11,000 MB/s vs host↔host 23,000 MB/s across sockets.
   */
  readonly p2pCrossRootPenalty: number;
  /** NVLink-C2C host→device, GB/s. Default 375 (spec 450). [S] Schieffer et al., ICPP'24 (arXiv 2407.07850), GH200 measured. */
  readonly nvlinkC2CH2DGBs: number;
  /** NVLink-C2C device→host, GB/s. Default 297 (spec 450). [S] Schieffer et al., as above. */
  readonly nvlinkC2CD2HGBs: number;
}

/** Memory bandwidths. */
export interface MemCosts {
  /**
   * GPU HBM effective bandwidth, GB/s. Default 2500 (H100 SXM HBM3 spec 3,350).
   * [P] NVIDIA/nccl#1264 measured local copy ~2,475–2,515 GB/s; spec archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html.
   */
  readonly gpuHbmGBs: number;
  /**
   * Host DRAM bandwidth (socket aggregate), GB/s. Default 200.
   * [E] x86 DDR5; Grace LPDDR5X measures 486 GB/s [S] (Schieffer et al.).
   */
  readonly hostGBs: number;
}

/** RDMA On-Demand Paging costs. */
export interface OdpCosts {
  /**
   * Common-case ODP page fault, ns. Default 100000.
   * [E] within the band 5 µs (software lower bound) … ~2.5 ms (500× NP-RDMA claim, [D]); [P] Shen et al., NP-RDMA, arXiv 2310.11062.
   */
  readonly faultNs: number;
  /**
   * Multiplier for the pathological tail (RNR / timeout retries). Default 1000 (band ×1,000–10,000).
   * [P] Fukuoka, Sato, Taura, "Pitfalls of InfiniBand with On-Demand Paging", ISPASS'21.
   */
  readonly pathologicalMultiplier: number;
}

/** Classic pinned RDMA memory registration costs. */
export interface RdmaCosts {
  /** Registration pin per present 4 KiB page, ns. Default 62. [D] gup_test (Li Zhe, LKML 2025-06). */
  readonly regPinPerPageNs: number;
  /** Registration pin per 4 KiB page including fault-in and zeroing, ns. Default 950. [D] VFIO (commit 4d83de6da265). */
  readonly regPinFaultInPerPageNs: number;
}

/** Swap device costs. */
export interface SwapCosts {
  /**
   * Write one 4 KiB page to swap, ns. Default 12000.
   * [E] NVMe-class: 4 KiB at ~2 GB/s (≈2 µs) + ~10 µs per-I/O latency. No source found.
   */
  readonly writePerPageNs: number;
  /**
   * Read one 4 KiB page from swap, ns. Default 12000.
   * [E] as {@link writePerPageNs}; NAND reads at queue depth 1 are often slower (cf. NP-RDMA major fault +60 µs [P]).
   */
  readonly readPerPageNs: number;
}

/**
 * Simulated-time costs of every modelled operation, grouped by subsystem (`cost.cpu.pageWalkNs`).
 * Build one with {@link createCostModel}; the defaults are {@link DEFAULT_COST_MODEL}.
 */
export interface CostModel {
  readonly cpu: CpuCosts;
  readonly gup: GupCosts;
  readonly hmm: HmmCosts;
  readonly notifier: NotifierCosts;
  readonly gpuFault: GpuFaultCosts;
  readonly migrate: MigrateCosts;
  readonly dma: DmaCosts;
  readonly link: LinkCosts;
  readonly mem: MemCosts;
  readonly odp: OdpCosts;
  readonly rdma: RdmaCosts;
  readonly swap: SwapCosts;
}

/** Recursively optional version of `T`, for overrides. */
export type DeepPartial<T> = { -readonly [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

/** Dotted name of a leaf of {@link CostModel}, e.g. `'cpu.pageWalkNs'`. */
export type CostKey = { [G in keyof CostModel]: `${G}.${keyof CostModel[G] & string}` }[keyof CostModel];

/** Unit of a cost; also fixes which values are valid (see {@link createCostModel}). */
export type CostUnit = 'ns' | 'GB/s' | 'bytes' | 'count' | 'fraction' | 'factor' | '1/KiB';

/** Source tag: primary, secondary, derived, estimate. */
export type SourceTag = 'P' | 'S' | 'D' | 'E';

/** Citation of one default. */
export interface CostSource {
  readonly key: CostKey;
  readonly value: number;
  readonly unit: CostUnit;
  readonly tag: SourceTag;
  readonly source: string;
}

const KiB = 1024;
const MiB = 1024 * KiB;

function deepFreeze<T extends object>(o: T): T {
  for (const v of Object.values(o)) if (typeof v === 'object' && v !== null) deepFreeze(v as object);
  return Object.freeze(o);
}

/** The defaults, frozen. Citations: the doc comments of {@link CostModel} and {@link COST_SOURCES}. */
export const DEFAULT_COST_MODEL: CostModel = deepFreeze({
  cpu: { pageWalkNs: 350, faultInZeroPerPageNs: 950, copyPageNs: 410 },
  gup: { pinPerPageNs: 62, pinPerPageHugeBackedNs: 2, unpinPerPageNs: 15 },
  hmm: { rangeFaultPerPresentPageNs: 60 },
  notifier: { cpuShootdownNs: 1000, cpuShootdownPerCpuNs: 200, deviceTlbInvalNs: 5000 },
  gpuFault: {
    batchSize: 256,
    maxBatchesPerService: 20,
    serviceBaseNs: 45_000,
    prefetchThreshold: 0.51,
    vaBlockBytes: 2 * MiB,
    prefetchLeafBytes: 64 * KiB,
    thrashingWindowNs: 500_000,
    thrashingThreshold: 3,
  },
  migrate: { cpuPerPageNs: 1400, cpuPer2MiBNs: 22_000, setupNs4K: 19_000, setupNsTHP: 3000 },
  dma: { curvePerKB: 0.07292 },
  link: {
    pcie3PeakGBs: 15.75,
    pcie4PeakGBs: 31.5,
    pcie5PeakGBs: 63,
    pcieEfficiency: 0.75,
    p2pCrossRootPenalty: 0.5,
    nvlinkC2CH2DGBs: 375,
    nvlinkC2CD2HGBs: 297,
  },
  mem: { gpuHbmGBs: 2500, hostGBs: 200 },
  odp: { faultNs: 100_000, pathologicalMultiplier: 1000 },
  rdma: { regPinPerPageNs: 62, regPinFaultInPerPageNs: 950 },
  swap: { writePerPageNs: 12_000, readPerPageNs: 12_000 },
});

const LI_ZHE =
  'Li Zhe, "gup: optimize longterm pin_user_pages() for large folio", LKML 2025-06 (lkml.indiana.edu/hypermail/linux/kernel/2506.0/03426.html)';
const VFIO = 'commit 4d83de6da265 "vfio/type1: Batch page pinning"';
const UVM = 'NVIDIA/open-gpu-kernel-modules kernel-open/nvidia-uvm';
const UVMSMART = 'DebashisGanguly/gpgpu-sim_UVMSmart src/gpgpu-sim/gpu-sim.cc';
const DUGAST =
  'F. Dugast, "[PATCH v2 5/5] drm/pagemap: Enable THP support for GPU memory migration", dri-devel 2026-01-05';
const PCIE = 'hpc-notes.pages.dev/reference/pcie (Wikipedia table)';
const SCHIEFFER = "Schieffer et al., ICPP'24 (arXiv 2407.07850), GH200 measured";
const SHOOTDOWN = 'https://unseel.com/cs/tlb-shootdown ; newsletter.onedfrk.com (blog-level)';

type SourceRow = Omit<CostSource, 'value'>;

const SOURCE_ROWS: readonly SourceRow[] = [
  {
    key: 'cpu.pageWalkNs',
    unit: 'ns',
    tag: 'D',
    source:
      '">1000 CPU cycles" per walk @ ~3 GHz; M. Penttilä, "[PATCH v5 0/6] Migrate on fault for device pages", LKML 2026',
  },
  {
    key: 'cpu.faultInZeroPerPageNs',
    unit: 'ns',
    tag: 'D',
    source: `VFIO pin + fault-in + zero, 120 GB in 29.69 s; ${VFIO}`,
  },
  {
    key: 'cpu.copyPageNs',
    unit: 'ns',
    tag: 'E',
    source: '4 KiB at ~10 GB/s single-core streaming copy; no source found',
  },
  { key: 'gup.pinPerPageNs', unit: 'ns', tag: 'D', source: `gup_test -LT, 8 GiB in ≈130 ms; ${LI_ZHE}` },
  {
    key: 'gup.pinPerPageHugeBackedNs',
    unit: 'ns',
    tag: 'D',
    source: `gup_test -HL, ≈6.7 → 2 ns per 4 KiB with the patch; ${LI_ZHE}`,
  },
  { key: 'gup.unpinPerPageNs', unit: 'ns', tag: 'D', source: `gup_test put, 8 GiB in ≈31.5 ms; ${LI_ZHE}` },
  {
    key: 'hmm.rangeFaultPerPresentPageNs',
    unit: 'ns',
    tag: 'E',
    source: 'assume ≈ GUP walk cost (no hmm_range_fault benchmark found)',
  },
  { key: 'notifier.cpuShootdownNs', unit: 'ns', tag: 'S', source: `~1 µs base; ${SHOOTDOWN}` },
  {
    key: 'notifier.cpuShootdownPerCpuNs',
    unit: 'ns',
    tag: 'S',
    source: `~0.2 µs per receiving CPU; ${SHOOTDOWN}`,
  },
  {
    key: 'notifier.deviceTlbInvalNs',
    unit: 'ns',
    tag: 'E',
    source: 'mmu-notifier invalidate → device TLB invalidation latency: not found',
  },
  {
    key: 'gpuFault.batchSize',
    unit: 'count',
    tag: 'P',
    source: `uvm_perf_fault_batch_count; ${UVM}/uvm_gpu_replayable_faults.c`,
  },
  {
    key: 'gpuFault.maxBatchesPerService',
    unit: 'count',
    tag: 'P',
    source: `uvm_perf_fault_max_batches_per_service; ${UVM}/uvm_gpu_replayable_faults.c`,
  },
  {
    key: 'gpuFault.serviceBaseNs',
    unit: 'ns',
    tag: 'P',
    source: `UVMSmart far-fault 66,645 cycles = 45 µs @1481 MHz; ${UVMSMART}; real hw ≥10 µs [S], ≈12 µs/fault group [D]`,
  },
  {
    key: 'gpuFault.prefetchThreshold',
    unit: 'fraction',
    tag: 'P',
    source: `prefetch when >51% of a subregion resident; ${UVM}/uvm_perf_prefetch.c`,
  },
  {
    key: 'gpuFault.vaBlockBytes',
    unit: 'bytes',
    tag: 'P',
    source: `2 MiB VA block; ${UVM}/uvm_va_block_types.h`,
  },
  {
    key: 'gpuFault.prefetchLeafBytes',
    unit: 'bytes',
    tag: 'P',
    source: `64 KiB prefetch-tree leaves; ${UVM}/uvm_perf_prefetch.c; leaf size per [S] engineered.at "Forest" summary`,
  },
  {
    key: 'gpuFault.thrashingWindowNs',
    unit: 'ns',
    tag: 'P',
    source: `thrashing lapse 500 µs; ${UVM}/uvm_perf_thrashing.c @10d538d`,
  },
  {
    key: 'gpuFault.thrashingThreshold',
    unit: 'count',
    tag: 'P',
    source: `3 events ⇒ thrashing; ${UVM}/uvm_perf_thrashing.c @10d538d`,
  },
  {
    key: 'migrate.cpuPerPageNs',
    unit: 'ns',
    tag: 'D',
    source: `Xe no-THP breakdown (942 − 223 µs)/512; ${DUGAST}`,
  },
  {
    key: 'migrate.cpuPer2MiBNs',
    unit: 'ns',
    tag: 'D',
    source: `Xe THP breakdown, migrate 128 µs incl. copy 106 µs; ${DUGAST}`,
  },
  {
    key: 'migrate.setupNs4K',
    unit: 'ns',
    tag: 'P',
    source: `Xe GT stats get_pages 9 + bind 10 µs; ${DUGAST}`,
  },
  {
    key: 'migrate.setupNsTHP',
    unit: 'ns',
    tag: 'P',
    source: `Xe GT stats get_pages 1 + bind 2 µs; ${DUGAST}`,
  },
  {
    key: 'dma.curvePerKB',
    unit: '1/KiB',
    tag: 'P',
    source: `size curve (2a/π)·atan(0.07292·KB), calculate_transfer_time; ${UVMSMART}`,
  },
  { key: 'link.pcie3PeakGBs', unit: 'GB/s', tag: 'S', source: PCIE },
  { key: 'link.pcie4PeakGBs', unit: 'GB/s', tag: 'S', source: PCIE },
  { key: 'link.pcie5PeakGBs', unit: 'GB/s', tag: 'S', source: PCIE },
  {
    key: 'link.pcieEfficiency',
    unit: 'fraction',
    tag: 'D',
    source: 'UVMSmart a/link = 12/16 (asymptote of the size curve); cf. Xe 2 MiB copy 19.8 GB/s [D]',
  },
  {
    key: 'link.p2pCrossRootPenalty',
    unit: 'fraction',
    tag: 'D',
    source: 'linux-rdma/perftest#241, GPU↔GPU 11 vs host↔host 23 GB/s cross-socket',
  },
  { key: 'link.nvlinkC2CH2DGBs', unit: 'GB/s', tag: 'S', source: `375 GB/s H2D (spec 450); ${SCHIEFFER}` },
  { key: 'link.nvlinkC2CD2HGBs', unit: 'GB/s', tag: 'S', source: `297 GB/s D2H (spec 450); ${SCHIEFFER}` },
  {
    key: 'mem.gpuHbmGBs',
    unit: 'GB/s',
    tag: 'P',
    source:
      'H100 SXM HBM3 spec 3,350 GB/s (archive-lib.hpctech.co.jp); 2,500 effective as measured in NVIDIA/nccl#1264',
  },
  {
    key: 'mem.hostGBs',
    unit: 'GB/s',
    tag: 'E',
    source: `x86 DDR5 estimate; Grace 486 GB/s [S] ${SCHIEFFER}`,
  },
  {
    key: 'odp.faultNs',
    unit: 'ns',
    tag: 'E',
    source: 'band 5 µs … ~2.5 ms (500× NP-RDMA claim, [D]); [P] Shen et al., NP-RDMA, arXiv 2310.11062',
  },
  {
    key: 'odp.pathologicalMultiplier',
    unit: 'factor',
    tag: 'P',
    source:
      '×1,000–10,000 RNR/timeout tail; Fukuoka, Sato, Taura, "Pitfalls of InfiniBand with On-Demand Paging", ISPASS\'21',
  },
  { key: 'rdma.regPinPerPageNs', unit: 'ns', tag: 'D', source: `pinned-present, gup_test; ${LI_ZHE}` },
  {
    key: 'rdma.regPinFaultInPerPageNs',
    unit: 'ns',
    tag: 'D',
    source: `incl. fault-in and zero, VFIO; ${VFIO}`,
  },
  {
    key: 'swap.writePerPageNs',
    unit: 'ns',
    tag: 'E',
    source: 'NVMe-class: 4 KiB at ~2 GB/s (≈2 µs) + ~10 µs per-I/O latency; no source found',
  },
  {
    key: 'swap.readPerPageNs',
    unit: 'ns',
    tag: 'E',
    source: 'as swap.writePerPageNs; NAND QD1 reads are often slower (cf. NP-RDMA major fault +60 µs [P])',
  },
];

/** Value of the leaf `key` of `model`. */
export function costValue(model: CostModel, key: CostKey): number {
  const [group, leaf] = key.split('.') as [keyof CostModel, string];
  return (model[group] as unknown as Record<string, number>)[leaf] as number;
}

/** Every default of {@link DEFAULT_COST_MODEL} with its unit, tag and source; one row per leaf. */
export const COST_SOURCES: readonly CostSource[] = Object.freeze(
  SOURCE_ROWS.map((row) => Object.freeze({ ...row, value: costValue(DEFAULT_COST_MODEL, row.key) })),
);

const UNIT_OF = new Map<string, CostUnit>(SOURCE_ROWS.map((r) => [r.key, r.unit]));

function checkValue(key: string, unit: CostUnit, v: unknown): number {
  const bad = (why: string): never => {
    throw new HmmError(
      'EINVAL',
      `createCostModel: ${key} ${why}, got ${typeof v === 'number' ? String(v) : typeof v}`,
    );
  };
  if (typeof v !== 'number' || !Number.isFinite(v)) return bad('must be a finite number');
  if (v < 0) return bad('must not be negative');
  switch (unit) {
    case 'GB/s':
    case '1/KiB':
      if (v === 0) bad('must be > 0');
      break;
    case 'bytes':
    case 'count':
      if (!Number.isInteger(v) || v < 1) bad('must be an integer ≥ 1');
      break;
    case 'fraction':
      if (v > 1) bad('must be a fraction in [0, 1]');
      break;
    case 'ns':
    case 'factor':
      break;
  }
  return v;
}

/**
 * A frozen cost model: the defaults with `overrides` merged in. EINVAL for an unknown group or
 * key, or a value that is not a finite number ≥ 0 (bandwidths and the curve coefficient must be
 * > 0, counts and sizes integers ≥ 1, fractions ≤ 1). Nothing is changed when it throws.
 */
export function createCostModel(overrides: DeepPartial<CostModel> = {}): CostModel {
  if (typeof overrides !== 'object' || overrides === null) {
    throw new HmmError('EINVAL', 'createCostModel: overrides must be an object shaped like CostModel');
  }
  const merged: Record<string, Record<string, number>> = {};
  for (const [group, leaves] of Object.entries(DEFAULT_COST_MODEL))
    merged[group] = { ...(leaves as Record<string, number>) };
  for (const [group, leaves] of Object.entries(overrides as Record<string, unknown>)) {
    const target = merged[group];
    if (target === undefined || !Object.hasOwn(merged, group)) {
      throw new HmmError(
        'EINVAL',
        `createCostModel: unknown cost group '${group}' (known: ${Object.keys(merged).join(', ')})`,
      );
    }
    if (leaves === undefined) continue;
    if (typeof leaves !== 'object' || leaves === null) {
      throw new HmmError('EINVAL', `createCostModel: '${group}' must be an object of costs`);
    }
    for (const [leaf, value] of Object.entries(leaves)) {
      const key = `${group}.${leaf}`;
      const unit = UNIT_OF.get(key);
      if (unit === undefined || !Object.hasOwn(target, leaf)) {
        throw new HmmError(
          'EINVAL',
          `createCostModel: unknown cost '${key}' (known in ${group}: ${Object.keys(target).join(', ')})`,
        );
      }
      if (value === undefined) continue;
      target[leaf] = checkValue(key, unit, value);
    }
  }
  return deepFreeze(merged) as unknown as CostModel;
}

/**
 * Simulated time of one DMA of `bytes` over a link of peak `linkGBs`, in ns, on the UVMSmart
 * transfer-size curve: speed = (2a/π)·atan(b·KiB) with a = `cost.link.pcieEfficiency` × `linkGBs`
 * and b = `cost.dma.curvePerKB`. Small transfers are latency-bound, large ones approach `a`.
 *
 * As in UVMSmart's `calculate_transfer_time` (and the perf-anchors derived points, e.g. 4 KiB ≈
 * 1.8 µs and 2 MiB ≈ 164 µs at a = 12), the curve's speed is applied per 2^30 bytes; the ~7%
 * GB/GiB gap lies inside the fit's own error. `bytes` = 0 costs 0. EINVAL for negative or
 * non-finite `bytes`, or a non-positive `linkGBs` or efficiency.
 *
 * Kernel counterpart: none; this is the device's copy engine over PCIe (`dma_map_*` + a copy command).
 */
export function dmaTransferNs(cost: CostModel, bytes: number, linkGBs: number): number {
  if (!(Number.isFinite(bytes) && bytes >= 0)) {
    throw new HmmError('EINVAL', `dmaTransferNs: bytes must be a finite number ≥ 0, got ${String(bytes)}`);
  }
  const a = cost.link.pcieEfficiency * linkGBs;
  if (!(Number.isFinite(a) && a > 0)) {
    throw new HmmError(
      'EINVAL',
      `dmaTransferNs: link bandwidth × efficiency must be > 0, got ${String(linkGBs)} GB/s × ${cost.link.pcieEfficiency}`,
    );
  }
  if (bytes === 0) return 0;
  const speed = ((2 * a) / Math.PI) * Math.atan(cost.dma.curvePerKB * (bytes / 1024));
  return (bytes / (speed * 2 ** 30)) * 1e9;
}

/**
 * Time to move `bytes` at a flat `GBs` (GB/s = bytes per ns), in ns: for memory-bandwidth-bound
 * work such as device-local copies. EINVAL for negative/non-finite bytes or non-positive `GBs`.
 */
export function bandwidthNs(bytes: number, GBs: number): number {
  if (!(Number.isFinite(bytes) && bytes >= 0)) {
    throw new HmmError('EINVAL', `bandwidthNs: bytes must be a finite number ≥ 0, got ${String(bytes)}`);
  }
  if (!(Number.isFinite(GBs) && GBs > 0)) {
    throw new HmmError(
      'EINVAL',
      `bandwidthNs: bandwidth must be a finite number of GB/s > 0, got ${String(GBs)}`,
    );
  }
  return bytes / GBs;
}
