/**
 * Userptr BOs (drivers/gpu/drm/amd/amdgpu/amdgpu_gem.c `amdgpu_gem_userptr_ioctl`, amdgpu_ttm.c,
 * amdgpu_hmm.c): a BO over `[addr, addr + size)` of a process's memory, living in GTT only.
 *
 * - **Creation** checks the kernel's rules: page-aligned address and size (EINVAL); a writable BO
 *   (no READONLY) needs REGISTER (EACCES); ANONONLY refuses file-backed memory (EPERM, found when
 *   the pages are collected). REGISTER inserts **one interval notifier exactly the size of the BO**;
 *   VALIDATE collects the pages at once.
 * - **Page collection** (`amdgpu_ttm_tt_get_user_pages` → `amdgpu_hmm_range_get_pages`), at every
 *   command submission: the range must lie in one VMA (EFAULT); `hmm_range_fault` with REQ_FAULT
 *   (and REQ_WRITE when writable), walked in 2 GiB steps with a yield between them, retried on
 *   EBUSY within 1 s per 128 MiB. It charges simulated time for the walk: per page
 *   `hmm.rangeFaultPerPresentPageNs`, plus `cpu.faultInZeroPerPageNs` per page it faulted in. If the
 *   frames changed, the BO is rebound (its VM entries rewritten) at submission.
 * - **Invalidation, graphics mode** (`amdgpu_hmm_invalidate_gfx`): declines a non-blockable range;
 *   otherwise takes the notifier lock, sets the sequence and **waits for every fence of the BO**
 *   (`dma_resv_wait_timeout(BOOKKEEP, MAX_SCHEDULE_TIMEOUT)`), so munmap, mprotect and reclaim of
 *   the range wait for the GPU.
 * - **Invalidation, compute mode** (`amdgpu_hmm_invalidate_hsa` → `amdgpu_amdkfd_evict_userptr`):
 *   takes the notifier lock, sets the sequence and hands the eviction to the KFD process (which
 *   quiesces its queues and restores them later): no fence wait.
 * - **Pinning mode** (an SDK contrast, like a GUP-based driver or udmabuf): the pages are pinned with
 *   FOLL_LONGTERM at creation and never collected again; no notifier, so nothing waits, and the pages
 *   can neither be reclaimed nor migrated until the BO is freed.
 *
 * SIM: after the fence wait (or the eviction), the BO's VM entries are cleared, so that no
 * translation to a page the CPU is about to free outlives the invalidation (the kernel leaves them,
 * unused, for the next submission to rewrite; the sanitizer would flag them here).
 *
 * @module
 */
import {
  DevPerm,
  Foll,
  HmmError,
  HmmPfn,
  PAGE_SIZE,
  hex,
  hmmPfnToPfn,
  hmmRangeFault,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalReadRetry,
  mmuIntervalSetSeq,
  pinUserPages,
  unpinUserPages,
} from '@hmm/core';
import type { HmmRange, MmuIntervalNotifier, MmuNotifierRange, Process } from '@hmm/core';
import { AmdgpuBo } from './bo.js';
import { DmaResvUsage } from './fence.js';
import type { AmdgpuDevice, AmdgpuVm } from './gpu.js';

/** `AMDGPU_GEM_USERPTR_*` flags (include/uapi/drm/amdgpu_drm.h). */
export const UserptrFlag = {
  READONLY: 1 << 0,
  ANONONLY: 1 << 1,
  VALIDATE: 1 << 2,
  REGISTER: 1 << 3,
} as const;

const ALL_FLAGS = UserptrFlag.READONLY | UserptrFlag.ANONONLY | UserptrFlag.VALIDATE | UserptrFlag.REGISTER;

/**
 * How the BO is kept valid: `'gfx'` (graphics notifier: wait for fences), `'hsa'` (compute notifier:
 * evict through KFD), `'pin'` (pinned at creation, no notifier).
 */
export type UserptrMode = 'gfx' | 'hsa' | 'pin';

/** Pages walked per `hmm_range_fault` step: 2 GiB. */
export const AMDGPU_HMM_STEP_BYTES = 2 * 1024 ** 3;

/** Collection budget: 1 s of simulated time per 128 MiB (`HMM_RANGE_DEFAULT_TIMEOUT` scaled). */
export const AMDGPU_HMM_TIMEOUT_NS_PER_128MIB = 1_000_000_000;

/** Arguments of {@link gemUserptr} (`struct drm_amdgpu_gem_userptr` plus the SDK's mode). */
export interface GemUserptrArgs {
  readonly addr: number;
  readonly size: number;
  /** {@link UserptrFlag} bits. */
  readonly flags: number;
  /** Default `'gfx'`. */
  readonly mode?: UserptrMode;
}

