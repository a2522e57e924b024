import { describe, expect, it } from 'vitest';
import { MapFlag, Prot } from '../mm/constants.js';
import { zapVmaPtes } from '../mm/memory.js';
import { HmmSanitizer } from '../sanitizer/hmm-sanitizer.js';
import { HmmDevmem } from '../device/hmm-devmem.js';
import { SimDevice } from '../device/device.js';
import { MemoryType } from '../mm/memremap.js';
import { ANON, P, RW, setup } from '../testing/fixtures.js';
import { TestP2pExporter } from '../testing/p2p-exporter.js';
import { TestP2pImporter } from '../testing/p2p-importer.js';
import type { Machine } from '../system/machine.js';
import { findP2pmem, hasP2pmem, p2pTransferNs, p2pdmaAddResource } from './p2pdma.js';
import { p2pMap, p2pMappingLive, p2pUnmap } from './p2p-map.js';
import { p2pMapLoop } from './p2p-map-loop.js';
import { Mutex } from '../sim/locks.js';
import {
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
} from '../hmm/mmu-interval-notifier.js';
import type { P2pMapping } from '../mm/vma.js';
import { NotifyEvent } from '../mm/mmu-notifier-hooks.js';
import { HMM_RANGE_MAX_RETRIES } from '../hmm/hmm-range-fault-loop.js';
import { P2pMapType, PciTopology } from './topology.js';

/** Two host bridges; below the first a switch with a GPU and a NIC, and a NIC on its own root port. */
function topo(m: Machine) {
  const t = new PciTopology(m.cost);
  const hb0 = t.addHostBridge('hb0', 'any');
  const hb1 = t.addHostBridge('hb1', 'any');
  const sw = t.addSwitch('sw0', hb0);
  const gpu = t.addEndpoint('gpu0', sw);
  const nic = t.addEndpoint('nic0', sw);
  const rp = t.addSwitch('rp1', hb0);
  const nicRp = t.addEndpoint('nic1', rp);
  const far = t.addEndpoint('nic2', t.addSwitch('rp2', hb1));
  return { t, hb0, hb1, sw, gpu, nic, nicRp, far };
}

describe('PCI topology', () => {
  it('gives the kernel three outcomes and distances', () => {
    const { m } = setup();
    const { t, hb0, hb1, sw, gpu, nic, nicRp, far } = topo(m);
    expect(t.distance(gpu, gpu)).toEqual({ type: P2pMapType.BUS_ADDR, distance: 0, crossRoot: false });
    expect(t.distance(gpu, nic)).toEqual({ type: P2pMapType.BUS_ADDR, distance: 2, crossRoot: false });
    expect(t.distance(gpu, nicRp)).toEqual({
      type: P2pMapType.THRU_HOST_BRIDGE,
      distance: 4,
      crossRoot: false,
    });
    expect(t.distance(gpu, far).type).toBe(P2pMapType.THRU_HOST_BRIDGE);
    expect(t.distance(gpu, far).crossRoot).toBe(true);
    t.setHostBridgeP2p(hb1, 'same-bridge');
    expect(t.distance(gpu, far).type).toBe(P2pMapType.NOT_SUPPORTED);
    t.setHostBridgeP2p(hb0, 'none');
    expect(t.distance(gpu, nicRp).type).toBe(P2pMapType.NOT_SUPPORTED);
    sw.acsRedirect = true; // peer traffic forced up to a root that does not allow it
    expect(t.distance(gpu, nic).type).toBe(P2pMapType.NOT_SUPPORTED);
    expect(t.distanceMany(gpu, [gpu])).toBe(0);
    expect(t.distanceMany(gpu, [gpu, nic])).toBe(-1);
    expect(() => t.distanceMany(gpu, [])).toThrow(/no clients/);
    expect(() => t.addSwitch('x', gpu as never)).toThrow(/endpoint/);
  });

  it('prices a path: good path ≈ 24.8 GB/s, across sockets ≈ 11 GB/s (±25 %)', () => {
    const { m } = setup();
    const { t, gpu, nic, far } = topo(m);
    const gbs = (provider: typeof gpu | null, client: typeof gpu) =>
      (1 << 30) / p2pTransferNs(t, provider, client, 1 << 30);
    expect(gbs(gpu, nic)).toBeGreaterThan(24.8 * 0.75);
    expect(gbs(gpu, nic)).toBeLessThan(24.8 * 1.25);
    expect(gbs(gpu, far)).toBeGreaterThan(11 * 0.75);
    expect(gbs(gpu, far)).toBeLessThan(11 * 1.25);
    expect(gbs(null, nic)).toBeCloseTo(gbs(gpu, nic));
  });
});

