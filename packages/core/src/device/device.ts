/**
 * A simulated device (GPU, RDMA NIC, the kernel's `dmirror` test device): a command queue through
 * which its driver programs it, one device MMU per address-space context, and the memory accesses
 * its engines make (a GPU kernel's loads and stores, a NIC's DMA) through those MMUs into the
 * machine's physical memory, with replayable faults reported to the driver.
 *
 * Hardware counterpart: the device itself; kernel side, the driver's `struct device` plus what
 * `lib/test_hmm.c` emulates in software (`dmirror_do_read` / `dmirror_do_write` walking its
 * page table and faulting with `hmm_range_fault`).
 *
 * @module
 */
import type { PciEndpoint, PciTopology } from '../pci/topology.js';
import { p2pdmaResourceOf } from '../pci/p2pdma.js';
import { PG } from '../mm/page-flags.js';
import { HmmError, hex } from '../errors/errno.js';
import type { MmContext } from '../mm/mm-context.js';
import { PAGE_SIZE, TASK_SIZE } from '../mm/constants.js';
import { CommandQueue } from './command-queue.js';
import type { CommandLatency, CommandQueueHost } from './command-queue.js';
import { DeviceMmu, DevPerm } from './device-mmu.js';
import type { DevPermBits } from './device-mmu.js';
import './trace-events.js';

/** What a device access does; each needs one {@link DevPerm} bit: READ, WRITE, ATOMIC. */
export type DeviceAccessKind = 'read' | 'write' | 'atomic';

/** A device fault as the driver's fault handler receives it (one fault-buffer entry). */
export interface DeviceFault {
  /** Address-space context of the access. */
  readonly asid: number;
  /** Page-aligned virtual address of the page that faulted. */
  readonly address: number;
  /** The access that needed a permission the entry lacks (or found no entry). */
  readonly access: DeviceAccessKind;
}

/**
 * The driver's fault handler: makes the page accessible (typically `hmmRangeFault` under the
 * interval-notifier sequence protocol, then a map command whose fence it awaits) and resolves;
 * the device then replays the access. An error it throws fails the access with that error (the
 * driver cancels the faulting access). Kernel: the driver's fault-buffer interrupt handler /
 * ODP page-fault work.
 */
export type DeviceFaultHandler = (fault: DeviceFault) => Promise<void>;

/**
 * Called for every page a device access touches, after translation and before the bytes move:
 * the hook a sanitizer uses to check each device access. May throw to fail the access.
 */
export type DeviceAccessObserver = (asid: number, vpn: number, pfn: number, kind: DeviceAccessKind) => void;

/** Counters of one device (see {@link SimDevice.stats}). */
export interface DeviceStats {
  /** Access calls started (read, write, atomic). */
  readonly accesses: number;
  /** Pages translated and accessed (one access may touch several). */
  readonly pagesAccessed: number;
  /** Device faults raised: handler invocations plus misses with no handler registered. */
  readonly faults: number;
  /** Accesses that failed with EFAULT because a page stayed unmapped. */
  readonly failedAccesses: number;
  /** Bytes copied out of memory by reads. */
  readonly bytesRead: number;
  /** Bytes copied into memory by writes. */
  readonly bytesWritten: number;
  /** Atomic operations done. */
  readonly atomics: number;
  /** Commands completed by the queue. */
  readonly commands: number;
}

/** Options of {@link SimDevice}. */
export interface SimDeviceOptions {
  /** Name in traces and messages. Default `dev<id>`. */
  readonly name?: string;
  /** Id, unique among this machine's devices. Default: the next free one, from 1. */
  readonly id?: number;
  /** Overrides of the command latencies (see `defaultCommandLatency`). */
  readonly latency?: Partial<CommandLatency>;
  /** Fault-handler rounds per page within one access before it fails with EFAULT. Default 16. */
  readonly maxFaultRetries?: number;
  /**
   * The device's place on the PCI bus. When given, each access charges simulated time for the bytes
   * it moves over the bus, by path: another device's peer memory (BAR) at the peer path's bandwidth
   * (`PciTopology.pathGBs`), system memory at the device's link rate; its own memory costs nothing
   * here. Without it, accesses take no simulated time (as before).
   */
  readonly pci?: { readonly topology: PciTopology; readonly endpoint: PciEndpoint };
}