/** Counters of one userptr BO. */
export interface UserptrStats {
  /** Page collections (one per CS, plus VALIDATE and KFD restores). */
  collections: number;
  /** Pages walked by those collections. */
  pagesWalked: number;
  /** Pages faulted in by them. */
  pagesFaultedIn: number;
  /** Collections that found different frames (the BO was rebound). */
  revalidations: number;
  /** Invalidations received (declined ones not counted). */
  invalidations: number;
  /** Simulated ns the invalidations spent waiting (for fences or the eviction). */
  invalidationWaitNs: number;
}

/** The KFD side of a compute-mode BO: called under the notifier lock by the invalidation. */
export type HsaEvict = (bo: UserptrBo, range: MmuNotifierRange) => Promise<void>;

/** A userptr BO. */
export class UserptrBo extends AmdgpuBo {
  /** Frame of each page as last collected (or pinned); -1 where none. */
  readonly pfns: Int32Array;
  readonly stats: UserptrStats = {
    collections: 0,
    pagesWalked: 0,
    pagesFaultedIn: 0,
    revalidations: 0,
    invalidations: 0,
    invalidationWaitNs: 0,
  };
  /** The interval notifier (null in pinning mode or without REGISTER). */
  readonly notifier: MmuIntervalNotifier | null;
  /** Set by KFD for a compute-mode BO. */
  hsaEvict: HsaEvict | null = null;
  /** Sequence of the last collection. */
  #seq = 0;
  /** True when the VM entries match {@link pfns}. */
  #bound = false;
  #collected = false;

  private constructor(
    gpu: AmdgpuDevice,
    readonly vm: AmdgpuVm,
    readonly addr: number,
    size: number,
    readonly flags: number,
    readonly mode: UserptrMode,
  ) {
    super(gpu, size, 'GTT');
    this.pfns = new Int32Array(size / PAGE_SIZE).fill(-1);
    this.notifier =
      mode === 'pin' || (flags & UserptrFlag.REGISTER) === 0
        ? null
        : mmuIntervalNotifierInsert(vm.process.mm, addr, size, {
            invalidate: (sub, range, seq) => this.#invalidate(sub, range, seq),
          });
  }

  /** True unless READONLY. */
  get writable(): boolean {
    return (this.flags & UserptrFlag.READONLY) === 0;
  }

  /** Pages of the BO. */
  get pages(): number {
    return this.pfns.length;
  }

  get process(): Process {
    return this.vm.process;
  }

  /**
   * `amdgpu_gem_userptr_ioctl`: see the module doc. EINVAL for an unaligned or empty range, unknown
   * flags, or REGISTER in pinning mode; EACCES for a writable BO without REGISTER (`'gfx'`/`'hsa'`);
   * with VALIDATE (or in pinning mode) the collection's or GUP's error, with nothing left registered.
   */
  static async create(gpu: AmdgpuDevice, process: Process, args: GemUserptrArgs): Promise<UserptrBo> {
    gpu.checkAlive('GEM_USERPTR');
    const { addr, size, flags } = args;
    const mode = args.mode ?? 'gfx';
    const what = 'amdgpu GEM_USERPTR';
    if (!(Number.isSafeInteger(addr) && Number.isSafeInteger(size) && addr >= 0 && size > 0)) {
      throw new HmmError('EINVAL', `${what}: ${String(size)} bytes at ${String(addr)} is not a range`);
    }
    if (addr % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0) {
      throw new HmmError(
        'EINVAL',
        `${what}: address ${hex(addr)} and size ${hex(size)} must be page aligned`,
        {
          address: addr,
        },
      );
    }
    if (!Number.isInteger(flags) || (flags & ~ALL_FLAGS) !== 0) {
      throw new HmmError('EINVAL', `${what}: unknown flags ${hex(flags)}`);
    }
    if (mode !== 'gfx' && mode !== 'hsa' && mode !== 'pin') {
      throw new HmmError('EINVAL', `${what}: unknown mode ${String(mode)}`);
    }
    if (mode === 'pin' && (flags & UserptrFlag.REGISTER) !== 0) {
      throw new HmmError('EINVAL', `${what}: a pinned BO takes no notifier (REGISTER)`);
    }
    if (mode !== 'pin' && (flags & (UserptrFlag.READONLY | UserptrFlag.REGISTER)) === 0) {
      throw new HmmError(
        'EACCES',
        `${what}: a writable userptr BO must be registered with a notifier (REGISTER), or be READONLY`,
        { address: addr },
      );
    }
    const vm = gpu.vm(process);
    const bo = new UserptrBo(gpu, vm, addr, size, flags, mode);
    try {
      if (mode === 'pin') await bo.#pin();
      else if ((flags & UserptrFlag.VALIDATE) !== 0) await bo.getUserPages();
    } catch (e) {
      if (bo.notifier !== null) await mmuIntervalNotifierRemove(bo.notifier);
      throw e;
    }
    return bo;
  }

