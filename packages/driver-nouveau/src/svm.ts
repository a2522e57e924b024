/**
 * The SVM side of one GPU (`struct nouveau_svm`): the fault-buffer bottom half, the map from channel
 * instance to client, and the glue between VRAM migration and the clients' VMMs.
 *
 * The fault path (`nouveau_svm_fault`): the interrupt wakes the bottom half, which drains the buffer
 * (every entry from GET to PUT with the default policy), pays the batch's service time, sorts the
 * entries by (instance, address, access) and serves each in order: entries of channels without SVM
 * are cancelled; an entry whose access the GPU's page table already grants (a duplicate, or a page
 * an earlier entry of the batch mapped) is skipped; the rest go through the client's
 * {@link NouveauSvmm.serveFault}. A fault that cannot be served cancels its channel, which is
 * killed with a clear error. When the batch is done the PTE writes are flushed (with one TLB
 * invalidate) and the GPU replays, once per drained batch.
 *
 * @module
 */
import { DevPerm, FAULT_ACCESS_NAMES, FaultAccess, FaultBatch, HmmError, PAGE_SIZE, hex } from '@hmm/core';
import type { DeviceAccessKind, MmStruct, Process, SimTask } from '@hmm/core';
import { NouveauDmem } from './dmem.js';
import type { NouveauChannel, NouveauGpu } from './gpu.js';
import { nouveauPolicy } from './policy.js';
import type { FaultPolicy, PolicyFault } from './policy.js';
import { NouveauSvmm } from './svmm.js';
import type { SvmInitOptions } from './svmm.js';

/** Counters of one GPU's fault handling. */
export interface SvmStats {
  /** Batches drained (= replays issued). */
  readonly batches: number;
  /** Entries drained. */
  readonly entries: number;
  /** Entries served (the client wrote a PTE or found nothing to map). */
  readonly served: number;
  /** Entries skipped because the GPU page table already granted them. */
  readonly skipped: number;
  /** Entries cancelled (their channel was killed). */
  readonly cancelled: number;
}

/** Options of {@link NouveauSvm}. */
export interface NouveauSvmOptions {
  /** Fault policy; default {@link nouveauPolicy}. */
  readonly policy?: FaultPolicy;
  /** `pgmap->owner` of this GPU's VRAM; default the SVM object itself (nouveau: the drm device). */
  readonly owner?: unknown;
}

function kindOf(access: number): DeviceAccessKind {
  return access === FaultAccess.WRITE ? 'write' : access === FaultAccess.ATOMIC ? 'atomic' : 'read';
}

/** One GPU's SVM (see the module doc). */
export class NouveauSvm {
  readonly owner: unknown;
  readonly dmem: NouveauDmem;
  readonly policy: FaultPolicy;
  readonly #byInst = new Map<number, NouveauSvmm>();
  readonly #clients = new Set<NouveauSvmm>();
  readonly #gens = new Map<NouveauSvmm, number>();
  readonly #batch: FaultBatch;
  #order: Uint32Array;
  #bottomHalf: SimTask | null = null;
  #stopped = false;
  #batches = 0;
  #entries = 0;
  #served = 0;
  #skipped = 0;
  #cancelled = 0;

  constructor(
    readonly gpu: NouveauGpu,
    opts: NouveauSvmOptions = {},
  ) {
    this.owner = opts.owner ?? this;
    this.policy = opts.policy ?? nouveauPolicy();
    this.dmem = new NouveauDmem(gpu, this.owner);
    // Attached before the batch is sized: a policy may size it from the machine's cost model.
    this.policy.attach?.(this);
    const cap = Math.min(
      gpu.faults.entries,
      this.policy.batchSize > 0 ? this.policy.batchSize : gpu.faults.entries,
    );
    this.#batch = new FaultBatch(cap);
    this.#order = new Uint32Array(cap);
    this.dmem.attach({
      unmap: (mm, start, end) => this.#unmapMigrating(mm, start, end),
      generation: (mm) => this.#generation(mm),
      mapMigrated: (mm, gen, vpns, pfns, writable) => this.#mapMigrated(mm, gen, vpns, pfns, writable),
    });
  }

