import { HmmError, Machine } from '@hmm/core';
import type { ConformanceFactory, ConformanceManifest } from '@hmm/conformance';
import { defineP2pGroup } from '@hmm/conformance/vitest';
import { nouveauP2pTarget, nouveauTopology } from './bar.js';
import { NouveauGpu } from './gpu.js';

/**
 * A machine with one GPU below `sw0` exporting its BAR1 (1 MiB here, so the BAR-full cases stay
 * small); the suite imports through its reference importer next to the GPU.
 */
const factory: ConformanceFactory = ({ seed }) => {
  const machine = new Machine({ seed, ramBytes: 64 * 1024 * 1024 });
  const { topology, endpoints } = nouveauTopology(machine, ['gpu0']);
  const gpu = new NouveauGpu(machine, {
    name: 'gpu0',
    vramBytes: 16 * 1024 * 1024,
    barBytes: 1024 * 1024,
    pci: { topology, endpoint: endpoints[0]! },
  });
  const p2p = nouveauP2pTarget(machine, gpu);
  return Promise.resolve({
    machine,
    open: () =>
      Promise.reject(new HmmError('ENODEV', 'nouveau-bar: an exporter-only target opens no mirror')),
    p2p,
    teardown: () =>
      machine.sched.runTask('unload', async () => {
        await p2p.bar.remove();
        await gpu.remove();
      }),
  });
};

const manifest: ConformanceManifest = { name: 'nouveau-bar', capabilities: ['p2p-exporter'] };

defineP2pGroup(factory, manifest);
