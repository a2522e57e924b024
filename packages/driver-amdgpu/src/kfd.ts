/**
 * The KFD side of compute-mode userptr BOs (drivers/gpu/drm/amd/amdkfd/kfd_process*.c,
 * kfd_device_queue_manager.c, drivers/gpu/drm/amd/amdgpu/amdgpu_amdkfd_gpuvm.c): one
 * {@link KfdProcess} per process and GPU, with user-mode compute queues ({@link KfdQueue}) that run
 * long, preemptible jobs, and the eviction/restore protocol that replaces the graphics notifier's
 * fence wait.
 *
 * - **Queues** (`struct queue` under the HWS): a FIFO of jobs executed one at a time. A job's time is
 *   its `ns` plus its memory traffic over the link, as on a ring. A queue can be **quiesced**
 *   (`evict_process_queues_cpsch`): the running job stops progressing at once and its context is
 *   saved (CWSR), which takes `preemptNs`; the job keeps exactly the GPU time it had left and, on
 *   resume (`restore_process_queues_cpsch`), continues after a context restore of `resumeNs`.
 *   Quiesces nest (a counter, as `qpd->evicted`).
 * - **Eviction** (`amdgpu_amdkfd_evict_userptr`), called under the notifier lock by a compute-mode
 *   BO's invalidation ({@link UserptrBo.hsaEvict}): bumps the BO's invalid count; on the process's
 *   first eviction it quiesces **all** the process's queues, waits for their context saves, and
 *   schedules the restore {@link AMDGPU_USERPTR_RESTORE_DELAY_MS} later. No fence is waited for.
 * - **Restore** (`amdgpu_amdkfd_restore_userptr_worker`): collects the pages of every invalid BO again
 *   (outside the lock), then under the notifier lock checks that no eviction came meanwhile and no BO
 *   went stale (else it reschedules itself 1 ms later), binds the BOs, clears their invalid counts and
 *   resumes the queues.
 * - **A BO whose range is gone** (the collection fails with EFAULT: a hole, an unmapped or PROT_NONE
 *   part, or EPERM: a write fault on read-only memory): as `update_invalid_user_pages` does for
 *   EFAULT, the restore does not retry for it: the BO stays invalid and unbound, the other BOs are
 *   restored and the queues resume; a job that then touches the BO takes a VM fault and fails with
 *   EFAULT instead of the queues staying stalled forever. The next restore (after another eviction)
 *   tries the BO again. Transient errors (EBUSY, ENOMEM, EAGAIN) reschedule the restore.
 *   SIM: the kernel treats EPERM like EBUSY (retries forever, queues stalled until the protection is
 *   restored); the SDK treats it like EFAULT, so that a simulation cannot retry forever.
 * - A VM fault fails the job (its fence signals with EFAULT) and the queue goes on with the next one;
 *   the kernel instead reports a memory exception to the process and the runtime usually aborts.
 *
 * SIM: the eviction fence that makes TTM evictions preempt the queues is not modelled (userptr BOs
 * only live in GTT); queues preempt in parallel (one HWS unmap of all the process's queues), so a
 * process-wide quiesce costs one `preemptNs` when any queue was running a job, nothing when they were
 * all idle.
 *
 * @module
 */
import { HmmError, isHmmError } from '@hmm/core';
import type { Fence, Process } from '@hmm/core';
import { FenceContext } from './fence.js';
import type { AmdgpuDevice, AmdgpuVm } from './gpu.js';
import { JobExec } from './ring.js';
import type { UserptrBo } from './userptr.js';

/** `AMDGPU_USERPTR_RESTORE_DELAY_MS`: the restore runs this long after the first eviction. */
export const AMDGPU_USERPTR_RESTORE_DELAY_MS = 1;

/**
 * Default context-save cost of a queue preemption, ns. [E] 100 µs: a CWSR save traps every wave and
 * writes its registers and LDS to memory (tens of MiB for a full GPU at HBM speed, ≈ 60 µs) after
 * in-flight memory operations drain; no measurement found.
 */
export const KFD_DEFAULT_PREEMPT_NS = 100_000;

