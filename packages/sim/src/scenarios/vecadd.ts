/**
 * `vecadd`: `c = a + b` over three malloc'd float32 vectors on the nouveau-like GTX 1080 (PCIe 3),
 * on demand (every page through replayable faults, the GPU reading host memory) versus after
 * prefetching all three vectors to VRAM. Runs `@hmm/driver-nouveau`'s `runVecAddScenario`.
 *
 * The published run is 3 × 1 GiB (`--full`); the quick run uses 3 × 32 MiB. Every cost of the
 * kernel (bytes over the link or from VRAM, one fault batch per wave, one PTE write per page) scales
 * with the vector size, so the ratio, the anchored figure, does not depend on it; the absolute
 * kernel times are anchored only in the full run.
 *
 * @module
 */
import { runVecAddScenario } from '@hmm/driver-nouveau';
import type { VecAddResult } from '@hmm/driver-nouveau';
import { HmmError } from '@hmm/core';
import { ANCHORS } from '../anchors.js';
import { figure, formatBytes, runParams } from '../scenario.js';
import type { Figure, Scenario, ScenarioResult, ScenarioRunOptions } from '../scenario.js';

const MiB = 1024 * 1024;

/** Bytes per vector of each size. */
export const VECADD_BYTES = { quick: 32 * MiB, full: 1024 * MiB } as const;

/** Details of a {@link vecaddScenario} run. */
export interface VecAddDetails {
  readonly bytesPerVector: number;
  readonly onDemandNs: number;
  readonly prefetchedNs: number;
  readonly prefetchNs: number;
  readonly onDemandFaults: number;
  readonly onDemandBatches: number;
  readonly prefetchedFaults: number;
  readonly wrongElements: number;
}

/** Runs the vector add once and turns it into figures. */
export async function runVecAdd(opts?: ScenarioRunOptions): Promise<ScenarioResult<VecAddDetails>> {
  const { seed, size } = runParams(opts);
  const bytes = VECADD_BYTES[size];
  opts?.onProgress?.(0, 1, 'vecadd');
  const r: VecAddResult = await runVecAddScenario({ bytes, seed });
  opts?.onProgress?.(1, 1, 'vecadd');
  const wrong = r.onDemand.wrong + r.prefetched.wrong;
  if (wrong !== 0) throw new HmmError('EIO', `vecadd: ${wrong} elements of c are not a + b`);
  const onMs = r.onDemand.job.ns / 1e6;
  const preMs = r.prefetched.job.ns / 1e6;
  const figures: Figure[] = [
    figure('ratio', 'on demand / prefetched', '×', onMs / preMs, ANCHORS.vecaddRatio),
    figure('onDemandMs', 'on-demand kernel', 'ms', onMs, size === 'full' ? ANCHORS.vecaddOnDemandMs : null),
    figure(
      'prefetchedMs',
      'prefetched kernel',
      'ms',
      preMs,
      size === 'full' ? ANCHORS.vecaddPrefetchedMs : null,
    ),
  ];
  return {
    scenario: 'vecadd',
    seed,
    size,
    setup: `3 × ${formatBytes(bytes)} float32 vectors, nouveau-like GTX 1080 on PCIe 3.0 x16`,
    figures,
    details: {
      bytesPerVector: bytes,
      onDemandNs: r.onDemand.job.ns,
      prefetchedNs: r.prefetched.job.ns,
      prefetchNs: r.prefetchNs,
      onDemandFaults: r.onDemand.job.faults,
      onDemandBatches: r.onDemand.batches,
      prefetchedFaults: r.prefetched.job.faults,
      wrongElements: wrong,
    },
  };
}

/** The scenario. */
export const vecaddScenario: Scenario<VecAddDetails> = {
  name: 'vecadd',
  description: 'on-demand vs prefetched vector add on a GTX 1080-like GPU (nouveau SVM)',
  anchors: [ANCHORS.vecaddRatio, ANCHORS.vecaddOnDemandMs, ANCHORS.vecaddPrefetchedMs],
  steps: 1,
  sharesMachine: false,
  ramBytes: (size) => 3 * VECADD_BYTES[size] + 64 * MiB,
  run: runVecAdd,
};
