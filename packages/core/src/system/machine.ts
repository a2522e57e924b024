/**
 * The composition root: one simulated machine with its scheduler, clock, trace bus, cost model,
 * memory manager and processes (kernel: boot, `start_kernel`).
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import { createCostModel } from '../sim/cost-model.js';
import type { CostModel, DeepPartial } from '../sim/cost-model.js';
import { Scheduler } from '../sim/scheduler.js';
import { TraceBus } from '../sim/trace.js';
import { MmContext } from '../mm/mm-context.js';
import { Process } from '../mm/process.js';
import type { PidAllocator } from '../mm/process.js';
import { oomReapMm, reclaimStats, shrinkNode } from '../mm/vmscan.js';
import type { ReclaimStats } from '../mm/vmscan.js';
import { checkMmInvariants } from '../mm/debug-vm.js';
import { fileRead, fileWrite } from '../mm/read-write.js';
import { truncateFile } from '../mm/truncate.js';
import type { SimFile } from '../mm/filemap.js';
import { PAGE_SIZE } from '../mm/constants.js';

/** Options of {@link Machine}. */
export interface MachineOptions {
  /** RAM in bytes. Default 256 MiB. */
  readonly ramBytes?: number;
  /** Swap in bytes. Default: the RAM size. */
  readonly swapBytes?: number;
  /** Seed of the scheduler (orders tasks ready at the same instant). Default 1. */
  readonly seed?: number;
  /** Overrides of the cost model's defaults. */
  readonly cost?: DeepPartial<CostModel>;
}

/** A snapshot of memory use. */
export interface MemoryStats {
  readonly ramPages: number;
  readonly freePages: number;
  readonly usedPages: number;
  readonly swapSlots: number;
  readonly swapUsed: number;
  readonly pageTableBytes: number;
  readonly contentBytes: number;
  readonly processes: number;
  readonly reclaim: ReclaimStats;
}

/** One simulated machine. */
export class Machine implements PidAllocator {
  readonly sched: Scheduler;
  readonly trace: TraceBus;
  readonly cost: CostModel;
  /** The memory manager's machine-wide state. */
  readonly mm: MmContext;
  private readonly procs = new Map<number, Process>();
  private lastPid = 0;

  constructor(opts: MachineOptions = {}) {
    const ram = opts.ramBytes ?? 256 * 1024 * 1024;
    this.trace = new TraceBus();
    this.sched = new Scheduler({ seed: opts.seed ?? 1, trace: this.trace });
    this.cost = createCostModel(opts.cost ?? {});
    this.mm = new MmContext(
      { ramBytes: ram, swapBytes: opts.swapBytes ?? ram },
      this.sched,
      this.trace,
      this.cost,
    );
  }

  /** @internal */
  nextPid(): number {
    return ++this.lastPid;
  }

  /** @internal */
  register(p: Process): void {
    this.procs.set(p.pid, p);
  }

  /** @internal */
  unregister(p: Process): void {
    this.procs.delete(p.pid);
  }

  /** Starts a process with an empty address space (`execve` of a program that maps nothing yet). */
  createProcess(comm = 'proc'): Process {
    const p = new Process(this.mm, this, this.nextPid(), this.mm.createMm(), comm);
    this.register(p);
    return p;
  }

  /** Live processes, by pid. */
  processes(): Process[] {
    return [...this.procs.values()];
  }

  /** The process with this pid; ESRCH if none. */
  process(pid: number): Process {
    const p = this.procs.get(pid);
    if (p === undefined) throw new HmmError('ESRCH', `no process ${pid}`);
    return p;
  }

  /** Creates a file in the in-memory file store, optionally with contents. */
  async createFile(name: string, contents?: Uint8Array): Promise<SimFile> {
    const f = this.mm.files.create(name, 0);
    if (contents !== undefined && contents.length > 0) await fileWrite(this.mm, f, 0, contents);
    return f;
  }

  /** `pread` on a file. */
  readFile(file: SimFile, offset: number, len: number): Promise<Uint8Array> {
    return fileRead(this.mm, file, offset, len);
  }

  /** `pwrite` on a file. */
  writeFile(file: SimFile, offset: number, data: Uint8Array): Promise<void> {
    return fileWrite(this.mm, file, offset, data);
  }

  /** `truncate` a file. */
  truncate(file: SimFile, size: number): Promise<void> {
    return truncateFile(this.mm, file, size);
  }

  /** Forces reclaim of up to `pages` frames (like `memory.reclaim`); returns how many were freed. */
  async reclaim(pages: number): Promise<number> {
    if (!Number.isSafeInteger(pages) || pages <= 0)
      throw new HmmError('EINVAL', `reclaim: ${String(pages)} is not a page count`);
    return shrinkNode(this.mm, pages);
  }

  /**
   * The OOM reaper's non-blockable unmap of a process's private memory; false if it had to skip.
   * EINVAL if a notifier callback slept: see `oomReapMm` (call it from a task of its own).
   */
  oomReap(p: Process): boolean {
    return oomReapMm(this.mm, p.mm);
  }

  /** Memory-use snapshot. */
  stats(): MemoryStats {
    const mem = this.mm.mem;
    return {
      ramPages: mem.nrRamFrames,
      freePages: mem.nrFree,
      usedPages: mem.nrUsed,
      swapSlots: this.mm.swap.nrSlots - 1,
      swapUsed: this.mm.swap.nrUsed,
      pageTableBytes: this.mm.arena.bytesInUse,
      contentBytes: mem.content.contentBytes,
      processes: this.procs.size,
      reclaim: { ...reclaimStats(this.mm) },
    };
  }

  /** Runs the memory manager's consistency checks (throws on the first broken invariant). */
  checkInvariants(extraRefs?: (pfn: number) => number): void {
    checkMmInvariants(this.mm, extraRefs);
  }

  /** Page size of this machine. */
  get pageSize(): number {
    return PAGE_SIZE;
  }
}
