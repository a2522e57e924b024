/**
 * Ports of cases of the kernel's tools/testing/selftests/mm/hmm-tests.c (device-private variant,
 * no THP, no device memory) against the simulated dmirror. Same set-up and assertions; the default
 * buffer is 1 MiB instead of 4 MiB, and CPU stores `int[i] = i` are `p.write` of little-endian
 * int32s.
 */
import { describe, expect, it } from 'vitest';
import { DevPerm, Machine, MapFlag, PAGE_SIZE, Prot, SimDevice, isHmmError } from '@hmm/core';
import type { Process } from '@hmm/core';
import { Dmirror, DmirrorProt } from './dmirror.js';

const P = PAGE_SIZE;
/** HMM_BUFFER_SIZE (4 MiB in the kernel), shrunk to stay fast. */
const SIZE = 1 << 20;
const NPAGES = SIZE / P;
const INTS = SIZE / 4;
const RW = Prot.READ | Prot.WRITE;
const PRIV_ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;
const NTIMES = 10;

/** Little-endian int32 bytes with `int[i] = f(i)` for `n` ints. */
function ints(n: number, f: (i: number) => number): Uint8Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return new Uint8Array(a.buffer);
}

function asInts(b: Uint8Array): Int32Array {
  return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

/** Asserts `int[i] === f(i)` for every int, reporting the first mismatch. */
function expectInts(b: Uint8Array, f: (i: number) => number, from = 0): void {
  const v = asInts(b);
  for (let i = from; i < v.length; i++) {
    if (v[i] !== f(i)) expect({ i, value: v[i] }).toEqual({ i, value: f(i) });
  }
  expect(v.length).toBeGreaterThan(from);
}

async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isHmmError(e)) return e.code;
    throw e;
  }
  return 'no error';
}

interface Fixture {
  m: Machine;
  p: Process;
  dev: SimDevice;
}

function fixture(seed = 1): Fixture {
  const m = new Machine({ seed });
  const p = m.createProcess('hmm-tests');
  const dev = new SimDevice(m.mm, { name: 'hmm_dmirror0' });
  return { m, p, dev };
}

/** FIXTURE_SETUP/TEARDOWN(hmm): open the mirror, run the body, close it, check the mm. */
async function withMirror(
  f: Fixture,
  body: (dm: Dmirror) => Promise<void>,
  extraRefs?: (pfn: number) => number,
): Promise<void> {
  await f.m.sched.runTask('hmm-tests', async () => {
    const dm = await Dmirror.open(f.m, f.dev, f.p);
    try {
      await body(dm);
    } finally {
      await dm.close();
    }
  });
  f.m.checkInvariants(extraRefs);
}

function entriesIn(dev: SimDevice, asid: number, start: number, end: number): number {
  let n = 0;
  dev.findMmu(asid)?.forEachEntry(start / P, end / P, () => n++);
  return n;
}

