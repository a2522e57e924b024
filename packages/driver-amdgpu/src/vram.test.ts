import { describe, expect, it } from 'vitest';
import { HmmError, Machine, P2pMapType, PAGE_SIZE, PciTopology, isHmmError } from '@hmm/core';
import type { PciEndpoint, Process } from '@hmm/core';
import { ReferenceP2pImporter } from '@hmm/conformance';
import { amdgpuCs } from './cs.js';
import { AmdgpuDevice } from './gpu.js';
import { AmdgpuVram, VramBoExporter } from './vram.js';
import type { VramBo } from './vram.js';

const P = PAGE_SIZE;
const PAGES = 16;

/**
 * `amdgpu0` and a peer importer below switch `sw0` of host bridge `hb0` ('any'); `rp1` a second
 * switch of `hb0` (through the host bridge); `far` below a host bridge without peer forwarding.
 */
function rig(seed = 1, visibleVramBytes = 4 * 1024 * 1024) {
  const m = new Machine({ seed });
  const topology = new PciTopology(m.cost);
  const hb = topology.addHostBridge('hb0', 'any');
  const sw = topology.addSwitch('sw0', hb);
  const gpuEp = topology.addEndpoint('amdgpu0', sw);
  const eps = {
    peer: topology.addEndpoint('peer', sw),
    bridge: topology.addEndpoint('bridge', topology.addSwitch('rp1', hb)),
    far: topology.addEndpoint(
      'far',
      topology.addSwitch('rp-far', topology.addHostBridge('hb-nop2p', 'none')),
    ),
  };
  const gpu = new AmdgpuDevice(m, { name: 'amdgpu0', pci: { topology, endpoint: gpuEp } });
  const vram = new AmdgpuVram(gpu, { visibleVramBytes });
  const importer = (p: Process, a: number, at: PciEndpoint) =>
    new ReferenceP2pImporter(m, topology, at, p, a, PAGES);
  return { m, topology, gpu, vram, eps, importer };
}

function pattern(len: number, salt: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 13 + salt) & 0xff);
}

/** Creates a BO in `domain`, maps it in a new process and writes a pattern through the CPU. */
async function exported(r: ReturnType<typeof rig>, domain: 'VRAM' | 'GTT', salt = 1) {
  const p = r.m.createProcess('app');
  const bo = await r.vram.createBo(PAGES * P, { domain });
  const a = await bo.mmap(p);
  const data = pattern(PAGES * P, salt);
  await p.write(a, data);
  return { p, bo, a, data };
}

/** Frees the BO, exits the process, unloads; checks nothing leaked. */
async function finish(r: ReturnType<typeof rig>, p: Process, bo: VramBo): Promise<void> {
  if (!bo.freed) await bo.free();
  await p.exit();
  await r.vram.remove();
  await r.gpu.remove();
}

function checkClean(m: Machine): void {
  expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  expect(m.mm.mem.allocatedFrames()).toEqual([]);
  m.checkInvariants();
}

