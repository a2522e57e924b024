/**
 * Architecture and ABI constants of the simulated machine (x86-64 with 4-level paging).
 *
 * Kernel counterparts: `arch/x86/include/asm/page_types.h`, `include/uapi/asm-generic/mman-common.h`,
 * `include/uapi/linux/mman.h`, `include/linux/mm.h` (FOLL_* and VM_* flags).
 *
 * @module
 */

/** log2 of the base page size. */
export const PAGE_SHIFT = 12;
/** Base page size in bytes (4 KiB). */
export const PAGE_SIZE = 4096;
/** Entries per page-table level (x86-64: 512). */
export const PTRS_PER_TABLE = 512;
/** Bytes mapped by one PMD entry (2 MiB); reserved for THP leaf entries. */
export const PMD_SIZE = PAGE_SIZE * PTRS_PER_TABLE;
/** Size of the user address space: 47 bits, 128 TiB (`TASK_SIZE_MAX` without 5-level paging). */
export const TASK_SIZE = 2 ** 47;
/** Lowest address `mmap` hands out or accepts for MAP_FIXED (`vm.mmap_min_addr`, 64 KiB). */
export const MMAP_MIN_ADDR = 0x10000;
/** Top of the mmap area: allocation is top-down below this (`mmap_base`, leaving room for a stack). */
export const MMAP_BASE = TASK_SIZE - 2 ** 30;

/** Memory protection bits (`PROT_*`). */
export const Prot = {
  NONE: 0,
  READ: 1,
  WRITE: 2,
  EXEC: 4,
} as const;

/** `mmap` flags (`MAP_*`), numbered as on x86-64. */
export const MapFlag = {
  SHARED: 0x01,
  PRIVATE: 0x02,
  FIXED: 0x10,
  ANONYMOUS: 0x20,
  POPULATE: 0x8000,
  FIXED_NOREPLACE: 0x100000,
} as const;

/** `mremap` flags (`MREMAP_*`). */
export const MremapFlag = {
  MAYMOVE: 1,
  FIXED: 2,
  DONTUNMAP: 4,
} as const;

/** `madvise` advice values (`MADV_*`) supported by the simulator. */
export const Madv = {
  WILLNEED: 3,
  DONTNEED: 4,
  FREE: 8,
} as const;
/** One of the {@link Madv} values. */
export type MadvAdvice = (typeof Madv)[keyof typeof Madv];

/** `get_user_pages` flags (`FOLL_*`). FOLL_PIN is set internally by the pin_* calls. */
export const Foll = {
  WRITE: 0x01,
  GET: 0x04,
  FORCE: 0x10,
  NOFAULT: 0x80,
  LONGTERM: 0x100,
  PIN: 0x40000,
} as const;

/** VMA flags (`VM_*`), a subset with the kernel's meaning. */
export const VmFlag = {
  READ: 0x1,
  WRITE: 0x2,
  EXEC: 0x4,
  SHARED: 0x8,
  MAYREAD: 0x10,
  MAYWRITE: 0x20,
  MAYEXEC: 0x40,
  MAYSHARE: 0x80,
  PFNMAP: 0x400,
  LOCKED: 0x2000,
  IO: 0x4000,
  DONTCOPY: 0x20000,
  DONTEXPAND: 0x40000,
  MIXEDMAP: 0x10000000,
} as const;

/** VM_PFNMAP | VM_IO | VM_MIXEDMAP | VM_DONTEXPAND: a special mapping (`VM_SPECIAL`). */
export const VM_SPECIAL = VmFlag.PFNMAP | VmFlag.IO | VmFlag.MIXEDMAP | VmFlag.DONTEXPAND;

/** True if `n` is a multiple of the page size. */
export function pageAligned(n: number): boolean {
  return n % PAGE_SIZE === 0;
}

/** True if `[start, end)` is a non-empty range of whole pages with safe-integer bounds. */
export function isPageRange(start: number, end: number): boolean {
  return (
    Number.isSafeInteger(start) &&
    Number.isSafeInteger(end) &&
    start % PAGE_SIZE === 0 &&
    end % PAGE_SIZE === 0 &&
    end > start
  );
}

/** Rounds a length up to whole pages. */
export function pageAlignUp(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}
