/**
 * The device's command queue: the only way a driver programs the device. Commands are executed in
 * submission order by the device's command processor, each after a simulated latency, and each
 * completes a {@link Fence}.
 *
 * Hardware counterpart: a GPU channel / ring buffer with its doorbell (nouveau `nouveau_channel`,
 * amdgpu `amdgpu_ring`), an RDMA NIC's command / work queue (mlx5 UMR work requests updating the
 * MTT); kernel: `dma_fence` completion of each submission.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import type { CostModel } from '../sim/cost-model.js';
import type { SimTask } from '../sim/scheduler.js';
import { WaitQueue } from '../sim/wait.js';
import type { MmContext } from '../mm/mm-context.js';
import { ZERO_PFN } from '../mm/physmem.js';
import { DEVICE_MMU_VPN_LIMIT, DevPerm } from './device-mmu.js';
import type { DeviceMmu } from './device-mmu.js';
import { Fence } from './fence.js';
import './trace-events.js';

/**
 * Writes device page-table entries of `asid`: entry `i` maps `vpns[i]` to frame `pfns[i]` with
 * permissions `perms[i]` (a non-empty combination of {@link DevPerm}), replacing any entry; later
 * entries win over earlier ones for the same vpn. The entries are given as three parallel arrays
 * (struct of arrays, typed arrays recommended: `Float64Array`, `Uint32Array`, `Uint8Array`) so
 * that a 512-page fault costs no object per page; they are copied at submission, so the caller may
 * reuse them at once.
 */
export interface MapCommand {
  readonly op: 'map';
  readonly asid: number;
  readonly vpns: ArrayLike<number>;
  readonly pfns: ArrayLike<number>;
  readonly perms: ArrayLike<number>;
}

/** Clears the entries of `asid` with `startVpn ≤ vpn < endVpn`, including the device TLB's copies. */
export interface UnmapCommand {
  readonly op: 'unmap';
  readonly asid: number;
  readonly startVpn: number;
  readonly endVpn: number;
}

/** Clears every entry of `asid` (an address-space teardown / `mmu_notifier` release). */
export interface UnmapAllCommand {
  readonly op: 'unmap-all';
  readonly asid: number;
}

/** Does nothing; its fence signals once every earlier command has completed (a queue flush). */
export interface NopCommand {
  readonly op: 'nop';
}

/** A command a driver submits to a device's {@link CommandQueue}. */
export type DeviceCommand = MapCommand | UnmapCommand | UnmapAllCommand | NopCommand;

/** Name of a command. */
export type DeviceCommandOp = DeviceCommand['op'];

/**
 * Simulated execution time of each command, ns. Build the defaults with
 * {@link defaultCommandLatency}.
 */
export interface CommandLatency {
  /** Fixed cost of a map command. Default `notifier.deviceTlbInvalNs`. */
  readonly mapBaseNs: number;
  /** Added per entry of a map command. Default `hmm.rangeFaultPerPresentPageNs`. */
  readonly mapPerEntryNs: number;
  /** Cost of an unmap or unmap-all command, whatever its size. Default `notifier.deviceTlbInvalNs`. */
  readonly unmapNs: number;
  /** Cost of a nop. Default 0. */
  readonly nopNs: number;
}

/**
 * The default command latencies, taken from the cost model (no device-command key exists yet):
 * - map base = `notifier.deviceTlbInvalNs` (an estimate, [E]) — one command round trip through the device (doorbell,
 *   fetch, page-table write, TLB invalidate so that a replayed access sees the new entry, as UVM
 *   does after servicing faults, completion); the same hardware path as an unmap.
 * - map per entry = `hmm.rangeFaultPerPresentPageNs` (an estimate, [E]) — one PTE written, of the order of one
 *   page of a page-table walk.
 * - unmap / unmap-all = `notifier.deviceTlbInvalNs` (an estimate, [E]) — PTE clear + device TLB invalidate, the
 *   cost the key was defined for; independent of the range size (a ranged or full invalidate).
 * - nop = 0: a flush marker.
 */
