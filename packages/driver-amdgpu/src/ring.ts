/**
 * GPU rings (`struct amdgpu_ring`) and the jobs the scheduler runs on them (`struct amdgpu_job`,
 * drm_sched): a ring executes its jobs one after the other, in submission order. A job's memory
 * accesses go through the submitting process's GPU VM (a miss is a VM fault: the job fails with
 * EFAULT, as a non-retry fault does); its simulated time is its compute time plus its memory
 * traffic (system memory over the link, VRAM free). Its fence signals when it ends, with the error
 * if it failed (`dma_fence_set_error`).
 *
 * @module
 */
import { HmmError, PAGE_SIZE, PG, hex, isHmmError } from '@hmm/core';
import type { Fence } from '@hmm/core';
import { FenceContext } from './fence.js';
import type { AmdgpuDevice, AmdgpuVm } from './gpu.js';

/** What a job does. */
export interface AmdgpuJob {
  readonly name?: string;
  /** GPU time besides the memory traffic, ns (a long-running compute kernel's run time). */
  readonly ns?: number;
  /** The job's memory work, run once when the job starts executing. */
  run?(exec: JobExec): void | Promise<void>;
}

/** A job on a ring: its fence, and its error once done. */
export class SubmittedJob {
  /** Set when the job failed. */
  error: HmmError | null = null;
  /** Simulated time the job started executing, or -1. */
  startedAt = -1;

  constructor(
    readonly job: AmdgpuJob,
    readonly vm: AmdgpuVm,
    readonly fence: Fence,
  ) {}

  /** Waits for the fence; rejects with the job's error if it failed. */
  async wait(): Promise<void> {
    await this.fence.wait();
    if (this.error !== null) throw this.error;
  }
}

/** The accesses a running job makes through its VM. */
export class JobExec {
  /** Bytes moved to or from system memory (priced over the link). */
  systemBytes = 0;

  constructor(
    readonly gpu: AmdgpuDevice,
    readonly vm: AmdgpuVm,
  ) {}

  #page(va: number, write: boolean): number {
    const vpn = Math.floor(va / PAGE_SIZE);
    const pfn = this.gpu.device.translate(this.vm.asid, vpn, write ? 'write' : 'read');
    if (pfn < 0) {
      throw new HmmError(
        'EFAULT',
        `amdgpu ${this.gpu.name}: VM fault, ${write ? 'write' : 'read'} at ${hex(va)} has no ${write ? 'writable ' : ''}mapping in the VM`,
        { address: va },
      );
    }
    return pfn;
  }

  #account(vpn: number, pfn: number, kind: 'read' | 'write', n: number): void {
    this.gpu.device.noteAccess(this.vm.asid, vpn, pfn, kind, n);
    if ((this.gpu.machine.mm.mem.flags[pfn]! & PG.ZONE_DEVICE) === 0) this.systemBytes += n;
  }

  /** Reads `len` bytes at GPU VA `va`. EFAULT on a VM fault. */
  read(va: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const content = this.gpu.machine.mm.mem.content;
    for (let pos = va; pos < va + len;) {
      const n = Math.min(PAGE_SIZE - (pos % PAGE_SIZE), va + len - pos);
      const pfn = this.#page(pos, false);
      this.#account(Math.floor(pos / PAGE_SIZE), pfn, 'read', n);
      content.read(pfn, pos % PAGE_SIZE, out, pos - va, n);
      pos += n;
    }
    return out;
  }

  /** Writes `data` at GPU VA `va`. EFAULT on a VM fault (or a read-only mapping). */
  write(va: number, data: Uint8Array): void {
    const content = this.gpu.machine.mm.mem.content;
    for (let pos = va; pos < va + data.length;) {
      const n = Math.min(PAGE_SIZE - (pos % PAGE_SIZE), va + data.length - pos);
      const pfn = this.#page(pos, true);
      this.#account(Math.floor(pos / PAGE_SIZE), pfn, 'write', n);
      content.write(pfn, pos % PAGE_SIZE, data, pos - va, n);
      pos += n;
    }
  }
}

/** One ring: a FIFO of jobs executed one at a time by a daemon task. */
export class AmdgpuRing {
  readonly fences: FenceContext;
  readonly #queue: SubmittedJob[] = [];
  #running = false;
  #stopped = false;
  #done = 0;

  constructor(
    readonly gpu: AmdgpuDevice,
    readonly name: string,
  ) {
    this.fences = new FenceContext(gpu.machine.sched, `${gpu.name}.${name}`);
  }

  /** Jobs completed. */
  get completed(): number {
    return this.#done;
  }

  /** Jobs queued or running. */
  get pending(): number {
    return this.#queue.length + (this.#running ? 1 : 0);
  }

  /** `drm_sched_entity_push_job`: queues `job` on this ring for `vm`; returns it with its fence. */
  push(vm: AmdgpuVm, job: AmdgpuJob): SubmittedJob {
    if (this.#stopped) throw new HmmError('ENODEV', `amdgpu ring ${this.name}: the device was removed`);
    if (job.ns !== undefined && !(Number.isFinite(job.ns) && job.ns >= 0)) {
      throw new HmmError('EINVAL', `amdgpu ring ${this.name}: job time ${String(job.ns)} is not ≥ 0`);
    }
    const s = new SubmittedJob(job, vm, this.fences.create());
    this.#queue.push(s);
    if (!this.#running) {
      this.#running = true;
      this.gpu.machine.sched.spawn(`${this.gpu.name}:${this.name}`, () => this.#execute());
    }
    return s;
  }

  async #execute(): Promise<void> {
    const sched = this.gpu.machine.sched;
    try {
      for (let s = this.#queue.shift(); s !== undefined; s = this.#queue.shift()) {
        s.startedAt = sched.now;
        const exec = new JobExec(this.gpu, s.vm);
        try {
          if (this.#stopped) throw new HmmError('ENODEV', `amdgpu ring ${this.name}: the device was removed`);
          await s.job.run?.(exec);
          await sched.sleep((s.job.ns ?? 0) + this.gpu.systemNs(exec.systemBytes));
        } catch (e) {
          if (!isHmmError(e)) throw e;
          s.error = e;
        }
        this.#done++;
        s.fence.signal();
      }
    } finally {
      this.#running = false;
    }
  }

  /** Stops taking jobs; queued ones fail with ENODEV as they come up. */
  stop(): void {
    this.#stopped = true;
  }
}
