/**
 * A fault policy after NVIDIA UVM's HMM mode (`uvm_gpu_replayable_faults.c`, `uvm_perf_prefetch.c`,
 * `uvm_perf_thrashing.c`), selectable instead of nouveau's with `new NouveauSvm(gpu, {policy:
 * uvmPolicy()})`:
 *
 * - **Batches** of up to `batchSize` (256) faults, up to `maxBatchesPerService` (20) per interrupt.
 * - **Migrate on fault**: every read or write fault (not atomics, not prefetches) migrates its page
 *   to this GPU's VRAM before the base path maps it, so the mapping comes from VRAM. The fault is
 *   first grown to its 64 KiB big page, then the **density prefetcher** runs per 2 MiB VA block:
 *   over the bitmap of pages resident in this GPU's VRAM plus the pages about to move, it walks up
 *   the binary tree of subregions (64 KiB … 2 MiB) that contain the faulting big page and picks the
 *   largest one covered by more than `prefetchThreshold` (51 %); the region is clipped to the
 *   fault's VMA. Each block migrates once per batch (`SVM_BIND`-style, best effort).
 * - **Thrashing detection** ({@link ThrashingDetector}): a page that migrated `thrashingThreshold`
 *   (3) times within `thrashingWindowNs` (500 µs) is thrashing. Its faults are not grown and do not
 *   prefetch; the first responses throttle (the bottom half naps one window before serving the
 *   batch), after {@link UVM_THRASHING_PIN_THRESHOLD} throttles the page is pinned where it is for
 *   {@link UVM_THRASHING_PIN_WINDOWS} windows: the policy does not migrate it, so the base path maps
 *   it remotely (in system memory), then it is unpinned.
 *
 * Residency is tracked from {@link NouveauDmem.onMigrated} (any previous hook is still called): a
 * bitmap per (mm, 2 MiB block), set when pages land in VRAM and cleared when the CPU pulls them back.
 * Defaults come from the machine's cost model (`cost.gpuFault.*`), read when the SVM attaches the
 * policy; options override them.
 *
 * Left out: replay policies other than BATCH_FLUSH, access counters, oversubscription eviction,
 * `preferred_location` / `accessed_by`, and the per-block policy tree.
 *
 * @module
 */
import { DEFAULT_COST_MODEL, FaultAccess, HmmError, PAGE_SIZE } from '@hmm/core';
import type { MmStruct, Vma } from '@hmm/core';
import type { NouveauDmem } from './dmem.js';
import type { FaultPolicy, PolicyFault } from './policy.js';
import type { NouveauSvm } from './svm.js';

/** Throttles of a page before it is pinned (`uvm_perf_thrashing_pin_threshold`). */
export const UVM_THRASHING_PIN_THRESHOLD = 10;

/** How long a pinned page stays pinned, in thrashing windows (`uvm_perf_thrashing_pin`). */
export const UVM_THRASHING_PIN_WINDOWS = 300;

/**
 * A thrashing page whose last migration is this many windows old is forgotten (UVM's epoch of 2000
 * lapses): its next fault is treated as a fresh one.
 */
export const UVM_THRASHING_EPOCH_WINDOWS = 2000;

/** What the thrashing detector advises for a faulting page (`uvm_perf_thrashing_hint_type_t`). */
export const ThrashHint = {
  /** Not thrashing: migrate as usual. */
  NONE: 0,
  /** Thrashing: nap one window, then serve the page alone (no growth, no prefetch). */
  THROTTLE: 1,
  /** Pinned: do not migrate; the page is mapped where it is. */
  PIN: 2,
} as const;
/** A {@link ThrashHint} value. */
export type ThrashHintId = (typeof ThrashHint)[keyof typeof ThrashHint];

