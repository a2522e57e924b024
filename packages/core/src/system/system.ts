/**
 * A simulated system: one {@link Machine} with a sanitizer and a set of drivers composed through
 * the {@link DriverRegistry} (tsyringe, explicit tokens). Kernel counterpart: boot plus driver probe.
 *
 * @module
 */
import type { CostModel, DeepPartial } from '../sim/cost-model.js';
import { DriverRegistry, COST_MODEL, MACHINE, SANITIZER } from '../driver/registry.js';
import type { DriverFactory } from '../driver/registry.js';
import type { HmmMirrorDriver } from '../driver/hmm-mirror.js';
import { HmmSanitizer } from '../sanitizer/hmm-sanitizer.js';
import { Machine } from './machine.js';

/** Options of {@link System.create}. */
export interface SystemOptions {
  /** RAM in bytes (default 256 MiB). */
  readonly ramBytes?: number;
  /** Swap in bytes (default: the RAM size). */
  readonly swapBytes?: number;
  /** Scheduler seed (default 1). */
  readonly seed?: number;
  /** Cost-model overrides. */
  readonly cost?: DeepPartial<CostModel>;
  /** Drivers to register and probe, in order. */
  readonly drivers?: readonly DriverFactory[];
  /** Sanitizer mode (default `'throw'`). */
  readonly sanitizer?: 'throw' | 'record';
}

/** One machine, its sanitizer and its drivers. */
export class System {
  readonly registry = new DriverRegistry();

  private constructor(
    readonly machine: Machine,
    readonly sanitizer: HmmSanitizer,
  ) {
    const c = this.registry.container;
    c.register(MACHINE, { useValue: machine });
    c.register(SANITIZER, { useValue: sanitizer });
    c.register(COST_MODEL, { useValue: machine.cost });
  }

  /** Builds the machine, registers the drivers and probes them in order. */
  static async create(opts: SystemOptions = {}): Promise<System> {
    const machine = new Machine({
      ...(opts.ramBytes !== undefined ? { ramBytes: opts.ramBytes } : {}),
      ...(opts.swapBytes !== undefined ? { swapBytes: opts.swapBytes } : {}),
      ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
      ...(opts.cost !== undefined ? { cost: opts.cost } : {}),
    });
    const sys = new System(machine, new HmmSanitizer(machine.mm, opts.sanitizer ?? 'throw'));
    for (const f of opts.drivers ?? []) {
      const d = sys.registry.add(f);
      await d.probe(sys);
    }
    return sys;
  }

  /** The driver with this name (ENOENT if none). */
  driver(name: string): HmmMirrorDriver {
    return this.registry.get(name);
  }

  /** Every registered driver. */
  drivers(): HmmMirrorDriver[] {
    return this.registry.all();
  }

  /** Removes every driver (in reverse order), then checks the sanitizer found nothing left behind. */
  async shutdown(): Promise<void> {
    for (const d of this.registry.all().reverse()) await d.remove();
  }
}
