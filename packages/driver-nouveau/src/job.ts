/**
 * GPU jobs: kernels that read and write process memory through the GPU's MMU, so examples and
 * scenarios run real computations (a vector add, a reduction) on malloc'd memory.
 *
 * A kernel has arguments (address ranges of the channel's VMM with an access mode) and a body
 * called once per block. Block `i` sees page `i` of every partitioned argument (read, write,
 * readwrite) as a byte view of the frame behind it, and may do u32 atomics anywhere in its atomic
 * arguments. The GPU runs `blocksInFlight` blocks per wave: it translates every page the wave needs,
 * writes a fault-buffer entry for each one it cannot reach, stalls until the driver replays, and
 * translates again (up to `maxFaultRounds` rounds, then EFAULT); a cancel fails the job with the
 * error that killed the channel. Then the blocks run, the device's observers see every page, and
 * the wave takes the simulated time of its bytes: VRAM at `vramGBs`, system memory at the link's
 * effective rate, a peer's BAR at the peer path's rate.
 *
 * Hardware counterpart: an SM grid running a kernel, with replayable far faults.
 *
 * @module
 */
import { FaultAccess, HmmError, PAGE_SIZE, PG, ZERO_PFN, hex, p2pdmaResourceOf } from '@hmm/core';
import type { DeviceAccessKind, FaultAccessId } from '@hmm/core';
import type { NouveauChannel } from './gpu.js';

/** How a kernel uses an argument. `prefetch` only asks the driver to map what is present. */
export type JobArgAccess = 'read' | 'write' | 'readwrite' | 'atomic' | 'prefetch';

/** One kernel argument: `bytes` at page-aligned `addr` of the channel's VMM. */
export interface JobArg {
  readonly addr: number;
  readonly bytes: number;
  readonly access: JobArgAccess;
}

/** What a kernel body sees of one block. */
export interface JobBlock {
  /** Block index, from 0. */
  readonly index: number;
  /**
   * The block's page of argument `arg` (a read, write or readwrite one): a view of the frame itself,
   * shorter for a partial last page, empty past the argument's end. Do not keep it after the body
   * returns; do not write into a read argument's view.
   */
  bytes(arg: number): Uint8Array;
  /** {@link bytes} as 32-bit floats. */
  f32(arg: number): Float32Array;
  /** {@link bytes} as 32-bit unsigned integers. */
  u32(arg: number): Uint32Array;
  /** Atomic add of `delta` to the u32 at `byteOffset` of atomic argument `arg`; returns the old value. */
  atomicAdd(arg: number, byteOffset: number, delta: number): number;
}

/** A kernel launch. */
export interface GpuKernel {
  readonly name?: string;
  readonly args: readonly JobArg[];
  /** Blocks to run; default the page count of the largest partitioned argument. */
  readonly blocks?: number;
  /** The body, called once per block. */
  run(block: JobBlock): void;
}

/** What a finished job reports. */
export interface JobResult {
  readonly blocks: number;
  /** Fault entries the job wrote (every round). */
  readonly faults: number;
  /** Waves that stalled on faults at least once. */
  readonly stalledWaves: number;
  /** Simulated ns from launch to completion. */
  readonly ns: number;
  /** Bytes moved, by where they were. */
  readonly bytes: { readonly vram: number; readonly system: number; readonly peer: number };
}

/** Largest atomic argument, in pages (translated whole before every wave). */
export const JOB_MAX_ATOMIC_PAGES = 64;

const MODES: readonly JobArgAccess[] = ['read', 'write', 'readwrite', 'atomic', 'prefetch'];

function kindOf(mode: JobArgAccess): DeviceAccessKind {
  return mode === 'read' || mode === 'prefetch' ? 'read' : mode === 'atomic' ? 'atomic' : 'write';
}

