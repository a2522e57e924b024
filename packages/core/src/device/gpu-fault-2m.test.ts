/**
 * Calibration check (b) of perf-anchors.md: one 2 MiB GPU fault served with 4 KiB pages, in
 * simulated time, with the default cost model.
 *
 * Real hardware (Intel Xe SVM, no THP; F. Dugast, "[PATCH v2 5/5] drm/pagemap: Enable THP support
 * for GPU memory migration", dri-devel 2026-01-05): 966–970 µs = migrate 942 µs (of which device copy
 * 223 µs) + get_pages 9 µs + bind 10 µs.
 *
 * Scenario, built only from the SDK's pieces, in the order Xe's SVM fault handler runs them: the CPU
 * fills 2 MiB of anonymous memory; a {@link SimDevice} reads it; the device-fault handler of its ASID
 * (1) migrates the 2 MiB-aligned block around the fault (512 pages) to the driver's device-private
 * memory with `migrate_vma_setup` / `_pages` / `_finalize`, copying with a {@link CopyEngine} (one h2d
 * transfer of the 512 pages), (2) collects the device pfns with `hmm_range_fault` (owner = the device,
 * so its own device-private pages are reported, not faulted), (3) maps them through the device's
 * command queue and waits for the fence; the device then replays the access.
 *
 * Where the simulated time comes from (default cost model, PCIe 4.0 x16 copy engine):
 *
 * | phase (Xe name)            | SDK cost                                                              |        ns |
 * |----------------------------|-----------------------------------------------------------------------|----------:|
 * | migrate: CPU side          | `migrate_vma_setup` charges 512 × `migrate.cpuPerPageNs` (1400)       |   716,800 |
 * | migrate: device copy       | one 2 MiB DMA on the size curve `dmaTransferNs` (a = 0.75 × 31.5 GB/s) |  ≈ 83,026 |
 * | get_pages                  | `hmm_range_fault`: no cost charged by the core (see below)            |         0 |
 * | bind                       | map command: `notifier.deviceTlbInvalNs` 5000 + 512 × `hmm.rangeFaultPerPresentPageNs` 60 | 35,720 |
 * | total                      |                                                                       | ≈ 835,546 |
 *
 * ≈ 835.5 µs, 14 % under the hardware's 970 µs. What differs from the hardware breakdown (none of it is
 * patched here with sleeps):
 * - the copy: 83 µs vs 223 µs. The size curve prices a 512-page job as one 2 MiB DMA (≈ 25 GB/s);
 *   Xe's no-THP copy moves 4 KiB pieces at ≈ 9.4 GB/s. Issuing 512 one-page transfers instead would
 *   cost 512 × ≈ 0.89 µs ≈ 457 µs, too slow the other way; the model has no per-page DMA term.
 * - get_pages: `hmm_range_fault` charges no simulated time (`hmm.rangeFaultPerPresentPageNs` is used
 *   only as the map command's per-entry cost); Xe measures 9 µs for 512 pages.
 * - bind: 35.7 µs from the command-queue latencies vs 10 µs measured.
 * - `migrate.setupNs4K` (get_pages + bind = 19 µs) and `gpuFault.serviceBaseNs` (45 µs per fault
 *   batch) are charged nowhere: not by `SimDevice` when it delivers a fault, not by the core. Adding
 *   `setupNs4K` here on top of the queue's map latency would count bind twice; `serviceBaseNs` is the
 *   UVMSmart whole-far-fault constant, which the Xe breakdown has no room for (966 ≈ 942 + 9 + 10 + 5).
 *
 * @module
 */
