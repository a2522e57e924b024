import {
  DevPerm,
  HmmSanitizer,
  Machine,
  MapFlag,
  NotifyEvent,
  P2pMapType,
  PAGE_SIZE,
  Prot,
  isHmmError,
  p2pdmaResourceOf,
} from '@hmm/core';
import type { PciEndpoint, Process } from '@hmm/core';
import { NouveauBar, NouveauGpu, nouveauTopology } from '@hmm/driver-nouveau';
import type { NouveauBarObject } from '@hmm/driver-nouveau';
import { describe, expect, it } from 'vitest';
import { Mlx5Hca } from './hca.js';
import { IbAccess } from './mr.js';
import type { PeerMr } from './peer-mr.js';
import { RdmaRemote } from './rdma-remote.js';

const P = PAGE_SIZE;
const PAGES = 8;
const ALL = IbAccess.LOCAL_WRITE | IbAccess.REMOTE_READ | IbAccess.REMOTE_WRITE;

function pattern(len: number, salt: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 11 + salt * 29 + (i >> 12)) & 0xff);
}

function expectBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  const bad = got.findIndex((b, i) => b !== want[i]);
  expect(bad, `first differing byte ${bad}`).toBe(-1);
}

async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isHmmError(e)) return e.code;
    throw e;
  }
  throw new Error('expected a rejection');
}