describe('p2pdma', () => {
  it('allocates runs from the BAR window, translates bus addresses, and runs out as an ordinary condition', () => {
    const { m } = setup();
    const { t, gpu, nic, far } = topo(m);
    expect(() =>
      p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 16 * P, offset: 8 * P, size: 16 * P }),
    ).toThrow(/does not fit/);
    const res = p2pdmaAddResource(m.mm, t, gpu, {
      bar: 1,
      barBytes: 16 * P,
      offset: 8 * P,
      busBase: 0x1000_0000,
    });
    expect(hasP2pmem(m.mm, gpu)).toBe(true);
    expect(res.nrPages).toBe(8);
    const a = res.alloc(5);
    expect(res.toBus(a + 1)).toBe(0x1000_0000 + 8 * P + P);
    expect(res.busToPfn(0x1000_0000 + 8 * P + 2 * P)).toBe(a + 2);
    expect(res.busToPfn(0x1000_0000)).toBe(-1);
    expect(res.alloc(4)).toBe(-1); // only 3 left: exhausted, not an error
    const b = res.alloc(3);
    expect(res.nrFree).toBe(0);
    expect(findP2pmem(m.mm, t, [nic])).toBeUndefined(); // not published
    res.published = true;
    res.free(b);
    expect(() => res.free(b)).toThrow(/double free/);
    expect(findP2pmem(m.mm, t, [nic], 3)).toBe(res);
    expect(findP2pmem(m.mm, t, [nic], 4)).toBeUndefined();
    t.setHostBridgeP2p(t.hostBridgeOf(far), 'none');
    expect(findP2pmem(m.mm, t, [nic, far])).toBeUndefined();
    expect(() => res.remove()).toThrow(/EBUSY/);
    res.free(a);
    res.remove();
    expect(() => res.remove()).toThrow(/already removed/);
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });
});