/** Parameters of a {@link ThrashingDetector}. */
export interface ThrashingParams {
  /** Sliding window, simulated ns (`lapse`). */
  readonly windowNs: number;
  /** Migrations within a window that make a page thrash. */
  readonly threshold: number;
  /** Throttles before pinning; default {@link UVM_THRASHING_PIN_THRESHOLD}. */
  readonly throttlesToPin?: number;
  /** Pin duration in windows; default {@link UVM_THRASHING_PIN_WINDOWS}. */
  readonly pinWindows?: number;
  /** Quiet time, in windows, after which a thrashing page is forgotten; default {@link UVM_THRASHING_EPOCH_WINDOWS}. */
  readonly epochWindows?: number;
  /** Pages per bookkeeping block (a power of two); default 512 (2 MiB). */
  readonly blockPages?: number;
}

/** Counters of a {@link ThrashingDetector}. */
export interface ThrashingStats {
  /** Throttles advised (one per page per fault batch). */
  readonly throttles: number;
  /** Pages pinned. */
  readonly pins: number;
  /** Pins that expired. */
  readonly unpins: number;
  /** Times a page entered the thrashing state. */
  readonly thrashingPages: number;
}

const DETECTED = 1;

/** Per-page state of one block, as typed arrays. */
class ThrashBlock {
  /** Ring of the last `threshold` migration times of each page (−∞ = empty slot). */
  readonly times: Float64Array;
  readonly head: Uint8Array;
  readonly state: Uint8Array;
  readonly throttles: Uint16Array;
  readonly pinnedUntil: Float64Array;
  readonly last: Float64Array;

  constructor(pages: number, threshold: number) {
    this.times = new Float64Array(pages * threshold).fill(-Infinity);
    this.head = new Uint8Array(pages);
    this.state = new Uint8Array(pages);
    this.throttles = new Uint16Array(pages);
    this.pinnedUntil = new Float64Array(pages);
    this.last = new Float64Array(pages).fill(-Infinity);
  }
}

/**
 * The thrashing state machine of `uvm_perf_thrashing.c`, per page (pages are numbers: any key whose
 * neighbours are neighbouring pages). {@link record} counts a migration (either direction); when a
 * page reaches `threshold` migrations within `windowNs` it is thrashing. {@link hint}, called for a
 * faulting page, answers NONE, THROTTLE (the first `throttlesToPin` times) or PIN (then for
 * `pinWindows` windows), after which the page is unpinned and starts over. Time is the caller's
 * simulated clock.
 */
export class ThrashingDetector {
  readonly windowNs: number;
  readonly threshold: number;
  readonly throttlesToPin: number;
  readonly pinWindows: number;
  readonly epochWindows: number;
  readonly blockPages: number;
  readonly #blocks = new Map<number, ThrashBlock>();
  #throttles = 0;
  #pins = 0;
  #unpins = 0;
  #thrashingPages = 0;

  constructor(p: ThrashingParams) {
    this.windowNs = p.windowNs;
    this.threshold = p.threshold;
    this.throttlesToPin = p.throttlesToPin ?? UVM_THRASHING_PIN_THRESHOLD;
    this.pinWindows = p.pinWindows ?? UVM_THRASHING_PIN_WINDOWS;
    this.epochWindows = p.epochWindows ?? UVM_THRASHING_EPOCH_WINDOWS;
    this.blockPages = p.blockPages ?? 512;
    const bad = (why: string): never => {
      throw new HmmError('EINVAL', `ThrashingDetector: ${why}`);
    };
    if (!(Number.isFinite(this.windowNs) && this.windowNs > 0)) {
      bad(`windowNs must be > 0, got ${String(this.windowNs)}`);
    }
    if (!(Number.isInteger(this.threshold) && this.threshold >= 1 && this.threshold <= 255)) {
      bad(`threshold must be an integer in [1, 255], got ${String(this.threshold)}`);
    }
    if (!(Number.isInteger(this.throttlesToPin) && this.throttlesToPin >= 0 && this.throttlesToPin < 65535)) {
      bad(`throttlesToPin must be an integer in [0, 65535), got ${String(this.throttlesToPin)}`);
    }
    if (!(Number.isFinite(this.pinWindows) && this.pinWindows > 0)) {
      bad(`pinWindows must be > 0, got ${String(this.pinWindows)}`);
    }
    if (!(Number.isFinite(this.epochWindows) && this.epochWindows > 0)) {
      bad(`epochWindows must be > 0, got ${String(this.epochWindows)}`);
    }
    if (!isPow2(this.blockPages)) bad(`blockPages must be a power of two, got ${String(this.blockPages)}`);
  }

