/**
 * The conformance factory of the dmirror example: a fresh machine with one `hmm_dmirror0` device
 * per case; {@link ConformanceTarget.open} is `open("/dev/hmm_dmirror0")` by a process.
 *
 * @module
 */
import { Machine, PAGE_SIZE, SimDevice } from '@hmm/core';
import type { Process } from '@hmm/core';
import type { ConformanceFactory, ConformanceManifest, TestDevice } from '@hmm/conformance';
import { Dmirror } from './dmirror.js';

/** What dmirror declares: a mirror only (no device memory, no exclusive access yet). */
export const dmirrorManifest: ConformanceManifest = { name: 'dmirror', capabilities: ['mirror'] };

/** The {@link TestDevice} of one open mirror, with its device page table exposed. */
export function dmirrorTestDevice(dm: Dmirror): TestDevice {
  return {
    read: (addr, npages) => dm.read(addr, npages),
    write: (addr, data) => dm.write(addr, data),
    snapshot: (addr, npages) => dm.snapshot(addr, npages),
    close: () => dm.close(),
    binding: { device: dm.device, asid: dm.asid },
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

/** One machine and one dmirror device per case. */
export const dmirrorFactory: ConformanceFactory = async ({ seed }) => {
  const machine = new Machine({ seed });
  const device = new SimDevice(machine.mm, { name: 'hmm_dmirror0' });
  return {
    machine,
    open: async (process: Process) => dmirrorTestDevice(await Dmirror.open(machine, device, process)),
  };
};
