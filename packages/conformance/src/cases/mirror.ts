/**
 * The mirror group: the cases of hmm-tests.c that need only a device mirror (no device memory):
 * READ / WRITE / SNAPSHOT of anonymous, shared and file memory, protections, fork, and munmap
 * racing a device READ. Same set-up and assertions as the kernel's, with a 1 MiB buffer instead
 * of 4 MiB; CPU stores `int[i] = i` are `p.write` of little-endian int32s. Where the driver exposes
 * {@link TestDevice.devicePerms}, the cases also check the device mappings. Two cases have parts
 * that need device memory, run when the driver declares it for the variant: `anon_write_child`'s
 * pre-migrated round and `hmm2.snapshot`'s device pages (with `two-devices`).
 *
 * @module
 */
import { DevPerm, MapFlag, Prot, isHmmError } from '@hmm/core';
import type { Process } from '@hmm/core';
import { check, checkEqual, checkRejects, withSeed } from '../assert.js';
import { SnapshotByte } from '../target.js';
import type { TestDevice } from '../target.js';
import {
  INTS,
  NPAGES,
  NTIMES,
  P,
  PRIV_ANON,
  RW,
  SIZE,
  checkInts,
  checkUnmapped,
  command,
  devicePerms,
  hasDeviceMemory,
  ints,
  withDevice,
  withDevices2,
} from './common.js';
import type { CaseFn } from './common.js';

/** Seeds over which anon_teardown must see both outcomes of the race (the runner's default). */
export const TEARDOWN_RACE_SEEDS = 20;

function checkResult(
  r: { cpages: number; faults: number },
  cpages: number,
  faults: number,
  what: string,
): void {
  checkEqual([r.cpages, r.faults], [cpages, faults], `${what}: [cpages, faults]`);
}

function checkPerm(dev: TestDevice, addr: number, perm: number, what: string): void {
  const perms = devicePerms(dev, addr, 1);
  if (perms !== null) checkEqual(perms[0], perm, `${what}: device permission of the page`);
}

