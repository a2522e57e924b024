/**
 * The pinned-versus-ODP scenario of issue 7: a process registers a large anonymous buffer (4 GiB by
 * default) with the NIC, once as a classic pinned MR (`ibv_reg_mr`: every page faulted in and
 * pinned at registration) and once as an ODP MR (`IBV_ACCESS_ON_DEMAND`: nothing pinned), then a
 * remote peer RDMA-WRITEs a small fraction of it (5 % by default). Each mode runs on a fresh machine
 * and reports, in simulated time and frames, what registration cost, what it held afterwards, what
 * the writes cost and what was held at the end. Used by the scenario test and the demo.
 *
 * The pin cost is the cost model's `rdma.regPinFaultInPerPageNs` (≈0.94 µs per page faulted in,
 * pinned and zeroed, VFIO; perf-anchors.md §1) for pages not yet present and `rdma.regPinPerPageNs`
 * (62 ns, gup_test) for present ones, plus one UMR writing the whole MTT.
 *
 * The touched part is laid out as `regions` runs spread evenly over the buffer, each written front
 * to back with messages of `messageBytes`. Under ODP the responder faults the first packet of each
 * run, and after each such fault the driver prefetches up to 4 MiB ahead, so an ODP MR holds the
 * touched pages plus at most 4 MiB of prefetch per fault past the end of each run.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, PAGE_SIZE, Prot, defaultCommandLatency } from '@hmm/core';
import { MLX5_UMR_PER_ENTRY_NS, Mlx5Hca } from './hca.js';
import type { Mlx5HcaStats } from './hca.js';
import { IbAccess } from './mr.js';
import type { MrStats } from './mr.js';
import { MLX5_MAX_PREFETCH_BYTES } from './odp.js';
import { RdmaRemote } from './rdma-remote.js';

/** Options of {@link runPinVsOdp}. */
export interface PinVsOdpOptions {
  /** Bytes of the registered buffer (a multiple of 4 KiB); default 4 GiB. */
  readonly bufferBytes?: number;
  /** Fraction of the buffer the remote writes; default 0.05. */
  readonly touchFraction?: number;
  /** Runs the touched part is split into, spread evenly; default 4. */
  readonly regions?: number;
  /** Bytes of each RDMA WRITE (a multiple of 4 KiB); default 1 MiB. */
  readonly messageBytes?: number;
  /** RAM of each machine; default the buffer plus 2 GiB. */
  readonly ramBytes?: number;
  readonly seed?: number;
}

/** Memory the registered buffer holds at one moment (frames beyond the baseline before registration). */
export interface PinVsOdpMemory {
  /** RAM frames in use, beyond the baseline. */
  readonly frames: number;
  /** RAM frames with a pin, beyond the baseline. */
  readonly pinnedFrames: number;
  /** Resident pages of the application (`get_mm_rss`). */
  readonly rssPages: number;
  /** Translation entries of the MR (pages the HCA reaches without faulting). */
  readonly mappedPages: number;
}

/** One mode's measurements. */
export interface PinVsOdpModeResult {
  readonly mode: 'pinned' | 'odp';
  /** Pages of the buffer. */
  readonly pages: number;
  /** Simulated ns of `ibv_reg_mr`. */
  readonly regNs: number;
  /** Of {@link regNs}: the modelled pin cost (present pages × regPinPerPageNs + the others × regPinFaultInPerPageNs). */
  readonly pinModelNs: number;
  /** Of {@link regNs}: the UMR writing the MTT (the command queue's map latency for its entries). */
  readonly umrModelNs: number;
  readonly afterReg: PinVsOdpMemory;
  /** Pages the remote's writes covered. */
  readonly touchedPages: number;
  /** RDMA WRITE messages posted. */
  readonly messages: number;
  /** Simulated ns from the first write posted to the last completion. */
  readonly touchNs: number;
  readonly afterTouch: PinVsOdpMemory;
  /** Bytes checked after the writes (first, middle and last page of each message, read by the CPU). */
  readonly checkedBytes: number;
  /** Checked bytes that differ from what the remote wrote (0 when correct). */
  readonly mismatches: number;
  /** Simulated ns of `ibv_dereg_mr`. */
  readonly deregNs: number;
  readonly mrStats: Readonly<MrStats>;
  readonly hcaStats: Mlx5HcaStats;
  /** RNR NAKs the remote's requester received. */
  readonly rnrNaks: number;
}

/** Both modes. */
export interface PinVsOdpResult {
  readonly pinned: PinVsOdpModeResult;
  readonly odp: PinVsOdpModeResult;
}

