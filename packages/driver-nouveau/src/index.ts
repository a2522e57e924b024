/**
 * `@hmm/driver-nouveau`: the reference GPU driver of the HMM SDK, modelled on nouveau's SVM
 * (`drivers/gpu/drm/nouveau/nouveau_svm.c`, `nouveau_dmem.c`): replayable faults through a fault
 * buffer, device-private VRAM in 2 MiB chunks, atomics through device-exclusive entries, VRAM
 * exported to peers through a BAR, GPU jobs over malloc'd memory, and a UVM-style policy.
 *
 * @packageDocumentation
 */
export {
  NouveauGpu,
  NouveauChannel,
  NOUVEAU_DEFAULT_VRAM_BYTES,
  NOUVEAU_DEFAULT_VRAM_GBS,
  NOUVEAU_DEFAULT_BAR_BYTES,
  NOUVEAU_DEFAULT_BLOCKS_IN_FLIGHT,
} from './gpu.js';
export type { NouveauGpuOptions } from './gpu.js';
export { NouveauSvm } from './svm.js';
export type { NouveauSvmOptions, SvmStats } from './svm.js';
export { NouveauSvmm } from './svmm.js';
export type { SvmInitOptions, SvmmStats } from './svmm.js';
export { NouveauDmem, NOUVEAU_DMEM_CHUNK_BYTES, NOUVEAU_MIGRATE_BATCH_PAGES } from './dmem.js';
export type { DmemClients, MigrateResult } from './dmem.js';
export { nouveauPolicy } from './policy.js';
export type { FaultPolicy, PolicyFault } from './policy.js';
export { runJob, JOB_MAX_ATOMIC_PAGES } from './job.js';
export type { GpuKernel, JobArg, JobArgAccess, JobBlock, JobResult } from './job.js';
export {
  NouveauBar,
  NouveauBarObject,
  NouveauBarExporter,
  nouveauP2pTarget,
  nouveauTopology,
} from './bar.js';
export type { NouveauBarDevice, NouveauBarPlace, NouveauP2pTargetOptions, NouveauTopology } from './bar.js';
export {
  nouveauFactory,
  nouveauManifest,
  NouveauTestDevice,
  NOUVEAU_CONFORMANCE_VRAM_BYTES,
  NOUVEAU_CONFORMANCE_BLOCKS_IN_FLIGHT,
} from './conformance.js';
export {
  uvmPolicy,
  densityRegion,
  ThrashingDetector,
  ThrashHint,
  UVM_THRASHING_PIN_THRESHOLD,
  UVM_THRASHING_PIN_WINDOWS,
  UVM_THRASHING_EPOCH_WINDOWS,
} from './uvm-policy.js';
export type {
  UvmPolicy,
  UvmPolicyOptions,
  UvmPolicyStats,
  ThrashHintId,
  ThrashingParams,
  ThrashingStats,
} from './uvm-policy.js';
export { countVecAddErrors, fillVector, runVecAddScenario, vecA, vecB, vecAddPages } from './vecadd.js';
export type { VecAddOptions, VecAddResult, VecAddRun } from './vecadd.js';