  /** Counters. */
  stats(): SvmStats {
    return {
      batches: this.#batches,
      entries: this.#entries,
      served: this.#served,
      skipped: this.#skipped,
      cancelled: this.#cancelled,
    };
  }

  /** Live clients. */
  clients(): NouveauSvmm[] {
    return [...this.#clients];
  }

  /**
   * SVM_INIT for `process`: a client with its VMM and whole-mm notifier; starts the fault bottom
   * half on first use. EINVAL for a bad unmanaged window; ESRCH for an exited process.
   */
  init(process: Process, opts: SvmInitOptions = {}): NouveauSvmm {
    if (this.#stopped) throw new HmmError('ENODEV', `${this.gpu.name}: SVM_INIT after the SVM was torn down`);
    const svmm = new NouveauSvmm(this, process, opts);
    this.#clients.add(svmm);
    this.#gens.set(svmm, 0);
    this.#startBottomHalf();
    return svmm;
  }

  /** @internal Records that `ch`'s faults belong to `svmm`. */
  bindChannel(ch: NouveauChannel, svmm: NouveauSvmm): void {
    this.#byInst.set(ch.inst, svmm);
  }

  /** @internal */
  unbindChannel(ch: NouveauChannel): void {
    this.#byInst.delete(ch.inst);
  }

  /** @internal A client finished {@link NouveauSvmm.fini}. */
  forget(svmm: NouveauSvmm): void {
    this.#clients.delete(svmm);
    this.#gens.delete(svmm);
  }

  /** @internal Called by a client under its mutex for every invalidation that cleared PTEs. */
  bumpGeneration(svmm: NouveauSvmm): void {
    const g = this.#gens.get(svmm);
    if (g !== undefined) this.#gens.set(svmm, g + 1);
  }

  #startBottomHalf(): void {
    if (this.#bottomHalf !== null) return;
    this.#bottomHalf = this.gpu.machine.sched.spawn(`${this.gpu.name}:svm-fault`, () => this.#run(), {
      daemon: true,
    });
  }

