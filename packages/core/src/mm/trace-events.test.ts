import { describe, expect, it } from 'vitest';
import { CopyEngine } from '../device/copy-engine.js';
import { SimDevice } from '../device/device.js';
import { mmuIntervalNotifierInsert, mmuIntervalSetSeq } from '../hmm/mmu-interval-notifier.js';
import { TraceRecorder } from '../sim/trace.js';
import type { TraceEventOf } from '../sim/trace.js';
import { TestDevmemDriver } from '../testing/devmem-driver.js';
import { runTraceScenario } from '../testing/chrome-trace-scenario.js';
import { ANON, P, RW, setup } from '../testing/fixtures.js';
import { Prot } from './constants.js';
import { MemoryType, memremapPages } from './memremap.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { RAM_LOCATION, memoryLocations, traceResident } from './trace-events.js';

describe('mm.resident and memory locations', () => {
  it('has RAM and one location per pagemap owner, named after its pagemaps, with its device', () => {
    const { m } = setup();
    const dev = new SimDevice(m.mm, { name: 'gpu0' });
    const ops = { pageFree: () => {}, migrateToRam: () => Promise.resolve() };
    const desc = { type: MemoryType.DEVICE_PRIVATE, bytes: 4 * P, ops };
    memremapPages(m.mm, { ...desc, owner: dev, name: 'vram#0' });
    memremapPages(m.mm, { ...desc, owner: dev, name: 'vram#1' });
    memremapPages(m.mm, { ...desc, owner: {}, name: 'vram#0' });
    memremapPages(m.mm, { ...desc, owner: 'x', name: 'other' });
    expect(memoryLocations(m.mm)).toEqual([
      { location: RAM_LOCATION, device: null, pages: 0 },
      { location: 'vram', device: dev.id, pages: 0 },
      { location: 'vram@3', device: null, pages: 0 },
      { location: 'other', device: null, pages: 0 },
    ]);
  });

  it('emits only the locations whose resident pages changed, and nothing when no one listens', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m, MemoryType.DEVICE_PRIVATE, 16);
    traceResident(m.mm); // no listener: nothing to remember
    const rec = new TraceRecorder(m.trace, (e) => e.type === 'mm.resident');
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    await p.writeU32(a, 1);
    await p.writeU32(a + P, 2);
    traceResident(m.mm); // unchanged: silent
    await m.sched.runTask('mig', () => drv.toDevice(p, a, 2));
    const seen = rec.ofType('mm.resident').map((e) => [e.location, e.pages]);
    expect(seen).toEqual([
      ['RAM', 0], // first sample (after mmap): every location once
      ['RAM', 1],
      ['RAM', 2],
      ['RAM', 0],
      ['testdev', 2],
    ]);
    expect(memoryLocations(m.mm).map((l) => l.pages)).toEqual([0, 2]);
  });
});

describe('mm.migrate', () => {
  it('pairs setup and finalize by id, with the setup start and the locations moved between', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m, MemoryType.DEVICE_PRIVATE, 16);
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    for (let i = 0; i < 2; i++) await p.writeU32(a + i * P, i);
    const rec = new TraceRecorder(m.trace, (e) => e.type === 'mm.migrate');
    const t0 = m.sched.now;
    await m.sched.runTask('mig', async () => {
      await drv.toDevice(p, a, 2);
      await drv.toSystem(p, a, 2);
    });
    const ev = rec.ofType('mm.migrate');
    expect(ev.map((e) => [e.phase, e.id, e.pages, e.from, e.to])).toEqual([
      ['setup', 1, 2, 'RAM', null],
      ['finalize', 1, 2, 'RAM', 'testdev'],
      ['setup', 2, 2, 'testdev', null],
      ['finalize', 2, 2, 'testdev', 'RAM'],
    ]);
    expect(ev[0]!.began).toBe(t0);
    expect(ev[1]!.began).toBe(t0);
    expect(ev[0]!.ts).toBeGreaterThanOrEqual(t0);
    expect(m.trace.counter('mm.migrate.pages')).toBe(4);
  });

  it('traces an eviction (mm -1) from setup to finalize without counting it as migrated pages', async () => {
    const { m, p } = setup();
    const drv = new TestDevmemDriver(m, MemoryType.DEVICE_PRIVATE, 16);
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.writeU32(a, 7);
    await m.sched.runTask('mig', () => drv.toDevice(p, a, 1));
    const counted = m.trace.counter('mm.migrate.pages');
    const rec = new TraceRecorder(m.trace, (e) => e.type === 'mm.migrate');
    await m.sched.runTask('evict', () => drv.devmem.evictAll());
    const ev = rec.ofType('mm.migrate').filter((e) => e.pages > 0);
    expect(ev.map((e) => [e.mm, e.phase, e.pages, e.from, e.to, e.id === ev[0]!.id])).toEqual([
      [-1, 'setup', 1, 'testdev', null, true],
      [-1, 'finalize', 1, 'testdev', 'RAM', true],
    ]);
    expect(m.trace.counter('mm.migrate.pages')).toBe(counted);
    expect(await p.readU32(a)).toBe(7);
  });
});

