/**
 * Internal: how the runner's sanitizer learns of the importers a p2p case creates itself (the
 * reference importer of an exporter-only driver). The runner registers a hook on the `P2pTarget`
 * it hands to the case; the case calls it for each reference importer. Not exported by the package.
 *
 * @module
 */
import type { Process } from '@hmm/core';
import type { P2pImporterHandle, P2pTarget } from '../target.js';

/** Called for an importer of `process` so that its device accesses are watched. */
export type ImporterWatch = (imp: P2pImporterHandle, process: Process) => void;

const hooks = new WeakMap<P2pTarget, ImporterWatch>();

/** Registers `watch` for the importers the cases create on `p2p`. */
export function setImporterWatch(p2p: P2pTarget, watch: ImporterWatch): void {
  hooks.set(p2p, watch);
}

/** The hook registered for `p2p`, if any (none when a case runs outside the runner). */
export function importerWatchOf(p2p: P2pTarget): ImporterWatch | undefined {
  return hooks.get(p2p);
}
