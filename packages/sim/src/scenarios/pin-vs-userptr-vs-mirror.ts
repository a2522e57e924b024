/**
 * `pin-vs-userptr-vs-mirror`: the three ways a device can use a 1 GiB malloc'd buffer, each with one
 * of the reference drivers, on one machine:
 *
 * - **pinning**: the mlx5-like NIC registers a classic MR (`ibv_reg_mr`: every page faulted in,
 *   zeroed and pinned with FOLL_LONGTERM, the whole MTT written);
 * - **userptr**: the amdgpu-like GPU makes a userptr BO (REGISTER) and submits; the first command
 *   submission collects every page of the BO with `hmm_range_fault`, faulting it in;
 * - **mirroring**: the nouveau-like GPU mirrors the process with SVM; nothing is collected up
 *   front, a job faults in only what it touches (16 MiB here).
 *
 * For each: the set-up cost (simulated time before the device can use the buffer), the memory held
 * afterwards, and the invalidation stall: how long a munmap of part of the buffer takes while the
 * device holds it. Pinning does not wait but frees nothing (the frames stay pinned until the MR is
 * deregistered); userptr waits for the running job's fence (a 10 ms job, munmap 2 ms in); mirroring
 * clears the GPU's page-table entries and returns.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import type { Process } from '@hmm/core';
import { AmdgpuDevice, UserptrFlag, amdgpuCsRetry, gemUserptr } from '@hmm/driver-amdgpu';
import { IbAccess, Mlx5Hca } from '@hmm/driver-mlx5';
import { NouveauGpu, NouveauSvm, runJob } from '@hmm/driver-nouveau';
import { ANCHORS } from '../anchors.js';
import { assertNoLeaks, figure, formatBytes, runParams } from '../scenario.js';
import type { Scenario, ScenarioResult, ScenarioRunOptions } from '../scenario.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** The buffer (both sizes: the anchor is for 1 GiB). */
export const BUFFER_BYTES = GiB;
/** What the mirroring GPU's job touches. */
export const MIRROR_TOUCH_BYTES = 16 * MiB;
/** The part munmapped while the device holds the buffer. */
export const MUNMAP_BYTES = MiB;
/** The userptr job's GPU time, and when the munmap comes. */
export const USERPTR_JOB_NS = 10e6;
export const USERPTR_MUNMAP_AT_NS = 2e6;

/** One way's measurements. */
export interface WayResult {
  /** Simulated ns before the device can use the buffer. */
  readonly setupNs: number;
  /** RAM frames the buffer holds once set up. */
  readonly heldPages: number;
  /** Of those, pinned. */
  readonly pinnedPages: number;
  /** How long the munmap of {@link MUNMAP_BYTES} took. */
  readonly munmapNs: number;
  /** Frames of the munmapped part still allocated right after the munmap. */
  readonly unmappedStillHeld: number;
}

/** Details of a {@link pinVsUserptrVsMirrorScenario} run. */
export interface PinVsUserptrVsMirrorDetails {
  readonly bufferBytes: number;
  readonly pinned: WayResult & { readonly deregNs: number };
  readonly userptr: WayResult & { readonly steadyCsNs: number; readonly jobRemainingAtMunmapNs: number };
  readonly mirror: WayResult & { readonly touchedBytes: number; readonly faults: number };
}

function pinnedFrames(m: Machine, pfns: Iterable<number>): number {
  let n = 0;
  for (const pfn of pfns) if (pfn >= 0 && m.mm.mem.pincount[pfn]! > 0) n++;
  return n;
}

function stillHeld(m: Machine, pfns: readonly number[]): number {
  let n = 0;
  for (const pfn of pfns) if (pfn >= 0 && m.mm.mem.refcount[pfn]! > 0) n++;
  return n;
}

/** The frames behind [addr, addr + len) of `p` (−1 where nothing is present). */
function framesOf(p: Process, addr: number, len: number): number[] {
  const out: number[] = [];
  const mm = p.mm;
  for (let va = addr; va < addr + len; va += PAGE_SIZE) {
    const slot = mm.pgtable.lookup(va / PAGE_SIZE);
    out.push(slot < 0 ? -1 : mm.ctx.arena.pteVal[slot]!);
  }
  return out;
}

async function mapBuffer(p: Process): Promise<number> {
  return p.mmap({
    length: BUFFER_BYTES,
    prot: Prot.READ | Prot.WRITE,
    flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
  });
}

