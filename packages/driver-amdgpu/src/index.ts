/**
 * `@hmm/driver-amdgpu`: a reference simulated GPU driver modelled on amdgpu userptr
 * (drivers/gpu/drm/amd/amdgpu/amdgpu_hmm.c, amdgpu_cs.c, amdgpu_gem.c) and the KFD eviction of
 * compute queues. See the package README.
 *
 * @packageDocumentation
 */
export { AmdgpuDevice, AmdgpuVm } from './gpu.js';
export type { AmdgpuDeviceOptions } from './gpu.js';
export { DmaResv, DmaResvUsage, FenceContext } from './fence.js';
export type { DmaResvUsageId } from './fence.js';
export { AmdgpuRing, JobExec, SubmittedJob } from './ring.js';
export type { AmdgpuJob } from './ring.js';
export { AmdgpuBo } from './bo.js';
export type { BoDomain } from './bo.js';
export {
  AMDGPU_HMM_STEP_BYTES,
  AMDGPU_HMM_TIMEOUT_NS_PER_128MIB,
  UserptrBo,
  UserptrFlag,
  gemUserptr,
} from './userptr.js';
export type { GemUserptrArgs, HsaEvict, UserptrMode, UserptrStats } from './userptr.js';
export { amdgpuCs, amdgpuCsRetry, csStats } from './cs.js';
export type { CsArgs, CsRetryOptions, CsStats } from './cs.js';
export {
  AMDGPU_USERPTR_RESTORE_DELAY_MS,
  KFD_DEFAULT_PREEMPT_NS,
  KFD_DEFAULT_RESUME_NS,
  KfdJob,
  KfdProcess,
  KfdQueue,
  kfdProcess,
} from './kfd.js';
export type { KfdJobDesc, KfdProcessOptions, KfdStats } from './kfd.js';
export { AMDGPU_DEFAULT_VISIBLE_VRAM_BYTES, AmdgpuVram, VramBo, VramBoExporter } from './vram.js';
export type { AmdgpuVramOptions, VramBoCreateOptions, VramBoDomain } from './vram.js';
export {
  AMDGPU_CONFORMANCE_VISIBLE_VRAM_BYTES,
  AmdgpuTestDevice,
  AmdgpuUserptrHandle,
  AmdgpuUserptrTarget,
  amdgpuFactory,
  amdgpuManifest,
  amdgpuP2pTarget,
} from './conformance.js';
export type { AmdgpuOpenCounts, AmdgpuP2pTarget, AmdgpuUserptrTargetMode } from './conformance.js';
export { formatLongJob, formatNs, runLongJobScenario } from './long-job.js';
export type { LongJobOptions, LongJobResult } from './long-job.js';
export { CS_THROUGHPUT_SIZES, formatCsThroughput, runCsThroughput } from './cs-throughput.js';
export type {
  CsThroughputOptions,
  CsThroughputResult,
  CsThroughputRow,
  CsThroughputSide,
} from './cs-throughput.js';
