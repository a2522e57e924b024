/**
 * Per-frame flag bits (`enum pageflags`, include/linux/page-flags.h), stored in a `Uint16Array`
 * indexed by frame number. 0 = a free frame with no state.
 *
 * @module
 */
export const PG = {
  /** Frame is locked (folio lock): migration or I/O in progress. */
  LOCKED: 1 << 0,
  /** Referenced since last scanned (software accessed bit for unmapped pages). */
  REFERENCED: 1 << 1,
  /** Contents newer than the backing store (file or swap). */
  DIRTY: 1 << 2,
  /** On an LRU list. */
  LRU: 1 << 3,
  /** On the active (rather than inactive) list. */
  ACTIVE: 1 << 4,
  /** Anonymous page (`PageAnon`): its reverse map is a PTE slot, not a file index. */
  ANON: 1 << 5,
  /** Backed by swap (`PG_swapbacked`). Anon without it is MADV_FREE'd (lazy free). */
  SWAPBACKED: 1 << 6,
  /** Never freed, never reclaimed (the zero page). */
  RESERVED: 1 << 7,
  /** Anon page mapped exclusively by one process (`PG_anon_exclusive`): may be reused on write fault and pinned. */
  ANON_EXCLUSIVE: 1 << 8,
  /** Frame is in use (allocated). SDK-only, lets every entry point detect use-after-free. */
  ALLOCATED: 1 << 10,
  /** Page is in a file's page cache (`folio->mapping` set). */
  PAGECACHE: 1 << 11,
  /** Frame belongs to a device arena (ZONE_DEVICE, `folio_is_zone_device`); set for its whole life. */
  ZONE_DEVICE: 1 << 12,
} as const;

/** The flags that an LRU list selection depends on. */
export const PG_LRU_MASK = PG.LRU | PG.ACTIVE;