  /** Counters. */
  stats(): ThrashingStats {
    return {
      throttles: this.#throttles,
      pins: this.#pins,
      unpins: this.#unpins,
      thrashingPages: this.#thrashingPages,
    };
  }

  #block(page: number, create: true): ThrashBlock;
  #block(page: number, create: false): ThrashBlock | undefined;
  #block(page: number, create: boolean): ThrashBlock | undefined {
    const key = Math.floor(page / this.blockPages);
    let b = this.#blocks.get(key);
    if (b === undefined && create) {
      b = new ThrashBlock(this.blockPages, this.threshold);
      this.#blocks.set(key, b);
    }
    return b;
  }

  /** Records one migration of `page` at `now`; marks it thrashing if the window now holds `threshold` of them. */
  record(page: number, now: number): void {
    const b = this.#block(page, true);
    const i = page & (this.blockPages - 1);
    const t = this.threshold;
    b.times[i * t + b.head[i]!] = now;
    b.head[i] = (b.head[i]! + 1) % t;
    b.last[i] = now;
    if ((b.state[i]! & DETECTED) === 0 && this.#inWindow(b, i, now) >= t) {
      b.state[i]! |= DETECTED;
      this.#thrashingPages++;
    }
  }

  /** Migrations of `page` within the window ending at `now` (an event exactly one window old has expired). */
  eventsInWindow(page: number, now: number): number {
    const b = this.#block(page, false);
    return b === undefined ? 0 : this.#inWindow(b, page & (this.blockPages - 1), now);
  }

  #inWindow(b: ThrashBlock, i: number, now: number): number {
    let n = 0;
    for (let k = i * this.threshold, e = k + this.threshold; k < e; k++) {
      if (now - b.times[k]! < this.windowNs) n++;
    }
    return n;
  }

  /** True if `page` is in the thrashing state (throttled or pinned) at `now`. Pure query. */
  isThrashing(page: number, now: number): boolean {
    const b = this.#block(page, false);
    if (b === undefined) return false;
    const i = page & (this.blockPages - 1);
    if (b.pinnedUntil[i]! > now) return true;
    return (b.state[i]! & DETECTED) !== 0 && now - b.last[i]! < this.epochWindows * this.windowNs;
  }

  /** True if `page` is pinned at `now`. Pure query. */
  isPinned(page: number, now: number): boolean {
    const b = this.#block(page, false);
    return b !== undefined && b.pinnedUntil[page & (this.blockPages - 1)]! > now;
  }

  /**
   * The advice for a fault on `page` at `now` (`uvm_perf_thrashing_get_hint`), advancing the state
   * machine: an expired pin is lifted (the page starts over); a thrashing page is throttled until it
   * has been throttled `throttlesToPin` times, then pinned for `pinWindows` windows.
   */
  hint(page: number, now: number): ThrashHintId {
    const b = this.#block(page, false);
    if (b === undefined) return ThrashHint.NONE;
    const i = page & (this.blockPages - 1);
    const until = b.pinnedUntil[i]!;
    if (until > 0) {
      if (now < until) return ThrashHint.PIN;
      this.#unpins++;
      this.#reset(b, i);
      return ThrashHint.NONE;
    }
    if ((b.state[i]! & DETECTED) === 0) return ThrashHint.NONE;
    if (now - b.last[i]! >= this.epochWindows * this.windowNs) {
      this.#reset(b, i); // quiet for an epoch: no longer thrashing
      return ThrashHint.NONE;
    }
    if (b.throttles[i]! >= this.throttlesToPin) {
      b.pinnedUntil[i] = now + this.pinWindows * this.windowNs;
      this.#pins++;
      return ThrashHint.PIN;
    }
    b.throttles[i]!++;
    this.#throttles++;
    return ThrashHint.THROTTLE;
  }

  #reset(b: ThrashBlock, i: number): void {
    b.times.fill(-Infinity, i * this.threshold, (i + 1) * this.threshold);
    b.head[i] = 0;
    b.state[i] = 0;
    b.throttles[i] = 0;
    b.pinnedUntil[i] = 0;
    b.last[i] = -Infinity;
  }
}

