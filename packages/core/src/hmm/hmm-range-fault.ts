/**
 * `hmm_range_fault` (mm/hmm.c, include/linux/hmm.h): snapshot the CPU page table of a range into one
 * output word per page, faulting pages in where the request asks for it, for a device to mirror.
 *
 * Each word of {@link HmmRange.hmmPfns} holds a frame number in its low 32 bits and {@link HmmPfn}
 * flags above (`flags × 2^32 + pfn`, exact in a `Float64Array`); use {@link hmmPfnToPfn} and
 * {@link hmmPfnFlags} to read it and {@link hmmPfnMake} to build request words. On input only the
 * request flags count; the request of a page is `(word & pfnFlagsMask) | defaultFlags`.
 *
 * @module
 */
import { HmmError, hex, isHmmError } from '../errors/errno.js';
import { PAGE_SIZE, PTRS_PER_TABLE, isPageRange } from '../mm/constants.js';
import { FaultFlag, handleMmFault } from '../mm/memory.js';
import type { MmStruct } from '../mm/mm-struct.js';
import { Pte, PteType, pteType } from '../mm/pgtable.js';
import { isDevicePrivateEntry } from '../mm/memory.js';
import { pagemapOf } from '../mm/memremap.js';
import { ZERO_PFN } from '../mm/physmem.js';
import type { Vma } from '../mm/vma.js';
import { mmuIntervalCheckRetry } from './mmu-interval-notifier.js';
import type { MmuIntervalNotifier } from './mmu-interval-notifier.js';

/** Flags of an hmm pfn word (`enum hmm_pfn_flags`). */
export const HmmPfn = {
  /** Output: the page is present and readable (`HMM_PFN_VALID`). */
  VALID: 1 << 0,
  /** Output: the page may be written (`HMM_PFN_WRITE`); implies VALID. */
  WRITE: 1 << 1,
  /** Output: the page cannot be mirrored (hole, PROT_NONE, VM_IO/PFNMAP) (`HMM_PFN_ERROR`). */
  ERROR: 1 << 2,
  /** Output: log2 of the size of the CPU mapping in pages, 5 bits (`hmm_pfn_to_map_order`). */
  ORDER_SHIFT: 3,
  ORDER_MASK: 0x1f << 3,
  /** Input: fault the page in if it is not present (`HMM_PFN_REQ_FAULT`, the same bit as VALID). */
  REQ_FAULT: 1 << 0,
  /** Input: fault it in writable (`HMM_PFN_REQ_WRITE`, the same bit as WRITE); needs REQ_FAULT. */
  REQ_WRITE: 1 << 1,
} as const;

const TWO_32 = 4294967296;

/** Builds a word from flags and a pfn. */
export function hmmPfnMake(flags: number, pfn = 0): number {
  return flags * TWO_32 + pfn;
}

/** The frame number of a word (`hmm_pfn_to_pfn`-like; `hmm_pfn_to_page` in the kernel). */
export function hmmPfnToPfn(word: number): number {
  return word >>> 0;
}

/** The {@link HmmPfn} flags of a word. */
export function hmmPfnFlags(word: number): number {
  return Math.floor(word / TWO_32);
}

/** The map order of a word (`hmm_pfn_to_map_order`). */
export function hmmPfnToMapOrder(word: number): number {
  return (hmmPfnFlags(word) & HmmPfn.ORDER_MASK) >>> HmmPfn.ORDER_SHIFT;
}

/** `struct hmm_range`. */
export interface HmmRange {
  /** The interval notifier covering the range; its mm is the one walked. */
  readonly notifier: MmuIntervalNotifier;
  /** The sequence from `mmuIntervalReadBegin`. */
  notifierSeq: number;
  /** First byte (page aligned). */
  readonly start: number;
  /** One past the last byte (page aligned). */
  readonly end: number;
  /** One word per page: request in, result out. */
  readonly hmmPfns: Float64Array;
  /** Request flags applied to every page. */
  readonly defaultFlags: number;
  /** Which per-page request flags of the input words count. */
  readonly pfnFlagsMask: number;
  /**
   * Owner whose device-private pages are reported (VALID, WRITE if the entry is writable, with the
   * device frame) rather than faulted back (`dev_private_owner`). Other owners' device-private pages
   * read as 0, or are migrated back to RAM when a fault is requested.
   */
  readonly devPrivateOwner: unknown;
}

const NEED_FAULT = 1;
const NEED_WRITE = 2;

