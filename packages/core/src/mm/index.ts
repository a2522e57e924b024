/**
 * The memory-manager layer (`mm/`): physical frames, page tables, VMAs, faults, reclaim, swap, GUP.
 *
 * @module
 */
export * from './constants.js';
export { PG } from './page-flags.js';
export { PageStore, PAGES_PER_CHUNK, PAGE_STORE_POOL_CHUNKS } from './page-store.js';
export { PhysMem, Zone, ZERO_PFN, FRAME_METADATA_BYTES, MAX_MAPCOUNT, MAX_PINCOUNT } from './physmem.js';
export { Lru, LruList } from './lru.js';
export type { LruListId } from './lru.js';
export { PageTableArena, PageTable, Pte, PteType, pteType, nonPresentFlags } from './pgtable.js';
export { SwapSpace } from './swap.js';
export { SimFile, FileStore, MAX_FILES } from './filemap.js';
export { Vma, VmaTree } from './vma.js';
export type { VmOperations, P2pMapping, P2pImporterRef } from './vma.js';
export { MmStruct, RssCounter } from './mm-struct.js';
export { traceFault, traceSyscall, traceResident, memoryLocations, RAM_LOCATION } from './trace-events.js';
export type { FaultKind, MemoryLocation } from './trace-events.js';
export type { MmState, RssCounterId } from './mm-struct.js';
export { MmContext, SWAP_CLUSTER_MAX } from './mm-context.js';
export type { MmConfig } from './mm-context.js';
export { NotifyEvent, NOTIFY_EVENT_NAMES } from './mmu-notifier-hooks.js';
export type { MmuNotifierHooks, MmuNotifierRange, NotifyEventId } from './mmu-notifier-hooks.js';
export { Rmap } from './rmap.js';
export type { RmapVisitor } from './rmap.js';
export {
  FaultFlag,
  handleMmFault,
  zapPte,
  zapRange,
  zapRangeNotify,
  zapVmaPtes,
  notifyStart,
  notifyEnd,
  findOrReadPage,
  isMappingEntry,
  isDevicePrivateEntry,
  isMigrationEntry,
  restoreExclusivePte,
} from './memory.js';
export { doMmap, doMunmap, exitMmap, getUnmappedArea, unmapRangeLocked } from './mmap.js';
export type { MmapArgs } from './mmap.js';
export { doMprotect } from './mprotect.js';
export { doMremap } from './mremap.js';
export { doMadvise } from './madvise.js';
export { dupMm } from './fork.js';
export { getUserPages, pinUserPages, unpinUserPages, putUserPages } from './gup.js';
export { cpuRead, cpuWrite, cpuFill } from './uaccess.js';
export { fileRead, fileWrite } from './read-write.js';
export { truncateFile } from './truncate.js';
export { clearSoftDirty, softDirtyPages } from './soft-dirty.js';
export { shrinkNode, oomReapMm, reclaimStats, ReclaimResult } from './vmscan.js';
export type { ReclaimStats } from './vmscan.js';
export { checkMmInvariants } from './debug-vm.js';
export { Process } from './process.js';
export type { PidAllocator } from './process.js';
export {
  MemoryType,
  DevPagemap,
  memremapPages,
  memunmapPages,
  framesInUse,
  pagemapOf,
  isDevicePrivatePage,
  isDeviceCoherentPage,
  zoneDevicePageInit,
  trylockPage,
  lockPage,
  unlockPage,
  waitOnPageLocked,
} from './memremap.js';
export type { MemoryTypeId, MigrateToRamFault, DevPagemapOps, DevPagemapDesc } from './memremap.js';
export {
  MigratePfn,
  MigrateVmaSelect,
  migratePfn,
  migratePfnToPfn,
  migratePfnFlags,
  migrateVmaSetup,
  migrateVmaPages,
  migrateVmaFinalize,
  migrateDeviceRange,
  migrateDevicePages,
  migrateDeviceFinalize,
  migrateDeviceCoherentPage,
  migrateVmaArgs,
} from './migrate-device.js';
export type { MigrateVma, MigrateVmaRequest, MigrateObserver } from './migrate-device.js';
export { makeDeviceExclusive } from './device-exclusive.js';
export type { DeviceArena } from './physmem.js';
