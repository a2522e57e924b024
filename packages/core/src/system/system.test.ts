import { describe, expect, it } from 'vitest';
import { SimDevice } from '../device/device.js';
import type { HmmMirrorDriver } from '../driver/hmm-mirror.js';
import { MACHINE } from '../driver/registry.js';
import type { DriverFactory } from '../driver/registry.js';
import { HmmError } from '../errors/errno.js';
import { Machine } from './machine.js';
import { System } from './system.js';

/** A driver that only probes a device and records what it was given. */
function fakeDriver(name: string, log: string[]): DriverFactory {
  return (c) => {
    const machine = c.resolve(MACHINE) as Machine;
    const devices: SimDevice[] = [];
    const d: HmmMirrorDriver = {
      name,
      capabilities: ['mirror'],
      devices,
      async probe(sys) {
        expect(sys.machine).toBe(machine);
        devices.push(new SimDevice(machine.mm, { name: `${name}0` }));
        log.push(`probe ${name}`);
      },
      mirror() {
        return Promise.reject(new HmmError('EOPNOTSUPP', `${name} mirrors nothing`));
      },
      async remove() {
        log.push(`remove ${name}`);
        for (const dev of devices) await dev.remove();
      },
    };
    return d;
  };
}

describe('System', () => {
  it('composes a machine with drivers resolved through the registry, probed in order, removed in reverse', async () => {
    const log: string[] = [];
    const sys = await System.create({
      ramBytes: 64 * 4096,
      seed: 3,
      drivers: [fakeDriver('a', log), fakeDriver('b', log)],
    });
    expect(sys.machine).toBeInstanceOf(Machine);
    expect(sys.machine.stats().ramPages).toBe(64);
    expect(sys.drivers().map((d) => d.name)).toEqual(['a', 'b']);
    expect(sys.driver('b').devices[0]!.name).toBe('b0');
    expect(() => sys.driver('c')).toThrow(/no driver named 'c'/);
    await expect(sys.driver('a').mirror(sys.machine.createProcess())).rejects.toMatchObject({
      code: 'EOPNOTSUPP',
    });
    await sys.machine.sched.runTask('shutdown', () => sys.shutdown());
    expect(log).toEqual(['probe a', 'probe b', 'remove b', 'remove a']);
    expect(sys.sanitizer.violations).toEqual([]);
  });

  it('refuses two drivers with one name', async () => {
    await expect(
      System.create({ drivers: [fakeDriver('x', []), fakeDriver('x', [])] }),
    ).rejects.toMatchObject({ code: 'EEXIST' });
  });
});