/** The mirror group's cases, by catalogue id. */
export const MIRROR_CASES: Readonly<Record<string, CaseFn>> = {
  'hmm.open_close': async (t) => {
    await withDevice(t, async ({ p }) => {
      // A second open of the same process gets its own mirror; closing it leaves the first open.
      const other = await t.open(p);
      await other.close();
    });
  },

  'hmm.anon_read': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      // Leave the first two pages zero (pte_none and pfn_zero).
      const from = (2 * P) / 4;
      await p.write(
        a + 2 * P,
        ints(INTS - from, (i) => i + from),
      );
      await p.mprotect(a, SIZE, Prot.READ);
      // Populate the CPU page table with the zero page.
      checkEqual(await p.readU32(a + P), 0, 'CPU read of an untouched page');
      const r = await dev.read(a, NPAGES);
      checkResult(r, NPAGES, 1, 'device READ');
      checkInts(r.data, (i) => (i < from ? 0 : i), 'device READ data');
      // The device maps everything read-only (RO region; zero page for pages 0-1).
      checkPerm(dev, a, DevPerm.READ, 'READ of a read-only zero page');
      checkPerm(dev, a + SIZE - P, DevPerm.READ, 'READ of a read-only region');
      await p.munmap(a, SIZE);
      checkUnmapped(dev, a, NPAGES, 'munmap invalidates the device mappings');
    });
  },

  'hmm.anon_read_prot': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      await p.write(
        a,
        ints(INTS, (i) => i),
      );
      await p.mprotect(a, SIZE, Prot.NONE);
      // The mirror buffer is only produced on success: a failed READ writes nothing.
      await checkRejects(dev.read(a, NPAGES), 'EFAULT', 'device READ of PROT_NONE memory');
      checkUnmapped(dev, a, NPAGES, 'a failed READ maps nothing');
      await p.mprotect(a, SIZE, Prot.READ);
      checkInts(await p.read(a, SIZE), (i) => i, 'CPU data after the failed READ');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.anon_write': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      const r = await dev.write(
        a,
        ints(INTS, (i) => i),
      );
      checkResult(r, NPAGES, 1, 'device WRITE');
      checkInts(await p.read(a, SIZE), (i) => i, 'CPU sees the device WRITE');
      checkPerm(dev, a, DevPerm.READ | DevPerm.WRITE, 'WRITE maps the page writable');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.anon_write_prot': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await p.mmap({ length: SIZE, prot: Prot.READ, flags: PRIV_ANON });
      // A device reading a zero page of memory.
      const r = await dev.read(a, 1);
      checkResult(r, 1, 1, 'device READ of one zero page');
      checkInts(r.data, () => 0, 'device READ of the zero page');
      const data = ints(INTS, (i) => i);
      await checkRejects(dev.write(a, data), 'EPERM', 'device WRITE to PROT_READ memory');
      checkInts(await p.read(a, SIZE), () => 0, 'CPU data after the refused WRITE');
      // Now allow writing and see that the zero page is replaced.
      await p.mprotect(a, SIZE, RW);
      checkResult(await dev.write(a, data), NPAGES, 1, 'device WRITE after mprotect RW');
      checkInts(await p.read(a, SIZE), (i) => i, 'CPU sees the device WRITE');
      await p.munmap(a, SIZE);
    });
  },

  // The kernel runs four rounds: pre-migrated or not, THP or not. THP is not simulated; the
  // pre-migrated round runs when the driver has device memory for the variant.
  'hmm.anon_write_child': async (t, ctx) => {
    const m = t.machine;
    const rounds = hasDeviceMemory(ctx) ? [false, true] : [false];
    await withDevice(t, async ({ p, dev }) => {
      for (const migrate of rounds) {
        const what = migrate ? ' (pre-migrated)' : '';
        // buffer->size = size * 2; the test uses the first `size` bytes.
        const a = await p.mmap({ length: 2 * SIZE, prot: RW, flags: PRIV_ANON });
        await p.write(
          a,
          ints(INTS, (i) => i),
        );
        const mirror = ints(INTS, (i) => -i);
        if (migrate) {
          const r = await command(dev, 'migrateToDevice')(a, NPAGES);
          checkEqual(r.cpages, NPAGES, 'MIGRATE_TO_DEV cpages');
        }
        const child = await p.fork();
        const task = m.sched.spawn('child', async () => {
          // The child sees the parent's values (device-private pages come back on the CPU access).
          checkInts(await child.read(a, SIZE), (i) => i, `the child sees the parent data${what}`);
          // The child needs its own mirror of its own mm.
          const cdev = await t.open(child);
          checkResult(await cdev.write(a, mirror), NPAGES, 1, `device WRITE in the child${what}`);
          checkInts(await child.read(a, SIZE), (i) => -i, `the child sees its device WRITE${what}`);
          await cdev.close();
          await child.exit(0);
        });
        await task.join(); // waitpid
        checkEqual(child.exitCode, 0, 'child exit code');
        // The parent's buffer did not change (COW).
        checkInts(await p.read(a, SIZE), (i) => i, `the parent keeps its data (COW)${what}`);
        await p.munmap(a, 2 * SIZE);
      }
    });
  },

  'hmm.anon_write_child_shared': async (t) => {
    const m = t.machine;
    await withDevice(t, async ({ p }) => {
      const a = await p.mmap({ length: SIZE, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
      await p.write(
        a,
        ints(INTS, (i) => i),
      );
      const mirror = ints(INTS, (i) => -i);
      const child = await p.fork();
      const task = m.sched.spawn('child', async () => {
        checkInts(await child.read(a, SIZE), (i) => i, 'the child sees the parent data');
        checkInts(mirror, (i) => -i, 'the mirror buffer');
        const cdev = await t.open(child);
        checkResult(await cdev.write(a, mirror), NPAGES, 1, 'device WRITE in the child');
        checkInts(await child.read(a, SIZE), (i) => -i, 'the child sees its device WRITE');
        await cdev.close();
        await child.exit(0);
      });
      await task.join();
      checkEqual(child.exitCode, 0, 'child exit code');
      // The parent's buffer did change (no COW).
      checkInts(await p.read(a, SIZE), (i) => -i, 'the parent sees the child device WRITE (shared)');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.file_read': async (t) => {
    const m = t.machine;
    await withDevice(t, async ({ p, dev }) => {
      const file = await m.createFile(
        'hmm-tmp',
        ints(INTS, (i) => i),
      ); // O_TMPFILE + pwrite
      const a = await p.mmap({ length: SIZE, prot: Prot.READ, flags: MapFlag.SHARED, file });
      const r = await dev.read(a, NPAGES);
      checkResult(r, NPAGES, 1, 'device READ of a file mapping');
      checkInts(r.data, (i) => i, 'device READ data of the file');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.file_write': async (t) => {
    const m = t.machine;
    await withDevice(t, async ({ p, dev }) => {
      const file = await m.createFile('hmm-tmp');
      await m.truncate(file, SIZE); // hmm_create_file: ftruncate(fd, size)
      const a = await p.mmap({ length: SIZE, prot: RW, flags: MapFlag.SHARED, file });
      checkResult(
        await dev.write(
          a,
          ints(INTS, (i) => i),
        ),
        NPAGES,
        1,
        'device WRITE of a shared file mapping',
      );
      checkInts(await p.read(a, SIZE), (i) => i, 'the mapping sees the device WRITE');
      // The device also wrote the file (pread).
      checkInts(await m.readFile(file, 0, SIZE), (i) => i, 'pread sees the device WRITE');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.anon_read_multiple': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      for (let c = 0; c < NTIMES; c++) {
        const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
        await p.write(
          a,
          ints(INTS, (i) => i + c),
        );
        const r = await dev.read(a, NPAGES);
        checkResult(r, NPAGES, 1, `device READ of buffer ${c}`);
        checkInts(r.data, (i) => i + c, `device READ data of buffer ${c}`);
        // hmm_buffer_free: munmap; the invalidation clears the device entries.
        await p.munmap(a, SIZE);
        checkUnmapped(dev, a, NPAGES, `munmap of buffer ${c} invalidates the device mappings`);
      }
    });
  },

  'hmm.anon_teardown': async (_t, ctx) => {
    const outcomes: string[] = [];
    for (let seed = ctx.seed; seed < ctx.seed + ctx.seeds; seed++) {
      const c = seed;
      await withSeed(seed, async () => {
        const t = await ctx.createTarget(seed);
        const m = t.machine;
        await withDevice(t, async ({ p, dev }) => {
          const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
          await p.write(
            a,
            ints(INTS, (i) => i + c),
          );
          // unmap_buffer: a random delay (seeded), then munmap of the second half while READ runs.
          // The kernel sleeps < 32 us, about a real dmirror READ of its buffer. Devices differ (a NIC
          // fault takes far longer than dmirror's), so the delay is scaled by the simulated time of a
          // cold READ of the same size, measured first on a buffer of its own: even seeds draw it in
          // the READ's first half (where a driver that collects pages up front, like a userptr GPU,
          // can still lose the race), odd seeds up to twice its length.
          const cal = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
          await p.write(
            cal,
            ints(INTS, (i) => i),
          );
          const t0 = m.sched.now;
          await dev.read(cal, NPAGES);
          const readNs = m.sched.now - t0;
          await p.munmap(cal, SIZE);
          const delay =
            c % 2 === 0
              ? m.sched.random.nextInt(Math.max(2, Math.ceil(readNs / 2)))
              : m.sched.random.nextInt(Math.max(2, Math.ceil(2 * readNs)));
          const unmapper = m.sched.spawn('unmap_buffer', async () => {
            await m.sched.sleep(delay);
            await p.munmap(a + SIZE / 2, SIZE / 2);
          });
          let r: Awaited<ReturnType<TestDevice['read']>> | null = null;
          try {
            r = await dev.read(a, NPAGES);
          } catch (e) {
            // Lost the race: the second half was gone when the device faulted it.
            check(
              isHmmError(e) && e.code === 'EFAULT',
              `a device READ racing munmap succeeds or fails with EFAULT, got ${String(e)}`,
            );
          }
          if (r !== null) {
            checkResult(r, NPAGES, 1, 'device READ racing munmap');
            checkInts(r.data, (i) => i + c, 'device READ data racing munmap');
          }
          outcomes.push(r !== null ? 'ok' : 'EFAULT');
          await unmapper.join();
          checkUnmapped(dev, a + SIZE / 2, NPAGES / 2, 'munmap invalidates the device mappings');
          await p.munmap(a, SIZE / 2);
        });
      });
    }
    checkEqual(outcomes.length, ctx.seeds, 'READs run');
    if (ctx.seeds >= TEARDOWN_RACE_SEEDS) {
      // Both sides of the race occur over the seeds.
      check(
        outcomes.includes('ok') && outcomes.includes('EFAULT'),
        `over ${ctx.seeds} seeds the READ both wins and loses the race with munmap, got ${outcomes.join(',')}`,
      );
    }
  },

  'hmm.mixedmap': async (t) => {
    const m = t.machine;
    const pfn = m.mm.mem.alloc(); // the page the driver hands out on a CPU fault
    await withDevice(
      t,
      async ({ p, dev }) => {
        // The kernel maps the dmirror file MAP_PRIVATE: its mmap inserts zeroed pages into a
        // VM_MIXEDMAP VMA, which hmm_range_fault walks like normal memory, so the kernel test
        // expects HMM_DMIRROR_PROT_READ. The SDK's driver mapping (`ops`) is VM_PFNMAP | VM_IO,
        // which hmm_range_fault reports as ERROR: the difference is the mapping type, not the driver.
        const a = await p.mmap({
          length: P,
          prot: RW,
          flags: MapFlag.PRIVATE,
          ops: { name: 'dmirror', fault: () => pfn },
        });
        checkEqual(Array.from(await dev.snapshot(a, 1)), [SnapshotByte.ERROR], 'snapshot of a PFNMAP page');
        // Also once the CPU has faulted the driver page in (a special PTE).
        await p.writeU32(a, 7);
        checkEqual(await p.readU32(a), 7, 'CPU read-back of the driver page');
        checkEqual(
          Array.from(await dev.snapshot(a, 1)),
          [SnapshotByte.ERROR],
          'snapshot of a faulted-in PFNMAP page',
        );
        // Faulting it for the device fails as the kernel's would on a PFNMAP VMA.
        await checkRejects(dev.read(a, 1), 'EFAULT', 'device READ of a PFNMAP page');
        await p.munmap(a, P);
      },
      (x) => (x === pfn ? 1 : 0),
    );
    m.mm.mem.free(pfn);
    m.checkInvariants();
  },

  // With device memory and two devices, as the kernel: pages 5 and 6 are migrated to devices 0
  // and 1. Without them (a mirror-only driver) pages 5 and 6 stay untouched, hence NONE.
  'hmm2.snapshot': async (t, ctx) => {
    const full = hasDeviceMemory(ctx) && ctx.capabilities.includes('two-devices');
    const body = async (p: Process, dev0: TestDevice, dev1: TestDevice | null): Promise<void> => {
      const npages = 7;
      const a = await p.mmap({ length: npages * P, prot: Prot.NONE, flags: PRIV_ANON });
      // Punch a hole after the first page.
      await p.munmap(a + P, P);
      // Page 2: read-only zero page.
      await p.mprotect(a + 2 * P, P, Prot.READ);
      const val = (await p.readU32(a + 2 * P)) + 3;
      checkEqual(val, 3, 'CPU read of the zero page, plus 3');
      // Page 3: read-only.
      await p.mprotect(a + 3 * P, P, RW);
      await p.writeU32(a + 3 * P, val);
      await p.mprotect(a + 3 * P, P, Prot.READ);
      // Pages 4-6: read-write; only page 4 is touched.
      await p.mprotect(a + 4 * P, 3 * P, RW);
      await p.writeU32(a + 4 * P, val);
      let five: number = SnapshotByte.NONE;
      let six: number = SnapshotByte.NONE;
      if (dev1 !== null) {
        // Page 5 is migrated to device 0, page 6 to device 1.
        const r0 = await command(dev0, 'migrateToDevice')(a + 5 * P, 1);
        checkEqual(r0.cpages, 1, 'MIGRATE_TO_DEV of page 5 to device 0: cpages');
        const r1 = await command(dev1, 'migrateToDevice')(a + 6 * P, 1);
        checkEqual(r1.cpages, 1, 'MIGRATE_TO_DEV of page 6 to device 1: cpages');
        const coherent = ctx.variant === 'device-coherent';
        five =
          (coherent ? SnapshotByte.DEV_COHERENT_LOCAL : SnapshotByte.DEV_PRIVATE_LOCAL) | SnapshotByte.WRITE;
        // Another device's private page is not reported (not faulted either); coherent pages are.
        six = coherent ? SnapshotByte.DEV_COHERENT_REMOTE | SnapshotByte.WRITE : SnapshotByte.NONE;
      }
      const snap = await dev0.snapshot(a, npages);
      checkEqual(snap.length, npages, 'snapshot cpages');
      checkEqual(
        Array.from(snap),
        [
          SnapshotByte.ERROR,
          SnapshotByte.ERROR,
          SnapshotByte.ZERO | SnapshotByte.READ,
          SnapshotByte.READ,
          SnapshotByte.WRITE,
          five,
          six,
        ],
        'snapshot bytes',
      );
      // A snapshot faults nothing in.
      checkEqual(await p.readU32(a + 4 * P), 3, 'CPU data after the snapshot');
      if (dev1 === null) checkUnmapped(dev0, a, npages, 'a snapshot maps nothing on the device');
      await p.munmap(a, npages * P);
    };
    if (full) await withDevices2(t, ({ p, dev0, dev1 }) => body(p, dev0, dev1));
    else await withDevice(t, ({ p, dev }) => body(p, dev, null));
  },
};
