/**
 * A copy engine that fails in the middle of a migration. The driver copies the collected pages with
 * one transfer; when only a prefix arrives it abandons, page by page, the entries whose copy did not
 * arrive (clears their destination and frees it, as the kernel's drivers do) and commits the rest.
 * The pages copied move, the others stay where they were with their data, and nothing leaks.
 */
import { describe, expect, it } from 'vitest';
import { CopyEngine } from '../device/copy-engine.js';
import { TestDevmemDriver } from '../testing/devmem-driver.js';
import { ANON, P, RW, expectBytes, setup } from '../testing/fixtures.js';
import type { Machine } from '../system/machine.js';
import { MemoryType } from './memremap.js';
import type { MemoryTypeId } from './memremap.js';
import { Pte, PteType, pteType } from './pgtable.js';
import type { Process } from './process.js';

const N = 8;

/** The bytes written to page `i` of the buffer. */
function pattern(i: number): Uint8Array {
  const b = new Uint8Array(P);
  for (let k = 0; k < P; k++) b[k] = (i * 31 + k * 7 + (k >> 9)) & 0xff;
  return b;
}

type Where = 'ram' | 'device';

/** Where page `addr` of `p` lives, checked against the PTE type the memory type implies. */
function where(m: Machine, p: Process, drv: TestDevmemDriver, addr: number): Where {
  const slot = p.mm.pgtable.lookup(addr / P);
  expect(slot).toBeGreaterThanOrEqual(0);
  const f = m.mm.arena.pteFlags[slot]!;
  const pfn = m.mm.arena.pteVal[slot]!;
  if ((f & Pte.PRESENT) !== 0) {
    if (pfn < m.mm.mem.nrRamFrames) return 'ram';
    // A device-coherent page is mapped like RAM, with a device frame.
    expect(drv.type).toBe(MemoryType.DEVICE_COHERENT);
    expect(drv.devmem.owns(pfn)).toBe(true);
    return 'device';
  }
  expect(drv.type).toBe(MemoryType.DEVICE_PRIVATE);
  expect(pteType(f)).toBe(PteType.DEVICE_PRIVATE_WRITE);
  expect(drv.devmem.owns(pfn)).toBe(true);
  return 'device';
}

function places(m: Machine, p: Process, drv: TestDevmemDriver, a: number): Where[] {
  return Array.from({ length: N }, (_, i) => where(m, p, drv, a + i * P));
}

function expected(k: number, first: Where, rest: Where): Where[] {
  return Array.from({ length: N }, (_, i) => (i < k ? first : rest));
}

/** A machine, a process with an N-page buffer written with {@link pattern}, and a driver with a copy engine. */
async function world(
  type: MemoryTypeId,
): Promise<{ m: Machine; p: Process; drv: TestDevmemDriver; engine: CopyEngine; a: number }> {
  const { m, p } = setup();
  const engine = new CopyEngine(m.sched, m.cost, { name: 'ce-test' });
  const drv = new TestDevmemDriver(m, type, 32, {}, engine);
  const a = await p.mmap({ length: N * P, prot: RW, flags: ANON });
  for (let i = 0; i < N; i++) await p.write(a + i * P, pattern(i));
  return { m, p, drv, engine, a };
}

/** Reads the whole buffer through the CPU and compares it with what was written. */
async function readBack(p: Process, a: number): Promise<void> {
  for (let i = 0; i < N; i++) expectBytes(await p.read(a + i * P, P), pattern(i));
}

/** Exit and release: no RAM or device frame may be left. */
async function teardown(m: Machine, p: Process, drv: TestDevmemDriver): Promise<void> {
  await p.exit();
  await drv.devmem.release();
  expect(drv.devmem.nrAllocated).toBe(0);
  expect(m.mm.mem.allocatedFrames()).toEqual([]);
  expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  m.checkInvariants();
}

const TYPES: [string, MemoryTypeId][] = [
  ['device-private', MemoryType.DEVICE_PRIVATE],
  ['device-coherent', MemoryType.DEVICE_COHERENT],
];

