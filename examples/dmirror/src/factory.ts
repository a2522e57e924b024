/**
 * The conformance factory of the dmirror example: a fresh machine per case with the two dmirror
 * devices of the case's variant, as the kernel's fixtures use them: `hmm_dmirror0` and
 * `hmm_dmirror1` (device-private memory) for the device-private variant, `hmm_dmirror2` and
 * `hmm_dmirror3` (device-coherent memory) for the device-coherent one.
 * {@link ConformanceTarget.open} is `open("/dev/hmm_dmirror<N>")` by a process, of the first device
 * or, with `{ device: 1 }`, of the second.
 *
 * @module
 */
import { Machine, PAGE_SIZE } from '@hmm/core';
import type { Process } from '@hmm/core';
import type {
  ConformanceFactory,
  ConformanceManifest,
  ConformanceTarget,
  OpenOptions,
  TestDevice,
} from '@hmm/conformance';
import { Dmirror } from './dmirror.js';
import { DmirrorDevice } from './dmirror-device.js';

/** What dmirror declares: mirror, both kinds of device memory, exclusive access, two devices. */
export const dmirrorManifest: ConformanceManifest = {
  name: 'dmirror',
  capabilities: ['mirror', 'device-private', 'device-coherent', 'exclusive', 'two-devices'],
};

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

/** One machine and the variant's two dmirror devices per case. */
export const dmirrorFactory: ConformanceFactory = async ({ seed, variant }) => {
  const machine = new Machine({ seed });
  const coherent = variant === 'device-coherent';
  const memory = coherent ? 'coherent' : 'private';
  const first = coherent ? 2 : 0;
  const devices = [
    DmirrorDevice.create(machine, `hmm_dmirror${first}`, { memory }),
    DmirrorDevice.create(machine, `hmm_dmirror${first + 1}`, { memory }),
  ] as const;
  const target: ConformanceTarget = {
    machine,
    open: async (process: Process, opts: OpenOptions = {}) =>
      dmirrorTestDevice(await Dmirror.open(machine, devices[opts.device ?? 0], process)),
    // Driver unload: every device gives its memory back (dmirror_device_remove_chunks).
    teardown: () =>
      machine.sched.runTask('dmirror-unload', async () => {
        for (const d of devices) await d.release();
      }),
  };
  return target;
};
