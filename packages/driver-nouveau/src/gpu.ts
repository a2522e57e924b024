/**
 * The simulated GPU (the hardware a nouveau-like driver programs): a {@link SimDevice} (its MMU with
 * one page table per VMM, its command queue), a replayable {@link FaultBuffer}, channels that run
 * jobs, a copy engine on its PCIe link, and the VRAM size and bandwidth its kernels see.
 *
 * Hardware counterpart: an NVIDIA Pascal GPU as nouveau drives it (`nvkm_device` with its fault
 * buffer `nvkm_fault_buffer`, channels `nvkm_chan` bound to a VMM, copy engines); nouveau enables
 * SVM only on Pascal, so the defaults describe a GTX 1080 (GP104) on PCIe 3.0 x16.
 *
 * @module
 */
import { CopyEngine, FaultBuffer, HmmError, SimDevice } from '@hmm/core';
import type { Machine, PciEndpoint, PciTopology } from '@hmm/core';

/** Default VRAM: 8 GiB, a GTX 1080's GDDR5X. */
export const NOUVEAU_DEFAULT_VRAM_BYTES = 8 * 1024 ** 3;

/**
 * Default effective VRAM bandwidth of a streaming kernel, GB/s: 242.3.
 * [P] github.com/parallelArchitect/pascal-um-benchmark: GTX 1080, 3 × 1 GiB vec_add on prefetched
 * managed memory, kernel-effective 242.3 GB/s (13.3 ms); 0.76 of the 320 GB/s GDDR5X peak.
 */
export const NOUVEAU_DEFAULT_VRAM_GBS = 242.3;

/** Default BAR1 window exported to peers: 256 MiB (drivers.md §7: 256 MB on a T4 and most consumer boards). */
export const NOUVEAU_DEFAULT_BAR_BYTES = 256 * 1024 * 1024;

/**
 * Default thread blocks in flight (pages of each kernel argument a wave touches before the GPU
 * stalls on faults). [E] estimate, no source found: with a three-argument kernel a wave raises up
 * to 384 faults, of the order of UVM's 256-fault batches (`uvm_perf_fault_batch_count`).
 */
export const NOUVEAU_DEFAULT_BLOCKS_IN_FLIGHT = 128;

/** Options of a {@link NouveauGpu}. */
export interface NouveauGpuOptions {
  /** Device name; default `nouveau<id>`. */
  readonly name?: string;
  /** VRAM bytes (a whole number of 2 MiB chunks); default {@link NOUVEAU_DEFAULT_VRAM_BYTES}. */
  readonly vramBytes?: number;
  /** Effective VRAM bandwidth of kernels, GB/s; default {@link NOUVEAU_DEFAULT_VRAM_GBS}. */
  readonly vramGBs?: number;
  /** PCIe link peak, GB/s; default the cost model's PCIe 3.0 x16 (`link.pcie3PeakGBs`). */
  readonly linkGBs?: number;
  /** Fault buffer entries; default 1024. */
  readonly faultBufferEntries?: number;
  /** BAR1 bytes exported to peers; default {@link NOUVEAU_DEFAULT_BAR_BYTES}. */
  readonly barBytes?: number;
  /** Thread blocks in flight; default {@link NOUVEAU_DEFAULT_BLOCKS_IN_FLIGHT}. */
  readonly blocksInFlight?: number;
  /** Fault rounds a block may take on one wave before the access fails (EFAULT). Default 16. */
  readonly maxFaultRounds?: number;
  /** Place on a PCI bus (needed to export VRAM to peers and to reach peer memory). */
  readonly pci?: { readonly topology: PciTopology; readonly endpoint: PciEndpoint };
}

/** One GPU channel: a command stream bound to a VMM (ASID), named by its instance in fault entries. */
export class NouveauChannel {
  #killed: HmmError | null = null;

  constructor(
    readonly gpu: NouveauGpu,
    /** Instance id carried by this channel's fault entries. */
    readonly inst: number,
    /** The VMM (device address-space context) the channel runs in. */
    readonly asid: number,
  ) {}

  /** The error that killed the channel, or null while it runs. */
  get killed(): HmmError | null {
    return this.#killed;
  }

  /** Kills the channel (a cancelled fault resets the engine): later jobs fail with `error`. */
  kill(error: HmmError): void {
    if (this.#killed === null) this.#killed = error;
  }
}

/** Validates a positive finite option. */
function positive(what: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) {
    throw new HmmError('EINVAL', `nouveau gpu: ${what} must be a finite number > 0, got ${String(v)}`);
  }
  return v;
}

/** The GPU (see the module doc). */
export class NouveauGpu {
  readonly device: SimDevice;
  readonly faults: FaultBuffer;
  readonly copyEngine: CopyEngine;
  readonly vramBytes: number;
  readonly vramGBs: number;
  readonly linkGBs: number;
  readonly barBytes: number;
  readonly blocksInFlight: number;
  readonly maxFaultRounds: number;
  readonly pci: { readonly topology: PciTopology; readonly endpoint: PciEndpoint } | null;
  readonly #channels = new Map<number, NouveauChannel>();
  #nextInst = 1;

