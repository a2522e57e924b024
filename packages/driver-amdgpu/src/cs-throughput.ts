/**
 * The CS-throughput scenario of issue 8: the same stream of small GPU jobs over one buffer, run
 * through userptr command submission (every CS collects the pages of the **whole** BO with
 * `hmm_range_fault`) and through the nouveau-like driver's on-demand replayable faults (only the
 * pages a job touches are faulted, once), for buffers of 1 MiB to 1 GiB, in simulated time. It shows
 * why userptr is slow for large buffers: its per-submission cost grows with the BO's size, not with
 * the pages the job touches.
 *
 * The buffer is a fresh anonymous mapping the CPU never touched (as a just-`malloc`'d buffer): each
 * driver faults in what it needs, so the userptr path's first CS faults in the whole BO, and the
 * fault path faults in the pages of each job. Job `j` of `K` reads and increments every byte of a
 * window of `pagesPerJob` pages at `j × size / K`, so every job touches pages no earlier job touched;
 * the CPU checks the windows afterwards.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import type { Process } from '@hmm/core';
import { NouveauGpu, NouveauSvm, runJob } from '@hmm/driver-nouveau';
import { amdgpuCsRetry } from './cs.js';
import { AmdgpuDevice } from './gpu.js';
import { UserptrFlag, gemUserptr } from './userptr.js';

const MiB = 1024 * 1024;

/** Default BO sizes: 1 MiB, 16 MiB, 256 MiB, 1 GiB. */
export const CS_THROUGHPUT_SIZES: readonly number[] = [MiB, 16 * MiB, 256 * MiB, 1024 * MiB];

/** Options of {@link runCsThroughput}. */
export interface CsThroughputOptions {
  /** BO sizes in bytes (multiples of `submissions × pagesPerJob` pages). Default {@link CS_THROUGHPUT_SIZES}. */
  readonly sizes?: readonly number[];
  /** Submissions per size (K), or a function of the size. Default 16. */
  readonly submissions?: number | ((size: number) => number);
  /** Pages each job touches. Default 16 (64 KiB). */
  readonly pagesPerJob?: number;
  readonly seed?: number;
}

/** One driver's numbers for one size. */
export interface CsThroughputSide {
  /** Mean simulated ns per submission (issue to fence), over all K. */
  readonly meanNs: number;
  /** Simulated ns of the first submission. */
  readonly firstNs: number;
  /** Mean simulated ns of submissions 2..K (steady state). */
  readonly steadyNs: number;
  /** Pages the driver walked or faulted, in total over the K submissions. */
  readonly pagesHandled: number;
  /** Pages faulted in (allocated), in total. */
  readonly pagesFaultedIn: number;
}

/** One row of the table: one BO size. */
export interface CsThroughputRow {
  readonly size: number;
  readonly pages: number;
  readonly submissions: number;
  /** Userptr CS (`amdgpuCsRetry`, graphics mode, REGISTER). */
  readonly amdgpu: CsThroughputSide & {
    /** Mean simulated ns spent inside the CS ioctl (collection, bind), per submission. */
    readonly csNs: number;
    /** CS attempts in total (K when no EAGAIN happened). */
    readonly attempts: number;
  };
  /** On-demand faults (`runJob` on a NouveauSvm channel). */
  readonly nouveau: CsThroughputSide & {
    /** Fault batches served, in total. */
    readonly batches: number;
  };
  /** amdgpu mean / nouveau mean. */
  readonly ratio: number;
}

/** What {@link runCsThroughput} measured. */
export interface CsThroughputResult {
  readonly pagesPerJob: number;
  readonly rows: readonly CsThroughputRow[];
}

function windowOf(size: number, k: number, j: number): number {
  return Math.floor((j * size) / k / PAGE_SIZE) * PAGE_SIZE;
}