describe('p2p_map, zap_vma_ptes and an exporter that moves', () => {
  async function rig(pages = 4, barPages = 16) {
    const { m, p } = setup();
    const { t, gpu, nic, far } = topo(m);
    const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: barPages * P });
    const exp = new TestP2pExporter(m, t, gpu, bar, pages);
    const a = await exp.mmap(p);
    const data = new Uint8Array(pages * P).map((_, i) => (i * 7) & 0xff);
    await p.write(a, data); // through the CPU mapping of the device file
    const san = new HmmSanitizer(m.mm);
    return { m, p, t, gpu, nic, far, bar, exp, a, data, san };
  }

  it('an importer below the same switch reads the data through the BAR', async () => {
    const { m, p, nic, exp, a, data, san } = await rig();
    const imp = new TestP2pImporter(m, p, nic, a, 4);
    san.watch(imp.device, imp.asid, p.mm);
    const got = await m.sched.runTask('read', () => imp.read(a, 4 * P));
    expect(got).toEqual(data);
    expect(exp.place).toBe('bar');
    expect(imp.mapping?.type).toBe(P2pMapType.BUS_ADDR);
    expect(san.checkAll()).toEqual([]);
    await m.sched.runTask('close', () => imp.close());
    await m.sched.runTask('teardown', () => exp.teardown());
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });

  it('an unreachable importer gets system memory with the same data', async () => {
    const { m, p, t, far, exp, a, data } = await rig();
    t.setHostBridgeP2p(t.hostBridgeOf(far), 'none');
    const imp = new TestP2pImporter(m, p, far, a, 4);
    expect(await m.sched.runTask('read', () => imp.read(a, 4 * P))).toEqual(data);
    expect(imp.mapping?.type).toBe(P2pMapType.NOT_SUPPORTED);
    expect(exp.place).toBe('system');
  });

  it('a full BAR falls back to system memory', async () => {
    const { m, p, nic, bar, exp, a, data } = await rig(4, 16);
    const hog = bar.alloc(14);
    const imp = new TestP2pImporter(m, p, nic, a, 4);
    expect(await m.sched.runTask('read', () => imp.read(a, 4 * P))).toEqual(data);
    expect(exp.place).toBe('system');
    bar.free(hog);
  });

  it('the exporter moves ten times under a reading importer; every read matches; nothing stale', async () => {
    const { m, p, nic, exp, a, data, san } = await rig();
    const imp = new TestP2pImporter(m, p, nic, a, 4);
    san.watch(imp.device, imp.asid, p.mm);
    const reads: boolean[] = [];
    m.sched.spawn('importer', async () => {
      for (let i = 0; i < 30; i++) {
        reads.push((await imp.read(a, 4 * P)).every((b, j) => b === data[j]));
        await m.sched.sleep(1000);
      }
    });
    m.sched.spawn('exporter', async () => {
      for (let i = 0; i < 10; i++) {
        await m.sched.sleep(2500);
        await exp.move(i % 2 === 0 ? 'system' : 'bar');
      }
    });
    await m.sched.run();
    expect(reads.length).toBe(30);
    expect(reads.every(Boolean)).toBe(true);
    expect(imp.maps).toBeGreaterThan(5);
    expect(san.violations).toEqual([]);
  });

  it('zap_vma_ptes refuses anything but a PFNMAP range inside the VMA; a later access maps again', async () => {
    const { m, p, nic, exp, a, data } = await rig();
    const vma = p.mm.vmas.lookup(a)!;
    const anon = await p.mmap({ length: P, prot: RW, flags: ANON });
    await expect(zapVmaPtes(p.mm.vmas.lookup(anon)!, anon, P)).rejects.toThrow(/not a VM_PFNMAP/);
    await expect(zapVmaPtes(vma, a, 5 * P)).rejects.toThrow(/not inside/);
    await expect(zapVmaPtes(vma, a + 1, P)).rejects.toThrow(/page-aligned/);
    const imp = new TestP2pImporter(m, p, nic, a, 4);
    await m.sched.runTask('read', () => imp.read(a, P));
    const before = imp.maps; // the first access may map twice: the exporter moved into its BAR meanwhile
    await m.sched.runTask('zap', () => zapVmaPtes(vma, a, 4 * P));
    expect(imp.mapping).toBeNull();
    expect(imp.device.mmu(imp.asid).lookup(a / P)).toBe(0);
    expect(await m.sched.runTask('read', () => imp.read(a, 4 * P))).toEqual(data);
    expect(imp.maps).toBe(before + 1);
    void exp;
  });

  it('p2p_map refuses ordinary memory and double unmaps', async () => {
    const { p, nic, a } = await rig();
    const anon = await p.mmap({ length: P, prot: RW, flags: ANON });
    const ro = await p.mmap({ length: P, prot: Prot.READ, flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
    await p.mm.mmapLock.read();
    try {
      await expect(p2pMap(p.mm, anon, anon + P, { name: 'nic', pci: nic })).rejects.toThrow(
        /not a device mapping/,
      );
      await expect(p2pMap(p.mm, a, a + 8 * P, { name: 'nic', pci: nic })).rejects.toThrow(
        /not inside one mapping/,
      );
      await expect(p2pMap(p.mm, ro, ro + P, { name: 'nic', pci: nic }, true)).rejects.toThrow(
        /EPERM|not a device/,
      );
      const m1 = await p2pMap(p.mm, a, a + P, { name: 'nic', pci: nic });
      p2pUnmap(m1);
      expect(() => p2pUnmap(m1)).toThrow(/unmapped twice/);
    } finally {
      p.mm.mmapLock.readUnlock();
    }
    await expect(p2pMap(p.mm, a, a + P, { name: 'nic', pci: nic })).rejects.toThrow(/mmap lock/);
  });

  it('the sanitizer flags an importer reaching device memory outside the BAR', async () => {
    const { m, p, nic, a, san } = await rig();
    san.mode = 'record';
    const imp = new TestP2pImporter(m, p, nic, a, 4);
    san.watch(imp.device, imp.asid, p.mm);
    const vram = new HmmDevmem(
      m.mm,
      {},
      { type: MemoryType.DEVICE_COHERENT, owner: {}, capacityBytes: 16 * P },
    );
    const outside = vram.allocPage(); // the exporter's memory, but not in its BAR window
    await m.sched.runTask('map', () =>
      imp.device.queue
        .submit({ op: 'map', asid: imp.asid, vpns: [a / P], pfns: [outside], perms: [1] })
        .wait(),
    );
    expect(san.checkAll().map((v) => v.rule)).toContain('bar-out-of-range');
  });
});