import { describe, expect, it } from 'vitest';
import { ANON, P, RW } from '../testing/fixtures.js';
import { hmmRangeFaultLoop } from '../hmm/hmm-range-fault-loop.js';
import { HmmPfn, hmmPfnFlags, hmmPfnToPfn } from '../hmm/hmm-range-fault.js';
import type { HmmRange } from '../hmm/hmm-range-fault.js';
import {
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
} from '../hmm/mmu-interval-notifier.js';
import type { MmuIntervalNotifier } from '../hmm/mmu-interval-notifier.js';
import { MemoryType, unlockPage } from '../mm/memremap.js';
import type { MigrateToRamFault } from '../mm/memremap.js';
import {
  migrateVmaArgs,
  MigratePfn,
  MigrateVmaSelect,
  migratePfn,
  migratePfnToPfn,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
} from '../mm/migrate-device.js';
import type { MigrateVma } from '../mm/migrate-device.js';
import type { MmuNotifierRange } from '../mm/mmu-notifier-hooks.js';
import { NotifyEvent } from '../mm/mmu-notifier-hooks.js';
import { PG } from '../mm/page-flags.js';
import { PteType, pteType } from '../mm/pgtable.js';
import type { Process } from '../mm/process.js';
import type { Vma } from '../mm/vma.js';
import { Mutex } from '../sim/locks.js';
import { dmaTransferNs } from '../sim/cost-model.js';
import { Machine } from '../system/machine.js';
import { CopyEngine } from './copy-engine.js';
import type { CopyDirection, CopyPage } from './copy-engine.js';
import { DevPerm } from './device-mmu.js';
import { SimDevice } from './device.js';
import type { DeviceFault } from './device.js';
import { HmmDevmem } from './hmm-devmem.js';

const MiB = 1024 * 1024;
const BLOCK = 2 * MiB;
const BLOCK_PAGES = BLOCK / P;

/** Simulated instants of one device fault's phases, recorded by the driver. */
interface FaultPhases {
  start: number;
  /** After `migrate_vma_setup` (CPU-side migrate cost). */
  setup: number;
  /** After the copy engine's transfer. */
  copy: number;
  /** After `migrate_vma_pages` + `migrate_vma_finalize`. */
  finalize: number;
  /** After `hmm_range_fault` returned and the driver lock was taken (get_pages). */
  getPages: number;
  /** After the map command's fence signalled (bind). */
  bind: number;
  pages: number;
}

/**
 * A minimal SVM driver in the style of Xe's `xe_svm_handle_pagefault` / drm_gpusvm: device faults
 * migrate the 2 MiB block around the fault to device-private memory and map it; CPU faults on its
 * device-private pages migrate one page back.
 */
class SvmDriver {
  readonly device: SimDevice;
  readonly asid: number;
  readonly devmem: HmmDevmem;
  readonly engine: CopyEngine;
  /** The driver lock of the sequence protocol (taken by the invalidate callback). */
  readonly lock: Mutex;
  readonly notifier: MmuIntervalNotifier;
  readonly faults: FaultPhases[] = [];
  cpuFaults = 0;

  constructor(
    readonly m: Machine,
    readonly p: Process,
    start: number,
    length: number,
  ) {
    this.device = new SimDevice(m.mm, { name: 'xe' });
    this.asid = this.device.allocAsid();
    this.devmem = new HmmDevmem(
      m.mm,
      { migrateToRam: (f) => this.migrateToRam(f) },
      {
        type: MemoryType.DEVICE_PRIVATE,
        owner: this.device,
        capacityBytes: 2 * BLOCK,
        chunkBytes: BLOCK,
        name: 'xe-vram',
      },
    );
    this.engine = new CopyEngine(m.sched, m.cost, { name: 'xe-bcs' });
    this.lock = new Mutex(m.sched, 'xe-svm');
    this.notifier = mmuIntervalNotifierInsert(p.mm, start, length, {
      invalidate: (sub, range, seq) => this.invalidate(sub, range, seq),
    });
    this.device.setFaultHandler((f) => this.handleFault(f), this.asid);
  }

