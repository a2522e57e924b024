import { HmmSanitizer, Machine, P2pMapType, PAGE_SIZE, Prot, isHmmError } from '@hmm/core';
import type { PciEndpoint, Process } from '@hmm/core';
import { ReferenceP2pImporter } from '@hmm/conformance';
import { describe, expect, it } from 'vitest';
import { NouveauBar, nouveauP2pTarget, nouveauTopology } from './bar.js';
import type { NouveauBarObject } from './bar.js';
import { NouveauGpu } from './gpu.js';

const P = PAGE_SIZE;
const BAR_PAGES = 64;
const PAGES = 8;

/** A machine with `gpu0` (BAR1 of {@link BAR_PAGES} pages) and `nic0` below `sw0`, and a far NIC. */
function rig() {
  const m = new Machine({ seed: 7, ramBytes: 64 * 1024 * 1024 });
  const t = nouveauTopology(m, ['gpu0', 'nic0']);
  const gpu = new NouveauGpu(m, {
    name: 'gpu0',
    vramBytes: 16 * 1024 * 1024,
    barBytes: BAR_PAGES * P,
    pci: { topology: t.topology, endpoint: t.endpoint('gpu0') },
  });
  const bar = new NouveauBar(gpu);
  const far = t.topology.addEndpoint(
    'far0',
    t.topology.addSwitch('rp1', t.topology.addHostBridge('hb1', 'none')),
  );
  const san = new HmmSanitizer(m.mm);
  return { m, t, gpu, bar, nic: t.endpoint('nic0'), far, san };
}

type Rig = ReturnType<typeof rig>;

function pattern(len: number, salt: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 11 + salt * 29 + (i >> 12)) & 0xff);
}

/** Creates a process, an object of {@link PAGES} pages, maps it and writes a pattern through the CPU. */
async function exported(r: Rig): Promise<{ p: Process; obj: NouveauBarObject; a: number; data: Uint8Array }> {
  const p = r.m.createProcess('app');
  const obj = r.bar.createObject(PAGES);
  const a = await obj.mmap(p);
  const data = pattern(PAGES * P, 1);
  await p.write(a, data);
  return { p, obj, a, data };
}

/** An importer at `ep` of `pages` pages at `a` (the whole object by default), watched by the sanitizer. */
function importer(r: Rig, ep: PciEndpoint, p: Process, a: number, pages = PAGES): ReferenceP2pImporter {
  const imp = new ReferenceP2pImporter(r.m, r.t.topology, ep, p, a, pages);
  r.san.watch(imp.device, imp.asid, p.mm);
  return imp;
}

/** Byte-for-byte equality (`toEqual` on big typed arrays is slow), naming the first mismatch. */
function expectBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  const bad = got.findIndex((b, i) => b !== want[i]);
  expect(bad, `first differing byte ${bad}`).toBe(-1);
}

