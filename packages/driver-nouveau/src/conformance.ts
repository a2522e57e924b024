/**
 * The conformance factory of the nouveau-like driver: `@hmm/conformance` (the ported
 * `hmm-tests.c`) run on two {@link NouveauGpu}s, each with its {@link NouveauSvm}. The dmirror test
 * commands are mapped onto what nouveau's userspace does:
 *
 * - open: `SVM_INIT` ({@link NouveauSvm.init}) and a channel in the client's VMM;
 * - READ / WRITE: a GPU job ({@link runJob}) with one `read` / `write` argument over the range;
 *   `faults` is 1 if the job stalled on faults (one round of fault service for the whole range, as
 *   the job's single wave raises every fault at once), else 0. A fault the driver cannot serve
 *   cancels the channel: the job fails with the cancel's errno (EFAULT for a hole or PROT_NONE,
 *   EPERM for a write to read-only memory), and the next command runs on a fresh channel (as
 *   userspace recreates a killed channel);
 * - SNAPSHOT: `hmm_range_fault` without fault flags under a temporary interval notifier;
 * - MIGRATE_TO_DEV: `SVM_BIND` migrate ({@link NouveauDmem.migrateToVram}), then each page checked
 *   in this GPU's VRAM, then a READ job;
 * - MIGRATE_TO_SYS: no nouveau ioctl; {@link NouveauDmem.migrateRangeToRam};
 * - EXCLUSIVE: a GPU job doing an atomic add of 0 to every page (atomic faults take the pages
 *   device-exclusive), then a READ job; CHECK_EXCLUSIVE looks for atomic PTEs in the VMM;
 * - RELEASE: every VRAM page evicted ({@link NouveauDmem.release}); close: `nouveau_svmm_fini`.
 *
 * nouveau's VRAM is device-private only, so the device-coherent variants are skipped.
 * Peer-to-peer: `nouveau0` exports its BAR1 ({@link nouveauP2pTarget}); both GPUs sit below one
 * switch of a {@link nouveauTopology}, so their accesses to system memory cost PCIe time.
 *
 * @module
 */
import { DevPerm, HmmError, Machine, PAGE_SIZE, TASK_SIZE, hex } from '@hmm/core';
import type { Process } from '@hmm/core';
import { SnapshotByte, snapshotRange } from '@hmm/conformance';
import type {
  CommandResult,
  ConformanceFactory,
  ConformanceManifest,
  ConformanceTarget,
  OpenOptions,
  ReadBackResult,
  TestDevice,
} from '@hmm/conformance';
import { nouveauP2pTarget, nouveauTopology } from './bar.js';
import { NouveauGpu } from './gpu.js';
import type { NouveauChannel } from './gpu.js';
import { JOB_MAX_ATOMIC_PAGES, runJob } from './job.js';
import type { JobResult } from './job.js';
import { NouveauSvm } from './svm.js';
import type { NouveauSvmm } from './svmm.js';

/**
 * What the nouveau-like driver declares. Not `device-coherent` (its VRAM is device-private only),
 * not `p2p-importer`; `p2p-exporter` is the BAR1 exporter of the first GPU (the factory's `p2p`).
 */
export const nouveauManifest: ConformanceManifest = {
  name: 'nouveau',
  capabilities: ['mirror', 'device-private', 'exclusive', 'two-devices', 'p2p-exporter', 'fault-injection'],
};

/** VRAM of each conformance GPU: 64 MiB (32 chunks), far more than a case migrates. */
export const NOUVEAU_CONFORMANCE_VRAM_BYTES = 64 * 1024 * 1024;

/**
 * Thread blocks in flight of each conformance GPU: enough for a case's largest command (256 pages)
 * to be one wave, so a cold range takes exactly one round of fault service.
 */
export const NOUVEAU_CONFORMANCE_BLOCKS_IN_FLIGHT = 1024;

/** Pages per `hmm_range_fault` call of SNAPSHOT. */
const SNAPSHOT_CHUNK = 512;

/**
 * One open of the GPU by a process, as the conformance suite drives it (see the module doc): an
 * SVM client and the channel its commands run on.
 */
