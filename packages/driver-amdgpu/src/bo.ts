/**
 * Buffer objects (`struct amdgpu_bo` over a TTM BO): a size, the domain its pages live in, and a
 * reservation object that holds the fences of the jobs using it. Kinds: userptr BOs
 * ({@link UserptrBo}, system pages of a process, GTT only) and VRAM BOs (`vram.ts`).
 *
 * @module
 */
import { HmmError } from '@hmm/core';
import { DmaResv } from './fence.js';
import type { AmdgpuDevice } from './gpu.js';

/** Where a BO's pages live (`AMDGPU_GEM_DOMAIN_*`). */
export type BoDomain = 'CPU' | 'GTT' | 'VRAM';

let nextHandle = 1;

/** What every BO has. */
export abstract class AmdgpuBo {
  /** GEM handle (unique in the process of the simulation). */
  readonly handle = nextHandle++;
  /** The reservation object (`bo->tbo.base.resv`). */
  readonly resv: DmaResv;
  #freed = false;

  constructor(
    readonly gpu: AmdgpuDevice,
    /** Bytes. */
    readonly size: number,
    /** Where the pages are now. */
    public domain: BoDomain,
  ) {
    this.resv = new DmaResv(gpu.machine.sched, `${gpu.name}.bo${this.handle}`);
  }

  /** True after {@link free}. */
  get freed(): boolean {
    return this.#freed;
  }

  /** @internal Marks the BO freed once; EINVAL the second time. */
  protected markFreed(what: string): void {
    if (this.#freed) throw new HmmError('EINVAL', `${what}: BO ${this.handle} is already freed`);
    this.#freed = true;
  }

  /** `GEM_CLOSE` of the last handle: waits for the BO's jobs, then releases its pages. */
  abstract free(): Promise<void>;
}
