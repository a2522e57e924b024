/**
 * Mirroring costs through a minimal mirror written on the public API (an interval notifier,
 * `hmmRangeFaultLoop`, a device MMU programmed by commands): device faults served per second, one
 * page per fault, and `munmap` of 1 GiB mirrored by three devices. No kernel figure exists for either.
 *
 * @module
 */
import {
  DevPerm,
  HmmPfn,
  MapFlag,
  Machine,
  Mutex,
  PAGE_SIZE,
  Prot,
  SimDevice,
  hmmPfnFlags,
  hmmPfnToPfn,
  hmmRangeFaultLoop,
  mmuIntervalNotifierInsert,
  mmuIntervalSetSeq,
} from '../src/index.js';
import type { Process } from '../src/index.js';
import { GiB, fmtInt, repeat } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

const ASID = 1;

/** One device mirroring [addr, addr+bytes) of `p`: faults map one page each; invalidations unmap. */
function mirror(m: Machine, p: Process, addr: number, bytes: number, name: string): SimDevice {
  const dev = new SimDevice(m.mm, { name });
  const lock = new Mutex(m.sched, `${name}-mirror`);
  const sub = mmuIntervalNotifierInsert(p.mm, addr, bytes, {
    async invalidate(s, range, seq) {
      if (!range.blockable) return false;
      await lock.lock();
      mmuIntervalSetSeq(s, seq);
      const start = Math.max(range.start, addr) / PAGE_SIZE;
      const end = Math.min(range.end, addr + bytes) / PAGE_SIZE;
      const fence =
        start < end ? dev.queue.submit({ op: 'unmap', asid: ASID, startVpn: start, endVpn: end }) : null;
      await fence?.wait();
      lock.unlock();
      return true;
    },
  });
  dev.setFaultHandler(async (fault) => {
    await hmmRangeFaultLoop({
      notifier: sub,
      start: fault.address,
      end: fault.address + PAGE_SIZE,
      defaultFlags: HmmPfn.REQ_FAULT | (fault.access === 'read' ? 0 : HmmPfn.REQ_WRITE),
      driverLock: lock,
      commit: async (range) => {
        const w = range.hmmPfns[0]!;
        const perm = DevPerm.READ | ((hmmPfnFlags(w) & HmmPfn.WRITE) !== 0 ? DevPerm.WRITE : 0);
        await dev.queue
          .submit({
            op: 'map',
            asid: ASID,
            vpns: [range.start / PAGE_SIZE],
            pfns: [hmmPfnToPfn(w)],
            perms: [perm],
          })
          .wait();
      },
    });
  });
  return dev;
}

/** Rows: device faults per second; munmap of 1 GiB mirrored by 3 devices (per page). */
export async function benchMirror(cfg: BenchConfig): Promise<Row[]> {
  const faultPages = 16_384; // 64 MiB, one fault per page
  cfg.log(`mirror: ${fmtInt(faultPages)} device faults; munmap of 1 GiB mirrored by 3 devices`);
  const r = await repeat(cfg, 'mirror', async () => {
    // Device faults: every page of a populated buffer read once by the device.
    const m = new Machine({ ramBytes: 256 * 1024 * 1024, swapBytes: 0 });
    const p = m.createProcess('bench');
    const a = await p.mmap({
      length: faultPages * PAGE_SIZE,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    await p.fill(a, faultPages * PAGE_SIZE, 1);
    const dev = mirror(m, p, a, faultPages * PAGE_SIZE, 'gpu');
    const t0 = process.hrtime.bigint();
    await m.sched.runTask('device', async () => {
      for (let i = 0; i < faultPages; i++) await dev.read(ASID, a + i * PAGE_SIZE, 8);
    });
    const faultNs = Number(process.hrtime.bigint() - t0) / faultPages;
    if (dev.stats().faults !== faultPages)
      throw new Error(`bench mirror: ${dev.stats().faults} faults, expected ${faultPages}`);

    // munmap of 1 GiB mirrored (every page mapped) by three devices.
    const big = new Machine({ ramBytes: 1.25 * GiB, swapBytes: 0 });
    const q = big.createProcess('bench');
    const pages = GiB / PAGE_SIZE;
    const b = await q.mmap({
      length: GiB,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    await q.fill(b, GiB, 0);
    const pfns = await q.getUserPages(b, pages);
    const devs = [0, 1, 2].map((k) => mirror(big, q, b, GiB, `dev${k}`));
    const vpns = new Float64Array(pages).map((_, i) => b / PAGE_SIZE + i);
    const perms = new Uint8Array(pages).fill(DevPerm.READ | DevPerm.WRITE);
    await big.sched.runTask('map', async () => {
      for (const d of devs)
        await d.queue.submit({ op: 'map', asid: ASID, vpns, pfns: Uint32Array.from(pfns), perms }).wait();
    });
    q.putUserPages(pfns);
    const t1 = process.hrtime.bigint();
    await big.sched.runTask('munmap', () => q.munmap(b, GiB));
    const munmapNs = Number(process.hrtime.bigint() - t1) / pages;
    if (devs.some((d) => d.mmu(ASID).size !== 0))
      throw new Error('bench mirror: device mappings left after munmap');
    return { fault: faultNs, munmap: munmapNs };
  });
  return [
    {
      id: 'device-fault',
      measurement: 'device fault served (1 page per fault)',
      unit: 'ns',
      sim: r.fault.median,
      kernel: null,
      kernelSource: null,
      ratio: null,
      target: null,
      verdict: null,
      samples: r.fault.samples,
      warmup: r.fault.warmup,
      details: [
        `${fmtInt(Math.round(1e9 / r.fault.median))} device faults per second of wall-clock: fault → hmmRangeFaultLoop → map command → replay.`,
      ],
    },
    {
      id: 'munmap-mirrored',
      measurement: 'munmap 1 GiB mirrored by 3 devices',
      unit: 'ns',
      sim: r.munmap.median,
      kernel: null,
      kernelSource: null,
      ratio: null,
      target: null,
      verdict: null,
      samples: r.munmap.samples,
      warmup: r.munmap.warmup,
      details: [
        'Per page unmapped: one UNMAP invalidation reaching three mirrors, each unmapping 262,144 device entries.',
      ],
    },
  ];
}
