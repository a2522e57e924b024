import { describe, expect, it } from 'vitest';
import { ANON, P, RW } from '../testing/fixtures.js';
import { Foll } from '../mm/constants.js';
import type { Process } from '../mm/process.js';
import { TraceRecorder } from '../sim/trace.js';
import { Machine } from '../system/machine.js';
import { DevPerm } from './device-mmu.js';
import type { DevPermBits } from './device-mmu.js';
import { SimDevice } from './device.js';
import type { DeviceFault } from './device.js';

const ASID = 7;

async function setup(pages = 4): Promise<{ m: Machine; p: Process; dev: SimDevice; a: number }> {
  const m = new Machine({ ramBytes: 64 * P, swapBytes: 64 * P });
  const p = m.createProcess();
  const dev = new SimDevice(m.mm, { name: 'gpu0' });
  const a = await m.sched.runTask('mmap', () => p.mmap({ length: pages * P, prot: RW, flags: ANON }));
  return { m, p, dev, a };
}

/**
 * A minimal mirroring driver: on a fault, looks the page up through GUP (faulting it in for
 * write when asked), maps it with `perm(fault)` through the queue, waits for the fence and puts the
 * page back (the device mapping holds no reference, as with HMM).
 */
function mirror(
  dev: SimDevice,
  p: Process,
  perm: (f: DeviceFault) => DevPermBits = (f) =>
    f.access === 'read' ? DevPerm.READ : DevPerm.READ | DevPerm.WRITE | DevPerm.ATOMIC,
): DeviceFault[] {
  const faults: DeviceFault[] = [];
  dev.setFaultHandler(async (fault) => {
    faults.push(fault);
    const pfns = await p.getUserPages(fault.address, 1, fault.access === 'read' ? 0 : Foll.WRITE);
    try {
      const f = dev.queue.submit({
        op: 'map',
        asid: fault.asid,
        vpns: Float64Array.of(fault.address / P),
        pfns: Uint32Array.from(pfns),
        perms: Uint8Array.of(perm(fault)),
      });
      await f.wait();
    } finally {
      p.putUserPages(pfns);
    }
  });
  return faults;
}

function bytes(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
}