/** What the request of page `i` requires given the CPU entry's state (`hmm_pte_need_fault`). */
function needFault(range: HmmRange, i: number, present: boolean, writable: boolean): number {
  // With no per-page mask the request is the same for every page: skip decoding the word.
  const req =
    (range.pfnFlagsMask === 0
      ? range.defaultFlags
      : (hmmPfnFlags(range.hmmPfns[i]!) & range.pfnFlagsMask) | range.defaultFlags) &
    (HmmPfn.REQ_FAULT | HmmPfn.REQ_WRITE);
  if ((req & HmmPfn.REQ_FAULT) === 0) return 0;
  let need = present ? 0 : NEED_FAULT;
  if ((req & HmmPfn.REQ_WRITE) !== 0 && !writable) need |= NEED_FAULT | NEED_WRITE;
  return need;
}

function checkRange(range: HmmRange): MmStruct {
  const mm = range.notifier.mm;
  const { start, end } = range;
  if (!isPageRange(start, end)) {
    throw new HmmError(
      'EINVAL',
      `hmm_range_fault: [${String(start)}, ${String(end)}) is not a non-empty page-aligned range`,
    );
  }
  if (start < range.notifier.start || end > range.notifier.end) {
    throw new HmmError(
      'EINVAL',
      `hmm_range_fault: [${hex(start)}, ${hex(end)}) is not inside the notifier's interval [${hex(range.notifier.start)}, ${hex(range.notifier.end)})`,
    );
  }
  if (range.hmmPfns.length !== (end - start) / PAGE_SIZE) {
    throw new HmmError(
      'EINVAL',
      `hmm_range_fault: hmmPfns has ${range.hmmPfns.length} words for ${(end - start) / PAGE_SIZE} pages`,
    );
  }
  if (mm.state !== 'live') throw new HmmError('EFAULT', `hmm_range_fault: mm ${mm.id} is being torn down`);
  if (!mm.mmapLock.heldByCurrent()) {
    throw new HmmError(
      'EINVAL',
      'hmm_range_fault: the caller must hold the mmap lock (mmap_read_lock) of the mm',
      {
        kernelRef: 'mm/hmm.c:hmm_range_fault (mmap_assert_locked)',
      },
    );
  }
  return mm;
}

/**
 * Fills `range.hmmPfns` for [start, end) (`hmm_range_fault`). The caller holds `mm.mmapLock` for read
 * and got `range.notifierSeq` from `mmuIntervalReadBegin`. Throws:
 * - EBUSY: the range was invalidated meanwhile (`mmu_interval_check_retry`); start over from read-begin.
 *   Words before the page it stopped at hold outputs, the rest still their inputs.
 * - EFAULT: a page that must be faulted cannot be (hole, PROT_NONE, VM_IO/PFNMAP, beyond end of file).
 * - EPERM: a write is requested on a mapping that is not writable.
 * - ENOMEM, or another fault errno.
 *
 * Outputs: VALID (+WRITE if the CPU PTE is writable) with the pfn; the zero page is VALID without
 * WRITE; 0 for a page not present and not requested; ERROR for holes, PROT_NONE and special mappings
 * when no fault was requested. Device-private pages of `devPrivateOwner` are reported as they are;
 * other non-present entries (swap, another owner's device page, device-exclusive, migration) read as
 * 0 or are faulted (swap-in, migrate to RAM, end exclusive access, wait for the migration). The map
 * order is 0 (the SDK has no huge mappings yet).
 */
