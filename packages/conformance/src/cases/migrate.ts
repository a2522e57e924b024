/**
 * The migrate group: the cases of hmm-tests.c that move pages into device memory
 * (`HMM_DMIRROR_MIGRATE_TO_DEV`) and back, by CPU fault (device-private), by
 * `HMM_DMIRROR_MIGRATE_TO_SYS`, by `HMM_DMIRROR_RELEASE`, by GUP and by copy-on-write. Same set-up and
 * assertions as the kernel's, with the variant-specific ones (device-private memory is faulted back
 * by any CPU access; device-coherent memory is mapped by normal PTEs, read in place by the CPU and
 * moved back only explicitly, by a long-term pin or by COW). A 1 MiB buffer instead of 4 MiB.
 * Besides the kernel's assertions, some cases check with a snapshot where the pages are.
 *
 * @module
 */
import { Foll, MapFlag, Prot } from '@hmm/core';
import { checkEqual, checkRejects } from '../assert.js';
import type { Variant } from '../catalog.js';
import { SnapshotByte } from '../target.js';
import {
  INTS,
  NPAGES,
  NTIMES,
  P,
  PAGE_INTS,
  PRIV_ANON,
  RW,
  SIZE,
  checkInts,
  command,
  ints,
  withDevice,
  withDevices2,
} from './common.js';
import type { CaseFn } from './common.js';
import type { TestDevice } from '../target.js';
import type { Process } from '@hmm/core';

/** The snapshot byte of a writable page in the memory of the device that takes the snapshot. */
function localWrite(variant: Variant): number {
  return (
    (variant === 'device-coherent' ? SnapshotByte.DEV_COHERENT_LOCAL : SnapshotByte.DEV_PRIVATE_LOCAL) |
    SnapshotByte.WRITE
  );
}

/** `n` copies of `byte`. */
function bytes(n: number, byte: number): number[] {
  return new Array<number>(n).fill(byte);
}

/**
 * Maps `npages` of private anonymous memory holding `int[i] = i`, migrates it all to the device and
 * checks what MIGRATE_TO_DEV reports (cpages = npages, the data read back). Returns the address.
 */
async function migratedInts(p: Process, dev: TestDevice, npages: number): Promise<number> {
  const a = await p.mmap({ length: npages * P, prot: RW, flags: PRIV_ANON });
  await p.write(
    a,
    ints((npages * P) / 4, (i) => i),
  );
  const r = await command(dev, 'migrateToDevice')(a, npages);
  checkEqual(r.cpages, npages, 'MIGRATE_TO_DEV cpages');
  checkInts(r.data, (i) => i, 'what the device read back');
  return a;
}