function faultAccessOf(mode: JobArgAccess): FaultAccessId {
  switch (mode) {
    case 'read':
      return FaultAccess.READ;
    case 'write':
    case 'readwrite':
      return FaultAccess.WRITE;
    case 'atomic':
      return FaultAccess.ATOMIC;
    case 'prefetch':
      return FaultAccess.PREFETCH;
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Runs `kernel` on `ch` (see the module doc); must run inside a simulated task. Rejects with the
 * channel's kill error if a fault of it was cancelled (at launch if it is already dead), EFAULT if a
 * page stays unreachable after `maxFaultRounds` rounds, ENODEV if the GPU goes away, EINVAL for a
 * malformed kernel (nothing runs then).
 */
export async function runJob(ch: NouveauChannel, kernel: GpuKernel): Promise<JobResult> {
  const gpu = ch.gpu;
  const device = gpu.device;
  const sched = gpu.machine.sched;
  const mem = gpu.machine.mm.mem;
  const name = kernel.name ?? 'kernel';
  const args = checkKernel(ch, kernel, name);
  if (ch.killed !== null) throw ch.killed;
  const nargs = args.length;
  const pagesOf = args.map((a) => Math.ceil(a.bytes / PAGE_SIZE));
  let blocks = kernel.blocks ?? 0;
  if (kernel.blocks === undefined) {
    for (let a = 0; a < nargs; a++) if (partitioned(args[a]!.access)) blocks = Math.max(blocks, pagesOf[a]!);
  }
  const C = gpu.blocksInFlight;
  // Frames of the wave's pages: [block-in-wave * nargs + arg]; atomic args in a separate table.
  const pfns = new Int32Array(C * nargs).fill(-1);
  const atomicBase: number[] = args.map(() => -1);
  let atomicPages = 0;
  for (let a = 0; a < nargs; a++) {
    if (args[a]!.access === 'atomic') {
      atomicBase[a] = atomicPages;
      atomicPages += pagesOf[a]!;
    }
  }
  const atomicPfns = new Int32Array(atomicPages).fill(-1);
  const start = sched.now;
  let faults = 0;
  let stalledWaves = 0;
  let vramBytes = 0;
  let systemBytes = 0;
  let peerBytes = 0;
  const prefetched = new Uint8Array(nargs);

  for (let first = 0; first < blocks; first += C) {
    const n = Math.min(C, blocks - first);
    let stalled = false;
    for (let round = 1; ; round++) {
      let missing = 0;
      for (let a = 0; a < nargs; a++) {
        const arg = args[a]!;
        const mode = arg.access;
        const firstVpn = arg.addr / PAGE_SIZE;
        if (mode === 'prefetch') {
          // A prefetch asks once per job for the pages it covers in this wave; nothing waits on it.
          if (round > 1 || prefetched[a] === 1) continue;
          const lim = Math.min(pagesOf[a]!, first + n);
          for (let p = first; p < lim; p++) {
            if (device.translate(ch.asid, firstVpn + p, 'read') < 0) {
              gpu.faults.push(ch.inst, (firstVpn + p) * PAGE_SIZE, FaultAccess.PREFETCH);
              faults++;
            }
          }
          if (lim >= pagesOf[a]!) prefetched[a] = 1;
          continue;
        }
        const kind = kindOf(mode);
        const access = faultAccessOf(mode);
        if (mode === 'atomic') {
          const base = atomicBase[a]!;
          for (let p = 0; p < pagesOf[a]!; p++) {
            const pfn = device.translate(ch.asid, firstVpn + p, kind);
            atomicPfns[base + p] = pfn;
            if (pfn < 0) {
              missing++;
              faults++;
              gpu.faults.push(ch.inst, (firstVpn + p) * PAGE_SIZE, access);
              device.noteFault(ch.asid, (firstVpn + p) * PAGE_SIZE, kind, round);
            }
          }
          continue;
        }
        for (let b = 0; b < n; b++) {
          const p = first + b;
          if (p >= pagesOf[a]!) {
            pfns[b * nargs + a] = -1;
            continue;
          }
          const pfn = device.translate(ch.asid, firstVpn + p, kind);
          pfns[b * nargs + a] = pfn;
          if (pfn < 0) {
            missing++;
            faults++;
            gpu.faults.push(ch.inst, (firstVpn + p) * PAGE_SIZE, access);
            device.noteFault(ch.asid, (firstVpn + p) * PAGE_SIZE, kind, round);
          }
        }
      }
      if (missing === 0) break;
      stalled = true;
      if (round >= gpu.maxFaultRounds) {
        throw new HmmError(
          'EFAULT',
          `${gpu.name}: ${name} on channel ${ch.inst}: ${missing} page(s) still unmapped after ${round} fault rounds; the driver replayed without mapping them`,
        );
      }
      await gpu.faults.waitReplay(ch.inst);
      if (ch.killed !== null) throw ch.killed;
    }
    if (stalled) stalledWaves++;
    // The wave runs: every page it touches is reported, then the bodies execute.
    device.noteAccessCall();
    let waveNs = 0;
    for (let b = 0; b < n; b++) {
      for (let a = 0; a < nargs; a++) {
        const arg = args[a]!;
        if (!partitioned(arg.access)) continue;
        const pfn = pfns[b * nargs + a]!;
        if (pfn < 0) continue;
        const p = first + b;
        const len = Math.min(PAGE_SIZE, arg.bytes - p * PAGE_SIZE);
        const vpn = arg.addr / PAGE_SIZE + p;
        if (arg.access !== 'write') device.noteAccess(ch.asid, vpn, pfn, 'read', len);
        if (arg.access !== 'read') device.noteAccess(ch.asid, vpn, pfn, 'write', len);
        const where = placeOf(ch, pfn);
        const moved = arg.access === 'readwrite' ? 2 * len : len;
        if (where === 0) vramBytes += moved;
        else if (where === 1) systemBytes += moved;
        else peerBytes += moved;
        waveNs += moved / bandwidthOf(ch, pfn, where);
      }
    }
    const block = makeBlock(ch, args, pagesOf, pfns, atomicPfns, atomicBase, mem.content);
    for (let b = 0; b < n; b++) {
      block.index = first + b;
      block.slot = b;
      kernel.run(block);
    }
    if (waveNs > 0) await sched.sleep(waveNs);
    if (ch.killed !== null) throw ch.killed;
  }
  return {
    blocks,
    faults,
    stalledWaves,
    ns: sched.now - start,
    bytes: { vram: vramBytes, system: systemBytes, peer: peerBytes },
  };
}

function partitioned(mode: JobArgAccess): boolean {
  return mode === 'read' || mode === 'write' || mode === 'readwrite';
}

/** 0 = this GPU's VRAM (or any device memory on it), 1 = system memory, 2 = a peer's BAR. */
function placeOf(ch: NouveauChannel, pfn: number): 0 | 1 | 2 {
  const ctx = ch.gpu.machine.mm;
  const res = p2pdmaResourceOf(ctx, pfn);
  if (res !== undefined) return ch.gpu.pci !== null && res.provider === ch.gpu.pci.endpoint ? 0 : 2;
  return (ctx.mem.flags[pfn]! & PG.ZONE_DEVICE) !== 0 ? 0 : 1;
}

function bandwidthOf(ch: NouveauChannel, pfn: number, where: 0 | 1 | 2): number {
  const gpu = ch.gpu;
  if (where === 0) return gpu.vramGBs;
  if (where === 1) return gpu.systemGBs;
  const res = p2pdmaResourceOf(gpu.machine.mm, pfn)!;
  const path = gpu.pci !== null ? gpu.pci.topology.pathGBs(res.provider, gpu.pci.endpoint) : 0;
  // No peer path: the bytes are staged through system memory (half the link rate, both ways).
  return path > 0 ? path : gpu.systemGBs / 2;
}

interface MutableBlock extends JobBlock {
  index: number;
  slot: number;
}

function makeBlock(
  ch: NouveauChannel,
  args: readonly JobArg[],
  pagesOf: readonly number[],
  pfns: Int32Array,
  atomicPfns: Int32Array,
  atomicBase: readonly number[],
  content: { view(i: number): Uint8Array },
): MutableBlock {
  const nargs = args.length;
  const gpu = ch.gpu;
  const device = gpu.device;
  const block: MutableBlock = {
    index: 0,
    slot: 0,
    bytes(arg: number): Uint8Array {
      const a = args[arg];
      if (a === undefined || !partitioned(a.access)) {
        throw new HmmError(
          'EINVAL',
          `${gpu.name}: block view of argument ${arg}, which is not a read/write argument`,
        );
      }
      if (block.index >= pagesOf[arg]!) return EMPTY;
      const pfn = pfns[block.slot * nargs + arg]!;
      const len = Math.min(PAGE_SIZE, a.bytes - block.index * PAGE_SIZE);
      // The shared zero page is never handed out for writing; a read of it gets fresh zeros.
      const page = pfn === ZERO_PFN ? new Uint8Array(PAGE_SIZE) : content.view(pfn);
      return len === PAGE_SIZE ? page : page.subarray(0, len);
    },
    f32(arg: number): Float32Array {
      const v = block.bytes(arg);
      return new Float32Array(v.buffer, v.byteOffset, v.length >>> 2);
    },
    u32(arg: number): Uint32Array {
      const v = block.bytes(arg);
      return new Uint32Array(v.buffer, v.byteOffset, v.length >>> 2);
    },
    atomicAdd(arg: number, byteOffset: number, delta: number): number {
      const a = args[arg];
      if (a === undefined || a.access !== 'atomic') {
        throw new HmmError(
          'EINVAL',
          `${gpu.name}: atomicAdd on argument ${arg}, which is not an atomic argument`,
        );
      }
      if (!(
        Number.isInteger(byteOffset) &&
        byteOffset >= 0 &&
        byteOffset + 4 <= a.bytes &&
        byteOffset % 4 === 0
      )) {
        throw new HmmError(
          'EINVAL',
          `${gpu.name}: atomicAdd at offset ${String(byteOffset)} of a ${a.bytes}-byte argument: need an aligned u32 inside it`,
        );
      }
      const page = Math.floor(byteOffset / PAGE_SIZE);
      const pfn = atomicPfns[atomicBase[arg]! + page]!;
      device.noteAccess(ch.asid, a.addr / PAGE_SIZE + page, pfn, 'atomic', 4);
      const v = content.view(pfn);
      const off = byteOffset - page * PAGE_SIZE;
      const dv = new DataView(v.buffer, v.byteOffset + off, 4);
      const old = dv.getUint32(0, true);
      dv.setUint32(0, (old + delta) >>> 0, true);
      return old;
    },
  };
  return block;
}

function checkKernel(ch: NouveauChannel, kernel: GpuKernel, name: string): readonly JobArg[] {
  const gpu = ch.gpu;
  const bad = (why: string): never => {
    throw new HmmError('EINVAL', `${gpu.name}: kernel ${name}: ${why}`);
  };
  if (typeof kernel !== 'object' || kernel === null || typeof kernel.run !== 'function') {
    bad('needs a run(block) function');
  }
  if (!Array.isArray(kernel.args) || kernel.args.length === 0) bad('needs at least one argument');
  kernel.args.forEach((a, i) => {
    if (!MODES.includes(a?.access)) bad(`argument ${i} has unknown access ${JSON.stringify(a?.access)}`);
    if (!(Number.isSafeInteger(a.addr) && a.addr >= 0 && a.addr % PAGE_SIZE === 0)) {
      bad(`argument ${i} address ${String(a.addr)} is not page aligned`);
    }
    if (!(Number.isSafeInteger(a.bytes) && a.bytes > 0)) bad(`argument ${i} has ${String(a.bytes)} bytes`);
    if (a.addr + a.bytes > 2 ** 47)
      bad(`argument ${i} [${hex(a.addr)}, +${hex(a.bytes)}) leaves the address space`);
    if (a.access === 'atomic' && Math.ceil(a.bytes / PAGE_SIZE) > JOB_MAX_ATOMIC_PAGES) {
      bad(`atomic argument ${i} spans more than ${JOB_MAX_ATOMIC_PAGES} pages`);
    }
  });
  if (kernel.blocks !== undefined && !(Number.isSafeInteger(kernel.blocks) && kernel.blocks >= 0)) {
    bad(`blocks must be an integer ≥ 0, got ${String(kernel.blocks)}`);
  }
  return kernel.args;
}