  constructor(
    readonly machine: Machine,
    opts: NouveauGpuOptions = {},
  ) {
    const cost = machine.cost;
    this.vramBytes = opts.vramBytes ?? NOUVEAU_DEFAULT_VRAM_BYTES;
    const chunk = 2 * 1024 * 1024;
    if (!(Number.isSafeInteger(this.vramBytes) && this.vramBytes > 0 && this.vramBytes % chunk === 0)) {
      throw new HmmError(
        'EINVAL',
        `nouveau gpu: vramBytes must be a positive multiple of 2 MiB, got ${String(opts.vramBytes)}`,
      );
    }
    this.vramGBs = positive('vramGBs', opts.vramGBs ?? NOUVEAU_DEFAULT_VRAM_GBS);
    this.linkGBs = positive('linkGBs', opts.linkGBs ?? opts.pci?.endpoint.linkGBs ?? cost.link.pcie3PeakGBs);
    this.barBytes = opts.barBytes ?? NOUVEAU_DEFAULT_BAR_BYTES;
    if (!(Number.isSafeInteger(this.barBytes) && this.barBytes >= 0 && this.barBytes % 4096 === 0)) {
      throw new HmmError('EINVAL', `nouveau gpu: barBytes must be a whole number of pages ≥ 0`);
    }
    this.blocksInFlight = opts.blocksInFlight ?? NOUVEAU_DEFAULT_BLOCKS_IN_FLIGHT;
    if (!(Number.isInteger(this.blocksInFlight) && this.blocksInFlight >= 1)) {
      throw new HmmError('EINVAL', `nouveau gpu: blocksInFlight must be an integer ≥ 1`);
    }
    this.maxFaultRounds = opts.maxFaultRounds ?? 16;
    if (!(Number.isInteger(this.maxFaultRounds) && this.maxFaultRounds >= 1)) {
      throw new HmmError('EINVAL', `nouveau gpu: maxFaultRounds must be an integer ≥ 1`);
    }
    this.pci = opts.pci ?? null;
    this.device = new SimDevice(machine.mm, {
      ...(opts.name !== undefined ? { name: opts.name } : {}),
      ...(opts.pci !== undefined ? { pci: opts.pci } : {}),
      // PTE writes (PFNMAP / PFNCLR) are CPU writes to the GPU's page tables; the TLB invalidate a
      // replay needs is paid once per fault batch by the driver, not per command.
      latency: { mapBaseNs: 0, mapPerEntryNs: cost.hmm.rangeFaultPerPresentPageNs },
    });
    this.faults = new FaultBuffer(machine.sched, {
      entries: opts.faultBufferEntries ?? 1024,
      name: `${this.device.name}:fault`,
    });
    this.copyEngine = new CopyEngine(machine.sched, cost, {
      name: `${this.device.name}:ce`,
      linkGBs: this.linkGBs,
    });
  }

  /** Device name. */
  get name(): string {
    return this.device.name;
  }

  /** Effective bandwidth of GPU accesses to system memory over the link, GB/s. */
  get systemGBs(): number {
    return this.pci !== null
      ? this.pci.topology.systemGBs(this.pci.endpoint)
      : this.linkGBs * this.machine.cost.link.pcieEfficiency;
  }

  /** Creates a channel in VMM `asid`; instances are never reused. */
  channelNew(asid: number): NouveauChannel {
    if (this.device.removed) throw new HmmError('ENODEV', `${this.name}: channel on a removed GPU`);
    if (this.device.findMmu(asid) === undefined) {
      throw new HmmError('EINVAL', `${this.name}: channel in VMM ${asid}, which does not exist`);
    }
    const inst = this.#nextInst++;
    const ch = new NouveauChannel(this, inst, asid);
    this.#channels.set(inst, ch);
    return ch;
  }

  /** The channel of instance `inst`, if any. */
  channel(inst: number): NouveauChannel | undefined {
    return this.#channels.get(inst);
  }

  /** Destroys a channel. EINVAL if it is not one of this GPU's. */
  channelDel(ch: NouveauChannel): void {
    if (this.#channels.get(ch.inst) !== ch) {
      throw new HmmError('EINVAL', `${this.name}: channel ${ch.inst} is not live on this GPU`);
    }
    this.#channels.delete(ch.inst);
    this.faults.reset(ch.inst);
  }

  /** Live channels. */
  channels(): NouveauChannel[] {
    return [...this.#channels.values()];
  }

  /** Removes the GPU: stalled accesses fail with ENODEV, queued commands complete, MMUs are cleared. */
  async remove(): Promise<void> {
    this.faults.abort(new HmmError('ENODEV', `${this.name}: the GPU was removed`));
    await this.device.remove();
  }
}
