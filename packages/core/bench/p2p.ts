/**
 * Peer-to-peer reads of 1 GiB by path, in simulated GB/s, against the published GPUDirect RDMA
 * figures of perf-anchors §4 (target: within ±25 %).
 *
 * Each row builds a fresh machine and topology: a GPU (the exporter) and a NIC below one switch of
 * host bridge hb0, a NIC on a root port of hb1 (another root, peer traffic allowed across roots), and
 * a NIC below hb2 (no peer traffic allowed). The GPU gives a 1 GiB BAR window to p2pdma
 * (`p2pdmaAddResource`) and exports one 1 GiB object through a device file (the test exporter
 * `TestP2pExporter`, src/testing, which the bench's tsconfig covers); the object is written through
 * the CPU mapping of the device file and checked after the read. The importing NIC maps the whole
 * object once with `p2pMap` (under the mmap read lock), then its DMA reads it in 2 MiB transfers: the
 * bytes are copied for real from the page store into a 2 MiB device buffer, and each transfer sleeps
 * `p2pTransferNs(topology, provider, nic, 2 MiB)` of simulated time (provider null for the
 * system-memory fallback). GB/s = 2^30 bytes / simulated ns from before `p2pMap` to after
 * `p2pUnmap`. The whole object is in memory (no smaller object read repeatedly).
 *
 * @module
 */
import {
  Machine,
  P2pMapType,
  P2P_MAP_TYPE_NAMES,
  PAGE_SIZE,
  PciTopology,
  p2pMap,
  p2pUnmap,
  p2pTransferNs,
  p2pdmaAddResource,
} from '../src/index.js';
import type { P2pMapTypeId, PciEndpoint } from '../src/index.js';
import { TestP2pExporter } from '../src/testing/p2p-exporter.js';
import { GiB, MiB, collect, fmtInt } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

const BYTES = GiB;
const PAGES = BYTES / PAGE_SIZE;
/** One DMA transfer of the importer. */
const XFER = 2 * MiB;
const XFER_PAGES = XFER / PAGE_SIZE;

/** A published figure to compare with. */
interface Published {
  readonly gbs: number;
  readonly source: string;
}

/** perf-anchors §4: osu_bw D D over IB NDR200, UCX 1.13, 24,756 MB/s at 4 MiB (≈ line rate). */
const GOOD_PATH: Published = {
  gbs: 24.8,
  source:
    'perf-anchors §4: GPUDirect RDMA, good path, 24,756 MB/s at 4 MiB (osu_bw D D, IB NDR200, UCX 1.13) [P] openucx/ucx#9287',
};
/** perf-anchors §4: A30 + mlx5 across sockets (`SYS` topology), ib_write_bw 32 MiB. */
const CROSS_SOCKET: Published = {
  gbs: 11,
  source:
    'perf-anchors §4: GPUDirect RDMA, cross-socket (SYS topology), GPU↔GPU 11,000 MB/s (A30 + mlx5, ib_write_bw 32 MiB) [P] linux-rdma/perftest#241',
};
/** perf-anchors §4: the same setup's host↔host figure (no GPU memory on the path). */
const HOST_HOST: Published = {
  gbs: 23,
  source:
    'perf-anchors §4: host↔host 23,000 MB/s of the same cross-socket setup (A30 + mlx5, ib_write_bw 32 MiB) [P] linux-rdma/perftest#241',
};

/** Which importer reads the object. */
type PathName = 'switch' | 'cross-root' | 'fallback';

/** Page `i` of the object: a tag word, then a byte pattern of the page index. */
function fillPage(buf: Uint8Array, off: number, i: number): void {
  const b = (i * 131 + 7) & 0xff;
  buf.fill(b, off, off + PAGE_SIZE);
  buf[off] = i & 0xff;
  buf[off + 1] = (i >>> 8) & 0xff;
  buf[off + 2] = (i >>> 16) & 0xff;
  buf[off + 3] = 0x5a;
}

/** One measured read. */
interface Result {
  readonly type: P2pMapTypeId;
  readonly place: string;
  readonly simNs: number;
  readonly mapNs: number;
  readonly distance: number;
  readonly pathGBs: number;
  readonly wallMs: number;
}