  private invalidate(
    sub: MmuIntervalNotifier,
    range: MmuNotifierRange,
    seq: number,
  ): boolean | Promise<boolean> {
    // Our own migration: the device mapping is updated by the driver itself.
    if (range.event === NotifyEvent.MIGRATE && range.owner === this.device) return true;
    if (!range.blockable) return false;
    return (async () => {
      await this.lock.lock();
      try {
        mmuIntervalSetSeq(sub, seq);
        await this.unmap(range.start, range.end);
        return true;
      } finally {
        this.lock.unlock();
      }
    })();
  }

  private async unmap(start: number, end: number): Promise<void> {
    if (this.device.removed) return;
    await this.device.queue
      .submit({ op: 'unmap', asid: this.asid, startVpn: start / P, endVpn: end / P })
      .wait();
  }

  /** The device-fault handler: migrate the block, get its pages, bind them. */
  private async handleFault(fault: DeviceFault): Promise<void> {
    const sched = this.m.sched;
    const mm = this.p.mm;
    const ph: FaultPhases = {
      start: sched.now,
      setup: 0,
      copy: 0,
      finalize: 0,
      getPages: 0,
      bind: 0,
      pages: 0,
    };
    const vma = mm.vmas.lookup(fault.address);
    if (vma === undefined) throw new Error('device fault outside any VMA');
    const start = Math.max(vma.start, Math.floor(fault.address / BLOCK) * BLOCK);
    const end = Math.min(vma.end, start + BLOCK);

    await mm.mmapLock.read();
    try {
      ph.pages = await this.migrateToDevice(vma, start, end, ph);
    } finally {
      mm.mmapLock.readUnlock();
    }

    const write = fault.access !== 'read';
    await hmmRangeFaultLoop({
      notifier: this.notifier,
      start,
      end,
      defaultFlags: HmmPfn.REQ_FAULT | (write ? HmmPfn.REQ_WRITE : 0),
      devPrivateOwner: this.device,
      driverLock: this.lock,
      commit: async (range) => {
        ph.getPages = sched.now;
        await this.bind(range);
      },
    });
    ph.bind = sched.now;
    this.faults.push(ph);
  }

  /** migrate_vma of [start, end) to device-private memory; returns the pages that moved. */
  private async migrateToDevice(vma: Vma, start: number, end: number, ph: FaultPhases): Promise<number> {
    const n = (end - start) / P;
    const mem = this.m.mm.mem;
    const args = migrateVmaArgs({ vma, start, end, pgmapOwner: this.device, flags: MigrateVmaSelect.SYSTEM });
    await migrateVmaSetup(args);
    ph.setup = this.m.sched.now;
    const from: CopyPage[] = [];
    const to: CopyPage[] = [];
    const idx: number[] = [];
    for (let i = 0; i < n; i++) {
      const e = args.src[i]!;
      if ((e & MigratePfn.MIGRATE) === 0) continue;
      const s = migratePfnToPfn(e);
      let d: number;
      try {
        d = this.devmem.allocPage();
      } catch {
        continue; // out of device memory: this page stays in RAM
      }
      args.dst[i] = migratePfn(d);
      // An empty slot: the fresh device page already reads as zeros.
      if (s < 0) continue;
      from.push({ store: mem.content, index: s });
      to.push({ store: mem.content, index: d });
      idx.push(i);
    }
    await this.copy(args, from, to, idx, 'h2d');
    ph.copy = this.m.sched.now;
    await migrateVmaPages(args);
    let moved = 0;
    for (let i = 0; i < n; i++) if ((args.src[i]! & MigratePfn.MIGRATE) !== 0) moved++;
    migrateVmaFinalize(args);
    ph.finalize = this.m.sched.now;
    return moved;
  }

