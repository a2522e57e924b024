/**
 * The points where the memory manager tells secondary MMUs that CPU mappings change
 * (include/linux/mmu_notifier.h: `mmu_notifier_invalidate_range_start/end`, `mmu_notifier_release`).
 * The hmm layer installs an implementation per mm; with none installed these calls cost nothing.
 *
 * @module
 */
import type { MmStruct } from './mm-struct.js';

/** Why a range is invalidated (`enum mmu_notifier_event`). */
export const NotifyEvent = {
  /** munmap, mremap: the range goes away. */
  UNMAP: 0,
  /** zap, madvise, reclaim, page replacement (COW), truncate: entries are cleared. */
  CLEAR: 1,
  /** mprotect: the VMA's protection changes. */
  PROTECTION_VMA: 2,
  /** Write-protection of pages (COW at fork). */
  PROTECTION_PAGE: 3,
  /** Soft-dirty tracking write-protects pages. */
  SOFT_DIRTY: 4,
  /** The mm is being torn down (exit). */
  RELEASE: 5,
  /** Pages migrate (migrate_vma); `owner` lets the migrating driver skip its own. */
  MIGRATE: 6,
  /** A device takes exclusive access (make_device_exclusive). */
  EXCLUSIVE: 7,
} as const;
export type NotifyEventId = (typeof NotifyEvent)[keyof typeof NotifyEvent];

/** Names of the events, for traces and messages. */
export const NOTIFY_EVENT_NAMES: readonly string[] = [
  'UNMAP',
  'CLEAR',
  'PROTECTION_VMA',
  'PROTECTION_PAGE',
  'SOFT_DIRTY',
  'RELEASE',
  'MIGRATE',
  'EXCLUSIVE',
];

/** `struct mmu_notifier_range`. */
export interface MmuNotifierRange {
  readonly mm: MmStruct;
  readonly start: number;
  readonly end: number;
  readonly event: NotifyEventId;
  /** `mmu_notifier_range_blockable`: false on the OOM-reaper path. */
  readonly blockable: boolean;
  /** Who causes it (migrate_vma's `pgmap_owner`, make_device_exclusive's owner), else null. */
  readonly owner: unknown;
}

/** What the mm calls at each hook point; implemented by the hmm layer's notifier subscriptions. */
export interface MmuNotifierHooks {
  /** Before CPU entries in the range change. May sleep (await) when `range.blockable`. */
  invalidateRangeStart(range: MmuNotifierRange): Promise<void> | void;
  /**
   * Non-blockable start (`mmu_notifier_invalidate_range_start_nonblock`): returns false if a
   * subscriber would have to sleep; the caller then skips the range and retries later.
   */
  invalidateRangeStartNonblock(range: MmuNotifierRange): boolean;
  /** After the entries changed. */
  invalidateRangeEnd(range: MmuNotifierRange): void;
  /** The mm is exiting (`mmu_notifier_release`), before its mappings are torn down. */
  release(mm: MmStruct): Promise<void> | void;
}
