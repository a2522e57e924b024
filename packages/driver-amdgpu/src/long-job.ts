/**
 * The long-running compute scenario of issue 8 ("kswapd blocked by a GPU command submission for an
 * hour"): a job runs for a long time on a userptr BO while another thread munmaps part of the BO's
 * range. The same scenario runs in the three ways of keeping the BO valid:
 *
 * - `'gfx'`: a graphics CS on the gfx ring; the invalidation waits for the job's fence, so the munmap
 *   takes the job's remaining time (`amdgpu_hmm_invalidate_gfx`).
 * - `'hsa'`: a job on a KFD user queue; the invalidation quiesces the queues (one context save) and
 *   a restore resumes them 1 ms later, so the munmap takes about the preemption cost. The munmapped
 *   range is gone for good: the restore cannot collect the BO (EFAULT), leaves it invalid and resumes
 *   the queues; the long job, which touched the BO when it started, completes; the next job touching
 *   the BO takes a VM fault (EFAULT).
 * - `'pin'`: a graphics CS with a BO pinned at creation (FOLL_LONGTERM); nothing waits, the munmapped
 *   pages stay allocated and pinned (the GPU still writes them though the process no longer sees
 *   them), and reclaim cannot take the BO's pages until the BO is freed.
 *
 * Each mode runs on its own fresh {@link Machine}, so their simulated times compare directly.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, PAGE_SIZE, Prot, isHmmError } from '@hmm/core';
import type { ErrnoName } from '@hmm/core';
import { amdgpuCsRetry } from './cs.js';
import { AmdgpuDevice } from './gpu.js';
import { KFD_DEFAULT_PREEMPT_NS, kfdProcess } from './kfd.js';
import { UserptrFlag, gemUserptr } from './userptr.js';
import type { UserptrMode } from './userptr.js';

/** Options of {@link runLongJobScenario}. */
export interface LongJobOptions {
  /** The job's GPU time, ns; default one hour. */
  readonly jobNs?: number;
  /** When the munmap starts, ns after the job started; default a quarter of `jobNs`. */
  readonly munmapAfterNs?: number;
  /** Pages of the BO; default 256 (1 MiB). */
  readonly pages?: number;
  /** Pages munmapped at the end of the BO's range; default a quarter of `pages`. */
  readonly munmapPages?: number;
  /** KFD context-save cost, ns; default {@link KFD_DEFAULT_PREEMPT_NS}. */
  readonly preemptNs?: number;
  /** Modes to run, in order; default all three. */
  readonly modes?: readonly UserptrMode[];
  /** Scheduler seed; default 1. */
  readonly seed?: number;
}

/** What one mode measured (all times simulated ns). */
export interface LongJobResult {
  readonly mode: UserptrMode;
  /** The job's undisturbed time: `jobNs` plus its memory traffic. */
  readonly jobTotalNs: number;
  /** How long the munmap call took. */
  readonly munmapNs: number;
  /** GPU time the job still had to run when the munmap started. */
  readonly jobRemainingAtMunmapNs: number;
  /** From the job's start to its fence. */
  readonly jobEndNs: number;
  /** `jobEndNs - jobTotalNs`: what the munmap cost the job. */
  readonly jobDelayNs: number;
  /** The job's error, if it failed. */
  readonly jobError: ErrnoName | null;
  /** The KFD context-save cost used (`'hsa'`), else 0. */
  readonly preemptNs: number;
  /** BO pages still pinned right after the munmap. */
  readonly pagesPinnedAfter: number;
  /** Munmapped pages whose frames the munmap could not free. */
  readonly unmappedFramesStillAllocated: number;
  /** Process pages reclaim took after the job ended (the BO's still-mapped pages are all it has). */
  readonly reclaimedPages: number;
  /** Pinned BO frames still allocated after that reclaim. */
  readonly pinnedFramesAfterReclaim: number;
  /** RAM frames freed by freeing the BO. */
  readonly framesReleasedByFree: number;
  /** A later GPU write to the still-mapped part of the BO: `'ok'` or its errno. */
  readonly nextAccess: 'ok' | ErrnoName;
  /** RAM frames still allocated after everything was torn down (must be 0). */
  readonly leakedFrames: number;
}

const HOUR_NS = 3600 * 1e9;

function errnoOf(e: unknown): ErrnoName {
  if (isHmmError(e)) return e.code;
  throw e;
}