export async function hmmRangeFault(range: HmmRange): Promise<void> {
  const mm = checkRange(range);
  const ctx = mm.ctx;
  const arena = ctx.arena;
  const pfns = range.hmmPfns;
  const npages = pfns.length;
  let i = 0;
  while (i < npages) {
    if (mmuIntervalCheckRetry(range.notifier, range.notifierSeq)) {
      throw new HmmError(
        'EBUSY',
        `hmm_range_fault: the range was invalidated (sequence ${range.notifierSeq} is stale); retry from mmu_interval_read_begin`,
        {
          kernelRef: 'mm/hmm.c:hmm_range_fault',
        },
      );
    }
    const addr = range.start + i * PAGE_SIZE;
    const vma = mm.vmas.findFrom(addr);
    if (vma === undefined || vma.start > addr) {
      // hmm_vma_walk_hole without a VMA: EFAULT if a fault is required, else ERROR.
      const holeEnd = Math.min(range.end, vma === undefined ? range.end : vma.start);
      i = fillError(range, i, (holeEnd - range.start) / PAGE_SIZE, 'no mapping', addr);
      continue;
    }
    const vmaEndIdx = Math.min(npages, (vma.end - range.start) / PAGE_SIZE);
    if (vma.isSpecial || !vma.readable) {
      // hmm_vma_walk_test: VM_IO, VM_PFNMAP and unreadable VMAs are errors.
      i = fillError(
        range,
        i,
        vmaEndIdx,
        vma.isSpecial ? 'a VM_IO/VM_PFNMAP mapping' : 'a PROT_NONE mapping',
        addr,
      );
      continue;
    }
    // Walk this VMA leaf table by leaf table.
    while (i < vmaEndIdx) {
      const a = range.start + i * PAGE_SIZE;
      let slot = mm.pgtable.lookup(a / PAGE_SIZE);
      const lim =
        slot < 0
          ? Math.min(vmaEndIdx, i + (PTRS_PER_TABLE - ((a / PAGE_SIZE) % PTRS_PER_TABLE)))
          : Math.min(vmaEndIdx, i + (PTRS_PER_TABLE - (slot & (PTRS_PER_TABLE - 1))));
      let faultAt = -1;
      let faultWrite = false;
      for (; i < lim; i++, slot = slot < 0 ? slot : slot + 1) {
        const f = slot < 0 ? 0 : arena.pteFlags[slot]!;
        const present = (f & Pte.PRESENT) !== 0;
        const special = (f & Pte.SPECIAL) !== 0;
        const pv = slot < 0 ? 0 : arena.pteVal[slot]!;
        if (present && special && pv !== ZERO_PFN) {
          if (needFault(range, i, false, false) !== 0) {
            throw new HmmError(
              'EFAULT',
              `hmm_range_fault: ${hex(range.start + i * PAGE_SIZE)} is a special PTE without a page`,
            );
          }
          pfns[i] = hmmPfnMake(HmmPfn.ERROR);
          continue;
        }
        if (!present && f !== 0) {
          const type = pteType(f);
          if (isDevicePrivateEntry(type) && pagemapOf(ctx, pv)?.owner === range.devPrivateOwner) {
            // A page of the caller's own device memory: reported, never faulted.
            const w = type === PteType.DEVICE_PRIVATE_WRITE;
            pfns[i] = hmmPfnMake(w ? HmmPfn.VALID | HmmPfn.WRITE : HmmPfn.VALID, pv);
            continue;
          }
        }
        const writable = present && (f & Pte.WRITE) !== 0;
        const need = needFault(range, i, present, writable);
        if (need !== 0) {
          faultAt = i;
          faultWrite = (need & NEED_WRITE) !== 0;
          break;
        }
        pfns[i] = present ? hmmPfnMake(writable ? HmmPfn.VALID | HmmPfn.WRITE : HmmPfn.VALID, pv) : 0;
      }
      if (faultAt >= 0) {
        await faultOne(vma, range.start + faultAt * PAGE_SIZE, faultWrite);
        // The walk restarts at this page (-EBUSY inside hmm_range_fault), checking the sequence first.
        break;
      }
    }
  }
  const inject = ctx.onRangeFaultDone;
  if (inject !== null) await inject(range);
}

/** Fills words [from, to) with ERROR, or throws EFAULT if one of them requires a fault. Returns `to`. */
function fillError(range: HmmRange, from: number, to: number, what: string, addr: number): number {
  for (let k = from; k < to; k++) {
    if (needFault(range, k, false, false) !== 0) {
      throw new HmmError(
        'EFAULT',
        `hmm_range_fault: ${hex(range.start + k * PAGE_SIZE)} is in ${what} and a fault was requested`,
        {
          address: addr,
          kernelRef: 'mm/hmm.c:hmm_vma_walk_hole',
        },
      );
    }
    range.hmmPfns[k] = hmmPfnMake(HmmPfn.ERROR);
  }
  return to;
}

/** Faults one page for hmm (`hmm_vma_fault`): EPERM for a write to a read-only VMA, EFAULT for SIGBUS/SIGSEGV. */
async function faultOne(vma: Vma, addr: number, write: boolean): Promise<void> {
  if (write && !vma.writable) {
    throw new HmmError(
      'EPERM',
      `hmm_range_fault: write requested at ${hex(addr)} in read-only ${vma.toString()}`,
      {
        address: addr,
        kernelRef: 'mm/hmm.c:hmm_vma_fault',
      },
    );
  }
  try {
    await handleMmFault(vma.mm.ctx, vma, addr, (write ? FaultFlag.WRITE : 0) | FaultFlag.REMOTE);
  } catch (e) {
    if (isHmmError(e) && e.signal !== undefined) {
      throw new HmmError('EFAULT', `hmm_range_fault: fault at ${hex(addr)} failed: ${e.message}`, {
        address: addr,
      });
    }
    throw e;
  }
}
