/**
 * The conformance factory of the amdgpu-like driver: `@hmm/conformance` run on one
 * {@link AmdgpuDevice}. The dmirror test commands map onto what a graphics userspace (Mesa, ROCm's
 * `hipHostRegister`) does with userptr BOs:
 *
 * - open: the process's GPU VM. The SDK's device keeps one VM per process, so a second open of the
 *   same process shares it; the VM is closed when the process's last open closes;
 * - READ: a `READONLY | REGISTER` userptr BO over the range and one CS on the gfx ring (retried on
 *   EAGAIN as libdrm does) whose job copies the BO out through the VM; WRITE: a `REGISTER`
 *   (writable) userptr BO and a job writing `data`. The BO of a range is kept after the command, so
 *   its VM entries stay (and `devicePerms` shows them) until an invalidation or another command
 *   over an overlapping range (which frees it first: BOs of one open never overlap in the VM).
 *   Errors are the page collection's (`hmm_range_fault`): EFAULT for a hole or PROT_NONE (or a
 *   range not inside one VMA), EPERM for a write to read-only memory;
 * - `faults`: 1 when the CS had to collect and bind pages that were not bound (a new BO, or one an
 *   invalidation unbound, or a CS that hit EAGAIN), else 0 (a warm command reuses the bound BO);
 * - SNAPSHOT: `snapshotRange` (`hmm_range_fault` without fault flags under a temporary notifier);
 * - close: the BOs freed (each waits for its jobs), then the VM if this was the process's last open.
 *
 * The gfx-mode notifier waits for the BO's fences, so munmap of a range a READ's job is using waits
 * for the job: a READ racing munmap either completes with the data or, when the munmap came first,
 * fails at page collection with EFAULT.
 *
 * The GPU has no device-private or device-coherent memory (VRAM is not HMM device memory in amdgpu's
 * graphics path), so it declares `mirror` and `p2p-exporter`: its visible VRAM is published as peer
 * memory and {@link VramBo}s are exported through the device file; the suite's reference importer
 * imports them.
 *
 * @module
 */
import {
  DevPerm,
  HMM_RANGE_DEFAULT_TIMEOUT_NS,
  HmmError,
  Machine,
  PAGE_SIZE,
  PciTopology,
  TASK_SIZE,
  hex,
} from '@hmm/core';
import type { Process, SimDevice } from '@hmm/core';
import { snapshotRange } from '@hmm/conformance';
import type {
  CommandResult,
  ConformanceFactory,
  ConformanceManifest,
  ConformanceTarget,
  P2pTarget,
  TestDevice,
  UserptrHandle,
  UserptrHandleMode,
  UserptrRegisterOptions,
  UserptrTarget,
} from '@hmm/conformance';
import { amdgpuCsRetry } from './cs.js';
import { AmdgpuDevice } from './gpu.js';
import type { AmdgpuVm } from './gpu.js';
import type { JobExec } from './ring.js';
import { UserptrFlag, gemUserptr } from './userptr.js';
import type { UserptrBo, UserptrMode } from './userptr.js';
import { AmdgpuVram, VramBoExporter } from './vram.js';

/** What the amdgpu-like driver declares: a userptr mirror, userptr objects and a VRAM exporter. */
export const amdgpuManifest: ConformanceManifest = {
  name: 'amdgpu',
  capabilities: ['mirror', 'p2p-exporter', 'userptr'],
};

/** Visible VRAM of the conformance GPU: 64 MiB, far more than a p2p case exports. */
export const AMDGPU_CONFORMANCE_VISIBLE_VRAM_BYTES = 64 * 1024 * 1024;

/** Opens of each VM (one VM per process, shared by that process's opens). */
export type AmdgpuOpenCounts = Map<AmdgpuVm, number>;

/** One open of the GPU by a process, as the conformance suite drives it (see the module doc). */
export class AmdgpuTestDevice implements TestDevice {
  readonly binding: { readonly device: SimDevice; readonly asid: number };
  /** The userptr BOs of the commands, disjoint ranges. */
  readonly #bos: UserptrBo[] = [];
  #closed = false;

  private constructor(
    readonly gpu: AmdgpuDevice,
    readonly vm: AmdgpuVm,
    readonly opens: AmdgpuOpenCounts,
  ) {
    this.binding = { device: gpu.device, asid: vm.asid };
  }