/** gpu0 and nic0 below one switch, plus far0 behind a host bridge without peer forwarding. */
function rig(seed: number) {
  const m = new Machine({ seed, ramBytes: 64 * 1024 * 1024 });
  const t = nouveauTopology(m, ['gpu0', 'nic0']);
  const gpu = new NouveauGpu(m, {
    name: 'gpu0',
    vramBytes: 16 * 1024 * 1024,
    barBytes: 64 * P,
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

interface Peer {
  readonly hca: Mlx5Hca;
  readonly p: Process;
  readonly obj: NouveauBarObject;
  readonly a: number;
  readonly data: Uint8Array;
}

/** An HCA at `ep`, a process mapping a BAR object of {@link PAGES} pages written by the CPU. */
async function peer(r: Rig, ep: PciEndpoint): Promise<Peer> {
  const hca = new Mlx5Hca(r.m, { name: 'mlx5_0', pci: { topology: r.t.topology, endpoint: ep } });
  const p = r.m.createProcess('app');
  const obj = r.bar.createObject(PAGES);
  const a = await obj.mmap(p);
  const data = pattern(PAGES * P, 1);
  await p.write(a, data);
  return { hca, p, obj, a, data };
}

async function finish(r: Rig, x: Peer): Promise<void> {
  await r.m.sched.runTask('unload', async () => {
    await x.p.exit();
    await x.hca.remove();
    await r.bar.remove();
    await r.gpu.remove();
  });
  expect(r.san.violations).toEqual([]);
  expect(r.m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  expect(r.m.mm.mem.allocatedFrames()).toEqual([]);
  r.m.checkInvariants();
}

describe('peer MR over a BAR object', () => {
  it('an RDMA READ returns the exported data through a BUS_ADDR mapping; a move zaps the whole MR', async () => {
    const r = rig(1);
    let x!: Peer;
    await r.m.sched.runTask('t', async () => {
      x = await peer(r, r.nic);
      const pd = x.hca.allocPd(x.p);
      // The object starts in system memory; place it in the BAR before the NIC maps it (else the
      // exporter's own move during the first p2pMap invalidates the MR and the fault retries).
      expect(await x.obj.move('bar')).toBe('bar');
      const mr = (await pd.regPeerMr(x.a, PAGES * P, ALL)) as PeerMr;
      r.san.watch(x.hca.device, mr.asid, x.p.mm);
      expect(mr.kind).toBe('peer');
      // Registration maps nothing.
      expect([mr.maps, mr.mappedPages(), mr.mapping]).toEqual([0, 0, null]);
      const remote = await RdmaRemote.create(pd);
      expectBytes(await remote.read(mr.rkey, x.a, PAGES * P), x.data);
      expect(mr.maps).toBe(1);
      expect(mr.moves).toBe(0);
      expect(mr.stats.faultEvents).toBe(1);
      expect(mr.stats.faults).toBe(PAGES);
      expect(x.obj.place).toBe('bar');
      const mapping = mr.mapping!;
      expect(mapping.type).toBe(P2pMapType.BUS_ADDR);
      expect(mapping.writable).toBe(true);
      expect(mr.mappedPages()).toBe(PAGES);
      // The translation points at BAR frames of the GPU's p2pdma resource.
      const v0 = x.a / P;
      const mmu = x.hca.device.findMmu(mr.asid)!;
      for (let i = 0; i < PAGES; i++) {
        const pfn = mmu.pfnOf(v0 + i);
        expect(pfn).toBe(mapping.pfns[i]);
        expect(p2pdmaResourceOf(r.m.mm, pfn)).toBe(r.bar.resource);
        expect(mapping.bus[i]).toBe(r.bar.resource.toBus(pfn));
      }
      // Part of the object, at an offset.
      expectBytes(
        await remote.read(mr.rkey, x.a + 3 * P + 100, P),
        x.data.subarray(3 * P + 100, 4 * P + 100),
      );
      expect(mr.maps).toBe(1);

      // The exporter moves the object: the whole MR is zapped and its mapping given back.
      expect(await x.obj.move('system')).toBe('system');
      expect(mr.mappedPages()).toBe(0);
      expect(mr.mapping).toBeNull();
      expect(mr.moves).toBe(1);
      expect(mr.stats.invalidations).toBe(PAGES);
      expect(x.obj.outstanding).toBe(0);
      // The next access faults it back. The exporter brings the object back into the BAR during
      // that p2pMap, which invalidates the MR's interval: the fault maps once more (maps 3), and
      // the MR, holding no mapping during that move, counts no move notification.
      expectBytes(await remote.read(mr.rkey, x.a, PAGES * P), x.data);
      expect(x.obj.place).toBe('bar');
      expect(mr.maps).toBe(3);
      expect(mr.moves).toBe(1);
      expect(mr.mapping!.type).toBe(P2pMapType.BUS_ADDR);
      expect(mr.mapping).not.toBeNull();
      expect(mr.mappedPages()).toBe(PAGES);
      expect(mr.stats.faultEvents).toBe(2);
      expect(x.obj.outstanding).toBe(1);
      // An RDMA WRITE lands in the object: the CPU sees it.
      const w = pattern(P, 7);
      await remote.write(mr.rkey, x.a + 5 * P, w);
      expectBytes(await x.p.read(x.a + 5 * P, P), w);
      await remote.close();
      await pd.dealloc();
      expect(x.obj.outstanding).toBe(0);
    });
    await finish(r, x);
  });

  it('an HCA with no peer path gets system pages and still reads the right data', async () => {
    const r = rig(2);
    let x!: Peer;
    await r.m.sched.runTask('t', async () => {
      x = await peer(r, r.far);
      const pd = x.hca.allocPd(x.p);
      const mr = (await pd.regPeerMr(x.a, PAGES * P, IbAccess.REMOTE_READ)) as PeerMr;
      const remote = await RdmaRemote.create(pd);
      expectBytes(await remote.read(mr.rkey, x.a, PAGES * P), x.data);
      expect(mr.mapping!.type).toBe(P2pMapType.NOT_SUPPORTED);
      // A read-only MR's translation grants no write, whatever the exporter's mapping allows.
      const mmu = x.hca.device.findMmu(mr.asid)!;
      for (let i = 0; i < PAGES; i++) expect(mmu.lookup(x.a / P + i)).toBe(DevPerm.READ);
      expect(x.obj.place).toBe('system');
      expect([...mr.mapping!.bus].every((b) => b === -1)).toBe(true);
      // Read-only: an RDMA WRITE is refused.
      expect(await errnoOf(remote.write(mr.rkey, x.a, new Uint8Array(P)))).toBe('EACCES');
      await remote.close();
      await pd.dealloc();
    });
    await finish(r, x);
  });

  it('declines a non-blockable invalidation', async () => {
    const r = rig(3);
    let x!: Peer;
    await r.m.sched.runTask('t', async () => {
      x = await peer(r, r.nic);
      const pd = x.hca.allocPd(x.p);
      const mr = await pd.regPeerMr(x.a, PAGES * P, ALL);
      await pd.adviseMr('PREFETCH', 1, [{ lkey: mr.lkey, addr: x.a, length: P }]);
      expect(mr.mappedPages()).toBe(PAGES);
      expect(mr.stats.prefetchedPages).toBe(PAGES);
      const ok = x.p.mm.notifier!.invalidateRangeStartNonblock({
        mm: x.p.mm,
        start: x.a,
        end: x.a + P,
        event: NotifyEvent.CLEAR,
        blockable: false,
        owner: null,
      });
      expect(ok).toBe(false);
      expect(mr.mappedPages()).toBe(PAGES);
      await pd.dealloc();
    });
    await finish(r, x);
  });

  it('rejects a non-device mapping, a range leaving the mapping, and an HCA without PCI position (EINVAL)', async () => {
    const r = rig(4);
    let x!: Peer;
    await r.m.sched.runTask('t', async () => {
      x = await peer(r, r.nic);
      const pd = x.hca.allocPd(x.p);
      const keys = x.hca.mkeyCount;
      const anon = await x.p.mmap({
        length: 4 * P,
        prot: Prot.READ | Prot.WRITE,
        flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
      });
      expect(await errnoOf(pd.regPeerMr(anon, 4 * P, ALL))).toBe('EINVAL');
      expect(await errnoOf(pd.regPeerMr(x.a, (PAGES + 1) * P, ALL))).toBe('EINVAL');
      expect(await errnoOf(pd.regPeerMr(x.a + PAGES * P + P, P, ALL))).toBe('EINVAL');
      expect(x.hca.mkeyCount).toBe(keys);
      const bare = new Mlx5Hca(r.m, { name: 'mlx5_nopci' });
      const bpd = bare.allocPd(x.p);
      const err = await bpd.regPeerMr(x.a, PAGES * P, ALL).then(
        () => null,
        (e: unknown) => e,
      );
      expect(isHmmError(err) && err.code).toBe('EINVAL');
      expect(String(err)).toMatch(/PCI/);
      expect(bare.mkeyCount).toBe(0);
      expect(bpd.mrs).toEqual([]);
      await bpd.dealloc();
      await bare.remove();
      await pd.dealloc();
      expect(x.obj.outstanding).toBe(0);
    });
    await finish(r, x);
  });
});