  /** The bottom half: one batch per interrupt round, up to the policy's batches per service. */
  async #run(): Promise<void> {
    const faults = this.gpu.faults;
    for (;;) {
      try {
        await faults.waitInterrupt();
      } catch {
        return; // the GPU went away
      }
      if (this.#stopped) return;
      for (let b = 0; b < this.policy.maxBatchesPerService; b++) {
        const had = faults.pending;
        await this.#serviceBatch();
        if (faults.aborted || this.#stopped) return;
        if (had === 0 || faults.pending === 0) break;
      }
    }
  }

  /** Drains, sorts, serves and replays one batch. */
  async #serviceBatch(): Promise<void> {
    const gpu = this.gpu;
    const sched = gpu.machine.sched;
    const batch = this.#batch;
    const max = this.policy.batchSize > 0 ? this.policy.batchSize : gpu.faults.entries;
    const n = gpu.faults.drain(batch, max);
    this.#batches++;
    this.#entries += n;
    await sched.sleep(gpu.machine.cost.gpuFault.serviceBaseNs);
    const order = this.#order.subarray(0, n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort(
      (x, y) =>
        batch.inst[x]! - batch.inst[y]! ||
        batch.addr[x]! - batch.addr[y]! ||
        batch.access[x]! - batch.access[y]!,
    );
    const faults: PolicyFault[] = [];
    for (let k = 0; k < n; k++) {
      const i = order[k]!;
      const inst = batch.inst[i]!;
      const addr = batch.addr[i]!;
      const access = batch.access[i]!;
      if (k > 0) {
        const j = order[k - 1]!;
        if (batch.inst[j] === inst && batch.addr[j] === addr && batch.access[j] === access) {
          this.#skipped++;
          continue;
        }
      }
      if (gpu.faults.cancelledWith(inst) !== undefined) {
        this.#cancelled++;
        continue;
      }
      const svmm = this.#byInst.get(inst);
      if (svmm === undefined || svmm.closed) {
        this.#cancel(
          inst,
          new HmmError(
            'EFAULT',
            `${gpu.name}: channel ${inst} killed: it faulted at ${hex(addr)} but has no SVM client`,
            { address: addr },
          ),
        );
        continue;
      }
      faults.push({ svmm, inst, addr, access });
    }
    await this.policy.prepare(this, faults);
    for (const f of faults) {
      if (gpu.faults.cancelledWith(f.inst) !== undefined) {
        this.#cancelled++;
        continue;
      }
      // Already granted (an earlier entry of this batch mapped it, or a migration did): skip.
      if (
        f.access !== FaultAccess.PREFETCH &&
        gpu.device.translate(f.svmm.asid, f.addr / PAGE_SIZE, kindOf(f.access)) >= 0
      ) {
        this.#skipped++;
        continue;
      }
      try {
        await f.svmm.serveFault(f.addr, f.access);
        this.#served++;
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        const code = e instanceof HmmError ? e.code : 'EFAULT';
        if (f.access === FaultAccess.PREFETCH) continue; // a prefetch that finds nothing is not an error
        this.#cancel(
          f.inst,
          new HmmError(
            code,
            `${gpu.name}: channel ${f.inst} killed: its ${FAULT_ACCESS_NAMES[f.access]} fault at ${hex(f.addr)} could not be served: ${why}`,
            {
              address: f.addr,
            },
          ),
        );
      }
    }
    // Flush the PTE writes, one TLB invalidate, then replay.
    for (const svmm of this.#clients) svmm.flushPtes();
    if (!gpu.device.removed) {
      await gpu.device.queue.submit({ op: 'nop' }).wait();
      await sched.sleep(gpu.machine.cost.notifier.deviceTlbInvalNs);
    }
    gpu.faults.replay();
  }

  #cancel(inst: number, error: HmmError): void {
    this.#cancelled++;
    this.gpu.faults.cancel(inst, error);
    this.gpu.channel(inst)?.kill(error);
  }

  /** Clears `[start, end)` of `mm` in every client of `mm` before its pages move. */
  async #unmapMigrating(mm: MmStruct, start: number, end: number): Promise<void> {
    for (const svmm of this.#clients) {
      if (svmm.process.mm !== mm || svmm.closed) continue;
      await svmm.mutex.lock();
      try {
        await svmm.pfnClear(start, end);
      } finally {
        svmm.mutex.unlock();
      }
    }
  }

  #generation(mm: MmStruct): number {
    let g = 0;
    for (const [svmm, n] of this.#gens) if (svmm.process.mm === mm) g += n;
    return g;
  }

  /** Maps pages that just landed in VRAM, unless an invalidation of `mm` ran since `gen` was read. */
  #mapMigrated(
    mm: MmStruct,
    gen: number,
    vpns: readonly number[],
    pfns: readonly number[],
    writable: readonly boolean[],
  ): void {
    if (vpns.length === 0 || this.#generation(mm) !== gen) return;
    for (const svmm of this.#clients) {
      if (svmm.process.mm !== mm || svmm.closed) continue;
      const perms = writable.map((w) => (w ? DevPerm.READ | DevPerm.WRITE : DevPerm.READ));
      svmm.mapPtes(vpns, pfns, perms);
    }
  }

  /**
   * Tears the SVM down: every client finished, VRAM evicted to system memory and released. The
   * bottom half stops. Safe to call once; later SVM_INIT fails with ENODEV.
   */
  async fini(): Promise<void> {
    if (this.#stopped) return;
    for (const svmm of [...this.#clients]) await svmm.fini();
    await this.dmem.release();
    this.#stopped = true;
  }
}
