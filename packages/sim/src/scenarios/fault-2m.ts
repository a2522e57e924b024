/**
 * `fault-2m`: the GPU reads 2 MiB of malloc'd memory it has never touched, and its fault handler
 * migrates the 2 MiB block to VRAM in 4 KiB pages before mapping it, as Intel Xe's SVM does without
 * THP (perf-anchors §2, calibration check (b)). The GPU is the nouveau-like GTX 1080 with
 * {@link blockMigratePolicy}: one fault batch (45 µs), `migrate_vma` of 512 pages (1.4 µs each of
 * CPU work), one 2 MiB copy over PCIe 3, the PTE writes, a TLB invalidate, the replay, and the
 * read of 2 MiB from VRAM.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, Prot } from '@hmm/core';
import { NouveauGpu, NouveauSvm, runJob } from '@hmm/driver-nouveau';
import { ANCHORS } from '../anchors.js';
import { assertNoLeaks, figure, runParams } from '../scenario.js';
import type { Scenario, ScenarioResult, ScenarioRunOptions } from '../scenario.js';
import { blockMigratePolicy } from './policies.js';

const MiB = 1024 * 1024;
const BLOCK = 2 * MiB;

/** Details of a {@link fault2mScenario} run. */
export interface Fault2mDetails {
  /** From the job's launch to its end: the fault, its service, the replay and the read. */
  readonly totalNs: number;
  /** Of it, `migrate_vma` to VRAM (CPU work and the copy). */
  readonly migrateNs: number;
  /** GPU faults raised (one per page of the first wave). */
  readonly faults: number;
  /** Fault batches served. */
  readonly batches: number;
  /** Pages that moved to VRAM. */
  readonly pagesMigrated: number;
  /** Bytes the job read from VRAM. */
  readonly vramBytes: number;
  /** Bytes that differ from what the CPU wrote (0 when correct). */
  readonly mismatches: number;
}

/** Runs the scenario (the size does not matter: the anchor is one 2 MiB fault). */
export async function runFault2m(opts?: ScenarioRunOptions): Promise<ScenarioResult<Fault2mDetails>> {
  const { seed, size } = runParams(opts);
  const own = opts?.machine === undefined;
  const m = opts?.machine ?? new Machine({ seed, ramBytes: 64 * MiB, swapBytes: 0 });
  const policy = blockMigratePolicy({ blockBytes: BLOCK });
  const gpu = new NouveauGpu(m, { name: 'gtx1080', vramBytes: 8 * MiB });
  const svm = new NouveauSvm(gpu, { policy });
  opts?.onProgress?.(0, 1, 'fault-2m');
  const d = await m.sched.runTask('fault-2m', async (): Promise<Fault2mDetails> => {
    const p = m.createProcess('fault-2m');
    const v = await p.mmap({
      length: 2 * BLOCK,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    const a = Math.ceil(v / BLOCK) * BLOCK;
    const data = new Uint8Array(BLOCK);
    for (let i = 0; i < BLOCK; i++) data[i] = (i * 7 + (i >>> 12)) & 0xff;
    await p.write(a, data);
    const svmm = svm.init(p);
    const ch = svmm.channelNew();
    const batches0 = svm.stats().batches;
    let mismatches = 0;
    const t0 = m.sched.now;
    const job = await runJob(ch, {
      name: 'read-2m',
      args: [{ addr: a, bytes: BLOCK, access: 'read' }],
      run(blk) {
        const got = blk.bytes(0);
        const off = blk.index * 4096;
        for (let i = 0; i < got.length; i++) if (got[i] !== data[off + i]) mismatches++;
      },
    });
    const totalNs = m.sched.now - t0;
    const out = {
      totalNs,
      migrateNs: policy.stats.migrateNs,
      faults: job.faults,
      batches: svm.stats().batches - batches0,
      pagesMigrated: policy.stats.pagesIn,
      vramBytes: job.bytes.vram,
      mismatches,
    };
    await svm.fini();
    await p.exit();
    await gpu.remove();
    return out;
  });
  opts?.onProgress?.(1, 1, 'fault-2m');
  if (d.mismatches !== 0) throw new HmmError('EIO', `fault-2m: the GPU read ${d.mismatches} wrong bytes`);
  if (own) assertNoLeaks(m, 'fault-2m');
  return {
    scenario: 'fault-2m',
    seed,
    size,
    setup:
      '2 MiB of malloc’d memory, first GPU touch, migrated to VRAM in 512 × 4 KiB pages (GTX 1080, PCIe 3.0)',
    figures: [
      figure('totalUs', '2 MiB fault, 4 KiB pages', 'µs', d.totalNs / 1e3, ANCHORS.fault2mUs),
      figure('migrateUs', 'of which migrate_vma + copy', 'µs', d.migrateNs / 1e3, null),
    ],
    details: d,
  };
}

/** The scenario. */
export const fault2mScenario: Scenario<Fault2mDetails> = {
  name: 'fault-2m',
  description: 'one 2 MiB GPU fault served with 4 KiB pages (migrate to VRAM, map, replay)',
  anchors: [ANCHORS.fault2mUs],
  steps: 1,
  sharesMachine: true,
  ramBytes: () => 64 * MiB,
  run: runFault2m,
};