const GIB = 1024 ** 3;

/** Byte `i` of message `msg` (a pattern that differs between messages and from zero pages). */
function patternByte(msg: number, i: number): number {
  return ((i * 7 + msg * 13 + (i >> 12)) & 0xff) | 1;
}

function messagePattern(msg: number, bytes: number): Uint8Array {
  const d = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) d[i] = patternByte(msg, i);
  return d;
}

/** The touched layout: `[offset, bytes]` of each message, in posting order. */
export function pinVsOdpLayout(
  bufferBytes: number,
  touchFraction: number,
  regions: number,
  messageBytes: number,
): Array<readonly [number, number]> {
  const pages = bufferBytes / PAGE_SIZE;
  const touchPages = Math.round(pages * touchFraction);
  const stride = Math.floor(pages / regions);
  const out: Array<readonly [number, number]> = [];
  const msgPages = messageBytes / PAGE_SIZE;
  for (let r = 0; r < regions; r++) {
    // Spread the remainder over the first runs so the total is exactly touchPages.
    const runPages = Math.floor(touchPages / regions) + (r < touchPages % regions ? 1 : 0);
    const base = r * stride;
    for (let p = 0; p < runPages; p += msgPages) {
      out.push([(base + p) * PAGE_SIZE, Math.min(msgPages, runPages - p) * PAGE_SIZE]);
    }
  }
  return out;
}

function pinnedRamFrames(m: Machine): number {
  const pins = m.mm.mem.pincount;
  let n = 0;
  for (let pfn = 0; pfn < m.mm.mem.nrRamFrames; pfn++) if (pins[pfn]! > 0) n++;
  return n;
}

/**
 * Runs one mode on a fresh machine: app process with the buffer, an HCA, a loopback remote; then
 * register, write the touched part, check it, deregister and tear everything down (the machine's
 * invariants are checked and every frame must be free again, else EIO).
 */