  /** Opens `gpu` for `process` (`amdgpu_driver_open_kms`); `opens` counts the opens of each VM. */
  static open(gpu: AmdgpuDevice, process: Process, opens: AmdgpuOpenCounts = new Map()): AmdgpuTestDevice {
    const vm = gpu.vm(process);
    opens.set(vm, (opens.get(vm) ?? 0) + 1);
    return new AmdgpuTestDevice(gpu, vm, opens);
  }

  get process(): Process {
    return this.vm.process;
  }

  /** The userptr BOs kept from the commands. */
  get bos(): readonly UserptrBo[] {
    return this.#bos;
  }

  #check(what: string, addr: number, npages: number): void {
    if (this.#closed) throw new HmmError('EBADF', `amdgpu ${what}: the device file is closed`);
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', `amdgpu ${what}: address ${String(addr)} is not page aligned`);
    }
    if (!Number.isSafeInteger(npages) || npages <= 0 || addr + npages * PAGE_SIZE > TASK_SIZE) {
      throw new HmmError(
        'EINVAL',
        `amdgpu ${what}: ${String(npages)} pages at ${hex(addr)} is empty or leaves the address space`,
      );
    }
  }

  /**
   * The userptr BO of exactly `[addr, addr + npages)` with this writability: the kept one, or a new
   * one after freeing every kept BO that overlaps the range.
   */
  async #bo(addr: number, npages: number, writable: boolean): Promise<UserptrBo> {
    const size = npages * PAGE_SIZE;
    const same = this.#bos.find((b) => b.addr === addr && b.size === size && b.writable === writable);
    if (same !== undefined) return same;
    for (let i = this.#bos.length - 1; i >= 0; i--) {
      const b = this.#bos[i]!;
      if (b.addr < addr + size && addr < b.addr + b.size) {
        this.#bos.splice(i, 1);
        await b.free();
      }
    }
    const bo = await gemUserptr(this.gpu, this.process, {
      addr,
      size,
      flags: UserptrFlag.REGISTER | (writable ? 0 : UserptrFlag.READONLY),
    });
    this.#bos.push(bo);
    return bo;
  }

  /** One CS on the gfx ring over `bo` running `run`, waited for; resolves to `faults` (0 or 1). */
  async #submit(
    bo: UserptrBo,
    name: string,
    run: Parameters<typeof amdgpuCsRetry>[1]['job']['run'],
  ): Promise<number> {
    const wasBound = bo.bound;
    // The test ioctl must end: retry EAGAIN for the kernel's fault budget, then report it.
    const { job, attempts } = await amdgpuCsRetry(
      this.gpu,
      {
        vm: this.vm,
        ring: 'gfx',
        bos: [bo],
        job: run === undefined ? { name } : { name, run },
      },
      { timeoutNs: HMM_RANGE_DEFAULT_TIMEOUT_NS },
    );
    await job.wait();
    return !wasBound || attempts > 1 ? 1 : 0;
  }

  /** `HMM_DMIRROR_READ`: a gfx job copying the read-only userptr BO of the range out. */
  async read(addr: number, npages: number): Promise<CommandResult & { readonly data: Uint8Array }> {
    this.#check('READ', addr, npages);
    const bo = await this.#bo(addr, npages, false);
    let data: Uint8Array | null = null;
    const faults = await this.#submit(bo, 'hmm-read', (x) => {
      data = x.read(addr, npages * PAGE_SIZE);
    });
    if (data === null) throw new HmmError('EIO', `amdgpu READ: the job at ${hex(addr)} produced no data`);
    return { cpages: npages, faults, data };
  }

  /** `HMM_DMIRROR_WRITE`: a gfx job writing `data` through the writable userptr BO of the range. */
  async write(addr: number, data: Uint8Array): Promise<CommandResult> {
    if (!(data instanceof Uint8Array) || data.length === 0 || data.length % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', 'amdgpu WRITE: the buffer must be a Uint8Array of whole pages');
    }
    const npages = data.length / PAGE_SIZE;
    this.#check('WRITE', addr, npages);
    const bo = await this.#bo(addr, npages, true);
    const faults = await this.#submit(bo, 'hmm-write', (x) => {
      x.write(addr, data);
    });
    return { cpages: npages, faults };
  }

  /** `HMM_DMIRROR_SNAPSHOT`: `hmm_range_fault` without fault flags, one byte per page. */
  async snapshot(addr: number, npages: number): Promise<Uint8Array> {
    this.#check('SNAPSHOT', addr, npages);
    return snapshotRange(this.process.mm, addr, npages, null, { driverLock: this.gpu.notifierLock });
  }

  /** The VM's permission of each page (`DevPerm` bits, 0 = not mapped). */
  devicePerms(addr: number, npages: number): Uint8Array {
    const out = new Uint8Array(npages);
    const first = addr / PAGE_SIZE;
    this.gpu.device.findMmu(this.vm.asid)?.forEachEntry(first, first + npages, (vpn, _pfn, perm) => {
      out[vpn - first] = perm & (DevPerm.READ | DevPerm.WRITE | DevPerm.ATOMIC);
    });
    return out;
  }

  /** Closing the device file: every BO freed, then the VM if no other open of the process uses it. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const bo of this.#bos.splice(0)) await bo.free();
    const n = (this.opens.get(this.vm) ?? 1) - 1;
    if (n > 0) {
      this.opens.set(this.vm, n);
      return;
    }
    this.opens.delete(this.vm);
    if (!this.gpu.removed) await this.gpu.closeVm(this.process);
  }
}

/** The userptr modes the conformance target registers objects in (KFD's compute mode needs a KFD process). */
export type AmdgpuUserptrTargetMode = Exclude<UserptrMode, 'hsa'>;

