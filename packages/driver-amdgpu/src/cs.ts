/**
 * Command submission (`DRM_IOCTL_AMDGPU_CS`, drivers/gpu/drm/amd/amdgpu/amdgpu_cs.c) and libdrm's
 * retry around it (`drmIoctl`, which reissues an ioctl on EAGAIN).
 *
 * 1. `amdgpu_cs_parser_bos`: every userptr BO of the submission collects its pages
 *    ({@link UserptrBo.getUserPages}), outside any lock.
 * 2. `amdgpu_cs_submit`: under the device's `notifier_lock`, every userptr BO is checked
 *    ({@link UserptrBo.stale}); **one stale BO fails the whole CS with EAGAIN**. Otherwise BOs whose
 *    frames changed are rebound, the job is pushed to the ring, and its fence is added to every BO's
 *    reservation object (BOOKKEEP), all before the lock is released, so an invalidation either came
 *    before (EAGAIN) or waits for the job.
 *
 * @module
 */
import { HmmError, isHmmError } from '@hmm/core';
import type { AmdgpuBo } from './bo.js';
import { DmaResvUsage } from './fence.js';
import type { AmdgpuDevice, AmdgpuVm } from './gpu.js';
import type { AmdgpuJob, SubmittedJob } from './ring.js';
import { UserptrBo } from './userptr.js';

/** Arguments of {@link amdgpuCs}. */
export interface CsArgs {
  /** The submitting process's VM. */
  readonly vm: AmdgpuVm;
  /** Ring: `'gfx'` (default) or `'compute'`. */
  readonly ring?: 'gfx' | 'compute';
  /** The BO list of the submission. */
  readonly bos: readonly AmdgpuBo[];
  readonly job: AmdgpuJob;
}

/** Counters of submissions on one device. */
export interface CsStats {
  submitted: number;
  /** Submissions that failed with EAGAIN (a userptr went stale between collection and submit). */
  eagain: number;
}

const stats = new WeakMap<AmdgpuDevice, CsStats>();

/** The CS counters of `gpu`. */
export function csStats(gpu: AmdgpuDevice): CsStats {
  let s = stats.get(gpu);
  if (s === undefined) {
    s = { submitted: 0, eagain: 0 };
    stats.set(gpu, s);
  }
  return s;
}

/**
 * `DRM_IOCTL_AMDGPU_CS`: see the module doc. Resolves to the submitted job (wait on its fence).
 * Rejects with EAGAIN when a userptr BO was invalidated after its pages were collected (nothing
 * was submitted: reissue it, as {@link amdgpuCsRetry} does), EINVAL for a freed BO or a BO of
 * another device or process, or the page collection's error (EFAULT, EPERM, EBUSY).
 */
export async function amdgpuCs(gpu: AmdgpuDevice, args: CsArgs): Promise<SubmittedJob> {
  gpu.checkAlive('CS');
  const { vm, bos, job } = args;
  for (const bo of bos) {
    if (bo.freed || bo.gpu !== gpu) {
      throw new HmmError(
        'EINVAL',
        `amdgpu CS: BO ${bo.handle} is ${bo.freed ? 'freed' : 'of another device'}`,
      );
    }
    if (bo instanceof UserptrBo && bo.vm !== vm) {
      throw new HmmError('EINVAL', `amdgpu CS: userptr BO ${bo.handle} belongs to another process's VM`);
    }
  }
  const userptrs = bos.filter((bo): bo is UserptrBo => bo instanceof UserptrBo);
  for (const bo of userptrs) await bo.getUserPages();
  const ring = args.ring === 'compute' ? gpu.compute : gpu.gfx;
  await gpu.notifierLock.lock();
  try {
    const stale = userptrs.find((bo) => bo.stale());
    if (stale !== undefined) {
      csStats(gpu).eagain++;
      throw new HmmError(
        'EAGAIN',
        `amdgpu CS: userptr BO ${stale.handle} was invalidated after its pages were collected; reissue the submission`,
        { address: stale.addr },
      );
    }
    for (const bo of userptrs) await bo.bind();
    const submitted = ring.push(vm, job);
    for (const bo of bos) bo.resv.add(submitted.fence, DmaResvUsage.BOOKKEEP);
    csStats(gpu).submitted++;
    return submitted;
  } finally {
    gpu.notifierLock.unlock();
  }
}

/** Options of {@link amdgpuCsRetry}. */
export interface CsRetryOptions {
  /** Attempts before giving up with the last EAGAIN; default unlimited, as libdrm's `drmIoctl`. */
  readonly maxAttempts?: number;
  /**
   * Simulated ns after the first attempt past which an EAGAIN is given up on (rethrown); default
   * unlimited. A caller that must not livelock under an invalidation storm sets it.
   */
  readonly timeoutNs?: number;
}

/**
 * libdrm's `drmCommandWriteRead` of the CS ioctl: reissues the whole submission while it fails
 * with EAGAIN. Resolves to the submitted job and how many attempts it took.
 */
export async function amdgpuCsRetry(
  gpu: AmdgpuDevice,
  args: CsArgs,
  opts: CsRetryOptions = {},
): Promise<{ readonly job: SubmittedJob; readonly attempts: number }> {
  const max = opts.maxAttempts ?? Infinity;
  const sched = gpu.machine.sched;
  const deadline = sched.now + (opts.timeoutNs ?? Infinity);
  for (let attempt = 1; ; attempt++) {
    try {
      return { job: await amdgpuCs(gpu, args), attempts: attempt };
    } catch (e) {
      if (!isHmmError(e, 'EAGAIN') || attempt >= max || sched.now > deadline) throw e;
    }
  }
}
