/**
 * The conformance factory of the dmirror example: a fresh machine per case with the two dmirror
 * devices of the case's variant, as the kernel's fixtures use them: `hmm_dmirror0` and
 * `hmm_dmirror1` (device-private memory) for the device-private variant, `hmm_dmirror2` and
 * `hmm_dmirror3` (device-coherent memory) for the device-coherent one.
 * {@link ConformanceTarget.open} is `open("/dev/hmm_dmirror<N>")` by a process, of the first device
 * or, with `{ device: 1 }`, of the second.
 *
 * The devices sit on a PCI bus ({@link dmirrorTopology}): one host bridge with a switch holding the
 * two devices, and a third dmirror device (`hmm_dmirror_far`) below another host bridge that forwards
 * no peer traffic. The first device exports an object from its BAR ({@link DmirrorP2pExporter}); the
 * second one (a peer) or the far one (no peer path) imports it ({@link DmirrorP2pImporter}).
 *
 * @module
 */
import { Machine, PAGE_SIZE, PciTopology, p2pdmaAddResource } from '@hmm/core';
import type { PciEndpoint, Process } from '@hmm/core';
import type {
  ConformanceFactory,
  ConformanceManifest,
  ConformanceTarget,
  OpenOptions,
  P2pImporterHandle,
  P2pTarget,
  TestDevice,
} from '@hmm/conformance';
import { Dmirror } from './dmirror.js';
import type { DmirrorOptions } from './dmirror.js';
import { DmirrorDevice } from './dmirror-device.js';
import { DmirrorP2pExporter, DmirrorP2pImporter } from './dmirror-p2p.js';
import type { DmirrorP2pImporterOptions } from './dmirror-p2p.js';

/** Pages of the first device's BAR window of peer memory. */
export const DMIRROR_BAR_PAGES = 128;

/**
 * What dmirror declares: mirror, both kinds of device memory, exclusive access, two devices, both
 * sides of peer-to-peer, and fault injection (copy-engine failures, device removal).
 */
export const dmirrorManifest: ConformanceManifest = {
  name: 'dmirror',
  capabilities: [
    'mirror',
    'device-private',
    'device-coherent',
    'exclusive',
    'two-devices',
    'p2p-exporter',
    'p2p-importer',
    'fault-injection',
  ],
};

/** The PCI bus of a dmirror machine. */
export interface DmirrorTopology {
  readonly topology: PciTopology;
  /** The two dmirror devices, below one switch of host bridge `hb0` (peer traffic allowed). */
  readonly near: readonly [PciEndpoint, PciEndpoint];
  /** A device below host bridge `hb1`, which forwards no peer traffic. */
  readonly far: PciEndpoint;
}

/** `hb0` → `sw0` → the two devices named `names`; `hb1` (no peer traffic) → `rp1` → `farName`. */
export function dmirrorTopology(
  machine: Machine,
  names: readonly [string, string],
  farName: string,
): DmirrorTopology {
  const topology = new PciTopology(machine.cost);
  const sw = topology.addSwitch('sw0', topology.addHostBridge('hb0', 'any'));
  const near = [topology.addEndpoint(names[0], sw), topology.addEndpoint(names[1], sw)] as const;
  const far = topology.addEndpoint(farName, topology.addSwitch('rp1', topology.addHostBridge('hb1', 'none')));
  return { topology, near, far };
}

/** The {@link TestDevice} of one open mirror, with its device page table exposed. */
export function dmirrorTestDevice(dm: Dmirror): TestDevice {
  return {
    read: (addr, npages) => dm.read(addr, npages),
    write: (addr, data) => dm.write(addr, data),
    snapshot: (addr, npages) => dm.snapshot(addr, npages),
    close: () => dm.close(),
    migrateToDevice: (addr, npages) => dm.migrateToDevice(addr, npages),
    migrateToSystem: (addr, npages) => dm.migrateToSystem(addr, npages),
    exclusive: (addr, npages) => dm.exclusive(addr, npages),
    checkExclusive: (addr, npages) => dm.checkExclusive(addr, npages),
    release: () => dm.releaseDeviceMemory(),
    failNextAlloc: () => dm.failNextAlloc(),
    failNextCopy: (afterPages) => dm.failNextCopy(afterPages),
    binding: { device: dm.device, asid: dm.asid, owner: dm.device },
    devicePerms(addr, npages) {
      const out = new Uint8Array(npages);
      const first = addr / PAGE_SIZE;
      dm.device.findMmu(dm.asid)?.forEachEntry(first, first + npages, (vpn, _pfn, perm) => {
        out[vpn - first] = perm;
      });
      return out;
    },
  };
}

