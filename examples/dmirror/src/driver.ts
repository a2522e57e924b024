/**
 * dmirror as an {@link HmmMirrorDriver}: what a {@link System} registers and probes. Probing creates
 * the device `hmm_dmirror0`; `mirror(process)` is `open("/dev/hmm_dmirror0")`; every mirror is put
 * under the system's sanitizer.
 *
 * @module
 */
import { HmmError, MACHINE, SimDevice } from '@hmm/core';
import type { DriverFactory, HmmMirrorDriver, Machine, Process, System } from '@hmm/core';
import { Dmirror } from './dmirror.js';

/** The dmirror driver. */
export class DmirrorDriver implements HmmMirrorDriver {
  readonly name = 'dmirror';
  readonly capabilities = ['mirror'] as const;
  readonly devices: SimDevice[] = [];
  readonly #mirrors: Dmirror[] = [];
  #system: System | null = null;

  constructor(readonly machine: Machine) {}

  async probe(system: System): Promise<void> {
    this.#system = system;
    this.devices.push(new SimDevice(this.machine.mm, { name: 'hmm_dmirror0' }));
  }

  async mirror(process: Process, device: SimDevice | undefined = this.devices[0]): Promise<Dmirror> {
    if (device === undefined || this.#system === null) {
      throw new HmmError('ENODEV', 'dmirror: the driver has not been probed (use System.create)');
    }
    const m = await Dmirror.open(this.machine, device, process);
    this.#system.sanitizer.watch(device, m.asid, process.mm);
    this.#mirrors.push(m);
    return m;
  }

  async remove(): Promise<void> {
    for (const m of this.#mirrors.splice(0)) if (!m.closed) await m.close();
    for (const d of this.devices.splice(0)) await d.remove();
  }
}

/** Registers dmirror in a system: `System.create({ drivers: [dmirrorDriver] })`. */
export const dmirrorDriver: DriverFactory = (c) => new DmirrorDriver(c.resolve(MACHINE) as Machine);
