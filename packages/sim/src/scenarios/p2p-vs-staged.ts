/**
 * `p2p-vs-staged`: a NIC (the mlx5-like HCA, IB NDR200 line rate) RDMA-reads a buffer that lives in
 * GPU memory (an amdgpu-like VRAM BO in the CPU-visible aperture, published as p2pdma memory):
 *
 * - **peer-to-peer** (GPUDirect RDMA): the NIC imports the BO (`ibv_reg_dmabuf_mr` → `p2p_map`) and
 *   reads VRAM by bus address, from below the GPU's own switch (BUS_ADDR) and from below another
 *   root complex (THRU_HOST_BRIDGE, across the roots);
 * - **staged**: the GPU's SDMA engine first copies the BO to a pinned host buffer (`cudaMemcpy`
 *   D2H), then the NIC reads host memory;
 * - **host**: the NIC reading host memory, for reference.
 *
 * Each read is one 4 MiB RDMA READ from a loopback requester, after a warm-up read that maps the MR;
 * every byte is checked. All devices sit on PCIe 4.0 x16.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, P2pMapType, PAGE_SIZE, PciTopology, Prot } from '@hmm/core';
import type { CopyPage, Process } from '@hmm/core';
import { AmdgpuDevice, AmdgpuVram } from '@hmm/driver-amdgpu';
import { IbAccess, Mlx5Hca, RdmaRemote } from '@hmm/driver-mlx5';
import type { Mlx5Mr } from '@hmm/driver-mlx5';
import { ANCHORS } from '../anchors.js';
import { assertNoLeaks, figure, formatBytes, runParams } from '../scenario.js';
import type { Scenario, ScenarioResult, ScenarioRunOptions } from '../scenario.js';

const MiB = 1024 * 1024;

/** IB NDR200 line rate, GB/s (200 Gb/s). */
export const NDR200_GBS = 25;

/** Bytes of one read (the anchor's message size). */
export const P2P_READ_BYTES = 4 * MiB;

/** Details of a {@link p2pVsStagedScenario} run. */
export interface P2pVsStagedDetails {
  readonly bytes: number;
  /** Simulated ns of one steady-state read, per path. */
  readonly p2pNs: number;
  readonly crossRootNs: number;
  readonly hostNs: number;
  /** The SDMA copy to host memory, then the NIC's read of it. */
  readonly stagedCopyNs: number;
  readonly stagedReadNs: number;
  /** Mapping type each importer got (`P2pMapType` names). */
  readonly p2pMapping: string;
  readonly crossRootMapping: string;
  /** Bytes read that differ from the BO (0 when correct). */
  readonly mismatches: number;
}

const TYPE_NAMES = ['NOT_SUPPORTED', 'BUS_ADDR', 'THRU_HOST_BRIDGE'] as const;

