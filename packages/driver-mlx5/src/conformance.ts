/**
 * The conformance factory of the mlx5-like driver: `@hmm/conformance` run on an HCA whose memory
 * regions are ODP. The dmirror test commands map onto one-sided RDMA from a remote requester
 * ({@link RdmaRemote}, loopback on the same HCA) against the opening process's memory:
 *
 * - open: a protection domain of the process with two implicit ODP MRs: one with REMOTE_READ only
 *   (READ goes through it, so read-only memory is faulted for read) and one writable (WRITE; mlx5
 *   faults a writable MR for write, so a WRITE to read-only memory fails with EPERM);
 * - READ / WRITE: one RDMA READ / WRITE of the range through the matching MR; `faults` counts the
 *   page-fault events its MR served meanwhile (1 for a cold range: an RDMA READ faults its whole
 *   length, an RDMA WRITE one packet and then prefetches ahead). A failed fault fails the request
 *   with its errno (EFAULT for a hole or PROT_NONE, EPERM for a write to read-only memory); the next
 *   command runs on new QPs;
 * - SNAPSHOT: the registration snapshot pass (`hmm_range_fault` without fault flags under a
 *   temporary interval notifier);
 * - close: the PD deallocated (MRs deregistered, notifiers removed), the remote closed.
 *
 * The NIC has no device memory, so it declares `mirror` and `p2p-importer`. Peer-to-peer: a
 * nouveau-like GPU exports its BAR1 ({@link nouveauP2pTarget}); `mlx5_0` sits below the GPU's
 * switch (a peer path, BUS_ADDR) and `mlx5_far` below a host bridge that forwards no peer traffic
 * (the system-memory fallback); an importer is a {@link PeerMr} read with RDMA READ.
 *
 * @module
 */
import { DevPerm, HmmError, Machine, PAGE_SIZE, TASK_SIZE, hex } from '@hmm/core';
import type { P2pMapTypeId, PciEndpoint, Process, SimDevice } from '@hmm/core';
import { snapshotRange } from '@hmm/conformance';
import type {
  CommandResult,
  ConformanceFactory,
  ConformanceManifest,
  ConformanceTarget,
  P2pImporterHandle,
  P2pPosition,
  TestDevice,
  UserptrHandle,
  UserptrHandleMode,
  UserptrRegisterOptions,
  UserptrTarget,
} from '@hmm/conformance';
import { NouveauGpu, nouveauP2pTarget, nouveauTopology } from '@hmm/driver-nouveau';
import { Mlx5Hca } from './hca.js';
import { IbAccess } from './mr.js';
import type { Mlx5Mr } from './mr.js';
import { ADVISE_MR_FLAG_FLUSH } from './odp.js';
import type { ImplicitOdpMr } from './odp-mr.js';
import type { Mlx5Pd } from './pd.js';
import type { PeerMr } from './peer-mr.js';
import { RdmaRemote } from './rdma-remote.js';

/** What the mlx5-like driver declares: a mirror (ODP), MRs as userptr objects and a peer-memory importer. */
export const mlx5Manifest: ConformanceManifest = {
  name: 'mlx5',
  capabilities: ['mirror', 'p2p-importer', 'userptr'],
};

/** One open of the HCA by a process (see the module doc). */
export class Mlx5TestDevice implements TestDevice {
  readonly binding: { readonly device: SimDevice; readonly asid: number; readonly asids: readonly number[] };
  #closed = false;

  private constructor(
    readonly pd: Mlx5Pd,
    /** REMOTE_READ only: READ goes through it. */
    readonly readMr: ImplicitOdpMr,
    /** LOCAL_WRITE | REMOTE_WRITE | REMOTE_READ: WRITE goes through it. */
    readonly writeMr: ImplicitOdpMr,
    readonly remote: RdmaRemote,
  ) {
    this.binding = { device: pd.hca.device, asid: readMr.asid, asids: [writeMr.asid] };
  }

  /** Opens `hca` for `process`. Runs inside a task. */
  static async open(hca: Mlx5Hca, process: Process): Promise<Mlx5TestDevice> {
    const pd = hca.allocPd(process);
    const readMr = pd.regImplicitOdp(IbAccess.REMOTE_READ);
    const writeMr = pd.regImplicitOdp(IbAccess.LOCAL_WRITE | IbAccess.REMOTE_WRITE | IbAccess.REMOTE_READ);
    const remote = await RdmaRemote.create(pd, { name: `${hca.name}-remote` });
    return new Mlx5TestDevice(pd, readMr, writeMr, remote);
  }

