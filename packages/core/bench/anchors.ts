/**
 * The real kernel's published per-page costs the simulator is compared with. The wall-clock figures
 * are read from the SDK's own cost model (`COST_SOURCES`), whose every default cites its source in
 * `shared/reference/perf-anchors.md`, so the bench and the simulated-time model cannot drift apart.
 *
 * @module
 */
import { COST_SOURCES } from '../src/index.js';
import type { CostKey } from '../src/index.js';

/** One kernel figure with its citation. */
export interface Anchor {
  /** Per 4 KiB page, in the unit of the row (ns or bytes). */
  readonly value: number;
  /** Where the figure comes from. */
  readonly source: string;
}

function fromCostModel(key: CostKey): Anchor {
  const row = COST_SOURCES.find((r) => r.key === key);
  if (row === undefined) throw new Error(`bench: cost model has no default '${key}'`);
  return { value: row.value, source: `cost model ${key} [${row.tag}]: ${row.source}` };
}

/** Anonymous first touch: fault-in + zero of one 4 KiB page (perf-anchors §1, VFIO, [D]). */
export const FAULT_IN_ZERO = fromCostModel('cpu.faultInZeroPerPageNs');

/** `pin_user_pages(FOLL_LONGTERM)` of a present 4 KiB page (perf-anchors §1, gup_test -LT, [D]). */
export const PIN = fromCostModel('gup.pinPerPageNs');

/** `unpin_user_pages` of one 4 KiB page (perf-anchors §1, gup_test put, [D]). */
export const UNPIN = fromCostModel('gup.unpinPerPageNs');

/** CPU overhead of `migrate_vma` per 4 KiB page, copy excluded (perf-anchors §2, Xe no-THP breakdown, [D]). */
export const MIGRATE_CPU = fromCostModel('migrate.cpuPerPageNs');

/** Bytes of `struct page` per 4 KiB frame on x86-64 (64 B; DESIGN §7), before page tables. */
/** hmm_range_fault on a present page (an estimate). */
export const HMM_SNAPSHOT = fromCostModel('hmm.rangeFaultPerPresentPageNs');

export const STRUCT_PAGE: Anchor = {
  value: 64,
  source: 'sizeof(struct page) = 64 on x86-64 (include/linux/mm_types.h); DESIGN §7',
};

/** DESIGN §7 targets. */
export const TARGETS = {
  /** Simulator bookkeeping of a pin at or below the kernel's own. */
  pinNs: PIN.value,
  /** Metadata per resident page (frame metadata + page tables). */
  metadataBytes: 32,
  /** `p.write` throughput as a fraction of a raw `Uint8Array.set`. */
  copyFraction: 0.5,
} as const;