describe('peer access cost', () => {
  it('a device on the bus pays simulated time by path: peer BAR, across roots, system memory, own memory', async () => {
    const { m } = setup();
    const { t, gpu, nic, far } = topo(m);
    const res = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 16 * P });
    const run = res.alloc(4);
    const sys = m.mm.mem.alloc();
    const reader = (ep: typeof nic) => {
      const dev = new SimDevice(m.mm, { name: ep.name, pci: { topology: t, endpoint: ep } });
      const asid = dev.allocAsid();
      return { dev, asid };
    };
    const timed = async (ep: typeof nic, pfns: number[]): Promise<number> => {
      const { dev, asid } = reader(ep);
      return m.sched.runTask('read', async () => {
        await dev.queue
          .submit({ op: 'map', asid, vpns: pfns.map((_, i) => 100 + i), pfns, perms: pfns.map(() => 1) })
          .wait();
        const t0 = m.sched.now;
        await dev.read(asid, 100 * P, pfns.length * P);
        return m.sched.now - t0;
      });
    };
    const bytes = 4 * P;
    expect(await timed(nic, [run, run + 1, run + 2, run + 3])).toBeCloseTo(bytes / t.pathGBs(gpu, nic), 6);
    expect(await timed(far, [run, run + 1, run + 2, run + 3])).toBeCloseTo(bytes / t.pathGBs(gpu, far), 6);
    expect(t.pathGBs(gpu, far)).toBeCloseTo(t.pathGBs(gpu, nic) * m.cost.link.p2pCrossRootPenalty, 9);
    expect(await timed(nic, [sys])).toBeCloseTo(P / t.systemGBs(nic), 6);
    expect(await timed(gpu, [run])).toBe(0); // its own BAR memory: no bus crossing
  });
});

describe('vm_ops->open', () => {
  it('tells the exporter about every VMA an mprotect split or an mremap makes of its file', async () => {
    const { m, p } = setup();
    const { t, gpu } = topo(m);
    const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 16 * P });
    const exp = new TestP2pExporter(m, t, gpu, bar, 4);
    const a = await exp.mmap(p);
    await p.mprotect(a + 2 * P, 2 * P, Prot.READ);
    expect([...exp.vmas].map((v) => [v.start - a, v.end - a]).sort((x, y) => x[0]! - y[0]!)).toEqual([
      [0, 2 * P],
      [2 * P, 4 * P],
    ]);
    await p.munmap(a, P);
    expect([...exp.vmas].map((v) => [v.start - a, v.end - a]).sort((x, y) => x[0]! - y[0]!)).toEqual([
      [P, 2 * P],
      [2 * P, 4 * P],
    ]);
    await p.exit();
    expect(exp.vmas.size).toBe(0);
  });
});