/** Pinning through the NIC. */
async function pinned(m: Machine): Promise<PinVsUserptrVsMirrorDetails['pinned']> {
  const hca = new Mlx5Hca(m, { name: 'mlx5_0' });
  const p = m.createProcess('rdma-app');
  const a = await mapBuffer(p);
  const used0 = m.mm.mem.nrUsed;
  const pd = hca.allocPd(p);
  const t0 = m.sched.now;
  const mr = await pd.regMr(
    a,
    BUFFER_BYTES,
    IbAccess.LOCAL_WRITE | IbAccess.REMOTE_READ | IbAccess.REMOTE_WRITE,
  );
  const setupNs = m.sched.now - t0;
  const heldPages = m.mm.mem.nrUsed - used0;
  const pinnedPages = pinnedFrames(m, framesOf(p, a, BUFFER_BYTES));
  const tail = a + BUFFER_BYTES - MUNMAP_BYTES;
  const tailFrames = framesOf(p, tail, MUNMAP_BYTES);
  const t1 = m.sched.now;
  await p.munmap(tail, MUNMAP_BYTES);
  const munmapNs = m.sched.now - t1;
  const unmappedStillHeld = stillHeld(m, tailFrames);
  const t2 = m.sched.now;
  await pd.deregMr(mr);
  const deregNs = m.sched.now - t2;
  await pd.dealloc();
  await p.exit();
  await hca.remove();
  return { setupNs, heldPages, pinnedPages, munmapNs, unmappedStillHeld, deregNs };
}

/** Userptr through the amdgpu-like GPU (graphics mode: the notifier waits for fences). */
async function userptr(m: Machine): Promise<PinVsUserptrVsMirrorDetails['userptr']> {
  const gpu = new AmdgpuDevice(m, { name: 'amdgpu0' });
  const p = m.createProcess('gl-app');
  const a = await mapBuffer(p);
  const used0 = m.mm.mem.nrUsed;
  const bo = await gemUserptr(gpu, p, { addr: a, size: BUFFER_BYTES, flags: UserptrFlag.REGISTER });
  const vm = gpu.vm(p);
  const small = {
    name: 'touch',
    run: (x: { read(va: number, len: number): Uint8Array }) => void x.read(a, PAGE_SIZE),
  };
  const t0 = m.sched.now;
  await (await amdgpuCsRetry(gpu, { vm, bos: [bo], job: small })).job.wait();
  const setupNs = m.sched.now - t0;
  const heldPages = m.mm.mem.nrUsed - used0;
  const pinnedPages = pinnedFrames(m, bo.pfns);
  const t1 = m.sched.now;
  await (await amdgpuCsRetry(gpu, { vm, bos: [bo], job: small })).job.wait();
  const steadyCsNs = m.sched.now - t1;
  // A 10 ms job holds the BO; another thread munmaps its last MiB 2 ms in.
  const job = (
    await amdgpuCsRetry(gpu, { vm, bos: [bo], job: { ...small, name: 'long', ns: USERPTR_JOB_NS } })
  ).job;
  for (let i = 0; job.startedAt < 0; i++) {
    if (i === 100) throw new HmmError('EBUSY', 'pin-vs-userptr-vs-mirror: the long job did not start');
    await m.sched.yield();
  }
  await m.sched.sleep(job.startedAt + USERPTR_MUNMAP_AT_NS - m.sched.now);
  const jobEnd = job.startedAt + USERPTR_JOB_NS;
  const jobRemainingAtMunmapNs = jobEnd - m.sched.now;
  const tail = a + BUFFER_BYTES - MUNMAP_BYTES;
  const tailFrames = framesOf(p, tail, MUNMAP_BYTES);
  const t2 = m.sched.now;
  const munmapper = m.sched.spawn('gl-app:munmap', async () => {
    await p.munmap(tail, MUNMAP_BYTES);
    return m.sched.now - t2;
  });
  const munmapNs = await munmapper.join();
  const unmappedStillHeld = stillHeld(m, tailFrames);
  await job.wait();
  await bo.free();
  await p.exit();
  await gpu.remove();
  return { setupNs, heldPages, pinnedPages, munmapNs, unmappedStillHeld, steadyCsNs, jobRemainingAtMunmapNs };
}

/** Mirroring through the nouveau-like GPU's SVM. */
async function mirror(m: Machine): Promise<PinVsUserptrVsMirrorDetails['mirror']> {
  const gpu = new NouveauGpu(m, { name: 'gtx1080', vramBytes: 64 * MiB });
  const svm = new NouveauSvm(gpu);
  const p = m.createProcess('svm-app');
  const a = await mapBuffer(p);
  const used0 = m.mm.mem.nrUsed;
  const t0 = m.sched.now;
  const svmm = svm.init(p);
  const ch = svmm.channelNew();
  const setupNs = m.sched.now - t0;
  // The job touches the last 16 MiB of the buffer.
  const start = a + BUFFER_BYTES - MIRROR_TOUCH_BYTES;
  const job = await runJob(ch, {
    name: 'touch',
    args: [{ addr: start, bytes: MIRROR_TOUCH_BYTES, access: 'readwrite' }],
    run(blk) {
      blk.u32(0)[0] = blk.index;
    },
  });
  const heldPages = m.mm.mem.nrUsed - used0;
  const tail = a + BUFFER_BYTES - MUNMAP_BYTES;
  const tailFrames = framesOf(p, tail, MUNMAP_BYTES);
  const t1 = m.sched.now;
  await p.munmap(tail, MUNMAP_BYTES);
  const munmapNs = m.sched.now - t1;
  const unmappedStillHeld = stillHeld(m, tailFrames);
  await svm.fini();
  await p.exit();
  await gpu.remove();
  return {
    setupNs,
    heldPages,
    pinnedPages: 0,
    munmapNs,
    unmappedStillHeld,
    touchedBytes: MIRROR_TOUCH_BYTES,
    faults: job.faults,
  };
}