/** Default context-restore cost on resume, ns. [E] 50 µs: the saved state read back, no drain. */
export const KFD_DEFAULT_RESUME_NS = 50_000;

/** Options of a {@link KfdProcess}. */
export interface KfdProcessOptions {
  /** Context save of a running queue, ns; default {@link KFD_DEFAULT_PREEMPT_NS}. */
  readonly preemptNs?: number;
  /** Context restore of a preempted queue, ns; default {@link KFD_DEFAULT_RESUME_NS}. */
  readonly resumeNs?: number;
  /** Delay of the restore after the first eviction, ns; default {@link AMDGPU_USERPTR_RESTORE_DELAY_MS}. */
  readonly restoreDelayNs?: number;
}

/** Counters of one {@link KfdProcess}. */
export interface KfdStats {
  /** Evictions received (one per invalidation of a registered BO). */
  evictions: number;
  /** Process-wide quiesces (first evictions). */
  quiesces: number;
  /** Queues preempted while running a job (context saves). */
  preemptions: number;
  /** Simulated ns evictions spent waiting for the context saves. */
  preemptWaitNs: number;
  /** Successful restores (queues resumed). */
  restores: number;
  /** Restores rescheduled (an eviction or a stale BO during the restore, or a transient error). */
  restoreRetries: number;
  /** BOs a restore left invalid because their pages could not be collected (EFAULT/EPERM). */
  restoreFaults: number;
  /** Simulated ns the queues spent quiesced by evictions (eviction to resume). */
  quiesceNs: number;
  /** Jobs that failed with a VM fault. */
  vmFaults: number;
}

/** What a KFD job does. */
export interface KfdJobDesc {
  readonly name?: string;
  /** GPU time besides the memory traffic, ns (a long-running kernel's run time). */
  readonly ns?: number;
  /**
   * The job's memory work, run once when the job first gets the GPU; synchronous (its traffic is
   * priced over the link and added to the job's time). A VM fault fails the job with EFAULT.
   */
  run?(exec: JobExec): void;
}

/** A job dispatched on a {@link KfdQueue}. */
export class KfdJob {
  /** Set when the job failed (VM fault, queue destroyed). */
  error: HmmError | null = null;
  /** Simulated time the job first ran, or -1. */
  startedAt = -1;
  /** Times the job was preempted. */
  preemptions = 0;
  /** @internal GPU time left, ns, as of the last stop (NaN before the job starts). */
  remaining = NaN;
  /** @internal Time the job started progressing in its current run segment, or null. */
  progressFrom: number | null = null;
  /** @internal A context was saved: the next run segment starts with a restore. */
  saved = false;

  constructor(
    readonly queue: KfdQueue,
    readonly desc: KfdJobDesc,
    readonly fence: Fence,
  ) {}

  /** GPU time the job still has to execute, ns (its whole time before it starts; 0 once done). */
  get remainingNs(): number {
    if (this.fence.signaled) return 0;
    if (Number.isNaN(this.remaining)) return this.desc.ns ?? 0;
    const now = this.queue.kfd.gpu.machine.sched.now;
    return this.progressFrom === null
      ? this.remaining
      : Math.max(0, this.remaining - (now - this.progressFrom));
  }

  /** Waits for the fence; rejects with the job's error if it failed. */
  async wait(): Promise<void> {
    await this.fence.wait();
    if (this.error !== null) throw this.error;
  }
}

/**
 * A user-mode compute queue (`kfd_ioctl_create_queue`): see the module doc. Created by
 * {@link KfdProcess.createQueue}.
 */
export class KfdQueue {
  readonly fences: FenceContext;
  readonly #jobs: KfdJob[] = [];
  /** Quiesce depth (`qpd->evicted`). */
  #evicted = 0;
  /** Generation of the run segment; a timer task only acts if its generation is current. */
  #gen = 0;
  /** A run segment (task) owns the head job. */
  #busy = false;
  /** Time the last context save completes. */
  #savedUntil = 0;
  #destroyed = false;
  #done = 0;

  /** @internal Created by {@link KfdProcess.createQueue}. */
  constructor(
    readonly kfd: KfdProcess,
    readonly name: string,
    evicted: number,
  ) {
    this.fences = new FenceContext(kfd.gpu.machine.sched, name);
    this.#evicted = evicted;
  }

