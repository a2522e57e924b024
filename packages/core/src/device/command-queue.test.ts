import { describe, expect, it } from 'vitest';
import { Machine } from '../system/machine.js';
import { TraceRecorder } from '../sim/trace.js';
import { defaultCommandLatency } from './command-queue.js';
import type { DeviceCommand } from './command-queue.js';
import { DevPerm } from './device-mmu.js';
import { SimDevice } from './device.js';
import type { Fence } from './fence.js';

const P = 4096;

function setup(opts: ConstructorParameters<typeof SimDevice>[1] = {}) {
  const m = new Machine({ ramBytes: 64 * P, swapBytes: 64 * P });
  const dev = new SimDevice(m.mm, { name: 'gpu0', ...opts });
  return { m, dev };
}

function map(asid: number, vpns: number[], pfns: number[], perm: number = DevPerm.READ): DeviceCommand {
  return {
    op: 'map',
    asid,
    vpns: Float64Array.from(vpns),
    pfns: Uint32Array.from(pfns),
    perms: new Uint8Array(vpns.length).fill(perm),
  };
}

describe('CommandQueue', () => {
  it('executes commands in FIFO order, each after its simulated latency, and signals fences in order', async () => {
    const { m, dev } = setup();
    const lat = defaultCommandLatency(m.cost);
    expect(dev.queue.latency).toEqual(lat);
    expect(lat.mapBaseNs).toBe(m.cost.notifier.deviceTlbInvalNs);
    expect(lat.mapPerEntryNs).toBe(m.cost.hmm.rangeFaultPerPresentPageNs);
    expect(lat.unmapNs).toBe(m.cost.notifier.deviceTlbInvalNs);
    const rec = new TraceRecorder(m.trace, (e) => e.type === 'device.cmd');
    const order: number[] = [];
    const fences = await m.sched.runTask('driver', async () => {
      const t0 = m.sched.now;
      const fs: Fence[] = [
        dev.queue.submit(map(1, [10, 11, 12], [5, 6, 7], DevPerm.READ | DevPerm.WRITE)),
        dev.queue.submit({ op: 'unmap', asid: 1, startVpn: 11, endVpn: 12 }),
        dev.queue.submit({ op: 'nop' }),
        dev.queue.submit(map(2, [0], [8])),
        dev.queue.submit({ op: 'unmap-all', asid: 1 }),
      ];
      for (const f of fs) f.onSignal(() => order.push(f.seqno));
      expect(fs.map((f) => f.signaled)).toEqual([false, false, false, false, false]);
      expect(dev.queue.pending).toBe(5);
      await dev.queue.idle();
      expect(dev.queue.pending).toBe(0);
      expect(dev.queue.completed).toBe(5);
      const t1 = t0 + lat.mapBaseNs + 3 * lat.mapPerEntryNs;
      const t2 = t1 + lat.unmapNs;
      const t3 = t2 + lat.nopNs;
      const t4 = t3 + lat.mapBaseNs + lat.mapPerEntryNs;
      const t5 = t4 + lat.unmapNs;
      expect(fs.map((f) => f.signaledAt)).toEqual([t1, t2, t3, t4, t5]);
      expect(m.sched.now).toBe(t5);
      return fs;
    });
    expect(fences.map((f) => f.seqno)).toEqual([1, 2, 3, 4, 5]);
    expect(order).toEqual([1, 2, 3, 4, 5]);
    expect(
      rec.events.map((e) => (e.type === 'device.cmd' ? [e.op, e.asid, e.entries, e.startVpn, e.endVpn] : [])),
    ).toEqual([
      ['map', 1, 3, null, null],
      ['unmap', 1, 1, 11, 12],
      ['nop', null, 0, null, null],
      ['map', 2, 1, null, null],
      ['unmap-all', 1, 2, null, null],
    ]);
    expect(rec.events.every((e) => e.type === 'device.cmd' && e.device === dev.id && e.name === 'gpu0')).toBe(
      true,
    );
    expect(m.trace.counter('device.cmd.map')).toBe(2);
    expect(dev.mmu(1).size).toBe(0);
    expect(dev.mmu(2).pfnOf(0)).toBe(8);
    expect(dev.asids()).toEqual([1, 2]);
  });

  it("a command's effect is visible exactly from its fence's signal time", async () => {
    const { m, dev } = setup({ latency: { mapBaseNs: 1000, mapPerEntryNs: 0 } });
    await m.sched.runTask('driver', async () => {
      const f = dev.queue.submit(map(0, [7], [3]));
      let atSignal = -1;
      f.onSignal(() => (atSignal = dev.mmu(0).lookup(7)));
      const probe = m.sched.spawn('probe', async () => {
        await m.sched.sleep(999);
        const before = [dev.findMmu(0)?.lookup(7) ?? 0, f.signaled];
        await m.sched.sleep(2);
        return [...before, dev.mmu(0).lookup(7), f.signaled];
      });
      expect(await probe.join()).toEqual([0, false, DevPerm.READ, true]);
      expect(f.signaledAt).toBe(1000);
      expect(atSignal).toBe(DevPerm.READ);
    });
  });

  it('fence.wait blocks the task until the signal; a signalled fence returns at once', async () => {
    const { m, dev } = setup();
    const lat = dev.queue.latency;
    await m.sched.runTask('driver', async () => {
      const f = dev.queue.submit({ op: 'unmap-all', asid: 4 });
      const waiters = [0, 1].map((i) =>
        m.sched.spawn(`waiter${i}`, async () => {
          await f.wait();
          return m.sched.now;
        }),
      );
      expect(await waiters[0]!.join()).toBe(lat.unmapNs);
      expect(await waiters[1]!.join()).toBe(lat.unmapNs);
      const now = m.sched.now;
      await f.wait();
      await dev.queue.idle();
      expect(m.sched.now).toBe(now);
      let late = false;
      f.onSignal(() => (late = true));
      expect(late).toBe(true);
    });
    expect(dev.findMmu(4)).toBeUndefined(); // unmap of an unknown ASID does not create an MMU
  });

  it('onSignal callbacks run in order; one that throws is recorded and the rest still run', async () => {
    const { m, dev } = setup();
    const seen: string[] = [];
    const f = dev.queue.submit({ op: 'nop' });
    f.onSignal(() => seen.push('a'));
    f.onSignal(() => {
      throw new Error('boom');
    });
    f.onSignal(() => seen.push('c'));
    await m.sched.run();
    expect(seen).toEqual(['a', 'c']);
    expect((f.callbackError as Error).message).toBe('boom');
    expect(f.toString()).toBe('gpu0.queue#1');
  });

  it('idle() with nothing pending resolves outside a task; waiting on a pending fence outside one is EDEADLK', async () => {
    const { m, dev } = setup();
    await dev.queue.idle();
    const f = dev.queue.submit({ op: 'nop' });
    await expect(f.wait()).rejects.toMatchObject({ code: 'EDEADLK' });
    await m.sched.run();
    expect(f.signaled).toBe(true);
    await f.wait();
  });

  it('the command processor is a daemon: an idle device does not deadlock the scheduler', async () => {
    const { m, dev } = setup();
    dev.queue.submit({ op: 'nop' });
    expect(await m.sched.run()).toBe('idle');
    dev.queue.submit({ op: 'nop' });
    expect(await m.sched.run()).toBe('idle');
    expect(dev.queue.completed).toBe(2);
  });

  it('rejects malformed commands with EINVAL and queues nothing', () => {
    const { dev } = setup();
    const bad = (cmd: unknown) => () => dev.queue.submit(cmd as DeviceCommand);
    expect(bad(null)).toThrow(/EINVAL.*object/);
    expect(bad({ op: 'flush' })).toThrow(/EINVAL.*unknown command op "flush"/);
    expect(bad({ op: 'unmap-all', asid: -1 })).toThrow(/EINVAL.*ASID -1 is not a u32/);
    expect(bad({ op: 'unmap-all' })).toThrow(/EINVAL.*ASID/);
    expect(bad({ op: 'unmap', asid: 0, startVpn: 5, endVpn: 4 })).toThrow(/EINVAL.*above/);
    expect(bad({ op: 'unmap', asid: 0, startVpn: 0, endVpn: 2 ** 35 + 1 })).toThrow(/EINVAL.*2\^35/);
    expect(bad({ op: 'map', asid: 0, vpns: [1], pfns: [1, 2], perms: [1] })).toThrow(/EINVAL.*same length/);
    expect(bad({ op: 'map', asid: 0, vpns: [2 ** 35], pfns: [1], perms: [1] })).toThrow(
      /EINVAL.*entry 0: vpn/,
    );
    expect(bad({ op: 'map', asid: 0, vpns: [1, 2], pfns: [1, 64], perms: [1, 1] })).toThrow(
      /EINVAL.*entry 1.*frame 64 is not a frame of this machine/,
    );
    expect(bad({ op: 'map', asid: 0, vpns: [1], pfns: [1], perms: [0] })).toThrow(/EINVAL.*DevPerm/);
    expect(bad({ op: 'map', asid: 0, vpns: [1], pfns: [1], perms: [9] })).toThrow(/EINVAL.*DevPerm/);
    expect(bad({ op: 'map', asid: 0, vpns: [1], pfns: [0], perms: [DevPerm.WRITE] })).toThrow(
      /EINVAL.*zero page can only be mapped READ/,
    );
    expect(dev.queue.submitted).toBe(0);
    expect(dev.queue.pending).toBe(0);
    // Plain arrays are accepted too, and the zero page maps read-only.
    expect(dev.queue.submit({ op: 'map', asid: 0, vpns: [1], pfns: [0], perms: [DevPerm.READ] }).seqno).toBe(
      1,
    );
  });

  it('copies a map command at submission: the caller may reuse its arrays', async () => {
    const { m, dev } = setup();
    const cmd = map(0, [1, 2], [3, 4]);
    dev.queue.submit(cmd);
    if (cmd.op === 'map') (cmd.pfns as Uint32Array).fill(9);
    await m.sched.run();
    expect([dev.mmu(0).pfnOf(1), dev.mmu(0).pfnOf(2)]).toEqual([3, 4]);
  });

  it('takes latencies from the cost model and from overrides; rejects bad ones', () => {
    const m = new Machine({ ramBytes: 64 * P, cost: { notifier: { deviceTlbInvalNs: 1234 } } });
    const dev = new SimDevice(m.mm, { latency: { nopNs: 7 } });
    expect(dev.queue.latency).toMatchObject({ mapBaseNs: 1234, unmapNs: 1234, nopNs: 7 });
    expect(() => new SimDevice(m.mm, { latency: { nopNs: -1 } })).toThrow(/EINVAL.*nopNs/);
    expect(() => new SimDevice(m.mm, { latency: { bogus: 1 } as never })).toThrow(
      /EINVAL.*unknown command latency/,
    );
  });

  it('refuses submissions once the device is removed (ENODEV), after finishing queued commands', async () => {
    const { m, dev } = setup();
    await m.sched.runTask('driver', async () => {
      const f = dev.queue.submit(map(0, [1], [2]));
      const removal = dev.remove();
      expect(() => dev.queue.submit({ op: 'nop' })).toThrow(/ENODEV.*stopped or removed/);
      await removal;
      expect(f.signaled).toBe(true);
      expect(dev.queue.stopped).toBe(true);
      expect(dev.mmu(0).size).toBe(0); // cleared by the removal, after the map completed
    });
    expect(m.trace.counter('device.cmd.map')).toBe(1);
  });
});