/** Default bound on fault-handler rounds for one page within one access. */
export const DEVICE_MAX_FAULT_RETRIES = 16;

const ids = new WeakMap<MmContext, { next: number; used: Set<number> }>();

function allocateId(ctx: MmContext, wanted: number | undefined): number {
  let state = ids.get(ctx);
  if (state === undefined) {
    state = { next: 1, used: new Set() };
    ids.set(ctx, state);
  }
  if (wanted !== undefined) {
    if (!(Number.isInteger(wanted) && wanted >= 0 && wanted <= 0xffff)) {
      throw new HmmError('EINVAL', `SimDevice: id ${String(wanted)} is not an integer in [0, 65535]`);
    }
    if (state.used.has(wanted)) {
      throw new HmmError(
        'EEXIST',
        `SimDevice: id ${wanted} is already taken by another device of this machine`,
      );
    }
    state.used.add(wanted);
    return wanted;
  }
  while (state.used.has(state.next)) state.next++;
  state.used.add(state.next);
  return state.next++;
}

const U32_MAX = 0xffff_ffff;

function permName(need: DevPermBits): string {
  return need === DevPerm.READ ? 'READ' : need === DevPerm.WRITE ? 'WRITE' : 'ATOMIC';
}

/**
 * One simulated device attached to a machine's physical memory.
 *
 * Drivers change what the device can reach only by submitting commands to {@link queue}; the
 * device reads its MMUs on every access. An access walks the MMU of its ASID page by page; a page
 * whose entry lacks the needed permission raises a device fault: the registered handler runs, then
 * the device replays that page (replayable faults), up to `maxFaultRetries` rounds per page, after
 * which the access fails with EFAULT. Pages already accessed stay accessed (no rollback, as on
 * hardware). Between faults an access does not yield, so it sees one consistent MMU state per page.
 *
 * Simplifications: an access takes no simulated time (the link's timing belongs to a copy engine);
 * device writes do not set the page's dirty bit (as in the kernel, the driver must dirty pages it
 * lets the device write); no device TLB is modelled (see {@link DeviceMmu}).
 */
export class SimDevice implements CommandQueueHost {
  /** Unique among this machine's devices. */
  readonly id: number;
  /** Name in traces and messages. */
  readonly name: string;
  /** The machine's memory the device reads and writes. */
  readonly ctx: MmContext;
  /** The device's command queue: the driver's only way to program its MMUs. */
  readonly queue: CommandQueue;
  /** Fault-handler rounds per page within one access before EFAULT. */
  readonly maxFaultRetries: number;
  /** Where the device sits on the PCI bus, or null (accesses then take no simulated time). */
  readonly pci: { readonly topology: PciTopology; readonly endpoint: PciEndpoint } | null;
  readonly #mmus = new Map<number, DeviceMmu>();
  readonly #observers: DeviceAccessObserver[] = [];
  #faultHandler: DeviceFaultHandler | null = null;
  readonly #asidHandlers = new Map<number, DeviceFaultHandler>();
  #nextAsid = 1;
  #removed = false;
  #accesses = 0;
  #pages = 0;
  #faults = 0;
  #failed = 0;
  #bytesRead = 0;
  #bytesWritten = 0;
  #atomics = 0;

  /**
   * Attaches a device to the machine whose memory manager is `ctx` (`machine.mm`). EINVAL for a bad
   * option, EEXIST for an id already taken.
   */
  constructor(ctx: MmContext, options: SimDeviceOptions = {}) {
    const retries = options.maxFaultRetries ?? DEVICE_MAX_FAULT_RETRIES;
    if (!(Number.isInteger(retries) && retries >= 1)) {
      throw new HmmError(
        'EINVAL',
        `SimDevice: maxFaultRetries must be an integer ≥ 1, got ${String(retries)}`,
      );
    }
    if (options.name !== undefined && (typeof options.name !== 'string' || options.name.length === 0)) {
      throw new HmmError('EINVAL', 'SimDevice: name must be a non-empty string');
    }
    this.ctx = ctx;
    this.maxFaultRetries = retries;
    this.pci = options.pci ?? null;
    const id = allocateId(ctx, options.id);
    this.id = id;
    this.name = options.name ?? `dev${id}`;
    try {
      this.queue = new CommandQueue(this, options.latency);
    } catch (e) {
      ids.get(ctx)?.used.delete(id);
      throw e;
    }
  }

