/**
 * The exclusive group: the cases of hmm-tests.c that take pages exclusively for device atomics
 * (`HMM_DMIRROR_EXCLUSIVE`, `make_device_exclusive`): a CPU access ends the exclusivity
 * (`HMM_DMIRROR_CHECK_EXCLUSIVE`), mprotect and fork keep the CPU's semantics. Same set-up and
 * assertions as the kernel's, with a 1 MiB buffer instead of 4 MiB. Where the driver exposes
 * {@link TestDevice.devicePerms}, the cases also check the atomic mappings themselves.
 *
 * @module
 */
import { DevPerm, Prot } from '@hmm/core';
import { check, checkEqual, checkRejects } from '../assert.js';
import type { TestDevice } from '../target.js';
import {
  INTS,
  NPAGES,
  PRIV_ANON,
  RW,
  SIZE,
  checkInts,
  command,
  devicePerms,
  ints,
  withDevice,
} from './common.js';
import type { CaseFn } from './common.js';
import type { Process } from '@hmm/core';

/** Pages of `npages` at `addr` the device maps for atomics, or null if it does not expose its table. */
function atomicPages(dev: TestDevice, addr: number, npages: number): number | null {
  const perms = devicePerms(dev, addr, npages);
  return perms === null ? null : perms.reduce((n, x) => n + ((x & DevPerm.ATOMIC) !== 0 ? 1 : 0), 0);
}

/** A buffer with `int[i] = i`, taken exclusively by the device; checks the read-back. */
async function exclusiveBuffer(p: Process, dev: TestDevice): Promise<number> {
  const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
  await p.write(
    a,
    ints(INTS, (i) => i),
  );
  const r = await command(dev, 'exclusive')(a, NPAGES);
  checkEqual(r.cpages, NPAGES, 'EXCLUSIVE cpages');
  checkInts(r.data, (i) => i, 'what the device read back');
  const atomic = atomicPages(dev, a, NPAGES);
  if (atomic !== null) checkEqual(atomic, NPAGES, 'pages the device maps for atomics after EXCLUSIVE');
  return a;
}

/** The CPU's `ptr[i]++` over the buffer, checking the old and the new values. */
async function cpuIncrement(p: Process, a: number, who: string): Promise<void> {
  checkInts(await p.read(a, SIZE), (i) => i, `${who}: CPU read of the exclusive pages`);
  await p.write(
    a,
    ints(INTS, (i) => i + 1),
  );
  checkInts(await p.read(a, SIZE), (i) => i + 1, `${who}: CPU data after the increment`);
}

/** The exclusive group's cases, by catalogue id. */
export const EXCLUSIVE_CASES: Readonly<Record<string, CaseFn>> = {
  'hmm.exclusive': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await exclusiveBuffer(p, dev);
      // The CPU access takes the pages back from the device.
      await cpuIncrement(p, a, 'parent');
      // Atomic access is revoked.
      await command(dev, 'checkExclusive')(a, NPAGES);
      const atomic = atomicPages(dev, a, NPAGES);
      if (atomic !== null) checkEqual(atomic, 0, 'pages the device maps for atomics after the CPU access');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.exclusive_mprotect': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await exclusiveBuffer(p, dev);
      await p.mprotect(a, SIZE, Prot.READ);
      await checkRejects(
        dev.write(
          a,
          ints(INTS, (i) => -i),
        ),
        'EPERM',
        'device WRITE after mprotect(PROT_READ) of exclusive pages',
      );
      checkInts(await p.read(a, SIZE), (i) => i, 'CPU data after the refused WRITE');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.exclusive_cow': async (t) => {
    const m = t.machine;
    await withDevice(t, async ({ p, dev }) => {
      const a = await exclusiveBuffer(p, dev);
      const child = await p.fork();
      const task = m.sched.spawn('child', async () => {
        // The child verifies COW independently, then exits.
        await cpuIncrement(child, a, 'child');
        await child.exit(0);
      });
      // The parent increments too: COW works for both processes.
      await cpuIncrement(p, a, 'parent');
      await task.join();
      check(child.exited, 'the child exited');
      checkEqual(child.exitCode, 0, 'child exit code');
      checkInts(await p.read(a, SIZE), (i) => i + 1, 'parent data after the child exited');
      await p.munmap(a, SIZE);
    });
  },
};