describe('VRAM BOs exported to peers', () => {
  it('a peer importer gets BAR frames by bus address and the data; the BO is placed in VRAM', async () => {
    const r = rig();
    await r.m.sched.runTask('t', async () => {
      const { p, bo, a, data } = await exported(r, 'GTT');
      expect(bo.domain).toBe('GTT');
      const imp = r.importer(p, a, r.eps.peer);
      expect(await imp.read(a, PAGES * P)).toEqual(data);
      expect(imp.mapping?.type).toBe(P2pMapType.BUS_ADDR);
      expect(bo.domain).toBe('VRAM');
      expect(bo.moves).toBe(1);
      const frames = bo.frames();
      expect(Array.from(frames).every((pfn) => r.vram.resource.isAllocated(pfn))).toBe(true);
      expect(Array.from(imp.mapping!.bus)).toEqual(Array.from(frames, (pfn) => r.vram.resource.toBus(pfn)));
      expect(imp.devicePages()).toBe(PAGES);
      // The CPU sees the same bytes through the device file, now from VRAM.
      expect(await p.read(a, PAGES * P)).toEqual(data);
      await imp.close();
      expect(bo.outstanding).toBe(0);
      await finish(r, p, bo);
    });
    checkClean(r.m);
  });

  it('an importer through the host bridge gets THRU_HOST_BRIDGE', async () => {
    const r = rig();
    await r.m.sched.runTask('t', async () => {
      const { p, bo, a, data } = await exported(r, 'VRAM');
      expect(bo.domain).toBe('VRAM');
      const imp = r.importer(p, a, r.eps.bridge);
      expect(await imp.read(a, PAGES * P)).toEqual(data);
      expect(imp.mapping?.type).toBe(P2pMapType.THRU_HOST_BRIDGE);
      expect(bo.moves).toBe(1); // only the placement at creation
      await imp.close();
      await finish(r, p, bo);
    });
    checkClean(r.m);
  });

  it('an importer without a peer path makes a VRAM BO fall back to GTT with the same data, and keeps it there while it holds the mapping', async () => {
    const r = rig();
    await r.m.sched.runTask('t', async () => {
      const { p, bo, a, data } = await exported(r, 'VRAM');
      expect(bo.domain).toBe('VRAM');
      const far = r.importer(p, a, r.eps.far);
      expect(await far.read(a, PAGES * P)).toEqual(data);
      expect(far.mapping?.type).toBe(P2pMapType.NOT_SUPPORTED);
      expect(Array.from(far.mapping!.bus).every((b) => b === -1)).toBe(true);
      expect(bo.domain).toBe('GTT');
      expect(Array.from(bo.frames()).some((pfn) => r.vram.resource.isAllocated(pfn))).toBe(false);
      // A peer importer meanwhile is served from GTT too (VRAM is not allowed while pinned there).
      const peer = r.importer(p, a, r.eps.peer);
      expect(await peer.read(a, PAGES * P)).toEqual(data);
      expect(peer.mapping?.type).toBe(P2pMapType.NOT_SUPPORTED);
      expect(bo.domain).toBe('GTT');
      // Once the far importer is gone, a move to VRAM revokes the peer, whose next read is by bus address.
      await far.close();
      expect(await bo.move('VRAM')).toBe('VRAM');
      expect(peer.mapping).toBeNull();
      expect(await peer.read(a, PAGES * P)).toEqual(data);
      expect(peer.mapping?.type).toBe(P2pMapType.BUS_ADDR);
      await peer.close();
      await finish(r, p, bo);
    });
    checkClean(r.m);
  });

  it('a full aperture is no error: the BO is created in GTT, the peer gets system pages, and enters VRAM once there is room', async () => {
    const r = rig();
    await r.m.sched.runTask('t', async () => {
      r.vram.exhaust();
      expect(r.vram.resource.nrFree).toBe(0);
      const { p, bo, a, data } = await exported(r, 'VRAM');
      expect(bo.domain).toBe('GTT');
      const imp = r.importer(p, a, r.eps.peer);
      expect(await imp.read(a, PAGES * P)).toEqual(data);
      expect(imp.mapping?.type).toBe(P2pMapType.NOT_SUPPORTED);
      expect(await bo.move('VRAM')).toBe('GTT');
      r.vram.release();
      expect(await bo.move('VRAM')).toBe('VRAM');
      expect(imp.mapping).toBeNull();
      expect(imp.devicePages()).toBe(0);
      expect(await imp.read(a, PAGES * P)).toEqual(data);
      expect(imp.mapping?.type).toBe(P2pMapType.BUS_ADDR);
      await imp.close();
      await finish(r, p, bo);
    });
    checkClean(r.m);
  });

  it('every move revokes the importers first and waits for the BO fences; the importer then reads the new data', async () => {
    const r = rig();
    await r.m.sched.runTask('t', async () => {
      const { p, bo, a, data } = await exported(r, 'GTT');
      const imp = r.importer(p, a, r.eps.peer);
      expect(await imp.read(a, PAGES * P)).toEqual(data);
      const maps = imp.maps;
      // A GPU job using the BO: the move waits for its fence (ttm_bo_wait).
      const job = await amdgpuCs(r.gpu, { vm: r.gpu.vm(p), bos: [bo], job: { name: 'busy', ns: 2_000_000 } });
      const t0 = r.m.sched.now;
      expect(await bo.move('GTT')).toBe('GTT');
      expect(job.fence.signaled).toBe(true);
      expect(r.m.sched.now - t0).toBeGreaterThanOrEqual(2_000_000);
      expect(imp.mapping).toBeNull();
      expect(imp.devicePages()).toBe(0);
      const fresh = pattern(PAGES * P, 7);
      await p.write(a, fresh);
      // The peer's next fault places the BO in VRAM again (its own move revokes it once more).
      expect(await imp.read(a, PAGES * P)).toEqual(fresh);
      expect(imp.maps).toBeGreaterThan(maps);
      expect(imp.mapping?.type).toBe(P2pMapType.BUS_ADDR);
      expect(bo.domain).toBe('VRAM');
      expect(bo.moves).toBe(3);
      await imp.close();
      await finish(r, p, bo);
    });
    checkClean(r.m);
  });

  it('GEM_CLOSE revokes importers; later access fails; errors name the broken contract', async () => {
    const r = rig();
    await r.m.sched.runTask('t', async () => {
      const { p, bo, a, data } = await exported(r, 'VRAM');
      const imp = r.importer(p, a, r.eps.peer);
      expect(await imp.read(a, PAGES * P)).toEqual(data);
      expect(() => {
        bo.domain = 'CPU';
      }).toThrow(HmmError);
      await bo.free();
      expect(imp.mapping).toBeNull();
      expect(r.m.mm.mem.allocatedDeviceFrames()).toEqual([]);
      const err: unknown = await imp.read(a, P).catch((e: unknown) => e);
      expect(isHmmError(err) && err.code).toBe('ENODEV');
      await expect(bo.free()).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(bo.move('VRAM')).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(bo.mmap(p)).rejects.toMatchObject({ code: 'EINVAL' });
      await expect(r.vram.createBo(100)).rejects.toMatchObject({ code: 'EINVAL' });
      await imp.close();
      await p.munmap(a, PAGES * P);
      await finish(r, p, bo);
      await expect(r.vram.remove()).rejects.toMatchObject({ code: 'EINVAL' });
    });
    checkClean(r.m);
    expect(() => new AmdgpuVram(new AmdgpuDevice(new Machine({ seed: 2 })))).toThrow(/no PCI position/);
  });

  it('the conformance exporter handle maps places to domains and removal frees live BOs', async () => {
    const r = rig();
    await r.m.sched.runTask('t', async () => {
      const p = r.m.createProcess('app');
      const exp = new VramBoExporter(await r.vram.createBo(PAGES * P, { domain: 'GTT' }));
      expect([exp.pages, exp.place]).toEqual([PAGES, 'system']);
      const a = await exp.mmap(p);
      await p.write(a, pattern(PAGES * P, 3));
      expect(await exp.move('bar')).toBe('bar');
      expect(exp.bo.domain).toBe('VRAM');
      expect(await exp.move('system')).toBe('system');
      exp.exhaustBar();
      expect(await exp.move('bar')).toBe('system');
      expect(await p.read(a, PAGES * P)).toEqual(pattern(PAGES * P, 3));
      // A second BO left live: the unload frees it.
      const left = await r.vram.createBo(P);
      expect(left.domain).toBe('GTT'); // VRAM first, but the aperture is full
      expect(r.vram.bos).toHaveLength(2);
      await exp.teardown();
      // The handle's teardown gave back what its exhaustBar took.
      expect(r.vram.resource.nrFree).toBe(r.vram.resource.nrPages);
      expect(r.vram.bos).toEqual([left]);
      await p.exit();
      await r.vram.remove();
      expect(left.freed).toBe(true);
      await r.gpu.remove();
    });
    checkClean(r.m);
  });
});