  /** True once {@link remove} has begun: accesses and submissions fail with ENODEV. */
  get removed(): boolean {
    return this.#removed;
  }

  /** The device MMU of `asid`, created empty if absent. EINVAL if `asid` is not a u32. */
  mmu(asid: number): DeviceMmu {
    let mmu = this.#mmus.get(asid);
    if (mmu === undefined) {
      this.#checkAsid('mmu', asid);
      mmu = new DeviceMmu(asid);
      this.#mmus.set(asid, mmu);
    }
    return mmu;
  }

  /** The device MMU of `asid` if it exists (never creates one). */
  findMmu(asid: number): DeviceMmu | undefined {
    return this.#mmus.get(asid);
  }

  /**
   * Allocates an unused address-space context (ASID) with an empty device MMU (a GPU channel's VMM,
   * a NIC protection domain). Release it with {@link freeAsid}.
   */
  allocAsid(): number {
    while (this.#mmus.has(this.#nextAsid)) this.#nextAsid++;
    const asid = this.#nextAsid++;
    this.mmu(asid);
    return asid;
  }

  /**
   * Forgets an ASID: its device MMU and fault handler. Its entries must already be unmapped through
   * the queue (EBUSY otherwise: the device would lose track of live mappings); EINVAL if unknown.
   */
  freeAsid(asid: number): void {
    const mmu = this.#mmus.get(asid);
    if (mmu === undefined) throw new HmmError('EINVAL', `device ${this.name}: asid ${asid} is not allocated`);
    if (mmu.size !== 0) {
      throw new HmmError(
        'EBUSY',
        `device ${this.name}: asid ${asid} still has ${mmu.size} mappings; unmap them first`,
      );
    }
    this.#mmus.delete(asid);
    this.#asidHandlers.delete(asid);
  }

  /** ASIDs that have a device MMU, ascending. */
  asids(): number[] {
    return [...this.#mmus.keys()].sort((a, b) => a - b);
  }

  /**
   * Registers the driver's fault handler, replacing any; `null` unregisters it (then every miss is
   * EFAULT at once). With `asid`, the handler serves that context only and takes precedence over the
   * device-wide one. Kernel: the driver's fault-buffer interrupt / ODP page-fault handler.
   */
  setFaultHandler(fn: DeviceFaultHandler | null, asid?: number): void {
    if (fn !== null && typeof fn !== 'function') {
      throw new HmmError('EINVAL', `device ${this.name}: the fault handler must be a function or null`);
    }
    if (asid !== undefined) {
      // A handler for one context (one mirror) takes precedence over the device-wide one.
      this.#checkAsid('setFaultHandler', asid);
      if (fn === null) this.#asidHandlers.delete(asid);
      else this.#asidHandlers.set(asid, fn);
      return;
    }
    this.#faultHandler = fn;
  }

  /**
   * Adds an observer called for every page accessed, before the copy (see
   * {@link DeviceAccessObserver}); returns a function that removes it.
   */
  onAccess(fn: DeviceAccessObserver): () => void {
    if (typeof fn !== 'function') {
      throw new HmmError('EINVAL', `device ${this.name}: an access observer must be a function`);
    }
    this.#observers.push(fn);
    return () => {
      const i = this.#observers.indexOf(fn);
      if (i >= 0) this.#observers.splice(i, 1);
    };
  }

  /**
   * A device memory access of `len` bytes at virtual address `addr` of `asid`:
   * - `'read'`: copies the bytes out of the mapped frames and returns them (needs READ);
   * - `'write'`: copies `data` (exactly `len` bytes) into the mapped frames (needs WRITE);
   * - `'atomic'`: on the 4-byte aligned little-endian u32 at `addr` (`len` = 4), adds `delta`
   *   modulo 2^32 and returns the old value (needs ATOMIC).
   *
   * Faults as described on {@link SimDevice}. Rejects with ENODEV if the device is removed (also
   * when it is removed while the access waits on a fault); EFAULT if a page stays unmapped (no
   * fault handler, or still missing after `maxFaultRetries` handler rounds), or if the range
   * leaves the 2^47-byte address space; EINVAL for a malformed argument; or the fault handler's
   * own error. Must run inside a simulated task when a fault handler may block.
   */
  access(asid: number, addr: number, len: number, kind: 'read'): Promise<Uint8Array>;
  access(asid: number, addr: number, len: number, kind: 'write', data: Uint8Array): Promise<void>;
  access(asid: number, addr: number, len: 4, kind: 'atomic', delta: number): Promise<number>;
  access(
    asid: number,
    addr: number,
    len: number,
    kind: DeviceAccessKind,
    data?: Uint8Array | number,
  ): Promise<Uint8Array | number | void>;
  async access(
    asid: number,
    addr: number,
    len: number,
    kind: DeviceAccessKind,
    data?: Uint8Array | number,
  ): Promise<Uint8Array | number | void> {
    this.#checkAccess(asid, addr, len, kind, data);
    this.#accesses++;
    if (kind === 'atomic') return this.#atomicAdd(asid, addr, data as number);
    const content = this.ctx.mem.content;
    const out = kind === 'read' ? new Uint8Array(len) : null;
    const need = kind === 'read' ? DevPerm.READ : DevPerm.WRITE;
    const end = addr + len;
    let busNs = 0;
    for (let pos = addr; pos < end;) {
      const vpn = Math.floor(pos / PAGE_SIZE);
      const off = pos - vpn * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, end - pos);
      const pfn = this.#lookup(asid, vpn, need) ?? (await this.#fault(asid, vpn, kind, need));
      this.#touch(asid, vpn, pfn, kind);
      busNs += this.busNs(pfn, n);
      if (out !== null) {
        content.read(pfn, off, out, pos - addr, n);
        this.#bytesRead += n;
      } else {
        content.write(pfn, off, data as Uint8Array, pos - addr, n);
        this.#bytesWritten += n;
      }
      pos += n;
    }
    if (busNs > 0 && this.ctx.sched.current !== null) await this.ctx.sched.sleep(busNs);
    return out ?? undefined;
  }

  /**
   * Simulated ns to move `bytes` of frame `pfn` over the bus to or from this device, by path: another
   * device's BAR at the peer path's bandwidth (staged through system memory at half the link rate
   * without a peer path), system memory at the link rate, this device's own memory free. 0 without
   * a PCI position. Engines that move data themselves (a NIC's packets, a GPU's jobs) price with it.
   */
  busNs(pfn: number, bytes: number): number {
    if (this.pci === null) return 0;
    const { topology, endpoint } = this.pci;
    const res = p2pdmaResourceOf(this.ctx, pfn);
    if (res !== undefined) {
      if (res.provider === endpoint) return 0;
      const gbs = topology.pathGBs(res.provider, endpoint);
      // No peer path: the access cannot happen as peer DMA; price it as staged through system memory.
      return bytes / (gbs > 0 ? gbs : topology.systemGBs(endpoint) / 2);
    }
    if ((this.ctx.mem.flags[pfn]! & PG.ZONE_DEVICE) !== 0) return 0; // device memory: on the device
    return bytes / topology.systemGBs(endpoint);
  }

  /** `access(asid, addr, len, 'read')`. */
  read(asid: number, addr: number, len: number): Promise<Uint8Array> {
    return this.access(asid, addr, len, 'read');
  }

  /** `access(asid, addr, data.length, 'write', data)`. */
  write(asid: number, addr: number, data: Uint8Array): Promise<void> {
    return this.access(asid, addr, data?.length, 'write', data);
  }

  /** `access(asid, addr, 4, 'atomic', delta)`: atomic add on a u32, returning the old value. */
  atomicAdd(asid: number, addr: number, delta: number): Promise<number> {
    return this.access(asid, addr, 4, 'atomic', delta);
  }

  /**
   * Translation for an engine of this device that handles its own faults (a GPU's SMs, which
   * batch faults into a fault buffer instead of calling the fault handler page by page): the frame
   * of `vpn` if the entry of `asid` grants `kind`, else -1. Counts nothing; pair it with
   * {@link noteAccess} for every page the engine then touches.
   */
  translate(asid: number, vpn: number, kind: DeviceAccessKind): number {
    const need = kind === 'read' ? DevPerm.READ : kind === 'write' ? DevPerm.WRITE : DevPerm.ATOMIC;
    return this.#lookup(asid, vpn, need) ?? -1;
  }

  /**
   * Records that an engine accessed `bytes` of page `vpn` of `asid` through frame `pfn` (found by
   * {@link translate} after the last fault): runs the access observers (a sanitizer may throw to
   * fail the access) and counts the page and bytes. ENODEV once the device is removed.
   */
  noteAccess(asid: number, vpn: number, pfn: number, kind: DeviceAccessKind, bytes: number): void {
    if (this.#removed) {
      throw new HmmError('ENODEV', `device ${this.name}: ${kind} access after the device was removed`);
    }
    this.#touch(asid, vpn, pfn, kind);
    if (kind === 'read') this.#bytesRead += bytes;
    else if (kind === 'write') this.#bytesWritten += bytes;
    else this.#atomics++;
  }

  /**
   * Records a fault an engine raised itself (written to its fault buffer): counts it and emits
   * `device.fault`, as a fault of {@link access} does. `attempt` counts faults of this page within
   * one engine access, from 1.
   */
  noteFault(asid: number, address: number, kind: DeviceAccessKind, attempt = 1): void {
    this.#faults++;
    this.#traceFault(asid, address, kind, attempt, true);
  }

  /** Counts one engine access call (a GPU job's block) in {@link stats}. */
  noteAccessCall(): void {
    this.#accesses++;
  }

  /** A snapshot of the device's counters. */
  stats(): DeviceStats {
    return {
      accesses: this.#accesses,
      pagesAccessed: this.#pages,
      faults: this.#faults,
      failedAccesses: this.#failed,
      bytesRead: this.#bytesRead,
      bytesWritten: this.#bytesWritten,
      atomics: this.#atomics,
      commands: this.queue.completed,
    };
  }

  /**
   * Removes the device (hot unplug / driver unbind): from now on accesses and submissions fail with
   * ENODEV; commands already queued still complete; then every MMU is cleared. Must run inside a
   * simulated task if commands are pending. Idempotent.
   */
  async remove(): Promise<void> {
    if (this.#removed) return;
    this.#removed = true;
    this.queue.stop();
    await this.queue.idle();
    for (const mmu of this.#mmus.values()) mmu.clearAll();
    this.#faultHandler = null;
    this.#asidHandlers.clear();
  }

  async #atomicAdd(asid: number, addr: number, delta: number): Promise<number> {
    const vpn = Math.floor(addr / PAGE_SIZE);
    const off = addr - vpn * PAGE_SIZE;
    const pfn =
      this.#lookup(asid, vpn, DevPerm.ATOMIC) ?? (await this.#fault(asid, vpn, 'atomic', DevPerm.ATOMIC));
    this.#touch(asid, vpn, pfn, 'atomic');
    const content = this.ctx.mem.content;
    const word = new Uint8Array(4);
    content.read(pfn, off, word, 0, 4);
    const view = new DataView(word.buffer);
    const old = view.getUint32(0, true);
    view.setUint32(0, (old + delta) >>> 0, true);
    content.write(pfn, off, word, 0, 4);
    this.#atomics++;
    return old;
  }

  /** The frame of `vpn` if its entry grants `need`, else null. */
  #lookup(asid: number, vpn: number, need: DevPermBits): number | null {
    const mmu = this.#mmus.get(asid);
    if (mmu === undefined || (mmu.lookup(vpn) & need) === 0) return null;
    return mmu.pfnOf(vpn);
  }

  /** Raises device faults on `vpn` until it is mapped with `need`; returns its frame. */
  async #fault(asid: number, vpn: number, kind: DeviceAccessKind, need: DevPermBits): Promise<number> {
    const address = vpn * PAGE_SIZE;
    for (let attempt = 1; ; attempt++) {
      const handler = this.#asidHandlers.get(asid) ?? this.#faultHandler;
      this.#faults++;
      this.#traceFault(asid, address, kind, attempt, handler !== null);
      if (handler === null) {
        this.#failed++;
        throw new HmmError(
          'EFAULT',
          `device ${this.name}: ${kind} of asid ${asid} at ${hex(address)} has no device mapping with ${permName(need)} permission and no fault handler is registered; the driver did not map it`,
          { address },
        );
      }
      await handler({ asid, address, access: kind });
      if (this.#removed) {
        throw new HmmError(
          'ENODEV',
          `device ${this.name}: removed while its ${kind} of asid ${asid} at ${hex(address)} waited on a fault`,
          { address },
        );
      }
      const pfn = this.#lookup(asid, vpn, need);
      if (pfn !== null) return pfn;
      if (attempt >= this.maxFaultRetries) {
        this.#failed++;
        throw new HmmError(
          'EFAULT',
          `device ${this.name}: ${kind} of asid ${asid} at ${hex(address)} still has no device mapping with ${permName(need)} permission after ${attempt} fault-handler rounds; the driver did not map it (its fault handler must submit a map command granting ${permName(need)} and wait for its fence)`,
          { address },
        );
      }
    }
  }