/** Runs the three ways one after another on one machine. */
export async function runPinVsUserptrVsMirror(
  opts?: ScenarioRunOptions,
): Promise<ScenarioResult<PinVsUserptrVsMirrorDetails>> {
  const { seed, size } = runParams(opts);
  const own = opts?.machine === undefined;
  const m = opts?.machine ?? new Machine({ seed, ramBytes: BUFFER_BYTES + 256 * MiB, swapBytes: 0 });
  const progress = (i: number, label: string): void => opts?.onProgress?.(i, 3, label);
  const d = await m.sched.runTask(
    'pin-vs-userptr-vs-mirror',
    async (): Promise<PinVsUserptrVsMirrorDetails> => {
      progress(0, 'pinning (mlx5 MR)');
      const a = await pinned(m);
      progress(1, 'userptr (amdgpu)');
      const b = await userptr(m);
      progress(2, 'mirroring (nouveau SVM)');
      const c = await mirror(m);
      return { bufferBytes: BUFFER_BYTES, pinned: a, userptr: b, mirror: c };
    },
  );
  progress(3, 'done');
  if (own) assertNoLeaks(m, 'pin-vs-userptr-vs-mirror');
  const pages = BUFFER_BYTES / PAGE_SIZE;
  if (d.pinned.pinnedPages !== pages) {
    throw new HmmError(
      'EIO',
      `pin-vs-userptr-vs-mirror: the MR pinned ${d.pinned.pinnedPages} of ${pages} pages`,
    );
  }
  const mib = (pg: number): number => (pg * PAGE_SIZE) / MiB;
  return {
    scenario: 'pin-vs-userptr-vs-mirror',
    seed,
    size,
    setup: `a ${formatBytes(BUFFER_BYTES)} malloc'd buffer: mlx5 pinned MR, amdgpu userptr BO, nouveau SVM (touching ${formatBytes(MIRROR_TOUCH_BYTES)}); munmap of ${formatBytes(MUNMAP_BYTES)} while held`,
    figures: [
      figure('pinnedSetupMs', 'set-up, pinning', 'ms', d.pinned.setupNs / 1e6, ANCHORS.pinnedSetupMs),
      figure('userptrSetupMs', 'set-up, userptr (first CS)', 'ms', d.userptr.setupNs / 1e6, null),
      figure('userptrSteadyCsMs', 'userptr, every later CS', 'ms', d.userptr.steadyCsNs / 1e6, null),
      figure('mirrorSetupMs', 'set-up, mirroring', 'ms', d.mirror.setupNs / 1e6, null),
      figure('pinnedHeldMiB', 'held, pinning (all pinned)', 'MiB', mib(d.pinned.heldPages), null),
      figure('userptrHeldMiB', 'held, userptr (not pinned)', 'MiB', mib(d.userptr.heldPages), null),
      figure('mirrorHeldMiB', 'held, mirroring', 'MiB', mib(d.mirror.heldPages), null),
      figure('pinnedMunmapUs', 'munmap stall, pinning', 'µs', d.pinned.munmapNs / 1e3, null),
      figure(
        'pinnedLeftMiB',
        'munmapped but still held, pinning',
        'MiB',
        mib(d.pinned.unmappedStillHeld),
        null,
      ),
      figure('userptrMunmapUs', 'munmap stall, userptr', 'µs', d.userptr.munmapNs / 1e3, null),
      figure('mirrorMunmapUs', 'munmap stall, mirroring', 'µs', d.mirror.munmapNs / 1e3, null),
    ],
    details: d,
  };
}

/** The scenario. */
export const pinVsUserptrVsMirrorScenario: Scenario<PinVsUserptrVsMirrorDetails> = {
  name: 'pin-vs-userptr-vs-mirror',
  description: 'a 1 GiB buffer pinned (mlx5 MR), as a userptr BO (amdgpu) and mirrored (nouveau SVM)',
  anchors: [ANCHORS.pinnedSetupMs],
  steps: 3,
  sharesMachine: true,
  ramBytes: () => BUFFER_BYTES + 256 * MiB,
  run: runPinVsUserptrVsMirror,
};