async function readBy(path: PathName): Promise<Result> {
  const m = new Machine({ ramBytes: 1.5 * GiB, swapBytes: 0, seed: 1 });
  const p = m.createProcess('p2p');
  const t = new PciTopology(m.cost);
  const hb0 = t.addHostBridge('hb0', 'any');
  const hb1 = t.addHostBridge('hb1', 'any');
  const hb2 = t.addHostBridge('hb2', 'none');
  const sw = t.addSwitch('sw0', hb0);
  const gpu = t.addEndpoint('gpu0', sw);
  const importers: Record<PathName, PciEndpoint> = {
    switch: t.addEndpoint('nic0', sw),
    'cross-root': t.addEndpoint('nic1', t.addSwitch('rp1', hb1)),
    fallback: t.addEndpoint('nic2', t.addSwitch('rp2', hb2)),
  };
  const nic = importers[path];
  const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: BYTES });
  bar.published = true;
  const exp = new TestP2pExporter(m, t, gpu, bar, PAGES);
  const addr = await exp.mmap(p);
  const mm = p.mm;
  const buf = new Uint8Array(XFER);
  let res: Result | undefined;
  await m.sched.runTask('bench-p2p', async () => {
    // Place the object where this importer will find it (the exporter's choice on a first p2pMap),
    // then write it through the CPU mapping of the device file; all untimed.
    const reach = t.distance(gpu, nic);
    if (reach.type !== P2pMapType.NOT_SUPPORTED) await exp.move('bar');
    for (let c = 0; c < PAGES; c += XFER_PAGES) {
      for (let i = 0; i < XFER_PAGES; i++) fillPage(buf, i * PAGE_SIZE, c + i);
      await p.write(addr + c * PAGE_SIZE, buf);
    }
    collect();
    const w0 = process.hrtime.bigint();
    const t0 = m.sched.now;
    await mm.mmapLock.read();
    let mapping;
    try {
      mapping = await p2pMap(mm, addr, addr + BYTES, { name: nic.name, pci: nic }, false);
    } finally {
      mm.mmapLock.readUnlock();
    }
    const mapNs = m.sched.now - t0;
    const provider = mapping.type === P2pMapType.NOT_SUPPORTED ? null : gpu;
    const store = m.mm.mem.content;
    const xferNs = p2pTransferNs(t, provider, nic, XFER);
    for (let c = 0; c < PAGES; c += XFER_PAGES) {
      for (let i = 0; i < XFER_PAGES; i++) store.read(mapping.pfns[c + i]!, 0, buf, i * PAGE_SIZE, PAGE_SIZE);
      await m.sched.sleep(xferNs);
      // The device checks what it received (outside the simulated time, which the sleep fixed).
      for (let i = 0; i < XFER_PAGES; i += 1) {
        const o = i * PAGE_SIZE;
        const pg = c + i;
        if (
          buf[o]! !== (pg & 0xff) ||
          buf[o + 1]! !== ((pg >>> 8) & 0xff) ||
          buf[o + 2]! !== ((pg >>> 16) & 0xff) ||
          buf[o + 3]! !== 0x5a ||
          buf[o + PAGE_SIZE - 1]! !== ((pg * 131 + 7) & 0xff)
        )
          throw new Error(`bench p2p (${path}): page ${pg} read back wrong`);
      }
    }
    p2pUnmap(mapping);
    const simNs = m.sched.now - t0;
    const wallMs = Number(process.hrtime.bigint() - w0) / 1e6;
    const expectBar = path !== 'fallback';
    if ((exp.place === 'bar') !== expectBar || (mapping.type !== P2pMapType.NOT_SUPPORTED) !== expectBar)
      throw new Error(
        `bench p2p (${path}): object in ${exp.place}, mapping ${P2P_MAP_TYPE_NAMES[mapping.type]}`,
      );
    res = {
      type: mapping.type,
      place: exp.place,
      simNs,
      mapNs,
      distance: reach.distance,
      pathGBs: provider === null ? t.systemGBs(nic) : t.pathGBs(gpu, nic),
      wallMs,
    };
  });
  await m.sched.runTask('bench-p2p-teardown', async () => {
    await exp.teardown();
    await p.exit();
  });
  bar.remove();
  if (m.mm.mem.allocatedFrames().length !== 0 || m.mm.mem.allocatedDeviceFrames().length !== 0)
    throw new Error(`bench p2p (${path}): frames leaked`);
  return res!;
}

/** Rows: a 1 GiB peer read through a common switch, across host bridges, and the system-memory fallback. */
export async function benchP2p(cfg: BenchConfig): Promise<Row[]> {
  cfg.log('p2p: 1 GiB object read by a peer in 2 MiB DMA transfers (simulated time), fresh machine per path');
  const rows: Row[] = [];
  const spec: [PathName, string, string, Published, string][] = [
    [
      'switch',
      'p2p-switch',
      'p2p read 1 GiB: common switch (BUS_ADDR)',
      GOOD_PATH,
      'gpu0 and nic0 below switch sw0: bus addresses, the traffic never reaches the root complex.',
    ],
    [
      'cross-root',
      'p2p-host-bridge',
      'p2p read 1 GiB: across host bridges (THRU_HOST_BRIDGE)',
      CROSS_SOCKET,
      "gpu0 below hb0, nic1 on a root port of hb1, both bridges allow peer traffic across roots ('any'): link × pcieEfficiency × p2pCrossRootPenalty.",
    ],
    [
      'fallback',
      'p2p-fallback',
      'p2p read 1 GiB: system-memory fallback (NOT_SUPPORTED)',
      HOST_HOST,
      "nic2 below hb2, which allows no peer traffic ('none'): the exporter keeps the object in system memory and the NIC reads it over its own link. Compared with the host↔host figure of perftest#241 (the NIC reading host memory, no GPU on the path), not with a peer figure.",
    ],
  ];
  for (const [path, id, measurement, pub, how] of spec) {
    cfg.log(`  p2p ${path}`);
    const r = await readBy(path);
    collect();
    const gbs = BYTES / r.simNs;
    const ratio = gbs / pub.gbs;
    rows.push({
      id,
      measurement,
      unit: 'GB/s',
      sim: gbs,
      kernel: pub.gbs,
      kernelSource: pub.source,
      ratio,
      target: `${pub.gbs} GB/s ±25 %`,
      verdict: Math.abs(ratio - 1) <= 0.25 ? 'PASS' : 'FAIL',
      details: [
        how,
        `Simulated time, not wall clock: ${(r.simNs / 1e6).toFixed(2)} ms for 2^30 bytes (p2pMap ${fmtInt(r.mapNs)} ns of it), ${fmtInt(BYTES / XFER)} transfers of 2 MiB; mapping type ${P2P_MAP_TYPE_NAMES[r.type]}, object in ${r.place}${r.distance >= 0 ? `, distance ${r.distance}` : ''}; path model ${r.pathGBs.toFixed(2)} GB/s.`,
        `Every byte copied from the page store and checked; wall clock of the read ${fmtInt(r.wallMs)} ms.`,
      ],
    });
  }
  return rows;
}