describe('mm.invalidate and mm.invalidate_end', () => {
  it('pair by seq, and a declined non-blockable start ends at once', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.writeU32(a, 1);
    mmuIntervalNotifierInsert(p.mm, a, 2 * P, {
      invalidate(sub, range, seq) {
        if (!range.blockable) return false;
        mmuIntervalSetSeq(sub, seq);
        return true;
      },
    });
    const rec = new TraceRecorder(m.trace, (e) => e.type.startsWith('mm.invalidate'));
    await p.mprotect(a, P, Prot.READ);
    const hooks = p.mm.notifier!;
    const range = { mm: p.mm, start: a, end: a + P, event: NotifyEvent.CLEAR, blockable: false, owner: null };
    expect(hooks.invalidateRangeStartNonblock(range)).toBe(false);
    const ev = rec.events as (TraceEventOf<'mm.invalidate'> | TraceEventOf<'mm.invalidate_end'>)[];
    expect(
      ev.map((e) => [e.type, e.seq, e.event, e.type === 'mm.invalidate_end' ? e.declined : e.blockable]),
    ).toEqual([
      ['mm.invalidate', 1, 'PROTECTION_VMA', true],
      ['mm.invalidate_end', 1, 'PROTECTION_VMA', false],
      ['mm.invalidate', 2, 'CLEAR', false],
      ['mm.invalidate_end', 2, 'CLEAR', true],
    ]);
  });
});

describe('device.copy and device.cmd', () => {
  it('report the transfer (start, length, device) and the command (execution start, vpn span)', async () => {
    const { m } = setup();
    const dev = new SimDevice(m.mm, { name: 'gpu0' });
    const ce = new CopyEngine(m.sched, m.cost, { name: 'ce', device: dev.id });
    const rec = new TraceRecorder(m.trace, (e) => e.type === 'device.copy' || e.type === 'device.cmd');
    const page = (index: number) => ({ store: m.mm.mem.content, index });
    ce.failNext(1);
    await m.sched.runTask('t', async () => {
      await ce.copy([page(1), page(2)], [page(3), page(4)], 'h2d');
      await dev.queue
        .submit({ op: 'map', asid: 1, vpns: [9, 4, 7], pfns: [1, 2, 3], perms: [1, 1, 1] })
        .wait();
      await dev.queue.submit({ op: 'unmap', asid: 1, startVpn: 4, endVpn: 8 }).wait();
      await dev.queue.submit({ op: 'map', asid: 1, vpns: [], pfns: [], perms: [] }).wait();
    });
    const [cp, map, unmap, empty] = rec.events as [
      TraceEventOf<'device.copy'>,
      TraceEventOf<'device.cmd'>,
      TraceEventOf<'device.cmd'>,
      TraceEventOf<'device.cmd'>,
    ];
    expect(cp).toMatchObject({ ts: 0, engine: 'ce', device: dev.id, dir: 'h2d', pages: 2, copied: 1 });
    expect(cp.ns).toBe(ce.transferNs(1, 'h2d'));
    expect(map.began).toBe(cp.ns);
    expect(map.ts - map.began).toBe(dev.queue.latency.mapBaseNs + 3 * dev.queue.latency.mapPerEntryNs);
    expect([map.minVpn, map.maxVpn, map.startVpn, map.endVpn]).toEqual([4, 9, null, null]);
    expect([unmap.minVpn, unmap.maxVpn, unmap.began]).toEqual([4, 7, map.ts]);
    expect([empty.minVpn, empty.maxVpn]).toEqual([null, null]);
    expect(new CopyEngine(m.sched, m.cost).device).toBeNull();
  });
});

describe('tracing changes nothing', () => {
  it('gives the same schedule, simulated time and memory with every event recorded or only the scheduler', async () => {
    for (const seed of [1, 2, 3]) {
      const full = await runTraceScenario(seed);
      const quiet = await runTraceScenario(seed, [], { schedOnly: true });
      const sched = full.events.filter((e) => e.type.startsWith('sched.'));
      expect(full.events.length).toBeGreaterThan(sched.length);
      expect(quiet.events.every((e) => e.type.startsWith('sched.'))).toBe(true);
      expect(JSON.stringify(quiet.events)).toBe(JSON.stringify(sched));
      expect(quiet.m.sched.now).toBe(full.m.sched.now);
      expect(quiet.m.stats()).toEqual(full.m.stats());
    }
  });
});
