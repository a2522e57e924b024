/**
 * `oversubscribe`: a vector add whose working set (three float32 vectors) is 1.5 × the GPU's VRAM,
 * run twice on the nouveau-like GTX 1080 in three ways:
 *
 * - **on demand, in place** (nouveau's policy): every page is mapped where it is and read over
 *   PCIe; nothing is migrated, so oversubscription does not matter. Its input rate is the anchored
 *   figure (perf-anchors §2: the on-demand H2D rate of the published vector add).
 * - **migrate on fault with eviction** ({@link blockMigratePolicy} with `evict`): each fault
 *   migrates its 2 MiB block to VRAM; when VRAM is full the least recently migrated block is
 *   evicted to RAM first. The kernel streams through more than VRAM holds, so the second pass finds
 *   nothing resident and every block is evicted and migrated again (LRU under a streaming access).
 * - **migrate on fault, fitting**: the same policy on a GPU with enough VRAM; the second pass runs
 *   from VRAM.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, Prot } from '@hmm/core';
import {
  NouveauGpu,
  NouveauSvm,
  countVecAddErrors,
  fillVector,
  nouveauPolicy,
  runJob,
} from '@hmm/driver-nouveau';
import type { FaultPolicy } from '@hmm/driver-nouveau';
import { ANCHORS } from '../anchors.js';
import { assertNoLeaks, figure, formatBytes, runParams } from '../scenario.js';
import type { Scenario, ScenarioResult, ScenarioRunOptions } from '../scenario.js';
import { blockMigratePolicy } from './policies.js';
import type { BlockMigrateStats } from './policies.js';

const MiB = 1024 * 1024;

/** VRAM of the oversubscribed GPU, per size; the working set is 1.5 × this. */
export const OVERSUBSCRIBE_VRAM_BYTES = { quick: 32 * MiB, full: 512 * MiB } as const;

/** One way's two passes. */
export interface OversubscribeRun {
  readonly policy: string;
  readonly vramBytes: number;
  /** Simulated kernel ns of pass 1 and pass 2. */
  readonly passNs: readonly [number, number];
  /** Bytes each pass read from VRAM and from system memory. */
  readonly vramRead: readonly [number, number];
  readonly systemRead: readonly [number, number];
  readonly faults: readonly [number, number];
  /** Migration counters (null for nouveau's policy, which never migrates on a fault). */
  readonly migration: Readonly<BlockMigrateStats> | null;
  /** Elements of c that differ from a + b after each pass (0 when correct). */
  readonly wrong: number;
}

/** Details of an {@link oversubscribeScenario} run. */
export interface OversubscribeDetails {
  readonly vectorBytes: number;
  readonly workingSetBytes: number;
  readonly onDemand: OversubscribeRun;
  readonly evicting: OversubscribeRun;
  readonly fitting: OversubscribeRun;
}

