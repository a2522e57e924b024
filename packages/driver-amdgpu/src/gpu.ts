/**
 * The amdgpu-like GPU (`struct amdgpu_device`): a {@link SimDevice} whose contexts are the GPU VMs
 * of processes (`struct amdgpu_vm`, one per process that opened the device), a graphics ring and a
 * compute ring ({@link AmdgpuRing}), the `notifier_lock` that command submission and the userptr
 * notifiers share, and the link the GPU reaches system memory (GTT) through.
 *
 * Defaults model a Radeon RX 6800 (Navi 21) on PCIe 4.0 x16: 16 GiB VRAM, the link at
 * `cost.link.pcie4PeakGBs` × `cost.link.pcieEfficiency`.
 *
 * @module
 */
import { HmmError, Mutex, SimDevice, hex } from '@hmm/core';
import type { Machine, PciEndpoint, PciTopology, Process } from '@hmm/core';
import { AmdgpuRing } from './ring.js';

/** Options of an {@link AmdgpuDevice}. */
export interface AmdgpuDeviceOptions {
  /** Device name; default `amdgpu<id>`. */
  readonly name?: string;
  /** Link peak to system memory, GB/s; default the cost model's PCIe 4.0 x16. */
  readonly linkGBs?: number;
  /** Place on a PCI bus (needed to export VRAM to peers). */
  readonly pci?: { readonly topology: PciTopology; readonly endpoint: PciEndpoint };
}

/** One process's GPU VM (`struct amdgpu_vm`): a device context of the GPU. */
export class AmdgpuVm {
  constructor(
    readonly gpu: AmdgpuDevice,
    readonly process: Process,
    /** The device context its page tables live in. */
    readonly asid: number,
  ) {}

  /**
   * Writes VM entries: `vpns[i] → pfns[i]` with `perms[i]` (`amdgpu_vm_bo_update`), and waits for
   * the page-table update to land.
   */
  async map(vpns: ArrayLike<number>, pfns: ArrayLike<number>, perms: ArrayLike<number>): Promise<void> {
    if (vpns.length === 0) return;
    await this.gpu.device.queue.submit({ op: 'map', asid: this.asid, vpns, pfns, perms }).wait();
  }

  /** Clears the VM entries of `[startVpn, endVpn)` and waits (`amdgpu_vm_bo_unmap` + TLB flush). */
  async unmap(startVpn: number, endVpn: number): Promise<void> {
    await this.gpu.device.queue.submit({ op: 'unmap', asid: this.asid, startVpn, endVpn }).wait();
  }

  /** Entries mapped in `[startVpn, endVpn)`. */
  mappedPages(startVpn: number, endVpn: number): number {
    let n = 0;
    this.gpu.device.findMmu(this.asid)?.forEachEntry(startVpn, endVpn, () => {
      n++;
    });
    return n;
  }
}

/** One GPU. */
export class AmdgpuDevice {
  readonly name: string;
  readonly device: SimDevice;
  /** `adev->notifier_lock`: CS's final userptr check and the notifiers' sequence updates. */
  readonly notifierLock: Mutex;
  /** The graphics ring (`gfx`). */
  readonly gfx: AmdgpuRing;
  /** The kernel compute ring (`comp_1.0.0`; KFD user queues are in `kfd.ts`). */
  readonly compute: AmdgpuRing;
  /** Effective bandwidth to system memory (GTT), GB/s. */
  readonly systemGBs: number;
  readonly pci: { readonly topology: PciTopology; readonly endpoint: PciEndpoint } | null;
  readonly #vms = new Map<Process, AmdgpuVm>();
  #removed = false;

  constructor(
    readonly machine: Machine,
    opts: AmdgpuDeviceOptions = {},
  ) {
    this.device = new SimDevice(machine.mm, {
      ...(opts.name === undefined ? {} : { name: opts.name }),
      ...(opts.pci === undefined ? {} : { pci: opts.pci }),
    });
    this.name = opts.name ?? `amdgpu${this.device.id}`;
    this.pci = opts.pci ?? null;
    const link = opts.linkGBs ?? machine.cost.link.pcie4PeakGBs;
    if (!(Number.isFinite(link) && link > 0)) {
      throw new HmmError('EINVAL', `amdgpu ${this.name}: linkGBs ${String(link)} is not a positive number`);
    }
    this.systemGBs = link * machine.cost.link.pcieEfficiency;
    this.notifierLock = new Mutex(machine.sched, `${this.name}.notifier_lock`);
    this.gfx = new AmdgpuRing(this, 'gfx');
    this.compute = new AmdgpuRing(this, 'comp_1.0.0');
  }

  get removed(): boolean {
    return this.#removed;
  }

  /** ENODEV once removed. */
  checkAlive(what: string): void {
    if (this.#removed)
      throw new HmmError('ENODEV', `amdgpu ${this.name}: ${what} after the device was removed`);
  }

  /** The VM of `process` (`amdgpu_driver_open_kms` creates it on first open). */
  vm(process: Process): AmdgpuVm {
    this.checkAlive('open');
    let vm = this.#vms.get(process);
    if (vm === undefined) {
      vm = new AmdgpuVm(this, process, this.device.allocAsid());
      this.#vms.set(process, vm);
    }
    return vm;
  }

  /** Tears down the VM of `process` (`amdgpu_driver_postclose_kms`): entries cleared, context freed. */
  async closeVm(process: Process): Promise<void> {
    const vm = this.#vms.get(process);
    if (vm === undefined) {
      throw new HmmError(
        'EINVAL',
        `amdgpu ${this.name}: process ${process.pid} has no open VM (closed twice?)`,
      );
    }
    this.#vms.delete(process);
    await this.device.queue.submit({ op: 'unmap-all', asid: vm.asid }).wait();
    this.device.freeAsid(vm.asid);
  }

  /** Simulated ns to move `bytes` between the GPU and system memory. */
  systemNs(bytes: number): number {
    return bytes / this.systemGBs;
  }

  /** Hot unplug: the rings stop taking jobs (pending ones are flushed with an error), VMs dropped. */
  async remove(): Promise<void> {
    if (this.#removed) return;
    this.#removed = true;
    this.gfx.stop();
    this.compute.stop();
    for (const p of [...this.#vms.keys()]) await this.closeVm(p);
    await this.device.remove();
  }

  toString(): string {
    return `${this.name}@${hex(this.device.id)}`;
  }
}