export function defaultCommandLatency(cost: CostModel): CommandLatency {
  return {
    mapBaseNs: cost.notifier.deviceTlbInvalNs,
    mapPerEntryNs: cost.hmm.rangeFaultPerPresentPageNs,
    unmapNs: cost.notifier.deviceTlbInvalNs,
    nopNs: 0,
  };
}

/**
 * What a queue needs from its device.
 * @internal
 */
export interface CommandQueueHost {
  readonly id: number;
  readonly name: string;
  readonly ctx: MmContext;
  /** The MMU of `asid`, created if absent. */
  mmu(asid: number): DeviceMmu;
  /** The MMU of `asid` if it exists. */
  findMmu(asid: number): DeviceMmu | undefined;
}

interface Job {
  readonly cmd: DeviceCommand;
  readonly fence: Fence;
}

const U32_MAX = 0xffff_ffff;
const ALL_PERMS = DevPerm.READ | DevPerm.WRITE | DevPerm.ATOMIC;

function isVpn(v: number, inclusiveLimit: boolean): boolean {
  return (
    Number.isInteger(v) && v >= 0 && (inclusiveLimit ? v <= DEVICE_MMU_VPN_LIMIT : v < DEVICE_MMU_VPN_LIMIT)
  );
}

/**
 * A device's command queue. {@link submit} validates a command, copies it onto the ring and returns
 * its fence; the command processor (a daemon task named `<device>.queue`, spawned on the first
 * submission) executes commands one at a time in FIFO order: it sleeps for the command's
 * {@link CommandLatency}, applies it to the device MMU of its ASID, emits `device.cmd` and signals
 * the fence. A command's effect is therefore visible to device accesses exactly from its fence's
 * `signaledAt`.
 */
export class CommandQueue {
  /** Execution times in use. */
  readonly latency: Readonly<CommandLatency>;
  readonly #host: CommandQueueHost;
  readonly #doorbell: WaitQueue;
  readonly #ring: (Job | undefined)[] = [];
  #head = 0;
  #seqno = 0;
  #completed = 0;
  #last: Fence | null = null;
  #stopped = false;
  #worker: SimTask<void> | null = null;