export async function runPinVsOdpMode(
  mode: 'pinned' | 'odp',
  opts: PinVsOdpOptions = {},
): Promise<PinVsOdpModeResult> {
  const bufferBytes = opts.bufferBytes ?? 4 * GIB;
  const touchFraction = opts.touchFraction ?? 0.05;
  const regions = opts.regions ?? 4;
  const messageBytes = opts.messageBytes ?? 1024 * 1024;
  if (bufferBytes % PAGE_SIZE !== 0 || messageBytes % PAGE_SIZE !== 0 || messageBytes <= 0) {
    throw new HmmError('EINVAL', 'pin-vs-odp: buffer and message sizes must be whole pages');
  }
  const m = new Machine({ seed: opts.seed ?? 1, ramBytes: opts.ramBytes ?? bufferBytes + 2 * GIB });
  const layout = pinVsOdpLayout(bufferBytes, touchFraction, regions, messageBytes);
  const result = await m.sched.runTask(`pin-vs-odp:${mode}`, async () => {
    const hca = new Mlx5Hca(m, { name: 'mlx5_0' });
    const p = m.createProcess('app');
    const pd = hca.allocPd(p);
    const remote = await RdmaRemote.create(pd, { bufferBytes: messageBytes, name: 'peer' });
    const a = await p.mmap({
      length: bufferBytes,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    const baseFrames = m.mm.mem.nrUsed;
    const basePinned = pinnedRamFrames(m);
    const memory = (mappedPages: number): PinVsOdpMemory => ({
      frames: m.mm.mem.nrUsed - baseFrames,
      pinnedFrames: pinnedRamFrames(m) - basePinned,
      rssPages: p.mm.rssPages,
      mappedPages,
    });
    const pages = bufferBytes / PAGE_SIZE;
    const access =
      IbAccess.LOCAL_WRITE |
      IbAccess.REMOTE_WRITE |
      IbAccess.REMOTE_READ |
      (mode === 'odp' ? IbAccess.ON_DEMAND : 0);
    const present = p.mm.rssPages; // untouched: 0
    const t0 = m.sched.now;
    const mr = await pd.regMr(a, bufferBytes, access);
    const regNs = m.sched.now - t0;
    const cost = m.cost.rdma;
    const pinModelNs =
      mode === 'pinned'
        ? present * cost.regPinPerPageNs + (pages - present) * cost.regPinFaultInPerPageNs
        : 0;
    const lat = defaultCommandLatency(m.cost);
    const umrModelNs = mode === 'pinned' ? lat.mapBaseNs + pages * MLX5_UMR_PER_ENTRY_NS : 0;
    const afterReg = memory(mr.mappedPages());

    const t1 = m.sched.now;
    let touchedPages = 0;
    for (let i = 0; i < layout.length; i++) {
      const [off, len] = layout[i]!;
      await remote.write(mr.rkey, a + off, messagePattern(i, len));
      touchedPages += len / PAGE_SIZE;
    }
    const touchNs = m.sched.now - t1;
    const afterTouch = memory(mr.mappedPages());

    // Spot-check through the CPU: first, middle and last page of each message.
    let checkedBytes = 0;
    let mismatches = 0;
    for (let i = 0; i < layout.length; i++) {
      const [off, len] = layout[i]!;
      const n = len / PAGE_SIZE;
      for (const pg of new Set([0, n >> 1, n - 1])) {
        const got = await p.read(a + off + pg * PAGE_SIZE, PAGE_SIZE);
        for (let b = 0; b < PAGE_SIZE; b++) {
          if (got[b] !== patternByte(i, pg * PAGE_SIZE + b)) mismatches++;
        }
        checkedBytes += PAGE_SIZE;
      }
    }
    const mrStats = { ...mr.stats };
    const hcaStats = hca.stats();
    const rnrNaks = remote.qp.stats.rnrNaksReceived;

    const t2 = m.sched.now;
    await pd.deregMr(mr);
    const deregNs = m.sched.now - t2;
    await remote.close();
    await pd.dealloc();
    await p.munmap(a, bufferBytes);
    await p.exit();
    await hca.remove();
    return {
      mode,
      pages,
      regNs,
      pinModelNs,
      umrModelNs,
      afterReg,
      touchedPages,
      messages: layout.length,
      touchNs,
      afterTouch,
      checkedBytes,
      mismatches,
      deregNs,
      mrStats,
      hcaStats,
      rnrNaks,
    };
  });
  m.checkInvariants();
  const left = m.mm.mem.nrUsed;
  if (left !== 0)
    throw new HmmError('EIO', `pin-vs-odp (${mode}): ${left} frames still in use after teardown`);
  return result;
}

/** Runs both modes (see {@link runPinVsOdpMode}). */
export async function runPinVsOdp(opts: PinVsOdpOptions = {}): Promise<PinVsOdpResult> {
  const pinned = await runPinVsOdpMode('pinned', opts);
  const odp = await runPinVsOdpMode('odp', opts);
  return { pinned, odp };
}

/** Upper bound of the pages an ODP MR holds after the writes: touched + 4 MiB of prefetch per fault event. */
export function odpResidentBound(r: PinVsOdpModeResult): number {
  return r.touchedPages + r.mrStats.faultEvents * (MLX5_MAX_PREFETCH_BYTES / PAGE_SIZE);
}

/** A plain-text table of both modes (simulated ms, frames and MiB). */
export function formatPinVsOdp(r: PinVsOdpResult): string {
  const mib = (pages: number): string => ((pages * PAGE_SIZE) / 2 ** 20).toFixed(1);
  const ms = (ns: number): string => (ns / 1e6).toFixed(3);
  const rows: string[][] = [
    ['', 'pinned', 'ODP'],
    ['registration (sim ms)', ms(r.pinned.regNs), ms(r.odp.regNs)],
    [
      'pinned after reg (frames)',
      String(r.pinned.afterReg.pinnedFrames),
      String(r.odp.afterReg.pinnedFrames),
    ],
    ['held after reg (MiB)', mib(r.pinned.afterReg.frames), mib(r.odp.afterReg.frames)],
    ['writes (sim ms)', ms(r.pinned.touchNs), ms(r.odp.touchNs)],
    ['touched (MiB)', mib(r.pinned.touchedPages), mib(r.odp.touchedPages)],
    ['held after writes (MiB)', mib(r.pinned.afterTouch.frames), mib(r.odp.afterTouch.frames)],
    [
      'pinned after writes (frames)',
      String(r.pinned.afterTouch.pinnedFrames),
      String(r.odp.afterTouch.pinnedFrames),
    ],
    ['page-fault events', String(r.pinned.hcaStats.pageFaultEvents), String(r.odp.hcaStats.pageFaultEvents)],
    ['RNR NAKs', String(r.pinned.rnrNaks), String(r.odp.rnrNaks)],
    ['deregistration (sim ms)', ms(r.pinned.deregNs), ms(r.odp.deregNs)],
  ];
  const w = [0, 1, 2].map((c) => Math.max(...rows.map((row) => row[c]!.length)));
  return rows
    .map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(w[c]!) : cell.padStart(w[c]!))).join('  '))
    .join('\n');
}
