/**
 * The device and driver registry: a tsyringe container per system with explicit injection tokens
 * (no decorator metadata is needed, so it works under any transpiler). Kernel counterpart: the driver
 * core's bus/driver/device registration (drivers/base/).
 *
 * @module
 */
import 'reflect-metadata';
import { container as rootContainer } from 'tsyringe';
import type { DependencyContainer, InjectionToken } from 'tsyringe';
import { HmmError } from '../errors/errno.js';
import type { HmmMirrorDriver } from './hmm-mirror.js';

/** Token of the `Machine` of a system. */
export const MACHINE: InjectionToken<unknown> = Symbol.for('@hmm/core:Machine');
/** Token of the system's `HmmSanitizer`. */
export const SANITIZER: InjectionToken<unknown> = Symbol.for('@hmm/core:HmmSanitizer');
/** Token of the system's cost model. */
export const COST_MODEL: InjectionToken<unknown> = Symbol.for('@hmm/core:CostModel');
/** Token under which every driver of a system is registered (resolve with `resolveAll`). */
export const DRIVERS: InjectionToken<HmmMirrorDriver> = Symbol.for('@hmm/core:drivers');

/** How a system gets a driver: a factory given the system's container (resolve dependencies by token). */
export type DriverFactory = (c: DependencyContainer) => HmmMirrorDriver;

/** The drivers of one system, held in a child container of tsyringe's root container. */
export class DriverRegistry {
  /** The system's container. */
  readonly container: DependencyContainer = rootContainer.createChildContainer();
  private readonly byName = new Map<string, HmmMirrorDriver>();

  /** Creates the driver from its factory and registers it; EEXIST for a second driver of the same name. */
  add(factory: DriverFactory): HmmMirrorDriver {
    const driver = factory(this.container);
    if (this.byName.has(driver.name)) {
      throw new HmmError('EEXIST', `a driver named '${driver.name}' is already registered`);
    }
    this.byName.set(driver.name, driver);
    this.container.register(DRIVERS, { useValue: driver });
    return driver;
  }

  /** The driver with this name; ENOENT if none. */
  get(name: string): HmmMirrorDriver {
    const d = this.byName.get(name);
    if (d === undefined)
      throw new HmmError(
        'ENOENT',
        `no driver named '${name}' (registered: ${[...this.byName.keys()].join(', ') || 'none'})`,
      );
    return d;
  }

  /** Every driver, in registration order. */
  all(): HmmMirrorDriver[] {
    return [...this.byName.values()];
  }
}