describe('dmirror: ports of hmm-tests.c', () => {
  it('hmm-tests.c:open_close', async () => {
    const f = fixture();
    let asid = -1;
    await withMirror(f, async (dm) => {
      asid = dm.asid;
      expect(asid).toBeGreaterThanOrEqual(1);
      expect(dm.notifier.active).toBe(true);
      expect([dm.notifier.start, dm.notifier.end]).toEqual([0x10000, 2 ** 47]);
      const other = await Dmirror.open(f.m, f.dev, f.p);
      expect(other.asid).not.toBe(asid);
      await other.close();
      expect(other.notifier.removed).toBe(true);
      expect(other.closed).toBe(true);
    });
    expect(f.dev.findMmu(asid)?.size ?? 0).toBe(0);
  });

  it('hmm-tests.c:anon_read', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { p } = f;
      const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      // Leave the first two pages zero (pte_none and pfn_zero).
      const from = (2 * P) / 4;
      await p.write(
        a + 2 * P,
        ints(INTS - from, (i) => i + from),
      );
      await p.mprotect(a, SIZE, Prot.READ);
      // Populate the CPU page table with the zero page.
      expect(await p.readU32(a + P)).toBe(0);
      const r = await dm.read(a, NPAGES);
      expect(r.cpages).toBe(NPAGES);
      expect(r.faults).toBe(1);
      expectInts(r.data, (i) => (i < from ? 0 : i));
      // The device maps everything read-only (RO region; zero page for pages 0-1).
      const mmu = f.dev.mmu(dm.asid);
      expect(mmu.lookup(a / P)).toBe(DevPerm.READ);
      expect(mmu.lookup(a / P + NPAGES - 1)).toBe(DevPerm.READ);
      await p.munmap(a, SIZE);
      expect(entriesIn(f.dev, dm.asid, a, a + SIZE)).toBe(0);
    });
  });

  it('hmm-tests.c:anon_read_prot', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { p } = f;
      const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      await p.write(
        a,
        ints(INTS, (i) => i),
      );
      await p.mprotect(a, SIZE, Prot.NONE);
      // The mirror buffer is only produced on success: a failed READ writes nothing.
      expect(await errnoOf(dm.read(a, NPAGES))).toBe('EFAULT');
      expect(entriesIn(f.dev, dm.asid, a, a + SIZE)).toBe(0);
      await p.mprotect(a, SIZE, Prot.READ);
      expectInts(await p.read(a, SIZE), (i) => i);
      await p.munmap(a, SIZE);
    });
  });

  it('hmm-tests.c:anon_write', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { p } = f;
      const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      const r = await dm.write(
        a,
        ints(INTS, (i) => i),
      );
      expect(r).toEqual({ cpages: NPAGES, faults: 1 });
      expectInts(await p.read(a, SIZE), (i) => i);
      expect(f.dev.mmu(dm.asid).lookup(a / P)).toBe(DevPerm.READ | DevPerm.WRITE);
      await p.munmap(a, SIZE);
    });
  });

  it('hmm-tests.c:anon_write_prot', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { p } = f;
      const a = await p.mmap({ length: SIZE, prot: Prot.READ, flags: PRIV_ANON });
      // A device reading a zero page of memory.
      const r = await dm.read(a, 1);
      expect([r.cpages, r.faults]).toEqual([1, 1]);
      expectInts(r.data, () => 0);
      const data = ints(INTS, (i) => i);
      expect(await errnoOf(dm.write(a, data))).toBe('EPERM');
      expectInts(await p.read(a, SIZE), () => 0);
      // Now allow writing and see that the zero page is replaced.
      await p.mprotect(a, SIZE, RW);
      expect(await dm.write(a, data)).toEqual({ cpages: NPAGES, faults: 1 });
      expectInts(await p.read(a, SIZE), (i) => i);
      await p.munmap(a, SIZE);
    });
  });

  it('hmm-tests.c:anon_write_child (no migrate, no THP)', async () => {
    const f = fixture();
    await withMirror(f, async () => {
      const { m, p, dev } = f;
      // buffer->size = size * 2; the test uses the first `size` bytes.
      const a = await p.mmap({ length: 2 * SIZE, prot: RW, flags: PRIV_ANON });
      await p.write(
        a,
        ints(INTS, (i) => i),
      );
      const mirror = ints(INTS, (i) => -i);
      const child = await p.fork();
      const task = m.sched.spawn('child', async () => {
        // The child sees the parent's values.
        expectInts(await child.read(a, SIZE), (i) => i);
        // The child needs its own mirror of its own mm.
        const cdm = await Dmirror.open(m, dev, child);
        const r = await cdm.write(a, mirror);
        expect(r).toEqual({ cpages: NPAGES, faults: 1 });
        expectInts(await child.read(a, SIZE), (i) => -i);
        await cdm.close();
        await child.exit(0);
      });
      await task.join(); // waitpid
      expect(child.exitCode).toBe(0);
      // The parent's buffer did not change (COW).
      expectInts(await p.read(a, SIZE), (i) => i);
      await p.munmap(a, 2 * SIZE);
    });
  });

  it('hmm-tests.c:anon_write_child_shared', async () => {
    const f = fixture();
    await withMirror(f, async () => {
      const { m, p, dev } = f;
      const a = await p.mmap({ length: SIZE, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
      await p.write(
        a,
        ints(INTS, (i) => i),
      );
      const mirror = ints(INTS, (i) => -i);
      const child = await p.fork();
      const task = m.sched.spawn('child', async () => {
        expectInts(await child.read(a, SIZE), (i) => i);
        expectInts(mirror, (i) => -i);
        const cdm = await Dmirror.open(m, dev, child);
        expect(await cdm.write(a, mirror)).toEqual({ cpages: NPAGES, faults: 1 });
        expectInts(await child.read(a, SIZE), (i) => -i);
        await cdm.close();
        await child.exit(0);
      });
      await task.join();
      expect(child.exitCode).toBe(0);
      // The parent's buffer did change (no COW).
      expectInts(await p.read(a, SIZE), (i) => -i);
      await p.munmap(a, SIZE);
    });
  });

  it('hmm-tests.c:file_read', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { m, p } = f;
      const file = await m.createFile(
        'hmm-tmp',
        ints(INTS, (i) => i),
      ); // O_TMPFILE + pwrite
      const a = await p.mmap({ length: SIZE, prot: Prot.READ, flags: MapFlag.SHARED, file });
      const r = await dm.read(a, NPAGES);
      expect([r.cpages, r.faults]).toEqual([NPAGES, 1]);
      expectInts(r.data, (i) => i);
      await p.munmap(a, SIZE);
    });
  });

  it('hmm-tests.c:file_write', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { m, p } = f;
      const file = await m.createFile('hmm-tmp');
      await m.truncate(file, SIZE); // hmm_create_file: ftruncate(fd, size)
      const a = await p.mmap({ length: SIZE, prot: RW, flags: MapFlag.SHARED, file });
      expect(
        await dm.write(
          a,
          ints(INTS, (i) => i),
        ),
      ).toEqual({ cpages: NPAGES, faults: 1 });
      expectInts(await p.read(a, SIZE), (i) => i);
      // The device also wrote the file (pread).
      expectInts(await m.readFile(file, 0, SIZE), (i) => i);
      await p.munmap(a, SIZE);
    });
  });

  it('hmm-tests.c:anon_read_multiple', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { p } = f;
      for (let c = 0; c < NTIMES; c++) {
        const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
        await p.write(
          a,
          ints(INTS, (i) => i + c),
        );
        const r = await dm.read(a, NPAGES);
        expect([r.cpages, r.faults]).toEqual([NPAGES, 1]);
        expectInts(r.data, (i) => i + c);
        // hmm_buffer_free: munmap; the invalidation clears the device entries.
        await p.munmap(a, SIZE);
        expect(entriesIn(f.dev, dm.asid, a, a + SIZE)).toBe(0);
      }
    });
  });

  it('hmm-tests.c:anon_teardown (20 seeds)', async () => {
    const outcomes: string[] = [];
    for (let seed = 1; seed <= 20; seed++) {
      const c = seed;
      const f = fixture(seed);
      await withMirror(f, async (dm) => {
        const { m, p } = f;
        const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
        await p.write(
          a,
          ints(INTS, (i) => i + c),
        );
        // unmap_buffer: a random delay (seeded), then munmap of the second half while READ runs.
        // The kernel sleeps < 32 us; a simulated 1 MiB READ takes ~35 us (simulated time, the
        // cost model), so the bound is 64 us to land on both sides of its end.
        const delay = m.sched.random.nextInt(64_000);
        const unmapper = m.sched.spawn('unmap_buffer', async () => {
          await m.sched.sleep(delay);
          await p.munmap(a + SIZE / 2, SIZE / 2);
        });
        try {
          const r = await dm.read(a, NPAGES);
          expect([r.cpages, r.faults]).toEqual([NPAGES, 1]);
          expectInts(r.data, (i) => i + c);
          outcomes.push('ok');
        } catch (e) {
          // Lost the race: the second half was gone when the device faulted it.
          expect(isHmmError(e) && e.code).toBe('EFAULT');
          outcomes.push('EFAULT');
        }
        await unmapper.join();
        expect(entriesIn(f.dev, dm.asid, a + SIZE / 2, a + SIZE)).toBe(0);
        await p.munmap(a, SIZE / 2);
      });
    }
    expect(outcomes).toHaveLength(20);
    // Both sides of the race occur over the seeds.
    expect(outcomes).toContain('ok');
    expect(outcomes).toContain('EFAULT');
  });

  it('hmm-tests.c:mixedmap', async () => {
    const f = fixture();
    const pfn = f.m.mm.mem.alloc(); // the page the driver hands out on a CPU fault
    await withMirror(
      f,
      async (dm) => {
        const { p } = f;
        // The kernel maps the dmirror file MAP_PRIVATE: its mmap inserts zeroed pages into a
        // VM_MIXEDMAP VMA, which hmm_range_fault walks like normal memory, so the kernel test expects
        // HMM_DMIRROR_PROT_READ. The SDK's driver mapping (`ops`) is VM_PFNMAP | VM_IO, which
        // hmm_range_fault reports as ERROR: the difference is the mapping type, not the driver.
        const a = await p.mmap({
          length: P,
          prot: RW,
          flags: MapFlag.PRIVATE,
          ops: { name: 'dmirror', fault: () => pfn },
        });
        expect(Array.from(await dm.snapshot(a, 1))).toEqual([DmirrorProt.ERROR]);
        // Also once the CPU has faulted the driver page in (a special PTE).
        await p.writeU32(a, 7);
        expect(await p.readU32(a)).toBe(7);
        expect(Array.from(await dm.snapshot(a, 1))).toEqual([DmirrorProt.ERROR]);
        // Faulting it for the device fails as the kernel's would on a PFNMAP VMA.
        expect(await errnoOf(dm.read(a, 1))).toBe('EFAULT');
        await p.munmap(a, P);
      },
      (x) => (x === pfn ? 1 : 0),
    );
    f.m.mm.mem.free(pfn);
    f.m.checkInvariants();
  });

  it('hmm-tests.c:snapshot (hmm2, without device memory)', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { p } = f;
      const npages = 7;
      const a = await p.mmap({ length: npages * P, prot: Prot.NONE, flags: PRIV_ANON });
      // Punch a hole after the first page.
      await p.munmap(a + P, P);
      // Page 2: read-only zero page.
      await p.mprotect(a + 2 * P, P, Prot.READ);
      const val = (await p.readU32(a + 2 * P)) + 3;
      expect(val).toBe(3);
      // Page 3: read-only.
      await p.mprotect(a + 3 * P, P, RW);
      await p.writeU32(a + 3 * P, val);
      await p.mprotect(a + 3 * P, P, Prot.READ);
      // Pages 4-6: read-write; only page 4 is touched.
      await p.mprotect(a + 4 * P, 3 * P, RW);
      await p.writeU32(a + 4 * P, val);
      // Pages 5 and 6 would be migrated to devices 0 and 1 (device memory is not modelled yet):
      // untouched, they are not present, hence NONE.
      const m = await dm.snapshot(a, npages);
      expect(m.length).toBe(npages); // cpages
      expect(Array.from(m)).toEqual([
        DmirrorProt.ERROR,
        DmirrorProt.ERROR,
        DmirrorProt.ZERO | DmirrorProt.READ,
        DmirrorProt.READ,
        DmirrorProt.WRITE,
        DmirrorProt.NONE,
        DmirrorProt.NONE,
      ]);
      // A snapshot faults nothing in and maps nothing on the device.
      expect(await p.readU32(a + 4 * P)).toBe(3);
      expect(entriesIn(f.dev, dm.asid, a, a + npages * P)).toBe(0);
      await p.munmap(a, npages * P);
    });
  });
});