describe.each(TYPES)('copy failure mid-migration, %s memory', (_name, type) => {
  it.each([0, 3, N - 1])(
    'to the device: the copy stops after %i pages; those move, the rest stay in RAM',
    async (k) => {
      const { m, p, drv, engine, a } = await world(type);
      await m.sched.runTask('migrate', async () => {
        const t0 = m.sched.now;
        engine.failNext(k);
        expect(await drv.toDevice(p, a, N)).toBe(k);
        expect(drv.lastCollected).toBe(N);
        expect(drv.lastAbandoned).toBe(N - k);
        expect(m.sched.now).toBeGreaterThan(t0); // the transfer took simulated time
        expect(places(m, p, drv, a)).toEqual(expected(k, 'device', 'ram'));
        expect(drv.devmem.nrAllocated).toBe(k);
        expect(m.mm.mem.allocatedDeviceFrames().length).toBe(k);
        m.checkInvariants();
        // Through the CPU: device-private pages come back to RAM, device-coherent ones are read in place.
        await readBack(p, a);
        expect(drv.faultsToRam).toBe(type === MemoryType.DEVICE_PRIVATE ? k : 0);
        m.checkInvariants();
        // The engine works again: the rest moves now.
        expect(await drv.toDevice(p, a, N)).toBe(type === MemoryType.DEVICE_PRIVATE ? N : N - k);
        expect(places(m, p, drv, a)).toEqual(expected(N, 'device', 'device'));
        await readBack(p, a);
        m.checkInvariants();
      });
      await teardown(m, p, drv);
    },
  );

  it.each([0, 3, N - 1])(
    'back to RAM: the copy stops after %i pages; those move, the rest stay in device memory',
    async (k) => {
      const { m, p, drv, engine, a } = await world(type);
      await m.sched.runTask('migrate', async () => {
        expect(await drv.toDevice(p, a, N)).toBe(N);
        const before = Array.from(
          { length: N },
          (_, i) => m.mm.arena.pteVal[p.mm.pgtable.lookup(a / P + i)]!,
        );
        engine.failNext(k);
        expect(await drv.toSystem(p, a, N)).toBe(k);
        expect(drv.lastAbandoned).toBe(N - k);
        expect(places(m, p, drv, a)).toEqual(expected(k, 'ram', 'device'));
        // The pages not copied are the very frames they were, holding their data.
        for (let i = k; i < N; i++) {
          expect(m.mm.arena.pteVal[p.mm.pgtable.lookup(a / P + i)]).toBe(before[i]);
          expectBytes(await drv.deviceRead(p, a + i * P, P), pattern(i));
        }
        expect(drv.devmem.nrAllocated).toBe(N - k);
        expect(drv.faultsToRam).toBe(0);
        m.checkInvariants();
        await readBack(p, a);
        m.checkInvariants();
        // A second try moves the rest.
        expect(await drv.toSystem(p, a, N)).toBe(type === MemoryType.DEVICE_PRIVATE ? 0 : N - k);
        expect(places(m, p, drv, a)).toEqual(expected(N, 'ram', 'ram'));
        expect(drv.devmem.nrAllocated).toBe(0);
        await readBack(p, a);
        m.checkInvariants();
      });
      await teardown(m, p, drv);
    },
  );
});

describe('copy failure while a CPU fault migrates a device-private page back', () => {
  it('the access gets SIGBUS, the page stays in device memory with its data, a retry succeeds', async () => {
    const { m, p, drv, engine, a } = await world(MemoryType.DEVICE_PRIVATE);
    await m.sched.runTask('fault', async () => {
      expect(await drv.toDevice(p, a, N)).toBe(N);
      engine.failNext(0);
      await expect(p.read(a + 2 * P + 5, 1)).rejects.toMatchObject({ code: 'EFAULT', signal: 'SIGBUS' });
      expect(where(m, p, drv, a + 2 * P)).toBe('device');
      expect(drv.devmem.nrAllocated).toBe(N);
      m.checkInvariants();
      expectBytes(await p.read(a + 2 * P, P), pattern(2));
      expect(where(m, p, drv, a + 2 * P)).toBe('ram');
      await readBack(p, a);
      m.checkInvariants();
    });
    await teardown(m, p, drv);
  });
});