  /** One copy-engine transfer; destinations whose page did not arrive are given back. */
  private async copy(
    args: MigrateVma,
    from: CopyPage[],
    to: CopyPage[],
    idx: number[],
    dir: CopyDirection,
  ): Promise<void> {
    if (from.length === 0) return;
    const { copied } = await this.engine.copy(from, to, dir);
    for (let k = copied; k < idx.length; k++) {
      const i = idx[k]!;
      const d = migratePfnToPfn(args.dst[i]!);
      args.dst[i] = 0;
      unlockPage(this.m.mm, d);
      this.m.mm.putPage(d);
    }
  }

  /** Maps the range's pages in the device MMU (one map command) and waits for it. */
  private async bind(range: HmmRange): Promise<void> {
    const n = range.hmmPfns.length;
    const vpns = new Float64Array(n);
    const pfns = new Uint32Array(n);
    const perms = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const word = range.hmmPfns[i]!;
      const flags = hmmPfnFlags(word);
      if ((flags & HmmPfn.VALID) === 0) throw new Error(`hmm_range_fault left page ${i} invalid`);
      vpns[i] = range.start / P + i;
      pfns[i] = hmmPfnToPfn(word);
      perms[i] = DevPerm.READ | ((flags & HmmPfn.WRITE) !== 0 ? DevPerm.WRITE | DevPerm.ATOMIC : 0);
    }
    await this.device.queue.submit({ op: 'map', asid: this.asid, vpns, pfns, perms }).wait();
  }

  /** `dev_pagemap_ops.migrate_to_ram`: one page back to RAM, its device entry removed first. */
  private async migrateToRam(f: MigrateToRamFault): Promise<void> {
    this.cpuFaults++;
    const mem = this.m.mm.mem;
    const args = migrateVmaArgs({
      vma: f.vma,
      start: f.address,
      end: f.address + P,
      pgmapOwner: this.device,
      flags: MigrateVmaSelect.DEVICE_PRIVATE,
      faultPage: f.page,
    });
    await migrateVmaSetup(args);
    const s = migratePfnToPfn(args.src[0]!);
    if (s < 0 || (args.src[0]! & MigratePfn.MIGRATE) === 0) {
      migrateVmaFinalize(args);
      return;
    }
    // Our own MIGRATE invalidation was skipped: drop the device entry before the page moves.
    await this.lock.lock();
    try {
      await this.unmap(f.address, f.address + P);
    } finally {
      this.lock.unlock();
    }
    const d = await this.m.mm.allocPage();
    mem.flags[d]! |= PG.LOCKED;
    args.dst[0] = migratePfn(d);
    await this.copy(args, [{ store: mem.content, index: s }], [{ store: mem.content, index: d }], [0], 'd2h');
    await migrateVmaPages(args);
    migrateVmaFinalize(args);
  }

  /** Driver unload: stop mirroring, clear the device, then (after the process is gone) free its memory. */
  async close(): Promise<void> {
    await mmuIntervalNotifierRemove(this.notifier);
    await this.device.queue.submit({ op: 'unmap-all', asid: this.asid }).wait();
  }
}

/** A 2 MiB-aligned 2 MiB block of anonymous memory, filled by the CPU with a per-page pattern. */
async function filledBlock(p: Process): Promise<{ vmaStart: number; block: number; data: Uint8Array }> {
  const vmaStart = await p.mmap({ length: 2 * BLOCK, prot: RW, flags: ANON });
  const block = Math.ceil(vmaStart / BLOCK) * BLOCK;
  const data = new Uint8Array(BLOCK);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >>> 12)) & 0xff;
  await p.write(block, data);
  return { vmaStart, block, data };
}

function entryTypeAt(m: Machine, p: Process, addr: number): number {
  const slot = p.mm.pgtable.lookup(addr / P);
  return slot < 0 ? -1 : pteType(m.mm.arena.pteFlags[slot]!);
}