/**
 * The density prefetcher's choice for a fault at page `faultPage` of a block (`uvm_perf_prefetch.c`):
 * `covered[i]` is nonzero for pages resident on the destination or about to move there. Walking up
 * the binary tree from the faulting leaf (`leafPages`) to the whole block (`covered.length`, both
 * powers of two), the largest aligned subregion containing the fault whose covered fraction is
 * strictly above `threshold` wins. Returns `[start, end)` page indices in the block, or null if not
 * even the leaf qualifies.
 */
export function densityRegion(
  covered: Uint8Array,
  leafPages: number,
  faultPage: number,
  threshold: number,
): [number, number] | null {
  const n = covered.length;
  if (!(isPow2(n) && isPow2(leafPages) && leafPages <= n && faultPage >= 0 && faultPage < n)) {
    throw new HmmError(
      'EINVAL',
      `densityRegion: need power-of-two leaf ${String(leafPages)} ≤ block ${n} and a fault page inside, got ${String(faultPage)}`,
    );
  }
  let best: [number, number] | null = null;
  let start = faultPage - (faultPage % leafPages);
  let count = 0;
  for (let k = start; k < start + leafPages; k++) if (covered[k] !== 0) count++;
  for (let size = leafPages; ;) {
    if (count > threshold * size) best = [start, start + size];
    if (size === n) return best;
    // The parent: this subregion plus its sibling.
    const parent = start - (start % (2 * size));
    const sibling = parent === start ? start + size : parent;
    for (let k = sibling; k < sibling + size; k++) if (covered[k] !== 0) count++;
    start = parent;
    size *= 2;
  }
}

/** Options of {@link uvmPolicy}; each defaults to the machine's `cost.gpuFault.*`. */
export interface UvmPolicyOptions {
  readonly batchSize?: number;
  readonly maxBatchesPerService?: number;
  /** Covered fraction a subregion must exceed to be prefetched (0.51). */
  readonly prefetchThreshold?: number;
  /** VA block size, a power of two (2 MiB). */
  readonly vaBlockBytes?: number;
  /** Big page size faults grow to and the prefetch tree's leaf, a power of two (64 KiB). */
  readonly prefetchLeafBytes?: number;
  /** Thrashing window, simulated ns (500 µs). */
  readonly thrashingWindowNs?: number;
  /** Migrations within the window that make a page thrash (3). */
  readonly thrashingThreshold?: number;
  /** Throttles before a pin; default {@link UVM_THRASHING_PIN_THRESHOLD}. */
  readonly thrashingThrottlesToPin?: number;
  /** Pin duration in windows; default {@link UVM_THRASHING_PIN_WINDOWS}. */
  readonly thrashingPinWindows?: number;
}

/** Counters of a {@link UvmPolicy}. */
export interface UvmPolicyStats {
  /** Pages the policy migrated to VRAM. */
  readonly migrations: number;
  /** Of those, pages beyond the faulting big pages (density prefetch). */
  readonly prefetched: number;
  /** Page throttles advised by the thrashing detector. */
  readonly throttles: number;
  /** Naps the bottom half took (one per batch with a throttled page). */
  readonly naps: number;
  /** Pages pinned. */
  readonly pins: number;
  /** Pins that expired. */
  readonly unpins: number;
  /** Times a page entered the thrashing state. */
  readonly thrashingPages: number;
}