  /** Jobs completed (successfully or not). */
  get completed(): number {
    return this.#done;
  }

  /** Jobs queued or running. */
  get pending(): number {
    return this.#jobs.length;
  }

  /** True while quiesced. */
  get quiesced(): boolean {
    return this.#evicted > 0;
  }

  /** True after {@link destroy}. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /**
   * Rings the doorbell for `desc`: queues it and returns it with its fence. EINVAL for a negative or
   * non-finite time; ENODEV on a destroyed queue or a removed GPU.
   */
  dispatch(desc: KfdJobDesc): KfdJob {
    if (this.#destroyed)
      throw new HmmError('ENODEV', `KFD queue ${this.name}: dispatch on a destroyed queue`);
    this.kfd.gpu.checkAlive(`KFD queue ${this.name} dispatch`);
    if (desc.ns !== undefined && !(Number.isFinite(desc.ns) && desc.ns >= 0)) {
      throw new HmmError('EINVAL', `KFD queue ${this.name}: job time ${String(desc.ns)} is not ≥ 0`);
    }
    const job = new KfdJob(this, desc, this.fences.create());
    this.#jobs.push(job);
    this.#kick();
    return job;
  }

  /** Starts a run segment for the head job if the queue is active and idle. */
  #kick(): void {
    if (this.#evicted > 0 || this.#destroyed || this.#busy) return;
    const job = this.#jobs[0];
    if (job === undefined) return;
    const sched = this.kfd.gpu.machine.sched;
    this.#busy = true;
    const gen = ++this.#gen;
    const delay = job.saved ? Math.max(0, this.#savedUntil - sched.now) + this.kfd.resumeNs : 0;
    sched.spawn(
      `${this.name}:${job.desc.name ?? `job${job.fence.seqno}`}`,
      () => this.#segment(job, gen, delay),
      {
        daemon: true,
      },
    );
  }

  /** One run segment of `job`: stops acting as soon as generation `gen` is no longer current. */
  async #segment(job: KfdJob, gen: number, delay: number): Promise<void> {
    const sched = this.kfd.gpu.machine.sched;
    if (delay > 0) await sched.sleep(delay);
    if (gen !== this.#gen) return;
    job.saved = false;
    if (job.startedAt < 0) {
      job.startedAt = sched.now;
      const exec = new JobExec(this.kfd.gpu, this.kfd.vm);
      try {
        const r: unknown = job.desc.run?.(exec);
        if (r instanceof Promise) {
          r.catch(() => undefined);
          throw new HmmError('EINVAL', `KFD queue ${this.name}: a job's run() must be synchronous`);
        }
      } catch (e) {
        if (!isHmmError(e)) throw e;
        if (e.code === 'EFAULT') this.kfd.stats.vmFaults++;
        this.#finish(job, e);
        return;
      }
      job.remaining = (job.desc.ns ?? 0) + this.kfd.gpu.systemNs(exec.systemBytes);
    }
    job.progressFrom = sched.now;
    await sched.sleep(job.remaining);
    if (gen !== this.#gen) return;
    job.remaining = 0;
    job.progressFrom = null;
    this.#finish(job, null);
  }

  #finish(job: KfdJob, error: HmmError | null): void {
    if (this.#jobs[0] === job) this.#jobs.shift();
    this.#busy = false;
    job.error = error;
    this.#done++;
    job.fence.signal();
    this.#kick();
  }

  /**
   * @internal Stops the queue at once (the first of nested quiesces preempts the running job,
   * keeping its remaining time); returns when its context save completes and whether a running job
   * was preempted.
   */
  stop(): { savedUntil: number; preempted: boolean } {
    const sched = this.kfd.gpu.machine.sched;
    let preempted = false;
    if (this.#evicted++ === 0 && this.#busy) {
      this.#gen++;
      this.#busy = false;
      const job = this.#jobs[0];
      if (job !== undefined && job.startedAt >= 0) {
        if (job.progressFrom !== null) {
          job.remaining = Math.max(0, job.remaining - (sched.now - job.progressFrom));
          job.progressFrom = null;
        }
        job.preemptions++;
        job.saved = true;
        this.#savedUntil = sched.now + this.kfd.preemptNs;
        preempted = true;
      }
    }
    return { savedUntil: this.#savedUntil, preempted };
  }

  /**
   * Quiesces the queue (`evict_process_queues_cpsch` for one queue): the running job stops now and
   * keeps its remaining time; resolves once its context is saved (`preemptNs` later). Nests.
   */
  async quiesce(): Promise<void> {
    const { savedUntil, preempted } = this.stop();
    if (preempted) this.kfd.stats.preemptions++;
    const sched = this.kfd.gpu.machine.sched;
    if (savedUntil > sched.now) await sched.sleep(savedUntil - sched.now);
  }

  /**
   * Undoes one {@link quiesce} (`restore_process_queues_cpsch`); the last one lets the queue run
   * again (a preempted job continues after a context restore of `resumeNs`). EINVAL if not quiesced.
   */
  resume(): void {
    if (this.#evicted === 0)
      throw new HmmError('EINVAL', `KFD queue ${this.name}: resume of a queue that is not quiesced`);
    if (--this.#evicted === 0) this.#kick();
  }

  /**
   * `kfd_ioctl_destroy_queue`: preempts the queue (waiting for the context save) and fails every
   * unfinished job with ENODEV. Idempotent.
   */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    await this.quiesce();
    this.#destroyed = true;
    this.kfd.forgetQueue(this);
    for (let job = this.#jobs.shift(); job !== undefined; job = this.#jobs.shift()) {
      job.error = new HmmError('ENODEV', `KFD queue ${this.name}: destroyed before the job finished`);
      job.progressFrom = null;
      this.#done++;
      job.fence.signal();
    }
  }
}

const registry = new WeakMap<AmdgpuDevice, Map<Process, KfdProcess>>();

/** One process's KFD state on one GPU (`struct kfd_process_device` + `amdkfd_process_info`). */
export class KfdProcess {
  readonly vm: AmdgpuVm;
  readonly preemptNs: number;
  readonly resumeNs: number;
  readonly restoreDelayNs: number;
  readonly stats: KfdStats = {
    evictions: 0,
    quiesces: 0,
    preemptions: 0,
    preemptWaitNs: 0,
    restores: 0,
    restoreRetries: 0,
    restoreFaults: 0,
    quiesceNs: 0,
    vmFaults: 0,
  };
  readonly #queues: KfdQueue[] = [];
  /** Registered BOs and their invalid counts (`mem->invalid`). */
  readonly #bos = new Map<UserptrBo, number>();
  /** Evictions since the last restore (`process_info->evicted_bos`). */
  #evicted = 0;
  #quiescedAt = 0;
  /** Generation of the pending restore work item. */
  #restoreGen = 0;
  #restoreAt: number | null = null;
  #destroyed = false;
  #nextQueue = 0;

  /** @internal Use {@link kfdProcess}. */
  constructor(
    readonly gpu: AmdgpuDevice,
    readonly process: Process,
    opts: KfdProcessOptions = {},
  ) {
    gpu.checkAlive('KFD open');
    const check = (what: string, v: number): number => {
      if (!(Number.isFinite(v) && v >= 0))
        throw new HmmError('EINVAL', `KFD: ${what} ${String(v)} is not ≥ 0`);
      return v;
    };
    this.preemptNs = check('preemptNs', opts.preemptNs ?? KFD_DEFAULT_PREEMPT_NS);
    this.resumeNs = check('resumeNs', opts.resumeNs ?? KFD_DEFAULT_RESUME_NS);
    this.restoreDelayNs = check(
      'restoreDelayNs',
      opts.restoreDelayNs ?? AMDGPU_USERPTR_RESTORE_DELAY_MS * 1_000_000,
    );
    this.vm = gpu.vm(process);
  }

  /** The process's queues. */
  get queues(): readonly KfdQueue[] {
    return this.#queues;
  }

  /** Evictions not yet restored (0 when the queues run). */
  get evicted(): number {
    return this.#evicted;
  }

  /** Simulated time the pending restore is due, or null. */
  get restoreAt(): number | null {
    return this.#restoreAt;
  }

  /** True after {@link destroy}. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** The invalid count of a registered BO (`mem->invalid`); EINVAL if not registered. */
  invalid(bo: UserptrBo): number {
    const n = this.#bos.get(bo);
    if (n === undefined) throw new HmmError('EINVAL', `KFD: userptr BO ${bo.handle} is not registered`);
    return n;
  }

  /** `kfd_ioctl_create_queue`: a new queue (quiesced if the process is evicted). ENODEV after destroy. */
  createQueue(name?: string): KfdQueue {
    if (this.#destroyed)
      throw new HmmError('ENODEV', `KFD process ${this.process.pid}: createQueue after destroy`);
    this.gpu.checkAlive('KFD create queue');
    const q = new KfdQueue(
      this,
      name ?? `${this.gpu.name}.kfd${this.process.pid}.q${this.#nextQueue++}`,
      this.#evicted > 0 ? 1 : 0,
    );
    this.#queues.push(q);
    return q;
  }

  /** @internal A destroyed queue leaves the process. */
  forgetQueue(q: KfdQueue): void {
    const i = this.#queues.indexOf(q);
    if (i >= 0) this.#queues.splice(i, 1);
  }

  /**
   * `amdgpu_amdkfd_gpuvm_alloc_memory_of_gpu` (userptr) + map: registers a compute-mode BO of this
   * process, collects its pages and binds it; from then on its invalidations evict through
   * {@link KfdProcess}. EINVAL for a BO that is not `'hsa'`, has no notifier (REGISTER), is freed,
   * belongs to another GPU or process, or is already registered; the collection's error otherwise
   * (nothing registered).
   */
  async registerUserptr(bo: UserptrBo): Promise<void> {
    const what = `KFD register userptr BO ${bo.handle}`;
    if (this.#destroyed) throw new HmmError('ENODEV', `${what}: the KFD process was destroyed`);
    if (bo.mode !== 'hsa')
      throw new HmmError('EINVAL', `${what}: mode '${bo.mode}' is not the compute mode 'hsa'`);
    if (bo.notifier === null)
      throw new HmmError('EINVAL', `${what}: the BO has no notifier (create it with REGISTER)`);
    if (bo.freed) throw new HmmError('EINVAL', `${what}: the BO is freed`);
    if (bo.gpu !== this.gpu || bo.process !== this.process) {
      throw new HmmError('EINVAL', `${what}: the BO belongs to another GPU or process`);
    }
    if (this.#bos.has(bo) || bo.hsaEvict !== null)
      throw new HmmError('EINVAL', `${what}: already registered`);
    this.#bos.set(bo, 0);
    bo.hsaEvict = (b) => this.#evict(b);
    try {
      await bo.getUserPages();
    } catch (e) {
      this.#bos.delete(bo);
      bo.hsaEvict = null;
      throw e;
    }
    await this.gpu.notifierLock.lock();
    try {
      // Invalidated while collecting: the eviction already scheduled a restore, which binds it.
      if (this.#bos.get(bo) === 0 && !bo.stale()) await bo.bind();
    } finally {
      this.gpu.notifierLock.unlock();
    }
  }

  /** Unregisters `bo` (`amdgpu_amdkfd_gpuvm_free_memory_of_gpu`): its invalidations no longer evict. */
  unregisterUserptr(bo: UserptrBo): void {
    if (!this.#bos.delete(bo)) throw new HmmError('EINVAL', `KFD: userptr BO ${bo.handle} is not registered`);
    bo.hsaEvict = null;
  }

  /** `amdgpu_amdkfd_evict_userptr`: see the module doc. Called with the notifier lock held. */
  async #evict(bo: UserptrBo): Promise<void> {
    const n = this.#bos.get(bo);
    if (n === undefined) return;
    this.#bos.set(bo, n + 1);
    this.stats.evictions++;
    if (++this.#evicted !== 1) return;
    const sched = this.gpu.machine.sched;
    this.stats.quiesces++;
    this.#quiescedAt = sched.now;
    const t0 = sched.now;
    await this.quiesceAll();
    this.stats.preemptWaitNs += sched.now - t0;
    this.#scheduleRestore();
  }

  /**
   * `kgd2kfd_quiesce_mm`: stops every queue of the process at once and waits for their context saves
   * (in parallel: one `preemptNs` if any queue was running a job).
   */
  async quiesceAll(): Promise<void> {
    const sched = this.gpu.machine.sched;
    let until = sched.now;
    for (const q of this.#queues) {
      const { savedUntil, preempted } = q.stop();
      if (preempted) this.stats.preemptions++;
      until = Math.max(until, savedUntil);
    }
    if (until > sched.now) await sched.sleep(until - sched.now);
  }

  /** `kgd2kfd_resume_mm`: undoes one {@link quiesceAll} on every queue. */
  resumeAll(): void {
    for (const q of this.#queues) if (q.quiesced) q.resume();
  }

  /** Queues the restore work item `restoreDelayNs` from now, replacing any pending one. */
  #scheduleRestore(): void {
    const sched = this.gpu.machine.sched;
    const gen = ++this.#restoreGen;
    this.#restoreAt = sched.now + this.restoreDelayNs;
    sched.spawn(
      `kfd${this.process.pid}.restore_userptr`,
      async () => {
        await sched.sleep(this.restoreDelayNs);
        if (gen !== this.#restoreGen || this.#destroyed) return;
        this.#restoreAt = null;
        await this.#restore();
      },
      { daemon: true },
    );
  }

  /** `amdgpu_amdkfd_restore_userptr_worker`: see the module doc. */
  async #restore(): Promise<void> {
    const sched = this.gpu.machine.sched;
    const snapshot = this.#evicted;
    if (snapshot === 0) return;
    const collected: UserptrBo[] = [];
    for (const [bo, invalid] of [...this.#bos]) {
      if (bo.freed) {
        this.#bos.delete(bo);
        continue;
      }
      if (invalid === 0) continue;
      try {
        await bo.getUserPages();
        collected.push(bo);
      } catch (e) {
        if (!isHmmError(e)) throw e;
        if (e.code === 'EFAULT' || e.code === 'EPERM') {
          // The range is gone or not writable: leave the BO invalid (a job touching it faults).
          this.stats.restoreFaults++;
          continue;
        }
        if (this.#destroyed) return;
        this.stats.restoreRetries++;
        this.#scheduleRestore();
        return;
      }
      if (this.#destroyed) return;
    }
    if (this.#destroyed) return;
    await this.gpu.notifierLock.lock();
    try {
      if (this.#destroyed) return;
      if (this.#evicted !== snapshot || collected.some((bo) => bo.stale())) {
        this.stats.restoreRetries++;
        this.#scheduleRestore();
        return;
      }
      for (const bo of collected) {
        if (bo.freed || !this.#bos.has(bo)) continue;
        await bo.bind();
        this.#bos.set(bo, 0);
      }
      this.#evicted = 0;
      this.stats.restores++;
      this.stats.quiesceNs += sched.now - this.#quiescedAt;
      this.resumeAll();
    } finally {
      this.gpu.notifierLock.unlock();
    }
  }

  /**
   * Process teardown (`kfd_process_notifier_release`): cancels a pending restore, unregisters every
   * BO and destroys every queue (unfinished jobs fail with ENODEV). Idempotent.
   */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#restoreGen++;
    this.#restoreAt = null;
    for (const bo of this.#bos.keys()) bo.hsaEvict = null;
    this.#bos.clear();
    for (const q of [...this.#queues]) await q.destroy();
    registry.get(this.gpu)?.delete(this.process);
  }
}

/**
 * `kfd_create_process` + `kfd_bind_process_to_device`: the KFD process of `process` on `gpu`,
 * created on first use (`opts` apply only then). ENODEV on a removed GPU.
 */
export function kfdProcess(gpu: AmdgpuDevice, process: Process, opts: KfdProcessOptions = {}): KfdProcess {
  let perGpu = registry.get(gpu);
  if (perGpu === undefined) {
    perGpu = new Map();
    registry.set(gpu, perGpu);
  }
  let kfd = perGpu.get(process);
  if (kfd === undefined) {
    kfd = new KfdProcess(gpu, process, opts);
    perGpu.set(process, kfd);
  }
  return kfd;
}