  /** @internal Created by its `SimDevice`. EINVAL for a latency that is not a finite number ≥ 0. */
  constructor(host: CommandQueueHost, latency: Partial<CommandLatency> = {}) {
    this.#host = host;
    const merged: Record<string, number> = { ...defaultCommandLatency(host.ctx.cost) };
    for (const [key, value] of Object.entries(latency)) {
      if (!Object.hasOwn(merged, key)) {
        throw new HmmError(
          'EINVAL',
          `device ${host.name}: unknown command latency '${key}' (known: ${Object.keys(merged).join(', ')})`,
        );
      }
      if (value === undefined) continue;
      if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
        throw new HmmError(
          'EINVAL',
          `device ${host.name}: command latency ${key} must be a finite number of ns ≥ 0, got ${String(value)}`,
        );
      }
      merged[key] = value;
    }
    this.latency = Object.freeze(merged as unknown as CommandLatency);
    this.#doorbell = new WaitQueue(host.ctx.sched, `${host.name}.queue doorbell`);
  }

  /** Commands submitted so far. */
  get submitted(): number {
    return this.#seqno;
  }

  /** Commands completed so far. */
  get completed(): number {
    return this.#completed;
  }

  /** Commands submitted and not yet completed. */
  get pending(): number {
    return this.#ring.length - this.#head;
  }

  /** True once the device is being removed: submissions fail with ENODEV. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Queues `cmd` and returns its fence; never blocks. Kernel: a driver's job submission (writing
   * the ring and ringing the doorbell) returning its `dma_fence`.
   *
   * Throws, queuing nothing: ENODEV if the device is stopped or removed; EINVAL for a malformed
   * command: unknown op, an ASID that is not a u32, a vpn outside [0, 2^35), unmap start > end,
   * map arrays of different lengths, a frame that is not a RAM frame of this machine, a
   * permission that is not a non-empty combination of DevPerm bits, or a writable or atomic entry
   * for the zero page.
   */
  submit(cmd: DeviceCommand): Fence {
    const host = this.#host;
    if (this.#stopped) {
      throw new HmmError(
        'ENODEV',
        `device ${host.name}: command submitted after the device was stopped or removed`,
      );
    }
    const job: Job = {
      cmd: this.#validate(cmd),
      fence: new Fence(host.ctx.sched, this.#seqno + 1, `${host.name}.queue`),
    };
    this.#seqno++;
    this.#ring.push(job);
    this.#last = job.fence;
    if (this.#worker === null) {
      this.#worker = host.ctx.sched.spawn(`${host.name}.queue`, () => this.#process(), { daemon: true });
    } else {
      this.#doorbell.wakeOne();
    }
    return job.fence;
  }

  /**
   * Waits until every command submitted so far has completed (kernel: waiting on the last fence of
   * the timeline, `dma_fence_wait()`); resolves at once if none is pending. Commands submitted while
   * it waits are not waited for. Rejects with EDEADLK when it would block outside a task.
   */
  idle(): Promise<void> {
    const last = this.#last;
    return last === null ? Promise.resolve() : last.wait();
  }

  /**
   * Refuses further submissions (ENODEV); commands already queued still execute, then the command
   * processor ends. Idempotent.
   * @internal Called by `SimDevice.remove()`.
   */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#doorbell.wakeAll();
  }

  /** The command processor: runs until stopped and drained. */
  async #process(): Promise<void> {
    const host = this.#host;
    const sched = host.ctx.sched;
    for (;;) {
      await this.#doorbell.waitUntil(
        () => this.#head < this.#ring.length || this.#stopped,
        `${host.name}.queue: waiting for commands`,
      );
      const job = this.#ring[this.#head];
      if (job === undefined) return; // stopped and drained
      const began = sched.now;
      const ns = this.#latencyOf(job.cmd);
      if (ns > 0) await sched.sleep(ns);
      const entries = this.#apply(job.cmd);
      this.#ring[this.#head++] = undefined;
      if (this.#head > 64 && this.#head * 2 > this.#ring.length) {
        this.#ring.splice(0, this.#head);
        this.#head = 0;
      }
      this.#completed++;
      this.#trace(job, entries, began);
      job.fence.signal();
    }
  }

  #latencyOf(cmd: DeviceCommand): number {
    const l = this.latency;
    switch (cmd.op) {
      case 'map':
        return l.mapBaseNs + cmd.vpns.length * l.mapPerEntryNs;
      case 'unmap':
      case 'unmap-all':
        return l.unmapNs;
      case 'nop':
        return l.nopNs;
    }
  }

  /** Applies a validated command to the device MMU; returns the entries written or cleared. */
  #apply(cmd: DeviceCommand): number {
    switch (cmd.op) {
      case 'map': {
        const mmu = this.#host.mmu(cmd.asid);
        const { vpns, pfns, perms } = cmd;
        for (let i = 0; i < vpns.length; i++) mmu.set(vpns[i]!, pfns[i]!, perms[i]!);
        return vpns.length;
      }
      case 'unmap':
        return this.#host.findMmu(cmd.asid)?.clearRange(cmd.startVpn, cmd.endVpn) ?? 0;
      case 'unmap-all':
        return this.#host.findMmu(cmd.asid)?.clearAll() ?? 0;
      case 'nop':
        return 0;
    }
  }

  #trace(job: Job, entries: number, began: number): void {
    const host = this.#host;
    const bus = host.ctx.trace;
    const cmd = job.cmd;
    bus.count(`device.cmd.${cmd.op}`);
    if (!bus.enabled('device.cmd')) return;
    let minVpn: number | null = null;
    let maxVpn: number | null = null;
    if (cmd.op === 'map') {
      const vpns = cmd.vpns;
      for (let i = 0; i < vpns.length; i++) {
        const v = vpns[i]!;
        if (minVpn === null || v < minVpn) minVpn = v;
        if (maxVpn === null || v > maxVpn) maxVpn = v;
      }
    } else if (cmd.op === 'unmap' && cmd.endVpn > cmd.startVpn) {
      minVpn = cmd.startVpn;
      maxVpn = cmd.endVpn - 1;
    }
    bus.emit({
      type: 'device.cmd',
      ts: host.ctx.sched.now,
      device: host.id,
      name: host.name,
      seqno: job.fence.seqno,
      op: cmd.op,
      asid: cmd.op === 'nop' ? null : cmd.asid,
      entries,
      startVpn: cmd.op === 'unmap' ? cmd.startVpn : null,
      endVpn: cmd.op === 'unmap' ? cmd.endVpn : null,
      began,
      minVpn,
      maxVpn,
    });
  }

  /** Checks `cmd` and returns a private copy of it. */
  #validate(cmd: DeviceCommand): DeviceCommand {
    const name = this.#host.name;
    const bad = (why: string): never => {
      throw new HmmError('EINVAL', `device ${name}: ${why}`);
    };
    if (typeof cmd !== 'object' || cmd === null) return bad('a command must be an object with an op');
    const op = (cmd as { op?: unknown }).op;
    if (op === 'nop') return { op: 'nop' };
    if (op !== 'map' && op !== 'unmap' && op !== 'unmap-all') {
      return bad(`unknown command op ${JSON.stringify(op)} (known: map, unmap, unmap-all, nop)`);
    }
    const asid = (cmd as { asid?: unknown }).asid;
    if (!(typeof asid === 'number' && Number.isInteger(asid) && asid >= 0 && asid <= U32_MAX)) {
      return bad(`${op} command: ASID ${String(asid)} is not a u32`);
    }
    if (op === 'unmap-all') return { op, asid };
    if (op === 'unmap') {
      const { startVpn, endVpn } = cmd as UnmapCommand;
      if (!isVpn(startVpn, true) || !isVpn(endVpn, true)) {
        return bad(
          `unmap command: vpn range [${String(startVpn)}, ${String(endVpn)}) is not inside [0, 2^35]`,
        );
      }
      if (startVpn > endVpn)
        return bad(`unmap command: start vpn ${hex(startVpn)} is above end vpn ${hex(endVpn)}`);
      return { op, asid, startVpn, endVpn };
    }
    const { vpns, pfns, perms } = cmd as MapCommand;
    const n = vpns?.length;
    if (typeof n !== 'number' || pfns?.length !== n || perms?.length !== n) {
      return bad(
        `map command: vpns, pfns and perms must be arrays of the same length, got ${String(n)}, ${String(pfns?.length)}, ${String(perms?.length)}`,
      );
    }
    const nrFrames = this.#host.ctx.mem.nrFrames;
    const v = new Float64Array(n);
    const p = new Uint32Array(n);
    const r = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const vpn = vpns[i]!;
      const pfn = pfns[i]!;
      const perm = perms[i]!;
      if (!isVpn(vpn, false))
        return bad(`map command entry ${i}: vpn ${String(vpn)} is not an integer in [0, 2^35)`);
      if (!(Number.isInteger(pfn) && pfn >= 0 && pfn < nrFrames)) {
        return bad(
          `map command entry ${i} (vpn ${hex(vpn)}): frame ${String(pfn)} is not a frame of this machine (RAM and device frames 0..${nrFrames - 1})`,
        );
      }
      if (!(Number.isInteger(perm) && perm > 0 && (perm & ~ALL_PERMS) === 0)) {
        return bad(
          `map command entry ${i} (vpn ${hex(vpn)}): permission ${String(perm)} is not a non-empty combination of DevPerm bits (READ 1, WRITE 2, ATOMIC 4); remove entries with an unmap command`,
        );
      }
      if (pfn === ZERO_PFN && (perm & ~DevPerm.READ) !== 0) {
        return bad(
          `map command entry ${i} (vpn ${hex(vpn)}): the zero page can only be mapped READ (hmm_range_fault reports it without HMM_PFN_WRITE); fault the page for write to get a private copy`,
        );
      }
      v[i] = vpn;
      p[i] = pfn;
      r[i] = perm;
    }
    return { op, asid, vpns: v, pfns: p, perms: r };
  }
}