describe('p2pMapLoop', () => {
  it('commits once, after giving back a mapping that an invalidation made stale', async () => {
    const { m, p } = setup();
    const { t, gpu, nic } = topo(m);
    const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 16 * P });
    const exp = new TestP2pExporter(m, t, gpu, bar, 4);
    const a = await exp.mmap(p);
    const lock = new Mutex(m.sched, 'importer');
    const sub = mmuIntervalNotifierInsert(p.mm, a, 4 * P, {
      invalidate: async (s, _range, seq) => {
        await lock.lock();
        mmuIntervalSetSeq(s, seq);
        lock.unlock();
        return true;
      },
    });
    const maps: P2pMapping[] = [];
    const committed: P2pMapping[] = [];
    const got = await m.sched.runTask('fault', () =>
      p2pMapLoop({
        notifier: sub,
        start: a,
        end: a + 4 * P,
        importer: { name: 'nic', pci: nic },
        write: false,
        driverLock: lock,
        onMap: (mp) => maps.push(mp),
        commit: (mp) => {
          expect(lock.isLocked).toBe(true);
          committed.push(mp);
        },
      }),
    );
    // The first p2pMap placed the object in the BAR, whose move revoked the range: that mapping was
    // given back and the loop asked again.
    expect(maps).toHaveLength(2);
    expect(p2pMappingLive(maps[0]!)).toBe(false);
    expect(committed).toEqual([got]);
    expect(p2pMappingLive(got)).toBe(true);
    expect(got.type).toBe(P2pMapType.BUS_ADDR);
    p2pUnmap(got);
    await m.sched.runTask('teardown', async () => {
      await mmuIntervalNotifierRemove(sub);
      await exp.teardown();
    });
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });

  it('gives up with EBUSY, holding no mapping, once the budget is spent', async () => {
    const { m, p } = setup();
    const { t, gpu, nic } = topo(m);
    const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 16 * P });
    const exp = new TestP2pExporter(m, t, gpu, bar, 4);
    const a = await exp.mmap(p);
    const lock = new Mutex(m.sched, 'importer');
    const sub = mmuIntervalNotifierInsert(p.mm, a, 4 * P, {
      invalidate: (s, _range, seq) => {
        mmuIntervalSetSeq(s, seq);
        return true;
      },
    });
    const maps: P2pMapping[] = [];
    const err = await m.sched.runTask('fault', () =>
      p2pMapLoop({
        notifier: sub,
        start: a,
        end: a + 4 * P,
        importer: { name: 'nic', pci: nic },
        write: false,
        driverLock: lock,
        // Every map is followed by an invalidation of the range (a livelocking exporter); no
        // simulated time passes, so the retry bound ends the loop.
        onMap: (mp) => {
          maps.push(mp);
          const range = {
            mm: p.mm,
            start: a,
            end: a + 4 * P,
            event: NotifyEvent.CLEAR,
            blockable: false,
            owner: null,
          };
          expect(p.mm.notifier!.invalidateRangeStartNonblock(range)).toBe(true);
          p.mm.notifier!.invalidateRangeEnd(range);
        },
        commit: () => {
          throw new Error('nothing may be committed');
        },
      }).then(
        () => null,
        (e: unknown) => e,
      ),
    );
    expect(err).toMatchObject({ code: 'EBUSY' });
    expect(maps).toHaveLength(HMM_RANGE_MAX_RETRIES);
    expect(maps.every((mp) => !p2pMappingLive(mp))).toBe(true);
    await m.sched.runTask('teardown', async () => {
      await mmuIntervalNotifierRemove(sub);
      await exp.teardown();
    });
  });
});
