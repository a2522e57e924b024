/**
 * Test-only: a small traced scenario for the Chrome-trace exporter's tests. One process mirrored by
 * one device (`gpu0`) whose fault handler migrates each faulting page into the device's private
 * memory with a copy engine and maps it (fault → migrate → map), an interval notifier that unmaps
 * the device on invalidation, CPU accesses that fault pages back (`migrate_to_ram`), an eviction
 * of device memory, munmap and exit. Optional random extra steps (for property tests) are drawn
 * from a list of small operations. Not part of the published package.
 *
 * @module
 */
import { DevPerm } from '../device/device-mmu.js';
import { SimDevice } from '../device/device.js';
import { CopyEngine } from '../device/copy-engine.js';
import {
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
} from '../hmm/mmu-interval-notifier.js';
import { MemoryType } from '../mm/memremap.js';
import { TraceRecorder } from '../sim/trace.js';
import type { TraceEvent } from '../sim/trace.js';
import { Machine } from '../system/machine.js';
import { TestDevmemDriver } from './devmem-driver.js';
import { ANON, P, RW } from './fixtures.js';

/** One extra step of a random scenario. */
export type TraceStep =
  | { readonly op: 'deviceWrite'; readonly page: number }
  | { readonly op: 'deviceRead'; readonly page: number }
  | { readonly op: 'cpuRead'; readonly page: number }
  | { readonly op: 'cpuWrite'; readonly page: number }
  | { readonly op: 'toDevice'; readonly page: number; readonly pages: number }
  | { readonly op: 'toSystem'; readonly page: number; readonly pages: number }
  | { readonly op: 'mprotect'; readonly page: number }
  | { readonly op: 'evict' }
  | { readonly op: 'sleep'; readonly ns: number };

/** Pages of the scenario's buffer. */
export const SCENARIO_PAGES = 8;

/** What {@link runTraceScenario} returns. */
export interface TraceScenario {
  readonly m: Machine;
  /** Every event, or only the scheduler's with `schedOnly`. */
  readonly events: TraceEvent[];
  /** Id of the scenario's process's address space. */
  readonly mm: number;
  readonly device: SimDevice;
}

/**
 * Runs the scenario on a fresh machine with `seed`, two concurrent device tasks, then `steps` (in a
 * third task, concurrently), and returns every recorded event (with `schedOnly`, only the
 * scheduler's, listened to by type so that no other event is even built). Checks no invariant.
 */
export async function runTraceScenario(
  seed = 1,
  steps: readonly TraceStep[] = [],
  { schedOnly = false }: { readonly schedOnly?: boolean } = {},
): Promise<TraceScenario> {
  const m = new Machine({ ramBytes: 128 * P, swapBytes: 256 * P, seed });
  // schedOnly listens to the scheduler's events by type: every other emitter stays disabled.
  const schedEvents: TraceEvent[] = [];
  const rec = schedOnly ? null : new TraceRecorder(m.trace);
  const keep = (e: TraceEvent): void => {
    schedEvents.push(e);
  };
  const offs = schedOnly
    ? [
        m.trace.on('sched.spawn', keep),
        m.trace.on('sched.run', keep),
        m.trace.on('sched.block', keep),
        m.trace.on('sched.wake', keep),
        m.trace.on('sched.end', keep),
        m.trace.on('sched.clock', keep),
      ]
    : [];
  const p = m.createProcess('app');
  const device = new SimDevice(m.mm, { name: 'gpu0' });
  const engine = new CopyEngine(m.sched, m.cost, { name: 'gpu0:copy' });
  const drv = new TestDevmemDriver(m, MemoryType.DEVICE_PRIVATE, 32, device, engine);
  const asid = device.allocAsid();
  let a = 0;

  device.setFaultHandler(async (f) => {
    await drv.toDevice(p, f.address, 1);
    const slot = p.mm.pgtable.lookup(f.address / P);
    let pfn = slot < 0 ? -1 : m.mm.arena.pteVal[slot]!;
    if (pfn <= 0 || !drv.devmem.owns(pfn)) {
      // Not migrated (device memory full): map the RAM page the CPU fault gives.
      await p.readU32(f.address);
      pfn = m.mm.arena.pteVal[p.mm.pgtable.lookup(f.address / P)]!;
    }
    await device.queue
      .submit({
        op: 'map',
        asid,
        vpns: [f.address / P],
        pfns: [pfn],
        perms: [DevPerm.READ | DevPerm.WRITE],
      })
      .wait();
  });

  await m.sched.runTask('setup', async () => {
    a = await p.mmap({ length: SCENARIO_PAGES * P, prot: RW, flags: ANON });
    for (let i = 0; i < SCENARIO_PAGES; i++) await p.writeU32(a + i * P, 100 + i);
  });
  const sub = mmuIntervalNotifierInsert(p.mm, a, SCENARIO_PAGES * P, {
    invalidate(s, range, seq) {
      if (!range.blockable) return false;
      mmuIntervalSetSeq(s, seq);
      return device.queue
        .submit({ op: 'unmap', asid, startVpn: range.start / P, endVpn: range.end / P })
        .wait()
        .then(() => true);
    },
  });

  const word = (v: number): Uint8Array => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    return b;
  };
  const run = async (step: TraceStep): Promise<void> => {
    switch (step.op) {
      case 'deviceWrite':
        await device.write(asid, a + step.page * P, word(step.page));
        break;
      case 'deviceRead':
        await device.read(asid, a + step.page * P, 4);
        break;
      case 'cpuRead':
        await p.readU32(a + step.page * P);
        break;
      case 'cpuWrite':
        await p.writeU32(a + step.page * P, step.page);
        break;
      case 'toDevice':
        await drv.toDevice(p, a + step.page * P, Math.min(step.pages, SCENARIO_PAGES - step.page));
        break;
      case 'toSystem':
        await drv.toSystem(p, a + step.page * P, Math.min(step.pages, SCENARIO_PAGES - step.page));
        break;
      case 'mprotect':
        await p.mprotect(a + step.page * P, P, RW);
        break;
      case 'evict':
        await drv.devmem.evictAll();
        break;
      case 'sleep':
        await m.sched.sleep(step.ns);
        break;
    }
  };

  m.sched.spawn('kernel0', async () => {
    for (let i = 0; i < 4; i++) await device.write(asid, a + i * P, word(i));
  });
  m.sched.spawn('kernel1', async () => {
    for (let i = 4; i < SCENARIO_PAGES; i++) await device.read(asid, a + i * P, 4);
  });
  m.sched.spawn('steps', async () => {
    for (const s of steps) await run(s);
  });
  await m.sched.run();

  await m.sched.runTask('teardown', async () => {
    await p.readU32(a); // migrate_to_ram
    await drv.toDevice(p, a + 2 * P, 2);
    await drv.devmem.evictAll(); // eviction by frame number
    await p.munmap(a, SCENARIO_PAGES * P);
    await mmuIntervalNotifierRemove(sub);
    await p.exit();
    await drv.devmem.release();
  });
  rec?.stop();
  for (const off of offs) off();
  return { m, events: rec?.events ?? schedEvents, mm: p.mm.id, device };
}