/** The policy object {@link uvmPolicy} returns. */
export interface UvmPolicy extends FaultPolicy {
  /** Counters. */
  stats(): UvmPolicyStats;
  /** The thrashing detector (available once attached). */
  readonly thrashing: ThrashingDetector | null;
}

/** Resolved parameters. */
interface UvmParams {
  readonly batchSize: number;
  readonly maxBatchesPerService: number;
  readonly prefetchThreshold: number;
  readonly blockPages: number;
  readonly leafPages: number;
  readonly windowNs: number;
  readonly threshold: number;
  readonly throttlesToPin: number;
  readonly pinWindows: number;
}

/** Page keys: `mm.id × 2^35 + vpn` (vpns are below 2^35 for a 47-bit address space). */
const MM_KEY = 2 ** 35;

function pageKey(mm: MmStruct, vpn: number): number {
  return mm.id * MM_KEY + vpn;
}

function isPow2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function migratable(vma: Vma): boolean {
  return vma.isAnonymous && !vma.isShared && !vma.isSpecial && vma.readable;
}

/** One faulting page of a block. */
interface BlockFault {
  /** Page index in the block. */
  readonly page: number;
  readonly hint: ThrashHintId;
  /** The fault's VMA, clipped to the block, as page indices `[lo, hi)`. */
  readonly lo: number;
  readonly hi: number;
}

/**
 * A {@link FaultPolicy} after NVIDIA UVM's HMM mode (see the module doc). One policy object per
 * GPU: EBUSY if attached to a second SVM.
 */
