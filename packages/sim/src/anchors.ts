/**
 * The published figures the scenarios are checked against, each with its source as cited in the
 * project's `perf-anchors.md`. Tags: `P` primary (paper, kernel mail or commit, driver source), `S`
 * secondary, `D` derived by arithmetic from a cited figure.
 *
 * @module
 */

/** How a figure was obtained (`perf-anchors.md` tags). */
export type AnchorTag = 'P' | 'S' | 'D';

/** One published figure. */
export interface Anchor {
  /** Stable id, `<scenario>.<figure>`. */
  readonly id: string;
  /** The published value, in {@link unit}. */
  readonly value: number;
  readonly unit: string;
  /** What was measured, and on what. */
  readonly what: string;
  readonly tag: AnchorTag;
  /** Where it comes from (author, title, place). */
  readonly source: string;
}

const LI_ZHE =
  'Li Zhe, "gup: optimize longterm pin_user_pages() for large folio", LKML 2025-06 (gup_test -LT -m 8192 -n 512, kernel 6.15)';
const PASCAL_UM =
  'github.com/parallelArchitect/pascal-um-benchmark (GTX 1080, PCIe 3, driver 535, 3 × 1 GiB vec_add)';
const DUGAST =
  'F. Dugast, "[PATCH v2 5/5] drm/pagemap: Enable THP support for GPU memory migration", dri-devel 2026-01-05 (Intel Xe SVM, no THP)';
const VFIO =
  'commit 4d83de6da265 "vfio/type1: Batch page pinning" (QEMU guest RAM, 120 GB pinned in 29.69 s)';
const PERFTEST = 'linux-rdma/perftest#241 (A30 + mlx5, cross-socket SYS topology, ib_write_bw 32 MiB)';

/** Every anchor, by id. */
export const ANCHORS = {
  vecaddRatio: {
    id: 'vecadd.ratio',
    value: 29.5,
    unit: '×',
    what: 'vec_add 3 × 1 GiB, on demand (386.6 ms, 31,774 faults) vs prefetched (13.3 ms)',
    tag: 'P',
    source: PASCAL_UM,
  },
  vecaddOnDemandMs: {
    id: 'vecadd.onDemandMs',
    value: 386.6,
    unit: 'ms',
    what: 'vec_add 3 × 1 GiB kernel time, every page reached through replayable faults',
    tag: 'P',
    source: PASCAL_UM,
  },
  vecaddPrefetchedMs: {
    id: 'vecadd.prefetchedMs',
    value: 13.3,
    unit: 'ms',
    what: 'vec_add 3 × 1 GiB kernel time after prefetching to VRAM',
    tag: 'P',
    source: PASCAL_UM,
  },
  fault2mUs: {
    id: 'fault-2m.us',
    value: 966,
    unit: 'µs',
    what: 'one 2 MiB GPU fault served with 4 KiB pages: migrate 942 (copy 223) + get_pages 9 + bind 10 µs',
    tag: 'P',
    source: DUGAST,
  },
  pin8gPinMs: {
    id: 'pin-8g.pinMs',
    value: 130,
    unit: 'ms',
    what: 'pin_user_pages(FOLL_LONGTERM) of 8 GiB of pre-faulted 4 KiB pages',
    tag: 'P',
    source: LI_ZHE,
  },
  pin8gUnpinMs: {
    id: 'pin-8g.unpinMs',
    value: 31.5,
    unit: 'ms',
    what: 'unpin_user_pages of the same 8 GiB',
    tag: 'P',
    source: LI_ZHE,
  },
  pinnedSetupMs: {
    id: 'pin-vs-userptr-vs-mirror.pinnedSetupMs',
    value: (29.69 / 120) * 1000,
    unit: 'ms',
    what: 'pin + fault-in + zero of 1 GiB (29.69 s per 120 GiB ≈ 0.94 µs per 4 KiB page, scaled to 1 GiB)',
    tag: 'D',
    source: VFIO,
  },
  p2pSameSwitchGBs: {
    id: 'p2p-vs-staged.p2pGBs',
    value: 24.756,
    unit: 'GB/s',
    what: 'GPUDirect RDMA, NIC reading GPU memory on a good path (IB NDR200, osu_bw D D, 4 MiB)',
    tag: 'P',
    source: 'openucx/ucx#9287 (IB NDR200, UCX 1.13)',
  },
  p2pCrossRootGBs: {
    id: 'p2p-vs-staged.crossRootGBs',
    value: 11.0,
    unit: 'GB/s',
    what: 'GPUDirect RDMA across sockets (the peer traffic crosses the root complexes)',
    tag: 'P',
    source: PERFTEST,
  },
  hostGBs: {
    id: 'p2p-vs-staged.hostGBs',
    value: 23.0,
    unit: 'GB/s',
    what: 'the same NIC reading host memory (host ↔ host)',
    tag: 'P',
    source: PERFTEST,
  },
  onDemandGBs: {
    id: 'oversubscribe.onDemandGBs',
    value: (2 * 1.073741824) / 0.3866,
    unit: 'GB/s',
    what: 'H2D rate of data reached on demand: 2 GiB of CPU-initialised input in 386.6 ms',
    tag: 'D',
    source: PASCAL_UM,
  },
} as const satisfies Record<string, Anchor>;