  #check(what: string, addr: number, npages: number): void {
    if (this.#closed) throw new HmmError('EBADF', `mlx5 ${what}: the device file is closed`);
    if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) {
      throw new HmmError('EINVAL', `mlx5 ${what}: address ${String(addr)} is not page aligned`);
    }
    if (!Number.isSafeInteger(npages) || npages <= 0 || addr + npages * PAGE_SIZE > TASK_SIZE) {
      throw new HmmError(
        'EINVAL',
        `mlx5 ${what}: ${String(npages)} pages at ${hex(addr)} is empty or leaves the address space`,
      );
    }
  }

  /** `HMM_DMIRROR_READ`: one RDMA READ of the range through the read-only implicit MR. */
  async read(addr: number, npages: number): Promise<CommandResult & { readonly data: Uint8Array }> {
    this.#check('READ', addr, npages);
    const before = this.readMr.stats.faultEvents;
    const data = await this.remote.read(this.readMr.rkey, addr, npages * PAGE_SIZE);
    return { cpages: npages, faults: this.readMr.stats.faultEvents - before, data };
  }

  /** `HMM_DMIRROR_WRITE`: one RDMA WRITE of `data` through the writable implicit MR. */
  async write(addr: number, data: Uint8Array): Promise<CommandResult> {
    const npages = data.length / PAGE_SIZE;
    this.#check('WRITE', addr, npages);
    const before = this.writeMr.stats.faultEvents;
    await this.remote.write(this.writeMr.rkey, addr, data);
    return { cpages: npages, faults: this.writeMr.stats.faultEvents - before };
  }

  /** `HMM_DMIRROR_SNAPSHOT`: `hmm_range_fault` without fault flags, one byte per page. */
  async snapshot(addr: number, npages: number): Promise<Uint8Array> {
    this.#check('SNAPSHOT', addr, npages);
    return snapshotRange(this.pd.process.mm, addr, npages, null);
  }

  /** The HCA's translation rights of each page: READ from either MR, WRITE from the writable one. */
  devicePerms(addr: number, npages: number): Uint8Array {
    const out = new Uint8Array(npages);
    const first = addr / PAGE_SIZE;
    for (const mr of [this.readMr, this.writeMr]) {
      this.pd.hca.device.findMmu(mr.asid)?.forEachEntry(first, first + npages, (vpn, _pfn, perm) => {
        out[vpn - first]! |= perm & (DevPerm.READ | DevPerm.WRITE);
      });
    }
    return out;
  }

  /** Closing the device file: the remote closed, the PD deallocated (MRs deregistered). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.remote.close();
    await this.pd.dealloc();
  }
}

/** The kind of MR {@link Mlx5UserptrTarget} registers: ODP (`'odp'`, mirrored) or pinned (`'pinned'`). */
export type Mlx5UserptrKind = 'odp' | 'pinned';

/**
 * The suite's userptr objects on the HCA: an explicit memory region over the range in a protection
 * domain of its own (`ibv_reg_mr`; REMOTE_READ, plus LOCAL_WRITE | REMOTE_WRITE for a writable
 * object), read and written by one-sided RDMA from a remote requester of its own (loopback). An ODP
 * MR (`'odp'`, the default) is `'mirrored'`: registration pins nothing, so it is followed by a
 * synchronous prefetch (`ibv_advise_mr` PREFETCH or PREFETCH_WRITE with FLUSH), as an application
 * does to fault the range in and learn at once that it cannot be; a pinned MR (`'pinned'`,
 * `ib_umem_get`) is `'pinned'`.
 */
export class Mlx5UserptrTarget implements UserptrTarget {
  constructor(
    readonly hca: Mlx5Hca,
    readonly kind: Mlx5UserptrKind = 'odp',
  ) {}

  /** The same HCA, registering MRs of `kind`. */
  withKind(kind: Mlx5UserptrKind): Mlx5UserptrTarget {
    return new Mlx5UserptrTarget(this.hca, kind);
  }

  /**
   * `ibv_reg_mr` (and the prefetch of an ODP MR); on a failure the PD is deallocated, nothing left,
   * and the registration's (GUP's) or the prefetch's (`hmm_range_fault`'s) error is rethrown.
   */
  async register(
    process: Process,
    addr: number,
    npages: number,
    opts: UserptrRegisterOptions,
  ): Promise<UserptrHandle> {
    const pd = this.hca.allocPd(process);
    const length = npages * PAGE_SIZE;
    const access = opts.write
      ? IbAccess.LOCAL_WRITE | IbAccess.REMOTE_WRITE | IbAccess.REMOTE_READ
      : IbAccess.REMOTE_READ;
    try {
      const odp = this.kind === 'odp';
      const mr = await pd.regMr(addr, length, access | (odp ? IbAccess.ON_DEMAND : 0));
      if (odp) {
        await pd.adviseMr(opts.write ? 'PREFETCH_WRITE' : 'PREFETCH', ADVISE_MR_FLAG_FLUSH, [
          { lkey: mr.lkey, addr, length },
        ]);
      }
      const remote = await RdmaRemote.create(pd, {
        name: `${this.hca.name}-userptr-remote`,
        bufferBytes: length,
      });
      return new Mlx5UserptrHandle(pd, mr, remote, addr, length);
    } catch (e) {
      await pd.dealloc();
      throw e;
    }
  }
}

/** One userptr object of {@link Mlx5UserptrTarget}: an MR and the remote that reads and writes it. */
export class Mlx5UserptrHandle implements UserptrHandle {
  readonly mode: UserptrHandleMode;
  readonly binding: { readonly device: SimDevice; readonly asid: number };
  /** Writable MRs: one RDMA WRITE of the whole object. */
  readonly write?: (data: Uint8Array) => Promise<void>;
  #released = false;

