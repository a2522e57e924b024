/**
 * The vector-add scenario of the issue (and of `perf-anchors.md` §2): `c = a + b` over three
 * malloc'd float32 vectors, run on the GPU either on demand (every page reached through replayable
 * faults, the GPU reading and writing host memory over PCIe) or after an explicit prefetch of all
 * three vectors to VRAM (SVM_BIND migrate), timing only the kernel. Used by the scenario test and the
 * example.
 *
 * @module
 */
import { Machine, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import type { Process } from '@hmm/core';
import { NouveauGpu } from './gpu.js';
import type { NouveauGpuOptions } from './gpu.js';
import { runJob } from './job.js';
import type { JobResult } from './job.js';
import { NouveauSvm } from './svm.js';
import type { FaultPolicy } from './policy.js';

/** Options of {@link runVecAddScenario}. */
export interface VecAddOptions {
  /** Bytes per vector (a multiple of 4 KiB). */
  readonly bytes: number;
  readonly seed?: number;
  readonly gpu?: NouveauGpuOptions;
  readonly policy?: FaultPolicy;
}

/** One run of the kernel. */
export interface VecAddRun {
  /** The kernel's job result (its `ns` is the simulated kernel time). */
  readonly job: JobResult;
  /** Fault batches the driver served during the kernel. */
  readonly batches: number;
  /** Elements of `c` that differ from `a + b`, checked by the CPU afterwards (0 when correct). */
  readonly wrong: number;
}

/** What {@link runVecAddScenario} measured. */
export interface VecAddResult {
  /** The kernel on host memory, every page reached through replayable faults. */
  readonly onDemand: VecAddRun;
  /** The kernel after all three vectors were migrated to VRAM. */
  readonly prefetched: VecAddRun;
  /** Simulated ns of the prefetch (not part of either kernel time). */
  readonly prefetchNs: number;
}

const CHUNK = 64 * 1024 * 1024;

/** Element `i` of `a` and of `b`: small integers and halves, exact in float32, so `a + b` is too. */
export function vecA(i: number): number {
  return i & 1023;
}
export function vecB(i: number): number {
  return (i & 7) * 0.5;
}

/**
 * Writes vector `which` of `bytes` at `addr` from the CPU, in chunks: `a` holds `vecA(i)`, `b`
 * holds `vecB(i)`, `nan` is the poisoned output. (The formulas are inlined: this loop runs over
 * every element of gigabyte vectors.)
 */
export async function fillVector(
  p: Process,
  addr: number,
  bytes: number,
  which: 'a' | 'b' | 'nan',
): Promise<void> {
  const v = new Float32Array(Math.min(CHUNK, bytes) / 4);
  for (let off = 0; off < bytes; off += CHUNK) {
    const n = Math.min(CHUNK, bytes - off) / 4;
    const base = off / 4;
    if (which === 'nan') v.fill(Number.NaN);
    else if (which === 'a') for (let i = 0; i < n; i++) v[i] = (base + i) & 1023;
    else for (let i = 0; i < n; i++) v[i] = ((base + i) & 7) * 0.5;
    await p.write(addr + off, new Uint8Array(v.buffer, 0, n * 4));
  }
}

/**
 * Runs the scenario on a fresh machine (see the module doc): the CPU fills `a` and `b` and poisons
 * `c` with NaN; the kernel runs on demand; the CPU checks `c` and poisons it again; all three vectors
 * are migrated to VRAM; the kernel runs again; VRAM is evicted and the CPU checks `c`.
 */
export async function runVecAddScenario(opts: VecAddOptions): Promise<VecAddResult> {
  const { bytes } = opts;
  const m = new Machine({ seed: opts.seed ?? 1, ramBytes: 3 * bytes + 64 * 1024 * 1024 });
  const gpu = new NouveauGpu(m, { vramBytes: Math.max(3 * bytes, 2 * 1024 * 1024), ...opts.gpu });
  const svm = new NouveauSvm(gpu, opts.policy !== undefined ? { policy: opts.policy } : {});
  return m.sched.runTask('vecadd', async () => {
    const p = m.createProcess('vecadd');
    const map = () =>
      p.mmap({ length: bytes, prot: Prot.READ | Prot.WRITE, flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    const a = await map();
    const b = await map();
    const c = await map();
    await fillVector(p, a, bytes, 'a');
    await fillVector(p, b, bytes, 'b');
    await fillVector(p, c, bytes, 'nan');
    const svmm = svm.init(p);
    const ch = svmm.channelNew();
    const kernel = async (): Promise<{ job: JobResult; batches: number }> => {
      const batches0 = svm.stats().batches;
      const job = await runJob(ch, {
        name: 'vecadd',
        args: [
          { addr: a, bytes, access: 'read' },
          { addr: b, bytes, access: 'read' },
          { addr: c, bytes, access: 'write' },
        ],
        run(blk) {
          const x = blk.f32(0);
          const y = blk.f32(1);
          const z = blk.f32(2);
          for (let i = 0; i < z.length; i++) z[i] = x[i]! + y[i]!;
        },
      });
      return { job, batches: svm.stats().batches - batches0 };
    };
    const first = await kernel();
    const onDemand = { ...first, wrong: await countVecAddErrors(p, c, bytes) };
    await fillVector(p, c, bytes, 'nan');
    const t0 = m.sched.now;
    await p.mm.mmapLock.read();
    try {
      for (const v of [a, b, c]) await svm.dmem.migrateToVram(p.mm, v, v + bytes);
    } finally {
      p.mm.mmapLock.readUnlock();
    }
    const prefetchNs = m.sched.now - t0;
    const second = await kernel();
    // Evict VRAM in bulk (migrate_device_range) rather than page by page through CPU faults.
    await svmm.fini();
    await svm.fini();
    const prefetched = { ...second, wrong: await countVecAddErrors(p, c, bytes) };
    await p.exit();
    return { onDemand, prefetched, prefetchNs };
  });
}

/** Counts the elements of the vector `c` (of `bytes`) that are not `vecA(i) + vecB(i)`, read by the CPU. */
export async function countVecAddErrors(p: Process, c: number, bytes: number): Promise<number> {
  let wrong = 0;
  for (let off = 0; off < bytes; off += CHUNK) {
    const n = Math.min(CHUNK, bytes - off);
    const raw = await p.read(c + off, n);
    const z = new Float32Array(raw.buffer, raw.byteOffset, n / 4);
    const base = off / 4;
    for (let i = 0; i < z.length; i++) {
      const k = base + i;
      if (z[i] !== (k & 1023) + (k & 7) * 0.5) wrong++; // vecA(k) + vecB(k), inlined
    }
  }
  return wrong;
}

/** Pages of one vector of `bytes`. */
export function vecAddPages(bytes: number): number {
  return bytes / PAGE_SIZE;
}