/**
 * The suite's userptr objects on the GPU: a userptr BO of the process's VM (`AMDGPU_GEM_USERPTR`)
 * over the range. In graphics mode (`'gfx'`, the default) it is REGISTER | VALIDATE (| READONLY for
 * a read-only object): a notifier, the pages collected at creation and at every CS (`'mirrored'`);
 * in pinning mode (`'pin'`) the pages are pinned at creation (`'pinned'`). A device read or write
 * is one CS on the gfx ring whose job copies the whole BO through the VM, EAGAIN reissued within
 * the kernel's fault budget. The VM is the process's, shared with its opens of the device file
 * (`opens` counts both) and closed when the last of them goes.
 */
export class AmdgpuUserptrTarget implements UserptrTarget {
  constructor(
    readonly gpu: AmdgpuDevice,
    readonly opens: AmdgpuOpenCounts,
    readonly mode: AmdgpuUserptrTargetMode = 'gfx',
  ) {}

  /** The same GPU and VMs, registering in `mode`. */
  withMode(mode: AmdgpuUserptrTargetMode): AmdgpuUserptrTarget {
    return new AmdgpuUserptrTarget(this.gpu, this.opens, mode);
  }

  /** `AMDGPU_GEM_USERPTR` over the range; the collection's (or GUP's) error, with nothing left, otherwise. */
  async register(
    process: Process,
    addr: number,
    npages: number,
    opts: UserptrRegisterOptions,
  ): Promise<UserptrHandle> {
    const vm = this.gpu.vm(process);
    this.opens.set(vm, (this.opens.get(vm) ?? 0) + 1);
    try {
      const ro = opts.write ? 0 : UserptrFlag.READONLY;
      const flags = this.mode === 'pin' ? ro : UserptrFlag.REGISTER | UserptrFlag.VALIDATE | ro;
      const bo = await gemUserptr(this.gpu, process, {
        addr,
        size: npages * PAGE_SIZE,
        flags,
        mode: this.mode,
      });
      return new AmdgpuUserptrHandle(this, vm, bo);
    } catch (e) {
      await this.put(vm);
      throw e;
    }
  }

  /** Drops one use of `vm`; the last one closes it. */
  async put(vm: AmdgpuVm): Promise<void> {
    const n = (this.opens.get(vm) ?? 1) - 1;
    if (n > 0) {
      this.opens.set(vm, n);
      return;
    }
    this.opens.delete(vm);
    if (!this.gpu.removed) await this.gpu.closeVm(vm.process);
  }
}

/** One userptr object of {@link AmdgpuUserptrTarget}. */
export class AmdgpuUserptrHandle implements UserptrHandle {
  readonly mode: UserptrHandleMode;
  readonly binding: { readonly device: SimDevice; readonly asid: number };
  /** Writable BOs: a gfx job writing the whole BO. */
  readonly write?: (data: Uint8Array) => Promise<void>;
  #released = false;