async function mapBuffer(p: Process, size: number): Promise<number> {
  return p.mmap({ length: size, prot: Prot.READ | Prot.WRITE, flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
}

/** Counts the bytes of the K windows that are not 1 (each job incremented its window once). */
async function checkWindows(p: Process, addr: number, size: number, k: number, len: number): Promise<number> {
  let wrong = 0;
  for (let j = 0; j < k; j++) {
    const got = await p.read(addr + windowOf(size, k, j), len);
    for (const b of got) if (b !== 1) wrong++;
  }
  return wrong;
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function side(times: readonly number[], pagesHandled: number, pagesFaultedIn: number): CsThroughputSide {
  return {
    meanNs: mean(times),
    firstNs: times[0]!,
    steadyNs: times.length > 1 ? mean(times.slice(1)) : times[0]!,
    pagesHandled,
    pagesFaultedIn,
  };
}

function leakCheck(m: Machine, what: string): void {
  m.checkInvariants();
  const leaked = m.mm.mem.allocatedFrames().length + m.mm.mem.allocatedDeviceFrames().length;
  if (leaked !== 0) throw new HmmError('EBUSY', `cs-throughput ${what}: ${leaked} frames leaked`);
}

async function runAmdgpu(
  size: number,
  k: number,
  pagesPerJob: number,
  seed: number,
): Promise<CsThroughputRow['amdgpu']> {
  const m = new Machine({ seed, ramBytes: size + 64 * MiB });
  const gpu = new AmdgpuDevice(m);
  const len = pagesPerJob * PAGE_SIZE;
  const r = await m.sched.runTask('cs-throughput.amdgpu', async () => {
    const p = m.createProcess('userptr');
    const addr = await mapBuffer(p, size);
    const bo = await gemUserptr(gpu, p, { addr, size, flags: UserptrFlag.REGISTER });
    const vm = gpu.vm(p);
    const times: number[] = [];
    const cs: number[] = [];
    let attempts = 0;
    for (let j = 0; j < k; j++) {
      const va = addr + windowOf(size, k, j);
      const t0 = m.sched.now;
      const res = await amdgpuCsRetry(gpu, {
        vm,
        bos: [bo],
        job: {
          name: `cs${j}`,
          run(x) {
            const d = x.read(va, len);
            for (let i = 0; i < d.length; i++) d[i] = (d[i]! + 1) & 0xff;
            x.write(va, d);
          },
        },
      });
      cs.push(m.sched.now - t0);
      attempts += res.attempts;
      await res.job.wait();
      times.push(m.sched.now - t0);
    }
    const wrong = await checkWindows(p, addr, size, k, len);
    if (wrong !== 0) throw new HmmError('EIO', `cs-throughput amdgpu ${size}: ${wrong} bytes wrong`);
    const { pagesWalked, pagesFaultedIn } = bo.stats;
    await bo.free();
    await p.exit();
    await gpu.remove();
    return { ...side(times, pagesWalked, pagesFaultedIn), csNs: mean(cs), attempts };
  });
  leakCheck(m, `amdgpu ${size}`);
  return r;
}

async function runNouveau(
  size: number,
  k: number,
  pagesPerJob: number,
  seed: number,
): Promise<CsThroughputRow['nouveau']> {
  const m = new Machine({ seed, ramBytes: size + 64 * MiB });
  // Same link as the amdgpu device (PCIe 4.0 x16), so only the driver model differs.
  const gpu = new NouveauGpu(m, { vramBytes: 64 * MiB, linkGBs: m.cost.link.pcie4PeakGBs });
  const svm = new NouveauSvm(gpu);
  const len = pagesPerJob * PAGE_SIZE;
  const r = await m.sched.runTask('cs-throughput.nouveau', async () => {
    const p = m.createProcess('svm');
    const addr = await mapBuffer(p, size);
    const svmm = svm.init(p);
    const ch = svmm.channelNew();
    const times: number[] = [];
    let faults = 0;
    const rss0 = p.mm.rssPages;
    const batches0 = svm.stats().batches;
    for (let j = 0; j < k; j++) {
      const va = addr + windowOf(size, k, j);
      const t0 = m.sched.now;
      const job = await runJob(ch, {
        name: `job${j}`,
        args: [{ addr: va, bytes: len, access: 'readwrite' }],
        run(blk) {
          const d = blk.bytes(0);
          for (let i = 0; i < d.length; i++) d[i] = (d[i]! + 1) & 0xff;
        },
      });
      faults += job.faults;
      times.push(m.sched.now - t0);
    }
    const faultedIn = p.mm.rssPages - rss0;
    const batches = svm.stats().batches - batches0;
    const wrong = await checkWindows(p, addr, size, k, len);
    if (wrong !== 0) throw new HmmError('EIO', `cs-throughput nouveau ${size}: ${wrong} bytes wrong`);
    await svm.fini();
    await p.exit();
    await gpu.remove();
    return { ...side(times, faults, faultedIn), batches };
  });
  leakCheck(m, `nouveau ${size}`);
  return r;
}

/**
 * Runs the scenario (see the module doc) for every size, each driver on a fresh machine with
 * `size + 64 MiB` of RAM. EINVAL when a size is not a whole number of pages or too small to hold K
 * disjoint windows; EIO if a job's result is wrong.
 */
export async function runCsThroughput(opts: CsThroughputOptions = {}): Promise<CsThroughputResult> {
  const sizes = opts.sizes ?? CS_THROUGHPUT_SIZES;
  const pagesPerJob = opts.pagesPerJob ?? 16;
  const seed = opts.seed ?? 1;
  if (!(Number.isInteger(pagesPerJob) && pagesPerJob >= 1)) {
    throw new HmmError('EINVAL', `cs-throughput: pagesPerJob ${String(pagesPerJob)} is not a page count`);
  }
  const rows: CsThroughputRow[] = [];
  for (const size of sizes) {
    const k = typeof opts.submissions === 'function' ? opts.submissions(size) : (opts.submissions ?? 16);
    if (!(Number.isInteger(k) && k >= 1)) {
      throw new HmmError('EINVAL', `cs-throughput: ${String(k)} submissions for ${size} bytes`);
    }
    if (!(Number.isSafeInteger(size) && size % PAGE_SIZE === 0 && size >= k * pagesPerJob * PAGE_SIZE)) {
      throw new HmmError(
        'EINVAL',
        `cs-throughput: a ${String(size)}-byte buffer cannot hold ${k} disjoint windows of ${pagesPerJob} pages`,
      );
    }
    const amdgpu = await runAmdgpu(size, k, pagesPerJob, seed);
    const nouveau = await runNouveau(size, k, pagesPerJob, seed);
    rows.push({
      size,
      pages: size / PAGE_SIZE,
      submissions: k,
      amdgpu,
      nouveau,
      ratio: amdgpu.meanNs / nouveau.meanNs,
    });
  }
  return { pagesPerJob, rows };
}

function bytes(n: number): string {
  return n >= 1024 * MiB ? `${n / (1024 * MiB)} GiB` : n >= MiB ? `${n / MiB} MiB` : `${n / 1024} KiB`;
}

function time(ns: number): string {
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${ns.toFixed(0)} ns`;
}

/** The result as a text table, one row per size. */
export function formatCsThroughput(r: CsThroughputResult): string {
  const head = [
    'BO size',
    'K',
    'userptr CS mean',
    'first',
    'steady',
    'pages walked',
    'on-demand mean',
    'first',
    'steady',
    'faults',
    'userptr / on-demand',
  ];
  const body = r.rows.map((row) => [
    bytes(row.size),
    String(row.submissions),
    time(row.amdgpu.meanNs),
    time(row.amdgpu.firstNs),
    time(row.amdgpu.steadyNs),
    String(row.amdgpu.pagesHandled),
    time(row.nouveau.meanNs),
    time(row.nouveau.firstNs),
    time(row.nouveau.steadyNs),
    String(row.nouveau.pagesHandled),
    `${row.ratio.toFixed(row.ratio < 10 ? 2 : 0)}×`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [
    `CS throughput, ${r.pagesPerJob} pages (${bytes(r.pagesPerJob * PAGE_SIZE)}) touched per job, simulated ns per submission (issue to fence)`,
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
  ].join('\n');
}
