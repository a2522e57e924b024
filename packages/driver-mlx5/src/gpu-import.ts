/**
 * The GPU-import scenario of issue 7: the NIC RDMA-reads a buffer that a nouveau-like GPU exports
 * through its BAR1 window (`ibv_reg_dmabuf_mr` over a mapping of the GPU's device file), while a
 * task of the GPU driver keeps moving the buffer between the BAR and system memory. Every move
 * revokes the NIC (a move notification zaps the whole MR), and the next packet faults the MR back
 * through `p2pMap`, which hands out BAR frames (`P2pMapType.BUS_ADDR`: the NIC and the GPU share a
 * switch) or, when the BAR has no room, the system pages of the fallback (`NOT_SUPPORTED`).
 *
 * Two variants: `bar: 'free'` (the BAR has room; the mover alternates the object between system
 * memory and the BAR) and `bar: 'full'` (the BAR is exhausted before the first read, so the NIC
 * starts on the fallback; the mover then repeatedly frees the BAR and moves the object in, and moves
 * it out and fills the BAR again, so the NIC keeps switching between the peer path and the
 * fallback).
 *
 * Every read is compared byte for byte with the buffer's contents; after every read the MR's live
 * mapping, if any, must be the object's current frames, of the type its place implies, and the
 * NIC's translation table must hold exactly those frames. A sanitizer watches the MR throughout.
 * Used by the scenario test and the demo.
 *
 * @module
 */
import { HmmError, HmmSanitizer, Machine, P2pMapType, PAGE_SIZE, SeededRandom } from '@hmm/core';
import type { Process } from '@hmm/core';
import { NouveauBar, NouveauGpu, nouveauTopology } from '@hmm/driver-nouveau';
import type { NouveauBarObject } from '@hmm/driver-nouveau';
import { Mlx5Hca } from './hca.js';
import { IbAccess } from './mr.js';
import type { PeerMr } from './peer-mr.js';
import { RdmaRemote } from './rdma-remote.js';

/** Options of {@link runGpuImportScenario}. */
export interface GpuImportOptions {
  readonly seed?: number;
  /** `'free'`: the BAR has room. `'full'`: it is exhausted first and refilled while moving. Default `'free'`. */
  readonly bar?: 'free' | 'full';
  /** Pages of the exported object; default 16. */
  readonly objectPages?: number;
  /** Pages of the GPU's BAR1 window; default 64. */
  readonly barPages?: number;
  /** Moves the GPU driver's task makes (rounds of the mover); default 40. */
  readonly moves?: number;
  /** Reads the NIC makes at least (it keeps reading until the mover is done); default 100. */
  readonly minReads?: number;
  /** Longest simulated pause of the mover between moves, ns; default 1.5 ms (a few RNR timers). */
  readonly maxMoveGapNs?: number;
  /** Longest simulated pause of the reader between reads, ns; default 50 µs. */
  readonly maxReadGapNs?: number;
  /** The remote requester sits on a second HCA instead of the importing one (loopback). */
  readonly secondHca?: boolean;
}

/** Reads that completed while the MR held a mapping of each type (by name of {@link P2pMapType}). */
export interface GpuImportMappingCounts {
  BUS_ADDR: number;
  THRU_HOST_BRIDGE: number;
  NOT_SUPPORTED: number;
  /** The mapping had been revoked again by the time the read completed. */
  revoked: number;
}

/** What {@link runGpuImportScenario} measured. */
export interface GpuImportResult {
  readonly bar: 'free' | 'full';
  /** RDMA READs completed. */
  readonly reads: number;
  readonly bytesRead: number;
  /** Bytes read that differ from the buffer (0 when correct). */
  readonly mismatches: number;
  /** Reads that failed (0 expected: moves are transparent to the requester). */
  readonly failedReads: number;
  /** Reads during which at least one move notification zapped the MR. */
  readonly readsSpanningMove: number;
  /** Moves of the object (the mover's and those `p2pMap` made to serve the NIC). */
  readonly objectMoves: number;
  /** Moves the mover asked for that changed the object's place. */
  readonly moverMoves: number;
  /** Move notifications that zapped a live mapping of the MR (`PeerMr.moves`). */
  readonly moveNotifications: number;
  /** `p2pMap` calls of the MR (`PeerMr.maps`). */
  readonly maps: number;
  /** Pages the MR's invalidations zapped (`stats.invalidations`). */
  readonly invalidations: number;
  /** Page-fault events of the MR. */
  readonly faultEvents: number;
  /** The MR held a mapping when the reads ended. */
  readonly mappedAtEnd: boolean;
  /** RNR NAKs the requester received. */
  readonly rnrNaks: number;
  readonly mappingTypes: GpuImportMappingCounts;
  /** Reads in the first phase (the BAR full, before any move), by mapping type (`'full'` only). */
  readonly fallbackPhase: GpuImportMappingCounts;
  /** Reads completed while the BAR was full and the object in system memory, with a NOT_SUPPORTED mapping. */
  readonly fallbackWhileFull: number;
  /**
   * Checks after reads that failed: a live mapping that is not the object's current frames, whose
   * type does not match the object's place, whose bus addresses are wrong, or that differs from
   * the NIC's translation table; or a revoked MR with translation entries left.
   */
  readonly inconsistencies: string[];
  /** Sanitizer violations (messages). */
  readonly sanitizerViolations: string[];
  /** Simulated ns from the first read to the end of the last. */
  readonly simNs: number;
  /** Wire bytes of the HCA(s). */
  readonly wireBytes: number;
}