  constructor(
    readonly pd: Mlx5Pd,
    readonly mr: Mlx5Mr,
    readonly remote: RdmaRemote,
    readonly addr: number,
    readonly length: number,
  ) {
    this.mode = mr.onDemand ? 'mirrored' : 'pinned';
    this.binding = { device: pd.hca.device, asid: mr.asid };
    if (mr.writable) {
      this.write = async (data) => {
        if (!(data instanceof Uint8Array) || data.length !== length) {
          throw new HmmError('EINVAL', `mlx5 userptr write: ${length} bytes expected`);
        }
        this.#check();
        await remote.write(mr.rkey, addr, data);
      };
    }
  }

  #check(): void {
    if (this.#released) throw new HmmError('EINVAL', `mlx5: MR ${hex(this.mr.lkey)} is deregistered`);
  }

  /** One RDMA READ of the whole object. */
  async read(): Promise<Uint8Array> {
    this.#check();
    return this.remote.read(this.mr.rkey, this.addr, this.length);
  }

  /** The remote closed, then the PD deallocated (the MR deregistered: unpinned or its notifier removed). */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await this.remote.close();
    await this.pd.dealloc();
  }
}

/** The importer side for the p2p cases: a {@link PeerMr} over the exported range, read by RDMA READ. */
export class Mlx5PeerImporter implements P2pImporterHandle {
  readonly binding: { readonly device: SimDevice; readonly asid: number };
  #closed = false;

  private constructor(
    readonly pd: Mlx5Pd,
    readonly mr: PeerMr,
    readonly remote: RdmaRemote,
  ) {
    this.binding = { device: pd.hca.device, asid: mr.asid };
  }

  /** A peer MR of `process` over `pages` pages at `addr` on `hca`, and a remote reading it. */
  static async create(
    hca: Mlx5Hca,
    process: Process,
    addr: number,
    pages: number,
  ): Promise<Mlx5PeerImporter> {
    const pd = hca.allocPd(process);
    const mr = await pd.regPeerMr(addr, pages * PAGE_SIZE, IbAccess.REMOTE_READ);
    const remote = await RdmaRemote.create(pd, { name: `${hca.name}-p2p-remote` });
    return new Mlx5PeerImporter(pd, mr, remote);
  }

  /** RDMA READ of `len` bytes at `addr` through the peer MR (faulting it in with `p2pMap`). */
  read(addr: number, len: number): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(new HmmError('EBADF', 'mlx5 importer: used after close'));
    return this.remote.read(this.mr.rkey, addr, len);
  }

  get mapping(): { readonly type: P2pMapTypeId } | null {
    return this.mr.mapping;
  }

  get maps(): number {
    return this.mr.maps;
  }

  devicePages(): number {
    return this.mr.mappedPages();
  }

  /** Closes the remote and deregisters the peer MR (its mapping given back). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.remote.close();
    await this.pd.dealloc();
  }
}

/**
 * One machine per case: a nouveau-like GPU `gpu0` exporting BAR1, the NIC `mlx5_0` below the GPU's
 * switch and `mlx5_far` below a host bridge without peer forwarding. Test devices open `mlx5_0`.
 */
export const mlx5Factory: ConformanceFactory = ({ seed }) => {
  const machine = new Machine({ seed });
  const pci = nouveauTopology(machine, ['gpu0', 'mlx5_0']);
  const gpu = new NouveauGpu(machine, {
    name: 'gpu0',
    vramBytes: 64 * 1024 * 1024,
    pci: { topology: pci.topology, endpoint: pci.endpoint('gpu0') },
  });
  const farBridge = pci.topology.addHostBridge('hb-nop2p', 'none');
  const farEp: PciEndpoint = pci.topology.addEndpoint(
    'mlx5_far',
    pci.topology.addSwitch('rp-far', farBridge),
    machine.cost.link.pcie3PeakGBs,
  );
  const near = new Mlx5Hca(machine, {
    name: 'mlx5_0',
    pci: { topology: pci.topology, endpoint: pci.endpoint('mlx5_0') },
  });
  const far = new Mlx5Hca(machine, { name: 'mlx5_far', pci: { topology: pci.topology, endpoint: farEp } });
  const exporter = nouveauP2pTarget(machine, gpu);
  const target: ConformanceTarget = {
    machine,
    open: (process: Process) => Mlx5TestDevice.open(near, process),
    userptr: new Mlx5UserptrTarget(near),
    p2p: {
      topology: pci.topology,
      createExporter: (pages) => exporter.createExporter(pages),
      createImporter: (process: Process, addr: number, pages: number, position: P2pPosition) =>
        Mlx5PeerImporter.create(position === 'peer' ? near : far, process, addr, pages),
    },
    teardown: () =>
      machine.sched.runTask('mlx5-unload', async () => {
        await near.remove();
        await far.remove();
        await exporter.bar.remove();
        await gpu.remove();
      }),
  };
  return Promise.resolve(target);
};