export class NouveauTestDevice implements TestDevice {
  readonly binding: { readonly device: NouveauGpu['device']; readonly asid: number; readonly owner: unknown };
  #ch: NouveauChannel;

  constructor(
    readonly svm: NouveauSvm,
    readonly svmm: NouveauSvmm,
  ) {
    this.#ch = svmm.channelNew();
    this.binding = { device: svm.gpu.device, asid: svmm.asid, owner: svm.owner };
  }

  /** `SVM_INIT` by `process` on `svm`'s GPU, plus a channel. */
  static open(svm: NouveauSvm, process: Process): NouveauTestDevice {
    return new NouveauTestDevice(svm, svm.init(process));
  }

  get gpu(): NouveauGpu {
    return this.svm.gpu;
  }

  /** The channel commands run on; a killed one is destroyed and replaced first. */
  #channel(): NouveauChannel {
    if (this.#ch.killed !== null) {
      const gpu = this.gpu;
      if (gpu.channel(this.#ch.inst) === this.#ch) gpu.channelDel(this.#ch);
      this.#ch = this.svmm.channelNew();
    }
    return this.#ch;
  }

  /** The ioctl argument checks: open client, page-aligned non-empty range inside the address space. */
  #check(what: string, addr: number, npages: number): void {
    if (this.svmm.closed) throw new HmmError('EBADF', `nouveau ${what}: the SVM client is closed`);
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', `nouveau ${what}: address ${String(addr)} is not page aligned`);
    }
    if (!Number.isSafeInteger(npages) || npages <= 0 || addr + npages * PAGE_SIZE > TASK_SIZE) {
      throw new HmmError(
        'EINVAL',
        `nouveau ${what}: ${String(npages)} pages at ${hex(addr)} is empty or leaves the address space`,
      );
    }
  }

  /** Fault rounds a job needed: 1 if it stalled on faults at all (its range is one wave), else 0. */
  static #faults(r: JobResult): number {
    return r.stalledWaves > 0 ? 1 : 0;
  }

  /** `HMM_DMIRROR_READ` as a GPU job copying each block's page out. */
  async read(addr: number, npages: number): Promise<CommandResult & { readonly data: Uint8Array }> {
    this.#check('READ', addr, npages);
    return this.#readJob(addr, npages);
  }

  async #readJob(addr: number, npages: number): Promise<ReadBackResult> {
    const data = new Uint8Array(npages * PAGE_SIZE);
    const r = await runJob(this.#channel(), {
      name: 'hmm-read',
      args: [{ addr, bytes: npages * PAGE_SIZE, access: 'read' }],
      run(block) {
        data.set(block.bytes(0), block.index * PAGE_SIZE);
      },
    });
    return { data, cpages: npages, faults: NouveauTestDevice.#faults(r) };
  }

  /** `HMM_DMIRROR_WRITE` as a GPU job copying `data` into each block's page. */
  async write(addr: number, data: Uint8Array): Promise<CommandResult> {
    if (!(data instanceof Uint8Array) || data.length === 0 || data.length % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', 'nouveau WRITE: the buffer must be a Uint8Array of whole pages');
    }
    const npages = data.length / PAGE_SIZE;
    this.#check('WRITE', addr, npages);
    const r = await runJob(this.#channel(), {
      name: 'hmm-write',
      args: [{ addr, bytes: data.length, access: 'write' }],
      run(block) {
        const off = block.index * PAGE_SIZE;
        block.bytes(0).set(data.subarray(off, off + PAGE_SIZE));
      },
    });
    return { cpages: npages, faults: NouveauTestDevice.#faults(r) };
  }

  /**
   * `HMM_DMIRROR_SNAPSHOT`: `hmm_range_fault` without fault flags (this GPU's VRAM pages reported,
   * not faulted), chunk by chunk under a temporary interval notifier whose callback takes the
   * client mutex and moves the sequence.
   */
  async snapshot(addr: number, npages: number): Promise<Uint8Array> {
    this.#check('SNAPSHOT', addr, npages);
    return snapshotRange(this.svmm.process.mm, addr, npages, this.svm.owner, {
      driverLock: this.svmm.mutex,
      chunkPages: SNAPSHOT_CHUNK,
    });
  }

  /**
   * Calls `body` for the part of the range in each VMA, under the mmap read lock; EINVAL at the first
   * page with no VMA or in a VMA that cannot be read (the parts before it stay done).
   */
  async #forEachVma(
    what: string,
    addr: number,
    npages: number,
    body: (start: number, end: number) => Promise<void>,
  ): Promise<void> {
    const mm = this.svmm.process.mm;
    const end = addr + npages * PAGE_SIZE;
    await mm.mmapLock.read();
    try {
      for (let a = addr; a < end;) {
        const vma = mm.vmas.lookup(a);
        if (vma === undefined || !vma.readable) {
          throw new HmmError(
            'EINVAL',
            `nouveau ${what}: ${hex(a)} is ${vma === undefined ? 'not mapped' : `in ${vma.toString()}, which cannot be read`}`,
            { address: a },
          );
        }
        const next = Math.min(end, vma.end);
        await body(a, next);
        a = next;
      }
    } finally {
      mm.mmapLock.readUnlock();
    }
  }

  /**
   * `HMM_DMIRROR_MIGRATE_TO_DEV`: `SVM_BIND` migrate of the range to this GPU's VRAM (best effort),
   * then ENOENT unless every page is now in this GPU's VRAM, then a READ job over the range.
   */
  async migrateToDevice(addr: number, npages: number): Promise<ReadBackResult> {
    this.#check('MIGRATE_TO_DEV', addr, npages);
    const mm = this.svmm.process.mm;
    await this.#forEachVma('MIGRATE_TO_DEV', addr, npages, async (start, end) => {
      await this.svm.dmem.migrateToVram(mm, start, end);
    });
    const where = await this.snapshot(addr, npages);
    const i = where.findIndex((b) => (b & 0xf0) !== SnapshotByte.DEV_PRIVATE_LOCAL);
    const missing = i < 0 ? -1 : addr + i * PAGE_SIZE;
    if (missing >= 0) {
      throw new HmmError(
        'ENOENT',
        `nouveau MIGRATE_TO_DEV: ${hex(missing)} is not in the VRAM of ${this.gpu.name} after SVM_BIND`,
        { address: missing },
      );
    }
    return this.#readJob(addr, npages);
  }

  /** `HMM_DMIRROR_MIGRATE_TO_SYS`: this GPU's VRAM pages of the range back to system memory. */
  async migrateToSystem(addr: number, npages: number): Promise<CommandResult> {
    this.#check('MIGRATE_TO_SYS', addr, npages);
    const mm = this.svmm.process.mm;
    let cpages = 0;
    await this.#forEachVma('MIGRATE_TO_SYS', addr, npages, async (start, end) => {
      cpages += await this.svm.dmem.migrateRangeToRam(mm, start, end);
    });
    return { cpages, faults: 0 };
  }

  /**
   * `HMM_DMIRROR_EXCLUSIVE`: GPU jobs adding 0 atomically to every page (at most
   * {@link JOB_MAX_ATOMIC_PAGES} pages per job), whose atomic faults make the pages exclusive to the
   * GPU; then a READ job over the range.
   */
  async exclusive(addr: number, npages: number): Promise<ReadBackResult> {
    this.#check('EXCLUSIVE', addr, npages);
    for (let first = 0; first < npages; first += JOB_MAX_ATOMIC_PAGES) {
      const n = Math.min(JOB_MAX_ATOMIC_PAGES, npages - first);
      await runJob(this.#channel(), {
        name: 'hmm-exclusive',
        blocks: n,
        args: [{ addr: addr + first * PAGE_SIZE, bytes: n * PAGE_SIZE, access: 'atomic' }],
        run(block) {
          block.atomicAdd(0, block.index * PAGE_SIZE, 0);
        },
      });
    }
    return this.#readJob(addr, npages);
  }

  /** `HMM_DMIRROR_CHECK_EXCLUSIVE`: EPERM while a page of the range has an atomic PTE. */
  checkExclusive(addr: number, npages: number): Promise<void> {
    this.#check('CHECK_EXCLUSIVE', addr, npages);
    const first = addr / PAGE_SIZE;
    let atomic = -1;
    this.gpu.device.findMmu(this.svmm.asid)?.forEachEntry(first, first + npages, (vpn, _pfn, perm) => {
      if (atomic < 0 && (perm & DevPerm.ATOMIC) !== 0) atomic = vpn;
    });
    if (atomic >= 0) {
      return Promise.reject(
        new HmmError(
          'EPERM',
          `nouveau CHECK_EXCLUSIVE: the GPU still maps ${hex(atomic * PAGE_SIZE)} for atomics`,
          { address: atomic * PAGE_SIZE },
        ),
      );
    }
    return Promise.resolve();
  }

  /** `HMM_DMIRROR_RELEASE`: every VRAM page of this GPU evicted to system memory, chunks unmapped. */
  release(): Promise<void> {
    if (this.svmm.closed)
      return Promise.reject(new HmmError('EBADF', 'nouveau RELEASE: the SVM client is closed'));
    return this.svm.dmem.release();
  }

  /** `HMM_DMIRROR_FLAGS` FAIL_ALLOC: the next VRAM page allocation fails. */
  failNextAlloc(): void {
    this.svm.dmem.devmem.failNextAlloc(1);
  }

  /** Fault injection: the next copy-engine transfer (either way) stops after `afterPages` pages. */
  failNextCopy(afterPages: number): void {
    this.gpu.copyEngine.failNext(afterPages);
  }

  /** The GPU PTE permission of each page (`DevPerm` bits, 0 = not mapped). */
  devicePerms(addr: number, npages: number): Uint8Array {
    const out = new Uint8Array(npages);
    const first = addr / PAGE_SIZE;
    this.gpu.device.findMmu(this.svmm.asid)?.forEachEntry(first, first + npages, (vpn, _pfn, perm) => {
      out[vpn - first] = perm;
    });
    return out;
  }

  /** Closing the device file: `nouveau_svmm_fini` (channels, notifier, PTEs, VMM). Idempotent. */
  async close(): Promise<void> {
    if (!this.svmm.closed) await this.svmm.fini();
  }
}

