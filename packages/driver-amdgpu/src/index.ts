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