/** Bytes `0…len` of the exported buffer. */
export function gpuImportPattern(len: number, salt = 1): Uint8Array {
  const d = new Uint8Array(len);
  for (let i = 0; i < len; i++) d[i] = (i * 31 + (i >> 12) * 17 + salt * 5) & 0xff;
  return d;
}

function emptyCounts(): GpuImportMappingCounts {
  return { BUS_ADDR: 0, THRU_HOST_BRIDGE: 0, NOT_SUPPORTED: 0, revoked: 0 };
}

const TYPE_NAMES = ['NOT_SUPPORTED', 'BUS_ADDR', 'THRU_HOST_BRIDGE'] as const;

/**
 * Runs the scenario on a fresh machine (see the module doc) and tears everything down: MR, QPs,
 * object, BAR, process, HCAs and GPU. Rejects (EIO) if frames are left in use afterwards; the
 * machine's invariants are checked (they throw when broken).
 */
export async function runGpuImportScenario(opts: GpuImportOptions = {}): Promise<GpuImportResult> {
  const P = PAGE_SIZE;
  const mode = opts.bar ?? 'free';
  const pages = opts.objectPages ?? 16;
  const barPages = opts.barPages ?? 64;
  const rounds = opts.moves ?? 40;
  const minReads = opts.minReads ?? 100;
  const maxMoveGap = opts.maxMoveGapNs ?? 1_500_000;
  const maxReadGap = opts.maxReadGapNs ?? 50_000;
  const seed = opts.seed ?? 1;
  const m = new Machine({ seed, ramBytes: 64 * 1024 * 1024 });
  const rnd = new SeededRandom(seed * 7919 + 17);
  const t = nouveauTopology(m, ['gpu0', 'nic0', 'nic1']);
  const gpu = new NouveauGpu(m, {
    name: 'gpu0',
    vramBytes: 16 * 1024 * 1024,
    barBytes: barPages * P,
    pci: { topology: t.topology, endpoint: t.endpoint('gpu0') },
  });
  const bar = new NouveauBar(gpu);
  const hca = new Mlx5Hca(m, { name: 'mlx5_0', pci: { topology: t.topology, endpoint: t.endpoint('nic0') } });
  const hca2 =
    opts.secondHca === true
      ? new Mlx5Hca(m, { name: 'mlx5_1', pci: { topology: t.topology, endpoint: t.endpoint('nic1') } })
      : null;
  const san = new HmmSanitizer(m.mm, 'record');
  const len = pages * P;
  const data = gpuImportPattern(len);

  const result = await m.sched.runTask('gpu-import', async () => {
    const p: Process = m.createProcess('app');
    const obj: NouveauBarObject = bar.createObject(pages);
    const a = await obj.mmap(p);
    await p.write(a, data);
    const pd = hca.allocPd(p);
    const mr: PeerMr = await pd.regPeerMr(
      a,
      len,
      IbAccess.LOCAL_WRITE | IbAccess.REMOTE_READ | IbAccess.REMOTE_WRITE,
    );
    san.watch(hca.device, mr.asid, p.mm, null);
    const remote = await RdmaRemote.create(pd, {
      ...(hca2 === null ? {} : { hca: hca2 }),
      bufferBytes: len,
      name: 'peer',
    });

    const mappingTypes = emptyCounts();
    const fallbackPhase = emptyCounts();
    const inconsistencies: string[] = [];
    let barFull = false;
    let fallbackWhileFull = 0;
    let reads = 0;
    let bytesRead = 0;
    let mismatches = 0;
    let failedReads = 0;
    let spanning = 0;

    /** The MR's mapping against the object and the NIC's table; counts its type into `into`. */
    const inspect = (into: GpuImportMappingCounts): void => {
      const mp = mr.mapping;
      const bad = (why: string): void => {
        if (inconsistencies.length < 20) inconsistencies.push(`after read ${reads}: ${why}`);
      };
      if (mp === null) {
        into.revoked++;
        if (mr.mappedPages() !== 0) bad(`revoked MR still has ${mr.mappedPages()} translation entries`);
        return;
      }
      into[TYPE_NAMES[mp.type]]++;
      const frames = obj.frames();
      const inBar = obj.place === 'bar';
      if (inBar !== (mp.type === P2pMapType.BUS_ADDR)) {
        bad(`mapping type ${TYPE_NAMES[mp.type]} with the object in ${obj.place}`);
      }
      if (!inBar && barFull && mp.type === P2pMapType.NOT_SUPPORTED) fallbackWhileFull++;
      for (let i = 0; i < pages; i++) {
        const pfn = mp.pfns[i]!;
        if (pfn !== frames[i]) {
          bad(`page ${i} mapped to frame ${pfn}, the object is in frame ${frames[i]}`);
          break;
        }
        const wantBus = inBar ? bar.resource.toBus(pfn) : -1;
        if (mp.bus[i] !== wantBus) {
          bad(`page ${i} bus address ${mp.bus[i]} instead of ${wantBus}`);
          break;
        }
        if (!inBar && pfn >= m.mm.mem.nrRamFrames) {
          bad(`fallback page ${i} in device frame ${pfn}`);
          break;
        }
        const nic = mr.translate(a / P + i, false);
        if (nic !== pfn) {
          bad(`the NIC translates page ${i} to ${nic}, the mapping says ${pfn}`);
          break;
        }
      }
    };

    /** One RDMA READ of a random piece of the object, checked byte for byte. */
    const readOnce = async (into: GpuImportMappingCounts): Promise<void> => {
      const off = rnd.nextInt(len);
      const n = 1 + rnd.nextInt(len - off);
      const before = mr.moves;
      let got: Uint8Array;
      try {
        got = await remote.read(mr.rkey, a + off, n);
      } catch (e) {
        if (!(e instanceof HmmError)) throw e;
        failedReads++;
        if (inconsistencies.length < 20) inconsistencies.push(`read ${reads} failed: ${e.message}`);
        return;
      }
      reads++;
      bytesRead += n;
      if (mr.moves !== before) spanning++;
      for (let i = 0; i < n; i++) if (got[i] !== data[off + i]) mismatches++;
      inspect(into);
    };

    let moverMoves = 0;
    let moverDone = false;
    const t0 = m.sched.now;
    if (mode === 'full') {
      // The fallback alone first: the BAR is full before the NIC's first access.
      bar.exhaustBar();
      barFull = true;
      for (let i = 0; i < 8; i++) await readOnce(fallbackPhase);
    }
    const mover = m.sched.spawn('gpu0:mover', async () => {
      for (let r = 0; r < rounds; r++) {
        await m.sched.sleep(rnd.nextInt(maxMoveGap + 1));
        const from = obj.place;
        if (mode === 'free') {
          await obj.move(from === 'bar' ? 'system' : 'bar');
        } else if (r % 2 === 0) {
          bar.releaseBar();
          barFull = false;
          await obj.move('bar');
        } else {
          await obj.move('system');
          bar.exhaustBar();
          barFull = bar.resource.nrFree === 0 && obj.place === 'system';
        }
        if (obj.place !== from) moverMoves++;
      }
      moverDone = true;
    });
    while (!moverDone || reads < minReads) {
      await readOnce(mappingTypes);
      await m.sched.sleep(rnd.nextInt(maxReadGap + 1));
    }
    await mover.join();
    const simNs = m.sched.now - t0;
    const counters = {
      objectMoves: obj.moves,
      moveNotifications: mr.moves,
      maps: mr.maps,
      invalidations: mr.stats.invalidations,
      faultEvents: mr.stats.faultEvents,
      mappedAtEnd: mr.mapping !== null,
      rnrNaks: remote.qp.stats.rnrNaksReceived,
      wireBytes: hca.stats().wireBytes + (hca2?.stats().wireBytes ?? 0),
    };
    san.checkAll();

    await remote.close();
    await pd.dealloc();
    await obj.teardown();
    await p.exit();
    await bar.remove();
    await hca.remove();
    await hca2?.remove();
    await gpu.remove();
    san.checkAll();
    return {
      bar: mode,
      reads,
      bytesRead,
      mismatches,
      failedReads,
      readsSpanningMove: spanning,
      moverMoves,
      mappingTypes,
      fallbackPhase,
      fallbackWhileFull,
      inconsistencies,
      simNs,
      ...counters,
      sanitizerViolations: san.violations.map((v) => v.message),
    };
  });
  m.checkInvariants();
  const frames = m.mm.mem.allocatedFrames().length;
  const dev = m.mm.mem.allocatedDeviceFrames().length;
  if (frames !== 0 || dev !== 0) {
    throw new HmmError(
      'EIO',
      `gpu-import: ${frames} RAM and ${dev} device frames left in use after teardown`,
    );
  }
  return result;
}