/**
 * One machine per case with two conformance GPUs, `nouveau0` and `nouveau1`, each with its SVM,
 * both below one switch of a {@link nouveauTopology}; `nouveau0` exports its BAR1 as the `p2p` target.
 */
export const nouveauFactory: ConformanceFactory = ({ seed }) => {
  const machine = new Machine({ seed });
  const pci = nouveauTopology(machine, ['nouveau0', 'nouveau1']);
  const gpus = (['nouveau0', 'nouveau1'] as const).map(
    (name) =>
      new NouveauGpu(machine, {
        name,
        vramBytes: NOUVEAU_CONFORMANCE_VRAM_BYTES,
        blocksInFlight: NOUVEAU_CONFORMANCE_BLOCKS_IN_FLIGHT,
        pci: { topology: pci.topology, endpoint: pci.endpoint(name) },
      }),
  );
  const svms = gpus.map((gpu) => new NouveauSvm(gpu));
  const p2p = nouveauP2pTarget(machine, gpus[0]!);
  let removed = false;
  const target: ConformanceTarget = {
    machine,
    open: (process: Process, opts: OpenOptions = {}) =>
      Promise.resolve(NouveauTestDevice.open(svms[opts.device ?? 0]!, process)),
    p2p,
    // Hot-unplug of nouveau0: its SVM clients finished, VRAM evicted and unregistered, BAR1 removed,
    // the GPU gone. The clients' later commands fail with EBADF; ENODEV the second time.
    removeDevice: async () => {
      if (removed) throw new HmmError('ENODEV', `nouveau: ${gpus[0]!.name} was already removed`);
      removed = true;
      await svms[0]!.fini();
      await p2p.bar.remove();
      await gpus[0]!.remove();
    },
    // Driver unload: every client finished, VRAM evicted, BAR1 unpublished, the GPUs removed.
    teardown: () =>
      machine.sched.runTask('nouveau-unload', async () => {
        for (const svm of svms) await svm.fini();
        if (!removed) await p2p.bar.remove();
        for (const gpu of gpus) await gpu.remove();
      }),
  };
  return Promise.resolve(target);
};