describe('2 MiB GPU fault served with 4 KiB pages (perf-anchors §2, Xe SVM without THP)', () => {
  it('takes ≈ 970 µs of simulated time (±25 %): migrate (CPU + copy) + get_pages + bind', async () => {
    const m = new Machine({ ramBytes: 16 * MiB, swapBytes: 0 });
    const p = m.createProcess('svm');
    const { vmaStart, block, data } = await filledBlock(p);
    const drv = new SvmDriver(m, p, vmaStart, 2 * BLOCK);

    // The GPU reads the whole block: one fault on its first page, the rest hits the new mapping.
    let got: Uint8Array = new Uint8Array(0);
    let t0 = 0;
    let t1 = 0;
    await m.sched.runTask('gpu', async () => {
      t0 = m.sched.now;
      got = await drv.device.read(drv.asid, block, BLOCK);
      t1 = m.sched.now;
    });
    const t = t1 - t0;

    // The scenario is what it claims to be.
    expect(drv.device.stats().faults).toBe(1);
    expect(drv.faults).toHaveLength(1);
    expect(Buffer.compare(got, data)).toBe(0);
    const ph = drv.faults[0]!;
    expect(ph.pages).toBe(BLOCK_PAGES);
    expect(drv.devmem.nrAllocated).toBe(BLOCK_PAGES);
    expect(entryTypeAt(m, p, block)).toBe(PteType.DEVICE_PRIVATE_WRITE);
    expect(entryTypeAt(m, p, block + BLOCK - P)).toBe(PteType.DEVICE_PRIVATE_WRITE);
    expect(drv.device.mmu(drv.asid).size).toBe(BLOCK_PAGES);

    // The decomposition, phase by phase, against the cost model.
    const cost = m.cost;
    const lat = drv.device.queue.latency;
    const migrateCpu = ph.setup - ph.start;
    const copy = ph.copy - ph.setup;
    const pagesFinalize = ph.finalize - ph.copy;
    const getPages = ph.getPages - ph.finalize;
    const bind = ph.bind - ph.getPages;
    expect(migrateCpu).toBe(BLOCK_PAGES * cost.migrate.cpuPerPageNs); // 716,800
    expect(copy).toBeCloseTo(dmaTransferNs(cost, BLOCK, cost.link.pcie4PeakGBs), 6); // ≈ 83,000
    expect(copy).toBeCloseTo(drv.engine.transferNs(BLOCK_PAGES, 'h2d'), 6);
    expect(pagesFinalize).toBe(0);
    expect(bind).toBeCloseTo(lat.mapBaseNs + BLOCK_PAGES * lat.mapPerEntryNs, 6); // 35,720
    expect(getPages).toBeGreaterThanOrEqual(0); // hmm_range_fault: charged nothing today
    // Nothing else on the path takes time: the access itself, fault delivery and the replay are free.
    expect(t).toBeCloseTo(ph.bind - ph.start, 6);
    expect(t).toBeCloseTo(migrateCpu + copy + getPages + bind, 6);

    // The calibration check itself: within ±25 % of the hardware's 970 µs.
    expect(t).toBeGreaterThanOrEqual(0.75 * 970_000);
    expect(t).toBeLessThanOrEqual(1.25 * 970_000);

    // A CPU read of one page brings it back through the driver's migrate_to_ram, data intact.
    const mid = block + 100 * P;
    const back = await m.sched.runTask('cpu', () => p.read(mid, P));
    expect(Buffer.compare(back, data.subarray(100 * P, 101 * P))).toBe(0);
    expect(drv.cpuFaults).toBe(1);
    expect(entryTypeAt(m, p, mid)).not.toBe(PteType.DEVICE_PRIVATE_WRITE);
    expect(drv.device.mmu(drv.asid).lookup(mid / P)).toBe(0);
    expect(drv.devmem.nrAllocated).toBe(BLOCK_PAGES - 1);

    // Teardown leaves nothing behind.
    await m.sched.runTask('teardown', async () => {
      await drv.close();
      await p.exit();
      await drv.devmem.release();
      await drv.device.remove();
    });
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    m.checkInvariants();
  });
});
