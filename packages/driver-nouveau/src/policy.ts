/**
 * Fault policies: how the bottom half batches faults and what it does before it maps them.
 *
 * - {@link nouveauPolicy} (the default) is nouveau's behaviour: drain every pending entry per batch,
 *   never migrate on a fault (VRAM is filled only by explicit SVM_BIND migration), map each faulting
 *   page where it is.
 * - `uvmPolicy` (see `uvm-policy.ts`) follows NVIDIA UVM's HMM mode: batches of up to 256, the
 *   density prefetcher over 2 MiB blocks, and thrashing detection.
 *
 * @module
 */
import type { NouveauSvm } from './svm.js';
import type { NouveauSvmm } from './svmm.js';

/** One de-duplicated fault of a batch, as the policy sees it. */
export interface PolicyFault {
  readonly svmm: NouveauSvmm;
  readonly inst: number;
  /** Page-aligned address. */
  readonly addr: number;
  /** `FaultAccess` value. */
  readonly access: number;
}

/** A fault policy. */
export interface FaultPolicy {
  /** Name in stats and messages. */
  readonly name: string;
  /** Most entries drained per batch; 0 drains every pending entry (nouveau). */
  readonly batchSize: number;
  /** Batches the bottom half serves per interrupt before it waits again. */
  readonly maxBatchesPerService: number;
  /** Called once when the SVM is created (to subscribe to migrations, say). */
  attach?(svm: NouveauSvm): void;
  /**
   * Runs before the batch's faults are mapped, with the sorted, de-duplicated faults. It may
   * migrate pages (the mappings then come from VRAM), sleep (throttling), or do nothing.
   */
  prepare(svm: NouveauSvm, faults: readonly PolicyFault[]): Promise<void>;
}

/** nouveau's policy (see the module doc). */
export function nouveauPolicy(): FaultPolicy {
  return {
    name: 'nouveau',
    batchSize: 0,
    maxBatchesPerService: 1,
    prepare: () => Promise.resolve(),
  };
}
