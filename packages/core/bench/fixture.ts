/**
 * A machine with one process whose private anonymous mapping is fully written (every page resident,
 * exclusive and dirty), shared by the measurements that need "1 GiB of present pages".
 *
 * @module
 */
import { Machine, MapFlag, PAGE_SIZE, Prot } from '../src/index.js';
import type { Process } from '../src/index.js';

/** A populated process. */
export interface Populated {
  readonly m: Machine;
  readonly p: Process;
  /** Start of the mapping. */
  readonly addr: number;
  /** Pages in the mapping, all resident. */
  readonly pages: number;
}

/** Machine options of a fixture. */
export interface FixtureOptions {
  readonly ramBytes: number;
  readonly swapBytes: number;
  /** Size of the mapping to populate. */
  readonly bytes: number;
}

/** Creates the machine, maps `bytes` of private anonymous memory and returns it unpopulated. */
export async function mapped(o: FixtureOptions): Promise<Populated> {
  const m = new Machine({ ramBytes: o.ramBytes, swapBytes: o.swapBytes, seed: 1 });
  const p = m.createProcess('bench');
  const addr = await p.mmap({
    length: o.bytes,
    prot: Prot.READ | Prot.WRITE,
    flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
  });
  return { m, p, addr, pages: o.bytes / PAGE_SIZE };
}

/** {@link mapped}, then writes every byte (value 1), checking every page became resident. */
export async function populated(o: FixtureOptions): Promise<Populated> {
  const fx = await mapped(o);
  await fx.p.fill(fx.addr, o.bytes, 1);
  checkResident(fx);
  return fx;
}

/** Throws unless every page of the mapping is resident and nothing was reclaimed. */
export function checkResident(fx: Populated): void {
  const s = fx.m.stats();
  if (fx.p.mm.rssPages !== fx.pages || s.reclaim.freed !== 0) {
    throw new Error(
      `bench fixture: ${fx.p.mm.rssPages} of ${fx.pages} pages resident, ${s.reclaim.freed} reclaimed`,
    );
  }
}

/** Exits every live process of the fixture's machine (untimed teardown). */
export async function dispose(fx: Populated): Promise<void> {
  for (const p of fx.m.processes()) await p.exit();
}