/** The migrate group's cases, by catalogue id. */
export const MIGRATE_CASES: Readonly<Record<string, CaseFn>> = {
  'hmm.migrate': async (t, ctx) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await migratedInts(p, dev, NPAGES);
      checkEqual(
        Array.from(await dev.snapshot(a, NPAGES)),
        bytes(NPAGES, localWrite(ctx.variant)),
        'snapshot: every page is in the device memory, writable',
      );
      await p.munmap(a, SIZE);
    });
  },

  'hmm.migrate_file_private': async (t) => {
    const m = t.machine;
    await withDevice(t, async ({ p, dev }) => {
      const file = await m.createFile('hmm-tmp');
      await m.truncate(file, SIZE); // hmm_create_file: ftruncate(fd, size)
      const a = await p.mmap({ length: SIZE, prot: RW, flags: MapFlag.PRIVATE, file });
      // The CPU stores make every page an anonymous COW copy, which can migrate.
      await p.write(
        a,
        ints(INTS, (i) => i),
      );
      const r = await command(dev, 'migrateToDevice')(a, NPAGES);
      checkEqual(r.cpages, NPAGES, 'MIGRATE_TO_DEV cpages of private file memory');
      checkInts(r.data, (i) => i, 'what the device read back');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.migrate_fault': async (t, ctx) => {
    await withDevice(t, async ({ p, dev }) => {
      const migrate = command(dev, 'migrateToDevice');
      const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      await p.write(
        a,
        ints(INTS, (i) => i),
      );
      const r = await migrate(a, NPAGES);
      checkEqual(r.cpages, NPAGES, 'MIGRATE_TO_DEV cpages');
      checkInts(r.data, (i) => i, 'what the device read back');
      // Fault half the pages back to system memory (device-private) and check them.
      checkInts(await p.read(a, SIZE / 2), (i) => i, 'CPU read of the first half');
      checkEqual(
        Array.from(await dev.snapshot(a, NPAGES / 2)),
        bytes(NPAGES / 2, ctx.variant === 'device-coherent' ? localWrite(ctx.variant) : SnapshotByte.WRITE),
        'snapshot of the first half after the CPU read (private: back in RAM; coherent: read in place)',
      );
      // Migrate the mix of system and device memory to the device again.
      const r2 = await migrate(a, NPAGES);
      checkEqual(r2.cpages, NPAGES, 'MIGRATE_TO_DEV cpages of the mixed range');
      checkInts(r2.data, (i) => i, 'what the device read back the second time');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.migrate_release': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await migratedInts(p, dev, NPAGES);
      // Release device memory: everything is evicted to system memory.
      await command(dev, 'release')();
      checkEqual(
        Array.from(await dev.snapshot(a, NPAGES)),
        bytes(NPAGES, SnapshotByte.WRITE),
        'snapshot after RELEASE: every page is back in system memory',
      );
      checkInts(await p.read(a, SIZE / 2), (i) => i, 'CPU read of the first half after RELEASE');
      await p.munmap(a, SIZE);
    });
  },

  'hmm.migrate_shared': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const a = await p.mmap({ length: SIZE, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
      await checkRejects(
        command(dev, 'migrateToDevice')(a, NPAGES),
        'ENOENT',
        'MIGRATE_TO_DEV of shared anonymous memory',
      );
      await p.munmap(a, SIZE);
    });
  },

  'hmm2.migrate_mixed': async (t) => {
    await withDevices2(t, async ({ p, dev0, dev1 }) => {
      const to0 = command(dev0, 'migrateToDevice');
      const to1 = command(dev1, 'migrateToDevice');
      const npages = 6;
      const a = await p.mmap({ length: npages * P, prot: Prot.NONE, flags: PRIV_ANON });
      // Migrating a protected area is an error.
      await checkRejects(to1(a, npages), 'EINVAL', 'MIGRATE_TO_DEV of PROT_NONE memory');
      // Punch a hole after the first page: a range the VMA does not cover is an error too.
      await p.munmap(a + P, P);
      await checkRejects(to1(a, 3), 'EINVAL', 'MIGRATE_TO_DEV of a range with a hole');
      // Page 2: read-only zero page.
      await p.mprotect(a + 2 * P, P, Prot.READ);
      const val = (await p.readU32(a + 2 * P)) + 3;
      checkEqual(val, 3, 'CPU read of the zero page, plus 3');
      // Page 3: read-only.
      await p.mprotect(a + 3 * P, P, RW);
      await p.writeU32(a + 3 * P, val);
      await p.mprotect(a + 3 * P, P, Prot.READ);
      // Pages 4-5: read-write.
      await p.mprotect(a + 4 * P, 2 * P, RW);
      await p.writeU32(a + 4 * P, val);
      await p.writeU32(a + 5 * P, val);
      // Pages 2-5 migrate to device 1.
      const r = await to1(a + 2 * P, 4);
      checkEqual(r.cpages, 4, 'MIGRATE_TO_DEV cpages of pages 2-5 to device 1');
      checkInts(
        r.data,
        (i) => (i % PAGE_INTS === 0 && i >= PAGE_INTS ? 3 : 0),
        'what device 1 read back (zero page, then 3 at the start of pages 3-5)',
      );
      // Page 5 does not migrate to device 0: it is on device 1.
      await checkRejects(to0(a + 5 * P, 1), 'ENOENT', 'MIGRATE_TO_DEV to device 0 of a page on device 1');
      await p.munmap(a, npages * P);
    });
  },

  'hmm.migrate_multiple': async (t, ctx) => {
    await withDevice(t, async ({ p, dev }) => {
      const migrate = command(dev, 'migrateToDevice');
      for (let c = 0; c < NTIMES; c++) {
        const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
        await p.write(
          a,
          ints(INTS, (i) => i),
        );
        const r = await migrate(a, NPAGES);
        checkEqual(r.cpages, NPAGES, `MIGRATE_TO_DEV cpages, round ${c}`);
        checkInts(r.data, (i) => i, `what the device read back, round ${c}`);
        if (ctx.variant === 'device-coherent') {
          // Coherent memory never faults: it is moved back explicitly.
          const back = await command(dev, 'migrateToSystem')(a, NPAGES);
          checkEqual(back.cpages, NPAGES, `MIGRATE_TO_SYS cpages, round ${c}`);
        }
        // Device-private pages come back on this CPU access.
        checkInts(await p.read(a, SIZE), (i) => i, `CPU read after migrating back, round ${c}`);
        checkEqual(
          Array.from(await dev.snapshot(a, NPAGES)),
          bytes(NPAGES, SnapshotByte.WRITE),
          `snapshot: every page is back in system memory, round ${c}`,
        );
        await p.munmap(a, SIZE);
      }
    });
  },

  'hmm2.double_map': async (t) => {
    await withDevices2(t, async ({ p, dev0, dev1 }) => {
      const npages = 6;
      const size = npages * P;
      const a = await p.mmap({ length: size, prot: RW, flags: PRIV_ANON });
      await p.write(
        a,
        ints(size / 4, (i) => i),
      );
      await p.mprotect(a, size, Prot.READ);
      for (const [name, dev] of [
        ['device 0', dev0],
        ['device 1', dev1],
      ] as const) {
        const r = await dev.read(a, npages);
        checkEqual([r.cpages, r.faults], [npages, 1], `READ by ${name}: [cpages, faults]`);
        checkInts(r.data, (i) => i, `what ${name} read`);
      }
      // Migrate the pages to device 1 and read them from device 0.
      const m = await command(dev1, 'migrateToDevice')(a, npages);
      checkEqual(m.cpages, npages, 'MIGRATE_TO_DEV cpages to device 1');
      const r = await dev0.read(a, npages);
      checkEqual([r.cpages, r.faults], [npages, 1], 'READ by device 0 after the migration: [cpages, faults]');
      checkInts(r.data, (i) => i, 'what device 0 read after the migration');
      await p.munmap(a, size);
    });
  },

  'hmm.hmm_gup_test': async (t, ctx) => {
    await withDevice(t, async ({ p, dev }) => {
      const npages = 4;
      const size = npages * P;
      const a = await migratedInts(p, dev, npages);
      // gup_test: GUP_BASIC_TEST, GUP_FAST_BENCHMARK (get, FOLL_WRITE), PIN_FAST_BENCHMARK with
      // FOLL_LONGTERM and PIN_LONGTERM_BENCHMARK (pin, FOLL_WRITE | FOLL_LONGTERM), one page each,
      // released at once.
      p.putUserPages(await p.getUserPages(a, 1, Foll.WRITE));
      p.putUserPages(await p.getUserPages(a + P, 1, Foll.WRITE));
      p.unpinUserPages(await p.pinUserPages(a + 2 * P, 1, Foll.WRITE | Foll.LONGTERM));
      p.unpinUserPages(await p.pinUserPages(a + 3 * P, 1, Foll.WRITE | Foll.LONGTERM));
      const snap = await dev.snapshot(a, npages);
      checkEqual(snap.length, npages, 'snapshot cpages');
      // Private pages all came back for GUP; coherent pages only for the long-term pins.
      const plain = ctx.variant === 'device-coherent' ? localWrite(ctx.variant) : SnapshotByte.WRITE;
      checkEqual(
        Array.from(snap),
        [plain, plain, SnapshotByte.WRITE, SnapshotByte.WRITE],
        'snapshot after GUP',
      );
      checkInts(await p.read(a, size), (i) => i, 'CPU data after GUP');
      await p.munmap(a, size);
    });
  },

  'hmm.hmm_cow_in_device': async (t) => {
    await withDevice(t, async ({ p, dev }) => {
      const npages = 4;
      const size = npages * P;
      const a = await migratedInts(p, dev, npages);
      // The child idles until the parent kills it.
      const child = await p.fork();
      // The parent writes its COW pages and gets new copies in system memory (device-private
      // pages migrate back first; device-coherent pages are copied from device memory).
      await p.write(
        a,
        ints(size / 4, (i) => i),
      );
      await child.exit(128 + 9); // kill(pid, SIGKILL) + waitpid
      checkEqual(child.exited, true, 'the child is gone');
      const snap = await dev.snapshot(a, npages);
      checkEqual(Array.from(snap), bytes(npages, SnapshotByte.WRITE), 'snapshot after the parent writes');
      checkInts(await p.read(a, size), (i) => i, 'CPU data of the parent');
      await p.munmap(a, size);
    });
  },
};