describe('dmirror: driver behaviour beyond the selftests', () => {
  it('uapi checks: unaligned address, empty or overflowing range -> EINVAL', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const a = await f.p.mmap({ length: P, prot: RW, flags: PRIV_ANON });
      expect(await errnoOf(dm.read(a + 8, 1))).toBe('EINVAL');
      expect(await errnoOf(dm.read(a, 0))).toBe('EINVAL');
      expect(await errnoOf(dm.snapshot(2 ** 47 - P, 2))).toBe('EINVAL');
      expect(await errnoOf(dm.write(a + 1, new Uint8Array(P)))).toBe('EINVAL');
      expect(await errnoOf(dm.read(a + P, 1))).toBe('EFAULT'); // a hole
      await f.p.munmap(a, P);
    });
  });

  it('device fault handler: a device access of an unmapped page faults it in through the mirror', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { p, dev } = f;
      const a = await p.mmap({ length: 4 * P, prot: RW, flags: PRIV_ANON });
      await p.write(
        a,
        ints(P, (i) => i * 3),
      );
      expect(dev.mmu(dm.asid).lookup(a / P + 1)).toBe(0);
      expectInts(await dev.read(dm.asid, a + P, P), (i) => (i + P / 4) * 3);
      expect(dev.mmu(dm.asid).lookup(a / P + 1)).toBe(DevPerm.READ | DevPerm.WRITE);
      await dev.write(
        dm.asid,
        a + 3 * P,
        ints(P / 4, () => -5),
      );
      expectInts(await p.read(a + 3 * P, P), () => -5);
      // A CPU COW / unmap invalidates; the device faults again and sees the new state.
      await p.munmap(a + P, P);
      expect(dev.mmu(dm.asid).lookup(a / P + 1)).toBe(0);
      expect(await errnoOf(dev.read(dm.asid, a + P, 4))).toBe('EFAULT');
      expect(dev.stats().faults).toBeGreaterThanOrEqual(3);
      await p.munmap(a, 4 * P);
    });
  });

  it('non-blockable invalidation (OOM reaper) while the mirror mutex is held: declined, data intact', async () => {
    const f = fixture();
    await withMirror(f, async (dm) => {
      const { m, p, dev } = f;
      const a = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      await p.write(
        a,
        ints(INTS, (i) => i),
      );
      expect((await dm.read(a, NPAGES)).cpages).toBe(NPAGES);
      const holder = m.sched.spawn('holder', async () => {
        await dm.mutex.lock();
        await m.sched.sleep(1_000_000);
        dm.mutex.unlock();
      });
      await m.sched.sleep(1);
      expect(dm.mutex.isLocked).toBe(true);
      // The callback cannot sleep: it returns false, the reaper skips the VMA.
      const seq = dm.notifier.invalidateSeq;
      expect(m.oomReap(p)).toBe(false);
      expect(dm.notifier.invalidateSeq).toBe(seq); // never called mmuIntervalSetSeq
      await holder.join();
      const faults = dev.stats().faults;
      expectInts(await dev.read(dm.asid, a, SIZE), (i) => i);
      expect(dev.stats().faults).toBe(faults); // still mapped: no device fault
      // With the mutex free the SDK driver still declines: removing device entries needs a fence
      // wait (sleeping), unlike dmirror's xarray erase.
      expect(m.oomReap(p)).toBe(false);
      expectInts(await p.read(a, SIZE), (i) => i);
      // Once nothing is mapped on the device, the reaper goes through.
      await p.munmap(a, SIZE);
      const b = await p.mmap({ length: SIZE, prot: RW, flags: PRIV_ANON });
      await p.write(
        b,
        ints(INTS, (i) => i),
      );
      expect(m.oomReap(p)).toBe(true);
      expectInts(await p.read(b, SIZE), () => 0);
      await p.munmap(b, SIZE);
    });
  });
});