describe('SimDevice', () => {
  it('faults, lets the driver map the page through the queue, replays and reads what the CPU wrote', async () => {
    const { m, p, dev, a } = await setup();
    const data = bytes(2 * P, 5);
    const rec = new TraceRecorder(m.trace, (e) => e.type === 'device.fault');
    const faults = mirror(dev, p, () => DevPerm.READ);
    const lat = dev.queue.latency;
    await m.sched.runTask('gpu-kernel', async () => {
      await p.write(a, data);
      const t0 = m.sched.now;
      // Spans two pages, starting mid-page.
      const got = await dev.access(ASID, a + 100, P + 200, 'read');
      expect(got).toEqual(data.subarray(100, P + 300));
      expect(m.sched.now - t0).toBe(2 * (lat.mapBaseNs + lat.mapPerEntryNs)); // two faults, one map each
      // Mapped now: no new fault, no simulated time.
      const t1 = m.sched.now;
      expect(await dev.read(ASID, a, 16)).toEqual(data.subarray(0, 16));
      expect(m.sched.now).toBe(t1);
      const [pfn] = await p.getUserPages(a, 1);
      expect(dev.mmu(ASID).pfnOf(a / P)).toBe(pfn);
      p.putUserPages([pfn!]);
    });
    expect(faults).toEqual([
      { asid: ASID, address: a, access: 'read' },
      { asid: ASID, address: a + P, access: 'read' },
    ]);
    expect(
      rec.events.map((e) => (e.type === 'device.fault' ? [e.address, e.attempt, e.handled] : [])),
    ).toEqual([
      [a, 1, true],
      [a + P, 1, true],
    ]);
    expect(dev.stats()).toEqual({
      accesses: 2,
      pagesAccessed: 3,
      faults: 2,
      failedAccesses: 0,
      bytesRead: P + 200 + 16,
      bytesWritten: 0,
      atomics: 0,
      commands: 2,
    });
    m.checkInvariants();
  });

  it('a write through a read-only entry faults with access "write"; after the upgrade the CPU sees the bytes', async () => {
    const { m, p, dev, a } = await setup();
    const faults = mirror(dev, p, (f) => (f.access === 'read' ? DevPerm.READ : DevPerm.READ | DevPerm.WRITE));
    const data = bytes(64, 9);
    await m.sched.runTask('gpu-kernel', async () => {
      await p.write(a, new Uint8Array([1]));
      await dev.read(ASID, a, 1);
      expect(dev.mmu(ASID).lookup(a / P)).toBe(DevPerm.READ);
      await dev.write(ASID, a + 8, data);
      expect(dev.mmu(ASID).lookup(a / P)).toBe(DevPerm.READ | DevPerm.WRITE);
      expect(await p.read(a + 8, 64)).toEqual(data);
    });
    expect(faults.map((f) => f.access)).toEqual(['read', 'write']);
    expect(dev.stats()).toMatchObject({ faults: 2, bytesWritten: 64 });
  });

  it('with no fault handler, a miss is EFAULT at once', async () => {
    const { m, dev, a } = await setup();
    const err = await m.sched.runTask('gpu-kernel', () => dev.read(ASID, a + 5, 4)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EFAULT', address: a });
    expect(String(err)).toMatch(
      /gpu0: read of asid 7 at 0x[0-9a-f]+ has no device mapping with READ.*did not map it/,
    );
    expect(dev.stats()).toMatchObject({ faults: 1, failedAccesses: 1, pagesAccessed: 0 });
  });

  it('a handler that never maps the page fails the access with EFAULT after the retry bound', async () => {
    const { m, dev, a } = await setup();
    const rec = new TraceRecorder(m.trace, (e) => e.type === 'device.fault');
    let calls = 0;
    dev.setFaultHandler(async () => {
      calls++;
      await m.sched.sleep(10);
    });
    const err = await m.sched
      .runTask('gpu-kernel', () => dev.write(ASID, a, new Uint8Array(4)))
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EFAULT', address: a });
    expect(String(err)).toMatch(
      /write .* WRITE permission after 16 fault-handler rounds; the driver did not map it/,
    );
    expect(calls).toBe(16);
    expect(dev.maxFaultRetries).toBe(16);
    expect(rec.events.map((e) => (e.type === 'device.fault' ? e.attempt : 0))).toEqual(
      Array.from({ length: 16 }, (_, i) => i + 1),
    );
    expect(m.trace.counter('device.fault')).toBe(16);
    expect(dev.stats()).toMatchObject({ faults: 16, failedAccesses: 1, bytesWritten: 0 });
  });

  it("a fault handler's error fails the access unchanged", async () => {
    const { m, dev, a } = await setup();
    dev.setFaultHandler(() => Promise.reject(new Error('driver cancelled the fault')));
    await expect(m.sched.runTask('gpu-kernel', () => dev.read(ASID, a, 1))).rejects.toThrow(
      'driver cancelled the fault',
    );
  });

  it('atomic add on an aligned word: needs ATOMIC, returns the old value, wraps modulo 2^32', async () => {
    const { m, p, dev, a } = await setup();
    const faults = mirror(dev, p, (f) =>
      f.access === 'atomic' ? DevPerm.READ | DevPerm.ATOMIC : DevPerm.READ,
    );
    await m.sched.runTask('gpu-kernel', async () => {
      const word = new Uint8Array(8);
      new DataView(word.buffer).setUint32(0, 41, true);
      new DataView(word.buffer).setUint32(4, 0xffff_ffff, true);
      await p.write(a + 64, word);
      await dev.read(ASID, a, 4); // maps READ only
      expect(await dev.atomicAdd(ASID, a + 64, 1)).toBe(41); // READ lacks ATOMIC: faults
      expect(await dev.access(ASID, a + 68, 4, 'atomic', 2)).toBe(0xffff_ffff);
      const after = new DataView((await p.read(a + 64, 8)).buffer);
      expect([after.getUint32(0, true), after.getUint32(4, true)]).toEqual([42, 1]);
      await expect(dev.atomicAdd(ASID, a + 2, 1)).rejects.toThrow(/EINVAL.*4-byte aligned/);
      await expect(dev.access(ASID, a, 8 as 4, 'atomic', 1)).rejects.toThrow(/EINVAL.*4-byte aligned/);
      await expect(dev.atomicAdd(ASID, a, 1.5)).rejects.toThrow(/EINVAL.*integer delta/);
    });
    expect(faults.map((f) => f.access)).toEqual(['read', 'atomic']);
    expect(dev.stats()).toMatchObject({ atomics: 2, faults: 2 });
  });

  it('calls access observers for every page before the copy; a throwing observer stops the access', async () => {
    const { m, p, dev, a } = await setup();
    mirror(dev, p);
    const seen: [number, number, number, string][] = [];
    const off = dev.onAccess((asid, vpn, pfn, kind) => seen.push([asid, vpn, pfn, kind]));
    await m.sched.runTask('gpu-kernel', async () => {
      await dev.write(ASID, a + P - 2, new Uint8Array([1, 2, 3, 4]));
      const mmu = dev.mmu(ASID);
      expect(seen).toEqual([
        [ASID, a / P, mmu.pfnOf(a / P), 'write'],
        [ASID, a / P + 1, mmu.pfnOf(a / P + 1), 'write'],
      ]);
      off();
      const stop = dev.onAccess((_asid, vpn) => {
        if (vpn === a / P + 1) throw new Error('sanitizer: bad access');
      });
      await expect(dev.write(ASID, a + P - 2, new Uint8Array([9, 9, 9, 9]))).rejects.toThrow('sanitizer');
      stop();
      // The first page was written, the second was not (the observer runs before the copy).
      expect(await p.read(a + P - 2, 4)).toEqual(new Uint8Array([9, 9, 3, 4]));
    });
    expect(seen).toHaveLength(2);
  });

  it('removal: accesses and submissions fail with ENODEV, also for an access waiting on a fault', async () => {
    const { m, p, dev, a } = await setup();
    mirror(dev, p);
    await m.sched.runTask('driver', async () => {
      await dev.read(ASID, a, 1);
      dev.setFaultHandler(() => dev.remove());
      await expect(dev.read(ASID, a + P, 1)).rejects.toMatchObject({ code: 'ENODEV' });
      expect(dev.removed).toBe(true);
      expect(dev.mmu(ASID).size).toBe(0);
      await expect(dev.read(ASID, a, 1)).rejects.toThrow(/ENODEV.*removed/);
      expect(() => dev.queue.submit({ op: 'nop' })).toThrow(/ENODEV/);
      await dev.remove(); // idempotent
    });
  });

  it('validates arguments', async () => {
    const { dev, m } = await setup();
    await m.sched.runTask('gpu-kernel', async () => {
      await expect(dev.read(-1, 0, 1)).rejects.toThrow(/EINVAL.*ASID/);
      await expect(dev.read(0, 0.5, 1)).rejects.toThrow(/EINVAL.*integer address/);
      await expect(dev.read(0, 2 ** 47 - 1, 2)).rejects.toMatchObject({ code: 'EFAULT' });
      await expect(dev.access(0, 0, 4, 'write', new Uint8Array(3))).rejects.toThrow(
        /EINVAL.*exactly 4 bytes/,
      );
      await expect(dev.access(0, 0, 1, 'exec' as 'read')).rejects.toThrow(/EINVAL.*unknown access kind/);
      expect(await dev.read(0, 0, 0)).toEqual(new Uint8Array(0)); // nothing to touch, no fault
    });
    expect(() => dev.mmu(2 ** 32)).toThrow(/EINVAL/);
    expect(() => dev.setFaultHandler(5 as never)).toThrow(/EINVAL/);
    expect(() => new SimDevice(m.mm, { maxFaultRetries: 0 })).toThrow(/EINVAL.*maxFaultRetries/);
  });

  it('numbers devices per machine and refuses a duplicate id', () => {
    const m = new Machine({ ramBytes: 64 * P });
    const d1 = new SimDevice(m.mm);
    const d2 = new SimDevice(m.mm, { name: 'nic' });
    expect([d1.id, d1.name, d2.id, d2.name]).toEqual([1, 'dev1', 2, 'nic']);
    expect(() => new SimDevice(m.mm, { id: 2 })).toThrow(/EEXIST/);
    expect(new SimDevice(m.mm, { id: 9 }).id).toBe(9);
    expect(new SimDevice(new Machine({ ramBytes: 64 * P }).mm).id).toBe(1);
  });

  it('is deterministic: the same scenario gives the same trace', async () => {
    async function run(): Promise<string> {
      const { m, p, dev, a } = await setup();
      const rec = new TraceRecorder(m.trace, (e) => e.type.startsWith('device.'));
      mirror(dev, p);
      await m.sched.runTask('gpu', async () => {
        const tasks = [0, 1, 2].map((i) => m.sched.spawn(`k${i}`, () => dev.atomicAdd(ASID, a + i * P, i)));
        for (const t of tasks) await t.join();
      });
      return rec.toJSONL();
    }
    const first = await run();
    expect(first).toContain('"device.fault"');
    expect(await run()).toBe(first);
  });
});

describe('SimDevice contexts', () => {
  it('allocates ASIDs, routes faults to a per-ASID handler first, and frees an empty ASID only', async () => {
    const m = new Machine({ ramBytes: 64 * 4096, swapBytes: 0 });
    const dev = new SimDevice(m.mm, { name: 'ctx' });
    const a = dev.allocAsid();
    const b = dev.allocAsid();
    expect([a, b]).toEqual([1, 2]);
    const seen: string[] = [];
    dev.setFaultHandler(async (f) => void seen.push(`global ${f.asid}`));
    dev.setFaultHandler(async (f) => void seen.push(`own ${f.asid}`), b);
    await m.sched.runTask('t', async () => {
      await expect(dev.read(a, 0x10000, 1)).rejects.toMatchObject({ code: 'EFAULT' });
      await expect(dev.read(b, 0x10000, 1)).rejects.toMatchObject({ code: 'EFAULT' });
      await dev.queue.submit({ op: 'map', asid: b, vpns: [0x10], pfns: [1], perms: [1] }).wait();
    });
    expect(seen.filter((s) => s === 'global 1').length).toBeGreaterThan(0);
    expect(seen.filter((s) => s === 'own 2').length).toBeGreaterThan(0);
    expect(seen.some((s) => s === 'global 2')).toBe(false);
    expect(() => dev.freeAsid(b)).toThrow(/still has 1 mappings/);
    dev.freeAsid(a);
    expect(() => dev.freeAsid(a)).toThrow(/not allocated/);
    expect(dev.allocAsid()).toBe(3);
  });
});