/** Runs the scenario. */
export async function runP2pVsStaged(opts?: ScenarioRunOptions): Promise<ScenarioResult<P2pVsStagedDetails>> {
  const { seed, size } = runParams(opts);
  const own = opts?.machine === undefined;
  const m = opts?.machine ?? new Machine({ seed, ramBytes: 128 * MiB, swapBytes: 0 });
  const len = P2P_READ_BYTES;
  const pages = len / PAGE_SIZE;
  const pcie4 = m.cost.link.pcie4PeakGBs;
  const topo = new PciTopology(m.cost);
  const hb0 = topo.addHostBridge('socket0', 'any');
  const hb1 = topo.addHostBridge('socket1', 'any');
  const sw0 = topo.addSwitch('socket0.sw', hb0);
  const sw1 = topo.addSwitch('socket1.sw', hb1);
  const gpuEp = topo.addEndpoint('amdgpu0', sw0, pcie4);
  const nearEp = topo.addEndpoint('mlx5_near', sw0, pcie4);
  const farEp = topo.addEndpoint('mlx5_far', sw1, pcie4);
  const steps = 5;
  let step = 0;
  const progress = (label: string): void => opts?.onProgress?.(step++, steps, label);
  progress('devices');
  const d = await m.sched.runTask('p2p-vs-staged', async (): Promise<P2pVsStagedDetails> => {
    const gpu = new AmdgpuDevice(m, { name: 'amdgpu0', pci: { topology: topo, endpoint: gpuEp } });
    const vram = new AmdgpuVram(gpu, { visibleVramBytes: 16 * MiB });
    const near = new Mlx5Hca(m, {
      name: 'mlx5_near',
      wireGBs: NDR200_GBS,
      pci: { topology: topo, endpoint: nearEp },
    });
    const far = new Mlx5Hca(m, {
      name: 'mlx5_far',
      wireGBs: NDR200_GBS,
      pci: { topology: topo, endpoint: farEp },
    });
    const p: Process = m.createProcess('gpudirect');
    const data = new Uint8Array(len);
    for (let i = 0; i < len; i++) data[i] = (i * 31 + (i >> 12) * 17 + 5) & 0xff;
    const bo = await vram.createBo(len);
    const a = await bo.mmap(p);
    await p.write(a, data);
    const host = await p.mmap({
      length: len,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    let mismatches = 0;
    const check = (got: Uint8Array): void => {
      for (let i = 0; i < len; i++) if (got[i] !== data[i]) mismatches++;
    };
    const access = IbAccess.LOCAL_WRITE | IbAccess.REMOTE_READ;

    /** One steady-state 4 MiB READ through `mr` (a warm-up read first maps it). */
    const timedRead = async (remote: RdmaRemote, mr: Mlx5Mr, addr: number): Promise<number> => {
      check(await remote.read(mr.rkey, addr, len));
      const t0 = m.sched.now;
      const got = await remote.read(mr.rkey, addr, len);
      const ns = m.sched.now - t0;
      check(got);
      return ns;
    };

    // Peer-to-peer, below the GPU's switch.
    progress('p2p, same switch');
    const pdNear = near.allocPd(p);
    const remoteNear = await RdmaRemote.create(pdNear, { bufferBytes: len, name: 'near-peer' });
    const peerNear = await pdNear.regPeerMr(a, len, access);
    const p2pNs = await timedRead(remoteNear, peerNear, a);
    const p2pMapping = TYPE_NAMES[peerNear.mapping?.type ?? P2pMapType.NOT_SUPPORTED];

    // Peer-to-peer, across the root complexes.
    progress('p2p, across roots');
    const pdFar = far.allocPd(p);
    const remoteFar = await RdmaRemote.create(pdFar, { bufferBytes: len, name: 'far-peer' });
    const peerFar = await pdFar.regPeerMr(a, len, access);
    const crossRootNs = await timedRead(remoteFar, peerFar, a);
    const crossRootMapping = TYPE_NAMES[peerFar.mapping?.type ?? P2pMapType.NOT_SUPPORTED];

    // Staged: SDMA copies VRAM to the pinned host buffer, then the NIC reads host memory.
    progress('staged through host memory');
    const hostMr = await pdNear.regMr(host, len, access);
    const content = m.mm.mem.content;
    const frames = bo.frames();
    const from: CopyPage[] = [];
    const to: CopyPage[] = [];
    for (let i = 0; i < pages; i++) {
      from.push({ store: content, index: frames[i]! });
      to.push({ store: content, index: hostMr.translate(host / PAGE_SIZE + i, true) });
    }
    const t0 = m.sched.now;
    const copy = await vram.sdma.copy(from, to, 'd2h');
    const stagedCopyNs = m.sched.now - t0;
    if (copy.error !== null || copy.copied !== pages) {
      throw new HmmError('EIO', `p2p-vs-staged: the SDMA copy moved ${copy.copied} of ${pages} pages`);
    }
    const stagedReadNs = await timedRead(remoteNear, hostMr, host);
    const hostNs = stagedReadNs;

    progress('teardown');
    await remoteNear.close();
    await remoteFar.close();
    await pdNear.deregMr(peerNear);
    await pdNear.deregMr(hostMr);
    await pdFar.deregMr(peerFar);
    await pdNear.dealloc();
    await pdFar.dealloc();
    await bo.free();
    await p.exit();
    await vram.remove();
    await near.remove();
    await far.remove();
    await gpu.remove();
    return {
      bytes: len,
      p2pNs,
      crossRootNs,
      hostNs,
      stagedCopyNs,
      stagedReadNs,
      p2pMapping,
      crossRootMapping,
      mismatches,
    };
  });
  opts?.onProgress?.(steps, steps, 'done');
  if (d.mismatches !== 0) throw new HmmError('EIO', `p2p-vs-staged: ${d.mismatches} bytes read wrong`);
  if (d.p2pMapping !== 'BUS_ADDR' || d.crossRootMapping !== 'THRU_HOST_BRIDGE') {
    throw new HmmError(
      'EIO',
      `p2p-vs-staged: expected BUS_ADDR and THRU_HOST_BRIDGE mappings, got ${d.p2pMapping} and ${d.crossRootMapping}`,
    );
  }
  if (own) assertNoLeaks(m, 'p2p-vs-staged');
  const gbs = (ns: number): number => len / ns;
  return {
    scenario: 'p2p-vs-staged',
    seed,
    size,
    setup: `one ${formatBytes(len)} RDMA READ by an NDR200 NIC of an amdgpu-like VRAM BO; PCIe 4.0 x16, two sockets`,
    figures: [
      figure('p2pGBs', 'peer-to-peer, same switch', 'GB/s', gbs(d.p2pNs), ANCHORS.p2pSameSwitchGBs),
      figure(
        'crossRootGBs',
        'peer-to-peer, across sockets',
        'GB/s',
        gbs(d.crossRootNs),
        ANCHORS.p2pCrossRootGBs,
      ),
      figure('hostGBs', 'NIC reading host memory', 'GB/s', gbs(d.hostNs), ANCHORS.hostGBs),
      figure(
        'stagedGBs',
        'staged: SDMA to host, then NIC',
        'GB/s',
        gbs(d.stagedCopyNs + d.stagedReadNs),
        null,
      ),
      figure('p2pSpeedup', 'peer-to-peer / staged', '×', (d.stagedCopyNs + d.stagedReadNs) / d.p2pNs, null),
    ],
    details: d,
  };
}

/** The scenario. */
export const p2pVsStagedScenario: Scenario<P2pVsStagedDetails> = {
  name: 'p2p-vs-staged',
  description:
    'a NIC reading GPU memory peer-to-peer (same switch, across sockets) vs staged through host memory',
  anchors: [ANCHORS.p2pSameSwitchGBs, ANCHORS.p2pCrossRootGBs, ANCHORS.hostGBs],
  steps: 5,
  sharesMachine: true,
  ramBytes: () => 128 * MiB,
  run: runP2pVsStaged,
};