async function runWay(
  m: Machine,
  name: string,
  vramBytes: number,
  vectorBytes: number,
  policy: FaultPolicy,
  migration: BlockMigrateStats | null,
): Promise<OversubscribeRun> {
  const gpu = new NouveauGpu(m, { name, vramBytes });
  const svm = new NouveauSvm(gpu, { policy });
  const p = m.createProcess(`oversubscribe-${policy.name}`);
  const map = (): Promise<number> =>
    p.mmap({ length: vectorBytes, prot: Prot.READ | Prot.WRITE, flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
  const a = await map();
  const b = await map();
  const c = await map();
  await fillVector(p, a, vectorBytes, 'a');
  await fillVector(p, b, vectorBytes, 'b');
  await fillVector(p, c, vectorBytes, 'nan');
  const ch = svm.init(p).channelNew();
  const passNs: number[] = [];
  const vramRead: number[] = [];
  const systemRead: number[] = [];
  const faults: number[] = [];
  for (let pass = 0; pass < 2; pass++) {
    const t0 = m.sched.now;
    const job = await runJob(ch, {
      name: `vecadd-pass${pass + 1}`,
      args: [
        { addr: a, bytes: vectorBytes, access: 'read' },
        { addr: b, bytes: vectorBytes, access: 'read' },
        { addr: c, bytes: vectorBytes, access: 'write' },
      ],
      run(blk) {
        const x = blk.f32(0);
        const y = blk.f32(1);
        const z = blk.f32(2);
        for (let i = 0; i < z.length; i++) z[i] = x[i]! + y[i]!;
      },
    });
    passNs.push(m.sched.now - t0);
    vramRead.push(job.bytes.vram);
    systemRead.push(job.bytes.system);
    faults.push(job.faults);
  }
  await svm.fini();
  const wrong = await countVecAddErrors(p, c, vectorBytes);
  await p.exit();
  await gpu.remove();
  const two = (xs: number[]): readonly [number, number] => [xs[0]!, xs[1]!];
  return {
    policy: policy.name,
    vramBytes,
    passNs: two(passNs),
    vramRead: two(vramRead),
    systemRead: two(systemRead),
    faults: two(faults),
    migration: migration === null ? null : { ...migration },
    wrong,
  };
}

/** Runs the three ways one after another. */
export async function runOversubscribe(
  opts?: ScenarioRunOptions,
): Promise<ScenarioResult<OversubscribeDetails>> {
  const { seed, size } = runParams(opts);
  const vram = OVERSUBSCRIBE_VRAM_BYTES[size];
  const workingSet = (vram * 3) / 2;
  const vectorBytes = workingSet / 3;
  const own = opts?.machine === undefined;
  const m = opts?.machine ?? new Machine({ seed, ramBytes: 2 * workingSet + 64 * MiB, swapBytes: 0 });
  const progress = (i: number, label: string): void => opts?.onProgress?.(i, 3, label);
  const d = await m.sched.runTask('oversubscribe', async (): Promise<OversubscribeDetails> => {
    progress(0, 'on demand, in place');
    const onDemand = await runWay(m, 'gtx1080-ondemand', vram, vectorBytes, nouveauPolicy(), null);
    progress(1, 'migrate on fault, evicting');
    const ev = blockMigratePolicy({ evict: true });
    const evicting = await runWay(m, 'gtx1080-evict', vram, vectorBytes, ev, ev.stats);
    progress(2, 'migrate on fault, fitting');
    const fit = blockMigratePolicy({ evict: true });
    const fitting = await runWay(m, 'gtx1080-fit', 2 * workingSet, vectorBytes, fit, fit.stats);
    return { vectorBytes, workingSetBytes: workingSet, onDemand, evicting, fitting };
  });
  progress(3, 'done');
  const wrong = d.onDemand.wrong + d.evicting.wrong + d.fitting.wrong;
  if (wrong !== 0) throw new HmmError('EIO', `oversubscribe: ${wrong} elements of c are not a + b`);
  if (own) assertNoLeaks(m, 'oversubscribe');
  const inputGB = (2 * vectorBytes) / 1e9;
  const gbs = (ns: number): number => inputGB / (ns / 1e9);
  const ms = (ns: number): number => ns / 1e6;
  return {
    scenario: 'oversubscribe',
    seed,
    size,
    setup: `c = a + b over a ${formatBytes(workingSet)} working set, GPU with ${formatBytes(vram)} of VRAM (1.5× oversubscribed), two passes`,
    figures: [
      figure('onDemandGBs', 'on-demand input rate', 'GB/s', gbs(d.onDemand.passNs[0]), ANCHORS.onDemandGBs),
      figure('onDemandPass2Ms', 'pass 2, on demand in place', 'ms', ms(d.onDemand.passNs[1]), null),
      figure('evictingPass2Ms', 'pass 2, migrate + evict', 'ms', ms(d.evicting.passNs[1]), null),
      figure('fittingPass2Ms', 'pass 2, migrate (fits in VRAM)', 'ms', ms(d.fitting.passNs[1]), null),
      figure(
        'evictedMiB',
        'evicted to RAM, both passes',
        'MiB',
        (d.evicting.migration!.pagesEvicted * 4096) / MiB,
        null,
      ),
    ],
    details: d,
  };
}

/** The scenario. */
export const oversubscribeScenario: Scenario<OversubscribeDetails> = {
  name: 'oversubscribe',
  description: 'a working set 1.5× the GPU memory: on demand in place vs migrate-on-fault with eviction',
  anchors: [ANCHORS.onDemandGBs],
  steps: 3,
  sharesMachine: true,
  ramBytes: (size) => 3 * OVERSUBSCRIBE_VRAM_BYTES[size] + 64 * MiB,
  run: runOversubscribe,
};