/** Runs one mode on a fresh machine. */
async function runMode(
  mode: UserptrMode,
  o: Required<Omit<LongJobOptions, 'modes'>>,
): Promise<LongJobResult> {
  const P = PAGE_SIZE;
  const size = o.pages * P;
  const m = new Machine({ seed: o.seed, ramBytes: Math.max(4 * size, 1024 * P) });
  const result = await m.sched.runTask(`long-job:${mode}`, async () => {
    const sched = m.sched;
    const mem = m.mm.mem;
    const gpu = new AmdgpuDevice(m);
    const p = m.createProcess(`long-job-${mode}`);
    const vm = gpu.vm(p);
    const a = await p.mmap({
      length: size,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    await p.fill(a, size, 0x5a);
    const bo = await gemUserptr(gpu, p, {
      addr: a,
      size,
      flags: mode === 'pin' ? 0 : UserptrFlag.REGISTER,
      mode,
    });
    const kfd = mode === 'hsa' ? kfdProcess(gpu, p, { preemptNs: o.preemptNs }) : null;
    if (kfd !== null) await kfd.registerUserptr(bo);
    const queue = kfd?.createQueue('compute') ?? null;
    const touch = {
      ns: o.jobNs,
      run: (x: { read(va: number, len: number): Uint8Array }) => void x.read(a, size),
    };
    const jobTotalNs = o.jobNs + gpu.systemNs(size);

    // The long job.
    const job =
      queue !== null ? queue.dispatch(touch) : (await amdgpuCsRetry(gpu, { vm, bos: [bo], job: touch })).job;
    await sched.yield();
    if (job.startedAt < 0) throw new HmmError('EBUSY', `long-job ${mode}: the job did not start at once`);
    await sched.sleep(job.startedAt + o.munmapAfterNs - sched.now);

    // Another thread munmaps the tail of the BO's range.
    const remaining = 'remainingNs' in job ? job.remainingNs : job.startedAt + jobTotalNs - sched.now;
    const first = o.pages - o.munmapPages;
    const unmappedFrames = Array.from(bo.pfns.subarray(first));
    const t0 = sched.now;
    const munmapper = sched.spawn(`long-job:${mode}:munmap`, async () => {
      await p.munmap(a + first * P, o.munmapPages * P);
      return sched.now - t0;
    });
    const munmapNs = await munmapper.join();
    let pagesPinnedAfter = 0;
    for (const pfn of bo.pfns) if (pfn >= 0 && mem.pincount[pfn]! > 0) pagesPinnedAfter++;
    let unmappedFramesStillAllocated = 0;
    for (const pfn of unmappedFrames) if (pfn >= 0 && mem.refcount[pfn]! > 0) unmappedFramesStillAllocated++;

    let jobError: ErrnoName | null = null;
    await job.wait().catch((e: unknown) => {
      jobError = errnoOf(e);
    });
    const jobEndNs = job.fence.signaledAt! - job.startedAt;

    // A later GPU write to the still-mapped part.
    let nextAccess: 'ok' | ErrnoName = 'ok';
    const write = {
      run: (x: { write(va: number, d: Uint8Array): void }) => x.write(a, new Uint8Array(64).fill(1)),
    };
    try {
      const next =
        queue !== null
          ? queue.dispatch(write)
          : (await amdgpuCsRetry(gpu, { vm, bos: [bo], job: write })).job;
      await next.wait();
    } catch (e) {
      nextAccess = errnoOf(e);
    }

    // Reclaim everything it can.
    const rssBefore = p.mm.rssPages;
    for (let i = 0; i < 4; i++) await m.reclaim(mem.nrRamFrames);
    if (kfd !== null) await sched.sleep(kfd.restoreDelayNs * 2); // let the restores run
    const reclaimedPages = rssBefore - p.mm.rssPages;
    let pinnedFramesAfterReclaim = 0;
    for (const pfn of bo.pfns)
      if (pfn >= 0 && mem.pincount[pfn]! > 0 && mem.refcount[pfn]! > 0) pinnedFramesAfterReclaim++;

    const framesBefore = mem.allocatedFrames().length;
    await bo.free();
    const framesReleasedByFree = framesBefore - mem.allocatedFrames().length;
    await kfd?.destroy();
    await p.exit();
    await gpu.remove();
    return {
      mode,
      jobTotalNs,
      munmapNs,
      jobRemainingAtMunmapNs: remaining,
      jobEndNs,
      jobDelayNs: jobEndNs - jobTotalNs,
      jobError,
      preemptNs: kfd?.preemptNs ?? 0,
      pagesPinnedAfter,
      unmappedFramesStillAllocated,
      reclaimedPages,
      pinnedFramesAfterReclaim,
      framesReleasedByFree,
      nextAccess,
    };
  });
  m.checkInvariants();
  return { ...result, leakedFrames: m.mm.mem.allocatedFrames().length };
}

/**
 * Runs the scenario (see the module doc) once per mode, each on its own machine; resolves to the
 * results by mode. EINVAL for sizes or times that do not make a job that is still running when the
 * munmap starts.
 */
export async function runLongJobScenario(
  opts: LongJobOptions = {},
): Promise<Partial<Record<UserptrMode, LongJobResult>>> {
  const jobNs = opts.jobNs ?? HOUR_NS;
  const pages = opts.pages ?? 256;
  const o = {
    jobNs,
    munmapAfterNs: opts.munmapAfterNs ?? jobNs / 4,
    pages,
    munmapPages: opts.munmapPages ?? Math.max(1, Math.floor(pages / 4)),
    preemptNs: opts.preemptNs ?? KFD_DEFAULT_PREEMPT_NS,
    seed: opts.seed ?? 1,
  };
  if (!(Number.isFinite(o.jobNs) && o.jobNs > 0 && o.munmapAfterNs >= 0 && o.munmapAfterNs < o.jobNs)) {
    throw new HmmError(
      'EINVAL',
      `long-job: the munmap (at ${o.munmapAfterNs} ns) must come while the job (${o.jobNs} ns) runs`,
    );
  }
  if (!(
    Number.isSafeInteger(pages) &&
    pages >= 2 &&
    Number.isSafeInteger(o.munmapPages) &&
    o.munmapPages >= 1 &&
    o.munmapPages < pages
  )) {
    throw new HmmError(
      'EINVAL',
      `long-job: munmap ${o.munmapPages} of ${pages} pages must leave part of the BO mapped`,
    );
  }
  const out: Partial<Record<UserptrMode, LongJobResult>> = {};
  for (const mode of opts.modes ?? (['gfx', 'hsa', 'pin'] as const)) out[mode] = await runMode(mode, o);
  return out;
}

/** A simulated duration in the largest fitting unit. */
export function formatNs(ns: number): string {
  const a = Math.abs(ns);
  if (a >= 60e9) return `${(ns / 60e9).toFixed(2)} min`;
  if (a >= 1e9) return `${(ns / 1e9).toFixed(3)} s`;
  if (a >= 1e6) return `${(ns / 1e6).toFixed(3)} ms`;
  if (a >= 1e3) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${ns.toFixed(0)} ns`;
}

/** The results side by side: one row per measure, one column per mode. */
export function formatLongJob(results: Partial<Record<UserptrMode, LongJobResult>>): string {
  const modes = (['gfx', 'hsa', 'pin'] as const).filter((k) => results[k] !== undefined);
  const rs = modes.map((k) => results[k]!);
  const title: Record<UserptrMode, string> = {
    gfx: 'graphics (fence wait)',
    hsa: 'compute (KFD)',
    pin: 'pinned',
  };
  const rows: [string, (r: LongJobResult) => string][] = [
    ['job GPU time', (r) => formatNs(r.jobTotalNs)],
    ['job left at munmap', (r) => formatNs(r.jobRemainingAtMunmapNs)],
    ['munmap took', (r) => formatNs(r.munmapNs)],
    ['munmap − job left', (r) => (r.mode === 'gfx' ? formatNs(r.munmapNs - r.jobRemainingAtMunmapNs) : '-')],
    ['job ended after', (r) => formatNs(r.jobEndNs)],
    ['job delayed by', (r) => formatNs(r.jobDelayNs)],
    ['job result', (r) => r.jobError ?? 'ok'],
    ['BO pages pinned after munmap', (r) => String(r.pagesPinnedAfter)],
    ['munmapped frames not freed', (r) => String(r.unmappedFramesStillAllocated)],
    ['next GPU write to the BO', (r) => r.nextAccess],
    ['pages reclaim took', (r) => String(r.reclaimedPages)],
    ['pinned frames after reclaim', (r) => String(r.pinnedFramesAfterReclaim)],
    ['frames released by BO free', (r) => String(r.framesReleasedByFree)],
  ];
  const table = [['', ...modes.map((k) => title[k])], ...rows.map(([name, f]) => [name, ...rs.map(f)])];
  const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
  return table
    .map((row, i) => {
      const line = row
        .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
        .join('  ');
      return i === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
    })
    .join('\n');
}
