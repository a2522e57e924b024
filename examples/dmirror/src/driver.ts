/**
 * dmirror as an {@link HmmMirrorDriver}: what a {@link System} registers and probes. Probing creates
 * the devices as the kernel module loaded with both `spm_addr_dev*` parameters does: `hmm_dmirror0`
 * and `hmm_dmirror1` with device-private memory, `hmm_dmirror2` and `hmm_dmirror3` with
 * device-coherent memory. `mirror(process, device)` is `open("/dev/hmm_dmirror<N>")` (default the
 * first device); every mirror is put under the system's sanitizer.
 *
 * @module
 */
import { HmmError, MACHINE } from '@hmm/core';
import type { DriverFactory, HmmMirrorDriver, Machine, Process, SimDevice, System } from '@hmm/core';
import { Dmirror } from './dmirror.js';
import { DmirrorDevice } from './dmirror-device.js';

/** The dmirror driver. */
export class DmirrorDriver implements HmmMirrorDriver {
  readonly name = 'dmirror';
  readonly capabilities = ['mirror', 'device-private', 'device-coherent', 'exclusive'] as const;
  readonly devices: SimDevice[] = [];
  /** The dmirror devices, in the order of {@link devices}. */
  readonly dmirrorDevices: DmirrorDevice[] = [];
  readonly #mirrors: Dmirror[] = [];
  #system: System | null = null;

  constructor(readonly machine: Machine) {}

  async probe(system: System): Promise<void> {
    this.#system = system;
    for (let id = 0; id < 4; id++) {
      const d = DmirrorDevice.create(this.machine, `hmm_dmirror${id}`, {
        memory: id < 2 ? 'private' : 'coherent',
      });
      this.dmirrorDevices.push(d);
      this.devices.push(d.device);
    }
  }

  async mirror(process: Process, device: SimDevice | undefined = this.devices[0]): Promise<Dmirror> {
    if (device === undefined || this.#system === null) {
      throw new HmmError('ENODEV', 'dmirror: the driver has not been probed (use System.create)');
    }
    const dd = this.dmirrorDevices.find((d) => d.device === device);
    if (dd === undefined) throw new HmmError('ENODEV', `dmirror: ${device.name} is not a dmirror device`);
    const m = await Dmirror.open(this.machine, dd, process);
    this.#system.sanitizer.watch(device, m.asid, process.mm, device);
    this.#mirrors.push(m);
    return m;
  }

  async remove(): Promise<void> {
    for (const m of this.#mirrors.splice(0)) if (!m.closed) await m.close();
    for (const d of this.dmirrorDevices.splice(0)) await d.release();
    for (const d of this.devices.splice(0)) await d.remove();
  }
}

/** Registers dmirror in a system: `System.create({ drivers: [dmirrorDriver] })`. */
export const dmirrorDriver: DriverFactory = (c) => new DmirrorDriver(c.resolve(MACHINE) as Machine);
