/**
 * Fault policies for the nouveau-like driver that the scenarios need and `@hmm/driver-nouveau` does
 * not ship (both implement its public `FaultPolicy` interface).
 *
 * @module
 */
import { HmmError, PAGE_SIZE } from '@hmm/core';
import type { MmStruct } from '@hmm/core';
import type { FaultPolicy, NouveauSvm, PolicyFault } from '@hmm/driver-nouveau';

/** Counters of a {@link blockMigratePolicy}. */
export interface BlockMigrateStats {
  /** Blocks migrated to VRAM on a fault. */
  blocksIn: number;
  /** Pages migrated to VRAM. */
  pagesIn: number;
  /** Blocks evicted to make room (oversubscription). */
  blocksEvicted: number;
  /** Pages evicted to RAM. */
  pagesEvicted: number;
  /** Simulated ns spent migrating to VRAM. */
  migrateNs: number;
  /** Simulated ns spent evicting. */
  evictNs: number;
}

/** The policy object of {@link blockMigratePolicy}. */
export interface BlockMigratePolicy extends FaultPolicy {
  readonly stats: BlockMigrateStats;
}

/**
 * Migrate-on-fault by blocks, as a GPU SVM driver without THP does it (Intel Xe's
 * `xe_svm_handle_pagefault` through drm_gpusvm): the first fault in a `blockBytes`-aligned block
 * migrates the whole block (clipped to the fault's VMA) to VRAM with `migrate_vma` in 4 KiB pages
 * (`NouveauDmem.migrateToVram`, `SVM_BIND`), then the base path maps the faulting pages from VRAM.
 *
 * With `evict: true`, VRAM is managed as an LRU of blocks: when the next block does not fit, the
 * least recently migrated block goes back to RAM first (`NouveauDmem.migrateRangeToRam`), which is
 * the oversubscription eviction of NVIDIA UVM (`uvm_pmm_gpu` evicting a root chunk). Without it, a
 * block that does not fit stays behind (nouveau's best effort) and is mapped in system memory.
 */
export function blockMigratePolicy(
  opts: { blockBytes?: number; evict?: boolean; vramBytes?: number } = {},
): BlockMigratePolicy {
  const block = opts.blockBytes ?? 2 * 1024 * 1024;
  if (!(Number.isSafeInteger(block) && block >= PAGE_SIZE && block % PAGE_SIZE === 0)) {
    throw new HmmError('EINVAL', `blockMigratePolicy: block of ${String(block)} bytes is not whole pages`);
  }
  const evict = opts.evict ?? false;
  const stats: BlockMigrateStats = {
    blocksIn: 0,
    pagesIn: 0,
    blocksEvicted: 0,
    pagesEvicted: 0,
    migrateNs: 0,
    evictNs: 0,
  };
  /** Resident blocks in migration order (oldest first): key → [mm, start, end]. */
  const lru = new Map<string, { mm: MmStruct; start: number; end: number; pages: number }>();
  let residentPages = 0;
  return {
    name: evict ? 'block-migrate+evict' : 'block-migrate',
    batchSize: 0,
    maxBatchesPerService: 1,
    stats,
    async prepare(svm: NouveauSvm, faults: readonly PolicyFault[]): Promise<void> {
      const sched = svm.gpu.machine.sched;
      const capacity = Math.floor((opts.vramBytes ?? svm.gpu.vramBytes) / PAGE_SIZE);
      for (const f of faults) {
        const mm = f.svmm.process.mm;
        const base = Math.floor(f.addr / block) * block;
        const key = `${mm.id}:${base}`;
        if (lru.has(key)) continue;
        const vma = mm.vmas.lookup(f.addr);
        if (vma === undefined) continue; // the base path reports the fault
        const start = Math.max(base, vma.start);
        const end = Math.min(base + block, vma.end);
        const pages = (end - start) / PAGE_SIZE;
        if (evict) {
          while (residentPages + pages > capacity && lru.size > 0) {
            const [oldKey, old] = lru.entries().next().value!;
            lru.delete(oldKey);
            const t = sched.now;
            await old.mm.mmapLock.read();
            let moved = 0;
            try {
              moved = await svm.dmem.migrateRangeToRam(old.mm, old.start, old.end);
            } finally {
              old.mm.mmapLock.readUnlock();
            }
            residentPages -= old.pages;
            stats.blocksEvicted++;
            stats.pagesEvicted += moved;
            stats.evictNs += sched.now - t;
          }
        }
        const t = sched.now;
        await mm.mmapLock.read();
        let migrated = 0;
        try {
          migrated = (await svm.dmem.migrateToVram(mm, start, end)).migrated;
        } finally {
          mm.mmapLock.readUnlock();
        }
        stats.migrateNs += sched.now - t;
        if (migrated > 0) {
          stats.blocksIn++;
          stats.pagesIn += migrated;
          lru.set(key, { mm, start, end, pages });
          residentPages += pages;
        }
      }
    },
  };
}