/** After the test: nothing leaked, the sanitizer saw nothing, the machine is consistent. */
async function finish(r: Rig): Promise<void> {
  await r.m.sched.runTask('unload', () => r.bar.remove());
  expect(r.m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  expect(r.m.mm.mem.allocatedFrames()).toEqual([]);
  expect(r.san.violations).toEqual([]);
  expect(r.san.checkAll()).toEqual([]);
  r.m.checkInvariants();
}

describe('nouveau BAR1 exporter', () => {
  it('nouveauTopology puts the GPUs below one switch on PCIe 3 links', () => {
    const m = new Machine({ seed: 1 });
    const t = nouveauTopology(m, ['gpu0', 'gpu1']);
    expect(t.endpoints.map((e) => e.name)).toEqual(['gpu0', 'gpu1']);
    expect(t.endpoints.every((e) => e.linkGBs === m.cost.link.pcie3PeakGBs && e.parent === t.switch)).toBe(
      true,
    );
    expect(t.topology.distance(t.endpoints[0]!, t.endpoints[1]!).type).toBe(P2pMapType.BUS_ADDR);
    expect(() => t.endpoint('gpu9')).toThrow(/no endpoint 'gpu9'/);
  });

  it('publishes BAR1 and refuses a GPU without a PCI position', () => {
    const r = rig();
    expect(r.bar.resource.published).toBe(true);
    expect(r.bar.resource.nrPages).toBe(BAR_PAGES);
    const lone = new NouveauGpu(new Machine({ seed: 1 }), { vramBytes: 2 * 1024 * 1024 });
    expect(() => new NouveauBar(lone)).toThrow(expect.objectContaining({ code: 'ENODEV' }) as Error);
    expect(() => r.bar.createObject(0)).toThrow(expect.objectContaining({ code: 'EINVAL' }) as Error);
  });

  it('a peer importer maps the object in the BAR (moved there by the copy engine) and reads its data', async () => {
    const r = rig();
    await r.m.sched.runTask('test', async () => {
      const { p, obj, a, data } = await exported(r);
      expect(obj.place).toBe('system');
      const imp = importer(r, r.nic, p, a);
      const t0 = r.m.sched.now;
      expectBytes(await imp.read(a, PAGES * P), data);
      expect(r.m.sched.now).toBeGreaterThan(t0);
      expect(obj.place).toBe('bar');
      expect(obj.moves).toBe(1);
      expect(imp.mapping?.type).toBe(P2pMapType.BUS_ADDR);
      expect(imp.devicePages()).toBe(PAGES);
      expect(obj.outstanding).toBe(1);
      const m = imp.mapping as unknown as { pfns: Int32Array; bus: Float64Array };
      for (let i = 0; i < PAGES; i++) {
        expect(r.bar.resource.isAllocated(m.pfns[i]!)).toBe(true);
        expect(m.bus[i]).toBe(r.bar.resource.toBus(m.pfns[i]!));
      }
      // The importer writes into the BAR; the CPU, mapping the same frames, reads it.
      const more = pattern(P, 9);
      await imp.write(a + 2 * P, more);
      expectBytes(await p.read(a + 2 * P, P), more);
      await imp.close();
      expect(obj.outstanding).toBe(0);
      await obj.teardown();
      await p.exit();
    });
    await finish(r);
  });

  it('with the BAR exhausted the importer gets the same data from system memory', async () => {
    const r = rig();
    await r.m.sched.runTask('test', async () => {
      const { p, obj, a, data } = await exported(r);
      r.bar.exhaustBar();
      expect(r.bar.resource.nrFree).toBe(0);
      const imp = importer(r, r.nic, p, a);
      expectBytes(await imp.read(a, PAGES * P), data);
      expect(obj.place).toBe('system');
      expect(imp.mapping?.type).toBe(P2pMapType.NOT_SUPPORTED);
      expect(Array.from((imp.mapping as unknown as { bus: Float64Array }).bus)).toEqual(
        new Array(PAGES).fill(-1),
      );
      // A move to a full BAR stays in system memory and revokes nothing.
      const maps = imp.maps;
      expect(await obj.move('bar')).toBe('system');
      expect(imp.mapping).not.toBeNull();
      r.bar.releaseBar();
      expect(await obj.move('bar')).toBe('bar');
      expect(imp.mapping).toBeNull();
      expectBytes(await imp.read(a, PAGES * P), data);
      expect(imp.maps).toBe(maps + 1);
      expect(imp.mapping?.type).toBe(P2pMapType.BUS_ADDR);
      await imp.close();
      await obj.teardown();
      await p.exit();
    });
    await finish(r);
  });

  it('an importer without a peer path moves the object out of the BAR', async () => {
    const r = rig();
    await r.m.sched.runTask('test', async () => {
      const { p, obj, a, data } = await exported(r);
      const near = importer(r, r.nic, p, a);
      expectBytes(await near.read(a, PAGES * P), data);
      expect(obj.place).toBe('bar');
      const far = importer(r, r.far, p, a);
      expectBytes(await far.read(a, PAGES * P), data);
      expect(obj.place).toBe('system');
      expect(far.mapping?.type).toBe(P2pMapType.NOT_SUPPORTED);
      expect(near.mapping).toBeNull();
      // While the far importer holds its mapping the object stays in system memory for everyone.
      expectBytes(await near.read(a, PAGES * P), data);
      expect(near.mapping?.type).toBe(P2pMapType.NOT_SUPPORTED);
      expect(obj.place).toBe('system');
      await far.close();
      await near.close();
      await obj.teardown();
      await p.exit();
    });
    await finish(r);
  });

  it('a move revokes the importer, which maps again and reads the same data', async () => {
    const r = rig();
    await r.m.sched.runTask('test', async () => {
      const { p, obj, a, data } = await exported(r);
      const imp = importer(r, r.nic, p, a);
      expectBytes(await imp.read(a, PAGES * P), data);
      const before = imp.mapping;
      const maps = imp.maps;
      expect(await obj.move('system')).toBe('system');
      expect(imp.mapping).toBeNull();
      expect(imp.devicePages()).toBe(0);
      expect(obj.outstanding).toBe(0);
      // The importer refaults: p2pMap moves the object back into the BAR for it.
      expectBytes(await imp.read(a, PAGES * P), data);
      expect(imp.maps).toBeGreaterThan(maps);
      expect(imp.mapping).not.toBe(before);
      expect(obj.place).toBe('bar');
      // CPU PTEs went too: a write after the move lands in the new place.
      expect(await obj.move('system')).toBe('system');
      const fresh = pattern(PAGES * P, 3);
      await p.write(a, fresh);
      expectBytes(await imp.read(a, PAGES * P), fresh);
      await imp.close();
      await obj.teardown();
      await p.exit();
    });
    await finish(r);
  });

  it('a move revokes the pieces of a split mapping too (vm_ops->open)', async () => {
    const r = rig();
    await r.m.sched.runTask('test', async () => {
      const { p, obj, a, data } = await exported(r);
      await p.mprotect(a + 4 * P, 4 * P, Prot.READ);
      expectBytes(await p.read(a, PAGES * P), data); // CPU PTEs in both pieces
      expect(await obj.move('bar')).toBe('bar');
      // No stale PTE to the freed system pages: the CPU reads the object in the BAR.
      expectBytes(await p.read(a + 4 * P, 4 * P), data.subarray(4 * P));
      await obj.move('system');
      await p.mprotect(a + 4 * P, 4 * P, Prot.READ | Prot.WRITE);
      const fresh = pattern(4 * P, 5);
      await p.write(a + 4 * P, fresh);
      // The pieces stay apart (no merge of special mappings): import the second one.
      const imp = importer(r, r.nic, p, a + 4 * P, 4);
      expectBytes(await imp.read(a + 4 * P, 4 * P), fresh);
      expect(imp.mapping?.type).toBe(P2pMapType.BUS_ADDR);
      await imp.close();
      await obj.teardown();
      await p.exit();
    });
    await finish(r);
  });

  it('CPU writes while a move copies are not lost', async () => {
    const r = rig();
    await r.m.sched.runTask('test', async () => {
      const { p, obj, a } = await exported(r);
      let last = pattern(P, 0);
      const writer = r.m.sched.spawn('cpu-writer', async () => {
        for (let i = 1; i <= 6; i++) {
          await r.m.sched.sleep(150);
          last = pattern(P, 10 + i);
          await p.write(a + P, last);
        }
      });
      const before = r.gpu.copyEngine.stats().transfers;
      expect(await obj.move('bar')).toBe('bar');
      // The writes faulted during the copy, so the move revoked and copied again.
      expect(r.gpu.copyEngine.stats().transfers).toBeGreaterThan(before + 1);
      await writer.join();
      const imp = importer(r, r.nic, p, a);
      expectBytes(await imp.read(a + P, P), last);
      expectBytes(await p.read(a + P, P), last);
      await imp.close();
      await obj.teardown();
      await p.exit();
    });
    await finish(r);
  });

  it('teardown revokes importers and frees the BAR; later use fails, a second teardown is EINVAL', async () => {
    const r = rig();
    await r.m.sched.runTask('test', async () => {
      const { p, obj, a, data } = await exported(r);
      const imp = importer(r, r.nic, p, a);
      expectBytes(await imp.read(a, PAGES * P), data);
      await obj.teardown();
      expect(obj.torn).toBe(true);
      expect(imp.mapping).toBeNull();
      expect(imp.devicePages()).toBe(0);
      expect(r.m.mm.mem.allocatedDeviceFrames()).toEqual([]);
      expect(r.bar.objects).toEqual([]);
      await expect(imp.read(a, P)).rejects.toMatchObject({ code: 'ENODEV' });
      await expect(obj.move('bar')).rejects.toMatchObject({ code: 'ENODEV' });
      await expect(obj.mmap(p)).rejects.toMatchObject({ code: 'ENODEV' });
      let cpu: unknown = null;
      await p.read(a, 1).catch((e: unknown) => (cpu = e));
      expect(isHmmError(cpu)).toBe(true);
      await expect(obj.teardown()).rejects.toMatchObject({
        code: 'EINVAL',
        message: expect.stringMatching(/already torn down/) as string,
      });
      await imp.close();
      await p.exit();
    });
    await finish(r);
    await expect(r.m.sched.runTask('again', () => r.bar.remove())).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('nouveauP2pTarget exposes the GPU as an exporter-only target', async () => {
    const r = rig();
    const target = nouveauP2pTarget(r.m, r.gpu, { bar: r.bar });
    expect(target.createImporter).toBeUndefined();
    expect(target.exporterEndpoint).toBe(r.t.endpoint('gpu0'));
    expect(target.topology).toBe(r.t.topology);
    await r.m.sched.runTask('test', async () => {
      const p = r.m.createProcess('app');
      const exp = await target.createExporter(PAGES);
      expect(exp.pages).toBe(PAGES);
      const a = await exp.mmap(p);
      exp.exhaustBar();
      expect(await exp.move('bar')).toBe('system');
      // Teardown of the handle gives back what its exhaustBar took.
      await exp.teardown();
      expect(r.bar.resource.nrFree).toBe(BAR_PAGES);
      await p.munmap(a, PAGES * P);
      await p.exit();
    });
    expect(() => nouveauP2pTarget(new Machine({ seed: 2 }), r.gpu)).toThrow(
      expect.objectContaining({ code: 'EINVAL' }) as Error,
    );
    await finish(r);
  });
});