  constructor(
    readonly target: AmdgpuUserptrTarget,
    readonly vm: AmdgpuVm,
    readonly bo: UserptrBo,
  ) {
    this.mode = bo.mode === 'pin' ? 'pinned' : 'mirrored';
    this.binding = { device: target.gpu.device, asid: vm.asid };
    if (bo.writable) {
      this.write = async (data) => {
        if (!(data instanceof Uint8Array) || data.length !== bo.size) {
          throw new HmmError('EINVAL', `amdgpu userptr write: ${bo.size} bytes expected`);
        }
        await this.#submit('userptr-write', (x) => {
          x.write(bo.addr, data);
        });
      };
    }
  }

  /** One CS on the gfx ring over the BO running `run`, waited for. */
  async #submit(name: string, run: (x: JobExec) => void): Promise<void> {
    if (this.#released) throw new HmmError('EINVAL', `amdgpu: userptr BO ${this.bo.handle} is freed`);
    const { job } = await amdgpuCsRetry(
      this.target.gpu,
      { vm: this.vm, ring: 'gfx', bos: [this.bo], job: { name, run } },
      { timeoutNs: HMM_RANGE_DEFAULT_TIMEOUT_NS },
    );
    await job.wait();
  }

  /** A gfx job copying the whole BO out through the VM. */
  async read(): Promise<Uint8Array> {
    let out: Uint8Array | null = null;
    await this.#submit('userptr-read', (x) => {
      out = x.read(this.bo.addr, this.bo.size);
    });
    if (out === null) {
      throw new HmmError('EIO', `amdgpu: the read job of BO ${this.bo.handle} produced no data`);
    }
    return out;
  }

  /** `GEM_CLOSE` (waits for its jobs, removes the notifier or unpins), then the VM use dropped. Idempotent. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await this.bo.free();
    await this.target.put(this.vm);
  }
}

/** What {@link amdgpuP2pTarget} builds. */
export type AmdgpuP2pTarget = P2pTarget & { readonly vram: AmdgpuVram };

/**
 * The GPU as an exporter-only peer-to-peer target (no `createImporter`: the suite imports through
 * its reference importer next to the GPU). Each exporter is a {@link VramBo} created in GTT (so that
 * it starts in system memory, as the suite expects) and allowed in VRAM. The GPU needs a PCI
 * position below a switch. Call `vram.remove()` before removing the GPU.
 */
export function amdgpuP2pTarget(gpu: AmdgpuDevice, vram: AmdgpuVram = new AmdgpuVram(gpu)): AmdgpuP2pTarget {
  if (vram.gpu !== gpu) throw new HmmError('EINVAL', `amdgpu ${gpu.name}: the VRAM belongs to another GPU`);
  return {
    topology: vram.topology,
    exporterEndpoint: vram.endpoint,
    vram,
    createExporter: async (pages) =>
      new VramBoExporter(await vram.createBo(pages * PAGE_SIZE, { domain: 'GTT' })),
  };
}

/**
 * One machine per case: `amdgpu0` on a PCIe 4.0 x16 link below switch `sw0` of host bridge `hb0`
 * (forwarding peer traffic), with {@link AMDGPU_CONFORMANCE_VISIBLE_VRAM_BYTES} of visible VRAM
 * exported as the `p2p` target.
 */
export const amdgpuFactory: ConformanceFactory = ({ seed }) => {
  const machine = new Machine({ seed });
  const topology = new PciTopology(machine.cost);
  const sw = topology.addSwitch('sw0', topology.addHostBridge('hb0', 'any'));
  const endpoint = topology.addEndpoint('amdgpu0', sw, machine.cost.link.pcie4PeakGBs);
  const gpu = new AmdgpuDevice(machine, { name: 'amdgpu0', pci: { topology, endpoint } });
  const p2p = amdgpuP2pTarget(
    gpu,
    new AmdgpuVram(gpu, { visibleVramBytes: AMDGPU_CONFORMANCE_VISIBLE_VRAM_BYTES }),
  );
  const opens: AmdgpuOpenCounts = new Map();
  const target: ConformanceTarget = {
    machine,
    open: (process: Process) => Promise.resolve(AmdgpuTestDevice.open(gpu, process, opens)),
    p2p,
    userptr: new AmdgpuUserptrTarget(gpu, opens),
    // Driver unload: VRAM BOs freed and the aperture unpublished, then the GPU removed.
    teardown: () =>
      machine.sched.runTask('amdgpu-unload', async () => {
        await p2p.vram.remove();
        await gpu.remove();
      }),
  };
  return Promise.resolve(target);
};