/** Options of {@link makeDmirrorFactory}. */
export interface DmirrorFactoryOptions {
  /** Options of every p2p importer (tests use them to build deliberately broken importers). */
  readonly p2pImporter?: DmirrorP2pImporterOptions;
  /** Options of every mirror opened (tests use them to build deliberately broken mirrors). */
  readonly mirror?: DmirrorOptions;
  /** Called on each of the two dmirror devices once created (tests use it to break the device side). */
  readonly patchDevice?: (device: DmirrorDevice) => void;
}

/** One machine and the variant's two dmirror devices per case (plus the far device for p2p). */
export const dmirrorFactory: ConformanceFactory = (o) => makeDmirrorFactory()(o);

/** The dmirror conformance factory, with `opts`. */
export function makeDmirrorFactory(opts: DmirrorFactoryOptions = {}): ConformanceFactory {
  return async ({ seed, variant }) => {
    const machine = new Machine({ seed });
    const coherent = variant === 'device-coherent';
    const memory = coherent ? 'coherent' : 'private';
    const first = coherent ? 2 : 0;
    const names = [`hmm_dmirror${first}`, `hmm_dmirror${first + 1}`] as const;
    const bus = dmirrorTopology(machine, names, 'hmm_dmirror_far');
    const { topology } = bus;
    const devices = [
      DmirrorDevice.create(machine, names[0], { memory, pci: { topology, endpoint: bus.near[0] } }),
      DmirrorDevice.create(machine, names[1], { memory, pci: { topology, endpoint: bus.near[1] } }),
    ] as const;
    for (const d of devices) opts.patchDevice?.(d);
    const far = DmirrorDevice.create(machine, 'hmm_dmirror_far', {
      memory,
      pci: { topology, endpoint: bus.far },
    });
    // The first device's BAR window (pci_p2pdma_add_resource), published for peers.
    const bar = p2pdmaAddResource(machine.mm, topology, bus.near[0], {
      bar: 2,
      barBytes: DMIRROR_BAR_PAGES * PAGE_SIZE,
    });
    bar.published = true;
    const mirrorOpts = opts.mirror ?? {};
    const p2p: P2pTarget = {
      topology,
      createExporter: (pages) => Promise.resolve(new DmirrorP2pExporter(machine, devices[0], bar, pages)),
      createImporter: (process, addr, pages, position) =>
        Promise.resolve(
          dmirrorImporterHandle(
            new DmirrorP2pImporter(
              machine,
              position === 'peer' ? devices[1] : far,
              process,
              addr,
              pages,
              opts.p2pImporter,
            ),
          ),
        ),
    };
    const target: ConformanceTarget = {
      machine,
      open: async (process: Process, o: OpenOptions = {}) =>
        dmirrorTestDevice(await Dmirror.open(machine, devices[o.device ?? 0], process, mirrorOpts)),
      p2p,
      // Hot-removal of the first device (dmirror_device_remove); ENODEV the second time.
      removeDevice: () => devices[0].remove(),
      // Driver unload: every device gives its memory back (dmirror_device_remove_chunks), the BAR goes.
      teardown: () =>
        machine.sched.runTask('dmirror-unload', async () => {
          for (const d of [...devices, far]) await d.release();
          bar.remove();
        }),
    };
    return target;
  };
}

/** The conformance view of a dmirror importer. */
export function dmirrorImporterHandle(imp: DmirrorP2pImporter): P2pImporterHandle {
  return {
    read: (addr, len) => imp.read(addr, len),
    get mapping() {
      return imp.mapping;
    },
    get maps() {
      return imp.maps;
    },
    devicePages: () => imp.devicePages(),
    close: () => imp.close(),
    binding: { device: imp.device, asid: imp.asid },
  };
}