export function uvmPolicy(opts: UvmPolicyOptions = {}): UvmPolicy {
  const d = DEFAULT_COST_MODEL.gpuFault;
  let params: UvmParams | null = null;
  let svmOf: NouveauSvm | null = null;
  let detector: ThrashingDetector | null = null;
  /** Residency in this GPU's VRAM: block key → bitmap of its pages. */
  const resident = new Map<number, Uint8Array>();
  let migrations = 0;
  let prefetched = 0;
  let naps = 0;

  const resolve = (g: typeof d): UvmParams => {
    const p = {
      batchSize: opts.batchSize ?? g.batchSize,
      maxBatchesPerService: opts.maxBatchesPerService ?? g.maxBatchesPerService,
      prefetchThreshold: opts.prefetchThreshold ?? g.prefetchThreshold,
      vaBlockBytes: opts.vaBlockBytes ?? g.vaBlockBytes,
      prefetchLeafBytes: opts.prefetchLeafBytes ?? g.prefetchLeafBytes,
      windowNs: opts.thrashingWindowNs ?? g.thrashingWindowNs,
      threshold: opts.thrashingThreshold ?? g.thrashingThreshold,
      throttlesToPin: opts.thrashingThrottlesToPin ?? UVM_THRASHING_PIN_THRESHOLD,
      pinWindows: opts.thrashingPinWindows ?? UVM_THRASHING_PIN_WINDOWS,
    };
    const bad = (why: string): never => {
      throw new HmmError('EINVAL', `uvmPolicy: ${why}`);
    };
    if (!(Number.isInteger(p.batchSize) && p.batchSize >= 1)) {
      bad(`batchSize must be an integer ≥ 1, got ${String(p.batchSize)}`);
    }
    if (!(Number.isInteger(p.maxBatchesPerService) && p.maxBatchesPerService >= 1)) {
      bad(`maxBatchesPerService must be an integer ≥ 1, got ${String(p.maxBatchesPerService)}`);
    }
    if (!(p.prefetchThreshold >= 0 && p.prefetchThreshold < 1)) {
      bad(`prefetchThreshold must be in [0, 1), got ${String(p.prefetchThreshold)}`);
    }
    if (!(isPow2(p.prefetchLeafBytes) && p.prefetchLeafBytes >= PAGE_SIZE)) {
      bad(`prefetchLeafBytes must be a power of two ≥ ${PAGE_SIZE}, got ${String(p.prefetchLeafBytes)}`);
    }
    if (!(isPow2(p.vaBlockBytes) && p.vaBlockBytes >= p.prefetchLeafBytes && p.vaBlockBytes <= 2 ** 30)) {
      bad(`vaBlockBytes must be a power of two in [prefetchLeafBytes, 1 GiB], got ${String(p.vaBlockBytes)}`);
    }
    return {
      batchSize: p.batchSize,
      maxBatchesPerService: p.maxBatchesPerService,
      prefetchThreshold: p.prefetchThreshold,
      blockPages: p.vaBlockBytes / PAGE_SIZE,
      leafPages: p.prefetchLeafBytes / PAGE_SIZE,
      windowNs: p.windowNs,
      threshold: p.threshold,
      throttlesToPin: p.throttlesToPin,
      pinWindows: p.pinWindows,
    };
  };
  // Before attach the defaults stand in for the machine's cost model (options are checked now).
  const initial = resolve(d);

  const onMigrated = (mm: MmStruct, vpns: readonly number[], toVram: boolean): void => {
    const p = params!;
    const now = svmOf!.gpu.machine.sched.now;
    for (const vpn of vpns) {
      const key = pageKey(mm, vpn);
      detector!.record(key, now);
      const bkey = Math.floor(key / p.blockPages);
      let bits = resident.get(bkey);
      if (bits === undefined) {
        if (!toVram) continue;
        bits = new Uint8Array(p.blockPages);
        resident.set(bkey, bits);
      }
      bits[key & (p.blockPages - 1)] = toVram ? 1 : 0;
    }
  };

  /** Plans and migrates the blocks of one mm's faults, under its mmap lock. */
  const serveMm = async (
    svm: NouveauSvm,
    mm: MmStruct,
    pages: readonly { vpn: number; hint: ThrashHintId }[],
  ): Promise<void> => {
    const p = params!;
    const det = detector!;
    const bp = p.blockPages;
    await mm.mmapLock.read();
    try {
      // Group the faults per block (they arrive sorted by address within a channel).
      const blocks = new Map<number, BlockFault[]>();
      for (const { vpn, hint } of pages) {
        const vma = mm.vmas.lookup(vpn * PAGE_SIZE);
        if (vma === undefined || !migratable(vma)) continue; // the base path serves or cancels it
        const block = Math.floor(vpn / bp);
        const base = block * bp;
        const lo = Math.max(0, vma.start / PAGE_SIZE - base);
        const hi = Math.min(bp, vma.end / PAGE_SIZE - base);
        let list = blocks.get(block);
        if (list === undefined) blocks.set(block, (list = []));
        list.push({ page: vpn - base, hint, lo, hi });
      }
      const now = svm.gpu.machine.sched.now;
      for (const [block, list] of blocks) {
        const base = block * bp;
        const keyBase = pageKey(mm, base);
        const res = resident.get(Math.floor(keyBase / bp));
        // Pages the faults themselves move: their big pages (clipped to the VMA), or the page alone
        // when it is thrashing; never a pinned page.
        const seed = new Uint8Array(bp);
        for (const f of list) {
          if (f.hint === ThrashHint.PIN) continue;
          if (f.hint === ThrashHint.THROTTLE) {
            seed[f.page] = 1;
            continue;
          }
          const leaf = f.page - (f.page % p.leafPages);
          for (let k = Math.max(leaf, f.lo); k < Math.min(leaf + p.leafPages, f.hi); k++) seed[k] = 1;
        }
        const covered = new Uint8Array(bp);
        for (let k = 0; k < bp; k++) covered[k] = seed[k]! | (res?.[k] ?? 0);
        const want = seed.slice();
        for (const f of list) {
          if (f.hint !== ThrashHint.NONE) continue;
          const r = densityRegion(covered, p.leafPages, f.page, p.prefetchThreshold);
          if (r === null) continue;
          for (let k = Math.max(r[0], f.lo); k < Math.min(r[1], f.hi); k++) want[k] = 1;
        }
        for (let k = 0; k < bp; k++) if (want[k] !== 0 && det.isPinned(keyBase + k, now)) want[k] = 0;
        const before = res?.slice();
        // Migrate the runs (resident pages inside a run are skipped by migrate_vma_setup).
        for (let k = 0; k < bp;) {
          if (want[k] === 0) {
            k++;
            continue;
          }
          let e = k;
          let fresh = false;
          while (e < bp && want[e] !== 0) {
            if (res?.[e] !== 1) fresh = true;
            e++;
          }
          if (fresh) {
            try {
              const r = await svm.dmem.migrateToVram(mm, (base + k) * PAGE_SIZE, (base + e) * PAGE_SIZE);
              migrations += r.migrated;
            } catch (err) {
              // Best effort, as an explicit migration: the fault is then mapped where the page is.
              if (!(err instanceof HmmError)) throw err;
            }
          }
          k = e;
        }
        const after = resident.get(Math.floor(keyBase / bp));
        if (after !== undefined) {
          for (let k = 0; k < bp; k++) {
            if (want[k] !== 0 && seed[k] === 0 && after[k] === 1 && before?.[k] !== 1) prefetched++;
          }
        }
      }
    } finally {
      mm.mmapLock.readUnlock();
    }
  };

  const policy: UvmPolicy = {
    name: 'uvm',
    get batchSize(): number {
      return (params ?? initial).batchSize;
    },
    get maxBatchesPerService(): number {
      return (params ?? initial).maxBatchesPerService;
    },
    get thrashing(): ThrashingDetector | null {
      return detector;
    },
    attach(svm: NouveauSvm): void {
      if (svmOf !== null) {
        throw new HmmError(
          'EBUSY',
          `uvmPolicy: already attached to ${svmOf.gpu.name}; residency is per GPU, create one policy per SVM`,
        );
      }
      svmOf = svm;
      params = resolve(svm.gpu.machine.cost.gpuFault);
      detector = new ThrashingDetector({
        windowNs: params.windowNs,
        threshold: params.threshold,
        throttlesToPin: params.throttlesToPin,
        pinWindows: params.pinWindows,
        blockPages: params.blockPages,
      });
      const dmem: NouveauDmem = svm.dmem;
      const prev = dmem.onMigrated;
      dmem.onMigrated = (mm, vpns, toVram) => {
        prev?.(mm, vpns, toVram);
        onMigrated(mm, vpns, toVram);
      };
    },
    async prepare(svm: NouveauSvm, faults: readonly PolicyFault[]): Promise<void> {
      if (svm !== svmOf || detector === null) {
        throw new HmmError(
          'EINVAL',
          `uvmPolicy: prepare on ${svm.gpu.name}, which did not attach this policy`,
        );
      }
      const det = detector;
      const sched = svm.gpu.machine.sched;
      const now = sched.now;
      // Thrashing hints, once per page of the batch, grouped per mm.
      const byMm = new Map<MmStruct, { vpn: number; hint: ThrashHintId }[]>();
      const seen = new Set<number>();
      let throttled = false;
      for (const f of faults) {
        if (f.access !== FaultAccess.READ && f.access !== FaultAccess.WRITE) continue;
        const mm = f.svmm.process.mm;
        const vpn = f.addr / PAGE_SIZE;
        const key = pageKey(mm, vpn);
        if (seen.has(key)) continue;
        seen.add(key);
        const hint = det.hint(key, now);
        if (hint === ThrashHint.THROTTLE) throttled = true;
        let list = byMm.get(mm);
        if (list === undefined) byMm.set(mm, (list = []));
        list.push({ vpn, hint });
      }
      if (throttled) {
        naps++;
        await sched.sleep(params!.windowNs);
      }
      for (const [mm, pages] of byMm) await serveMm(svm, mm, pages);
    },
    stats(): UvmPolicyStats {
      const t = detector?.stats() ?? { throttles: 0, pins: 0, unpins: 0, thrashingPages: 0 };
      return { migrations, prefetched, naps, ...t };
    },
  };
  return policy;
}