  #touch(asid: number, vpn: number, pfn: number, kind: DeviceAccessKind): void {
    this.#pages++;
    for (const fn of this.#observers) fn(asid, vpn, pfn, kind);
  }

  #traceFault(
    asid: number,
    address: number,
    access: DeviceAccessKind,
    attempt: number,
    handled: boolean,
  ): void {
    const bus = this.ctx.trace;
    bus.count('device.fault');
    if (!bus.enabled('device.fault')) return;
    bus.emit({
      type: 'device.fault',
      ts: this.ctx.sched.now,
      device: this.id,
      name: this.name,
      asid,
      address,
      access,
      attempt,
      handled,
    });
  }

  #checkAsid(where: string, asid: number): void {
    if (!(Number.isInteger(asid) && asid >= 0 && asid <= U32_MAX)) {
      throw new HmmError('EINVAL', `device ${this.name}: ${where}: ASID ${String(asid)} is not a u32`);
    }
  }

  #checkAccess(
    asid: number,
    addr: number,
    len: number,
    kind: DeviceAccessKind,
    data: Uint8Array | number | undefined,
  ): void {
    if (this.#removed) {
      throw new HmmError(
        'ENODEV',
        `device ${this.name}: ${String(kind)} access after the device was removed`,
      );
    }
    this.#checkAsid(String(kind), asid);
    if (kind !== 'read' && kind !== 'write' && kind !== 'atomic') {
      throw new HmmError(
        'EINVAL',
        `device ${this.name}: unknown access kind ${JSON.stringify(kind)} (read, write, atomic)`,
      );
    }
    if (!(Number.isInteger(addr) && addr >= 0) || !(Number.isInteger(len) && len >= 0)) {
      throw new HmmError(
        'EINVAL',
        `device ${this.name}: ${kind} needs an integer address and length ≥ 0, got ${String(addr)}, ${String(len)}`,
      );
    }
    if (addr + len > TASK_SIZE) {
      throw new HmmError(
        'EFAULT',
        `device ${this.name}: ${kind} of [${hex(addr)}, ${hex(addr + len)}) leaves the 2^47-byte address space`,
        { address: addr },
      );
    }
    if (kind === 'write' && !(data instanceof Uint8Array && data.length === len)) {
      throw new HmmError(
        'EINVAL',
        `device ${this.name}: write of ${len} bytes needs a Uint8Array of exactly ${len} bytes`,
      );
    }
    if (kind === 'atomic') {
      if (len !== 4 || addr % 4 !== 0) {
        throw new HmmError(
          'EINVAL',
          `device ${this.name}: an atomic works on one 4-byte aligned word, got ${len} bytes at ${hex(addr)}`,
          { address: addr },
        );
      }
      if (!(typeof data === 'number' && Number.isInteger(data))) {
        throw new HmmError(
          'EINVAL',
          `device ${this.name}: atomic add needs an integer delta, got ${String(data)}`,
        );
      }
    }
  }
}
