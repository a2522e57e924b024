/**
 * Driver-specific tests of the simulated dmirror: its ASIDs and notifier, uapi argument checks, the
 * device fault handler and the OOM reaper. The ported hmm-tests.c cases run through the
 * conformance suite (`dmirror.conformance.test.ts`).
 */
import { describe, expect, it } from 'vitest';
import { DevPerm, Machine, MapFlag, PAGE_SIZE, Prot, SimDevice, isHmmError } from '@hmm/core';
import type { Process } from '@hmm/core';
import { Dmirror } from './dmirror.js';

const P = PAGE_SIZE;
/** HMM_BUFFER_SIZE (4 MiB in the kernel), shrunk to stay fast. */
const SIZE = 1 << 20;
const NPAGES = SIZE / P;
const INTS = SIZE / 4;
const RW = Prot.READ | Prot.WRITE;
const PRIV_ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;

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

describe('dmirror: driver behaviour beyond the selftests', () => {
  it('open: an ASID of its own and a notifier over the whole user address space', async () => {
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