  /** Pinning mode: `pin_user_pages(FOLL_LONGTERM [| FOLL_WRITE])`, charged at the pin cost. */
  async #pin(): Promise<void> {
    const m = this.gpu.machine;
    const mm = this.process.mm;
    const before = mm.rssPages;
    const pfns = await pinUserPages(
      mm.ctx,
      mm,
      this.addr,
      this.pages,
      Foll.LONGTERM | (this.writable ? Foll.WRITE : 0),
    );
    const faulted = Math.max(0, mm.rssPages - before);
    await m.sched.sleep(
      (this.pages - faulted) * m.cost.gup.pinPerPageNs + faulted * m.cost.rdma.regPinFaultInPerPageNs,
    );
    this.pfns.set(pfns);
    this.#collected = true;
    this.stats.pagesFaultedIn += faulted;
  }

  /**
   * `amdgpu_ttm_tt_get_user_pages`: collects the BO's frames (see the module doc). Resolves to true
   * if they differ from the last collection (the BO must be rebound). Rejects with EFAULT (not
   * inside one VMA, a hole, PROT_NONE), EPERM (ANONONLY over file-backed memory, or a write fault on
   * read-only memory), or EBUSY past the budget. In pinning mode it does nothing (resolves false).
   */
  async getUserPages(): Promise<boolean> {
    if (this.freed) throw new HmmError('EINVAL', `amdgpu: userptr BO ${this.handle} is freed`);
    if (this.mode === 'pin') return false;
    const m = this.gpu.machine;
    const mm = this.process.mm;
    const end = this.addr + this.size;
    const vma = mm.vmas.lookup(this.addr);
    if (vma === undefined || end > vma.end) {
      throw new HmmError(
        'EFAULT',
        `amdgpu userptr BO ${this.handle}: [${hex(this.addr)}, ${hex(end)}) is not inside one VMA`,
        { address: this.addr },
      );
    }
    if ((this.flags & UserptrFlag.ANONONLY) !== 0 && vma.file !== null) {
      throw new HmmError(
        'EPERM',
        `amdgpu userptr BO ${this.handle}: ANONONLY, but ${hex(this.addr)} is file-backed (${vma.file.name})`,
        { address: this.addr },
      );
    }
    const deadline =
      m.sched.now + AMDGPU_HMM_TIMEOUT_NS_PER_128MIB * Math.ceil(this.size / (128 * 1024 * 1024));
    const words = new Float64Array(this.pages);
    const before = mm.rssPages;
    // Without REGISTER nothing tracks the range: a notifier lives only for the walk.
    const sub =
      this.notifier ??
      mmuIntervalNotifierInsert(mm, this.addr, this.size, {
        invalidate: (n, _range, seq) => {
          mmuIntervalSetSeq(n, seq);
          return true;
        },
      });
    try {
      await this.#walk(sub, words, deadline);
    } finally {
      if (sub !== this.notifier) await mmuIntervalNotifierRemove(sub);
    }
    const faulted = Math.max(0, mm.rssPages - before);
    await m.sched.sleep(
      this.pages * m.cost.hmm.rangeFaultPerPresentPageNs + faulted * m.cost.cpu.faultInZeroPerPageNs,
    );
    let changed = !this.#collected;
    for (let i = 0; i < this.pages; i++) {
      const pfn = hmmPfnToPfn(words[i]!);
      if (this.pfns[i] !== pfn) {
        this.pfns[i] = pfn;
        changed = true;
      }
    }
    this.#collected = true;
    this.stats.collections++;
    this.stats.pagesWalked += this.pages;
    this.stats.pagesFaultedIn += faulted;
    if (changed) {
      this.stats.revalidations++;
      this.#bound = false;
    }
    return changed;
  }

  /** The collection's sequence loop over `sub`, in 2 GiB steps, into `words`. */
  async #walk(sub: MmuIntervalNotifier, words: Float64Array, deadline: number): Promise<void> {
    const m = this.gpu.machine;
    const mm = this.process.mm;
    const end = this.addr + this.size;
    for (;;) {
      if (m.sched.now > deadline) {
        throw new HmmError(
          'EBUSY',
          `amdgpu userptr BO ${this.handle}: page collection kept racing invalidations`,
        );
      }
      const seq = await mmuIntervalReadBegin(sub);
      let busy = false;
      await mm.mmapLock.read();
      try {
        for (let s = this.addr; s < end; s += AMDGPU_HMM_STEP_BYTES) {
          const e = Math.min(end, s + AMDGPU_HMM_STEP_BYTES);
          const first = (s - this.addr) / PAGE_SIZE;
          const range: HmmRange = {
            notifier: sub,
            notifierSeq: seq,
            start: s,
            end: e,
            hmmPfns: words.subarray(first, first + (e - s) / PAGE_SIZE),
            defaultFlags: HmmPfn.REQ_FAULT | (this.writable ? HmmPfn.REQ_WRITE : 0),
            pfnFlagsMask: 0,
            devPrivateOwner: null,
          };
          await hmmRangeFault(range);
          if (e < end) await m.sched.yield();
        }
      } catch (err) {
        if (!(err instanceof HmmError && err.code === 'EBUSY')) throw err;
        busy = true;
      } finally {
        mm.mmapLock.readUnlock();
      }
      if (busy) continue;
      this.#seq = seq;
      break;
    }
  }

  /**
   * `amdgpu_ttm_tt_get_user_pages_done`: true if an invalidation ran since the last collection (the
   * CS must fail with EAGAIN). Call with the notifier lock held. Never stale in pinning mode.
   */
  stale(): boolean {
    if (!this.#collected) return true;
    if (this.notifier === null) return false;
    return mmuIntervalReadRetry(this.notifier, this.#seq);
  }

  /** True when the VM maps the collected frames. */
  get bound(): boolean {
    return this.#bound;
  }

  /** Writes the BO's VM entries (GART/VM bind) if they are not current. Call with the notifier lock held. */
  async bind(): Promise<void> {
    if (this.#bound) return;
    const n = this.pages;
    const vpns = new Float64Array(n);
    const base = this.addr / PAGE_SIZE;
    for (let i = 0; i < n; i++) vpns[i] = base + i;
    const perm = this.writable ? DevPerm.READ | DevPerm.WRITE : DevPerm.READ;
    await this.vm.map(vpns, this.pfns, new Uint8Array(n).fill(perm));
    this.#bound = true;
  }

  /** Clears the BO's VM entries. */
  async unbind(): Promise<void> {
    const base = this.addr / PAGE_SIZE;
    await this.vm.unmap(base, base + this.pages);
    this.#bound = false;
  }

  /** The interval-notifier callback: graphics or compute mode (see the module doc). */
  #invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, seq: number): boolean | Promise<boolean> {
    if (!range.blockable) return false;
    return (async () => {
      const sched = this.gpu.machine.sched;
      const t0 = sched.now;
      await this.gpu.notifierLock.lock();
      try {
        mmuIntervalSetSeq(sub, seq);
        if (this.mode === 'hsa' && this.hsaEvict !== null) {
          await this.hsaEvict(this, range);
        } else {
          await this.resv.waitTimeout(DmaResvUsage.BOOKKEEP, Infinity);
        }
        if (this.#bound) await this.unbind();
      } finally {
        this.gpu.notifierLock.unlock();
      }
      this.stats.invalidations++;
      this.stats.invalidationWaitNs += sched.now - t0;
      return true;
    })();
  }

  /**
   * `GEM_CLOSE`: waits for the BO's jobs, clears its VM entries, removes the notifier (or unpins).
   * EINVAL the second time.
   */
  async free(): Promise<void> {
    this.markFreed('amdgpu GEM_CLOSE');
    await this.resv.waitTimeout(DmaResvUsage.BOOKKEEP, Infinity);
    if (this.notifier !== null) await mmuIntervalNotifierRemove(this.notifier);
    if (!this.gpu.removed) await this.unbind();
    if (this.mode === 'pin' && this.#collected) {
      unpinUserPages(this.gpu.machine.mm, this.pfns);
      await this.gpu.machine.sched.sleep(this.pages * this.gpu.machine.cost.gup.unpinPerPageNs);
    }
  }
}

/** `amdgpu_gem_userptr_ioctl`: {@link UserptrBo.create}. */
export function gemUserptr(gpu: AmdgpuDevice, process: Process, args: GemUserptrArgs): Promise<UserptrBo> {
  return UserptrBo.create(gpu, process, args);
}
