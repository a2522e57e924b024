/**
 * Trace events of the memory manager (kernel tracepoints: `mm_filemap_*`, `mm_vmscan_*`,
 * `exceptions:page_fault_user`, `mmap_lock`), added to the sim layer's {@link TraceEventMap}.
 *
 * @module
 */
import type { MmContext } from './mm-context.js';

declare module '../sim/trace.js' {
  interface TraceEventMap {
    /** A page fault was resolved; `kind` names the path taken. Kernel: `page_fault_user`. */
    'mm.fault': { mm: number; address: number; write: boolean; kind: FaultKind };
    /** A page was reclaimed. Kernel: `mm_vmscan_lru_shrink_inactive`. */
    'mm.reclaim': { pfn: number; how: 'swap' | 'discard' | 'writeback' | 'drop' };
    /**
     * An invalidation range that overlaps a subscribed interval started. `seq` numbers the traced
     * invalidations of this mm from 1 and pairs the start with its `mm.invalidate_end`. Kernel:
     * `mmu_notifier_invalidate_range_start`.
     */
    'mm.invalidate': {
      mm: number;
      start: number;
      end: number;
      event: string;
      blockable: boolean;
      seq: number;
    };
    /**
     * The invalidation `seq` of this mm ended: every subscriber's callback returned and the CPU page
     * tables changed (`declined: false`), or a non-blockable start was declined by a subscriber
     * (`declined: true`). Kernel: `mmu_notifier_invalidate_range_end`.
     */
    'mm.invalidate_end': {
      mm: number;
      start: number;
      end: number;
      event: string;
      seq: number;
      declined: boolean;
    };
    /**
     * An invalidate callback broke its contract (threw, declined a blockable range, slept in a
     * non-blockable one) and the dispatcher contained it. Kernel: the WARN in `mn_itree_invalidate`.
     */
    'mm.notifier_error': {
      mm: number;
      start: number;
      end: number;
      event: string;
      blockable: boolean;
      error: string;
    };
    /**
     * A migration collected its pages (`phase: 'setup'`, `pages` = entries marked MIGRATE) or ended
     * (`'finalize'`, `pages` = pages that moved, `restored` = collected pages put back). `mm` is -1 for
     * an eviction by frame number. `id` numbers the migrations of the machine from 1 and pairs a
     * setup with its finalize (-1 when the setup was not traced); `began` is when the setup started
     * (the migration's first instant). `from`/`to` name the memory locations of the first source
     * and destination page (see `mm.resident`), null when unknown; `device` is the id of the device
     * owning the device memory involved, or null. Kernel: `migrate_vma_*` have no tracepoint;
     * `mm_migrate_pages` is the closest.
     */
    'mm.migrate': {
      mm: number;
      start: number;
      end: number;
      phase: 'setup' | 'finalize';
      pages: number;
      restored: number;
      id: number;
      began: number;
      from: string | null;
      to: string | null;
      device: number | null;
    };
    /** A CPU access found a device-private entry and asked its owner to migrate the page back. */
    'mm.migrate_to_ram': { mm: number; address: number; pfn: number; write: boolean };
    /** A memory system call completed. */
    'mm.syscall': { mm: number; call: string; address: number; length: number };
    /**
     * Resident pages of one memory location changed (sampled after faults, migrations, reclaim,
     * system calls and exits, emitted only when the count differs from the last sample).
     * `location` is `'RAM'` (frames in use, without the zero page) or the name of a device memory
     * (the pagemap name without its `#<chunk>` suffix, one location per pagemap owner); `device` is
     * the owning device's id when the owner is a device (an object with a numeric `id` and a string
     * `name`, as `SimDevice`), else null. Kernel counterpart: `NR_FILE_PAGES`/`NR_ANON_MAPPED`
     * style vmstat counters.
     */
    'mm.resident': { location: string; device: number | null; pages: number };
  }
}

/** Path a fault took. */
export type FaultKind =
  'anon' | 'zero' | 'file' | 'cow' | 'reuse' | 'swapin' | 'special' | 'shared-write' | 'spurious';

const FAULT_COUNTERS: Readonly<Record<FaultKind, string>> = {
  anon: 'mm.fault.anon',
  zero: 'mm.fault.zero',
  file: 'mm.fault.file',
  cow: 'mm.fault.cow',
  reuse: 'mm.fault.reuse',
  swapin: 'mm.fault.swapin',
  special: 'mm.fault.special',
  'shared-write': 'mm.fault.shared-write',
  spurious: 'mm.fault.spurious',
};

/** Emits an `mm.fault` event if anyone listens, counts the fault by kind, and samples `mm.resident`. */
export function traceFault(
  ctx: MmContext,
  mm: number,
  address: number,
  write: boolean,
  kind: FaultKind,
): void {
  const bus = ctx.trace;
  if (bus.enabled('mm.fault')) bus.emit({ type: 'mm.fault', ts: ctx.sched.now, mm, address, write, kind });
  bus.count(FAULT_COUNTERS[kind]);
  traceResident(ctx);
}

/** Emits an `mm.syscall` event if anyone listens, and samples `mm.resident`. */
export function traceSyscall(
  ctx: MmContext,
  mm: number,
  call: string,
  address: number,
  length: number,
): void {
  const bus = ctx.trace;
  if (bus.enabled('mm.syscall'))
    bus.emit({ type: 'mm.syscall', ts: ctx.sched.now, mm, call, address, length });
  traceResident(ctx);
}

/** Name of RAM as a memory location in `mm.resident` and `mm.migrate`. */
export const RAM_LOCATION = 'RAM';

/** A memory location: RAM or the device memory of one pagemap owner. */
export interface MemoryLocation {
  readonly location: string;
  readonly device: number | null;
  readonly pages: number;
}

/** The device id of a pagemap owner that is a device (numeric `id`, string `name`), else null. */
function ownerDevice(owner: unknown): number | null {
  if (typeof owner !== 'object' || owner === null) return null;
  const o = owner as { id?: unknown; name?: unknown };
  return typeof o.id === 'number' && typeof o.name === 'string' ? o.id : null;
}

/**
 * The memory locations of a machine: RAM, then one per pagemap owner (pagemaps grouped by owner
 * identity, named after the lowest-id pagemap without its `#<n>` chunk suffix, made unique with
 * `@<pagemap id>`), rebuilt only when the pagemap table changes.
 */
interface LocationTable {
  /** The pagemap table it was built from (identities, by id). */
  readonly pagemaps: unknown[];
  /** Locations, RAM first. */
  readonly locs: { readonly location: string; readonly device: number | null }[];
  /** Location index of each pagemap id (-1: none). */
  readonly locOf: Int32Array;
  /** Resident pages per location, refreshed by {@link residentPages}. */
  readonly pages: Float64Array;
  /** Last values emitted as `mm.resident`, per location (-1: never). */
  readonly emitted: Float64Array;
}

const tables = new WeakMap<MmContext, LocationTable>();

function locationTable(ctx: MmContext): LocationTable {
  const pagemaps = ctx.pagemaps;
  const cached = tables.get(ctx);
  if (cached !== undefined && cached.pagemaps.length === pagemaps.length) {
    let same = true;
    for (let id = 1; id < pagemaps.length && same; id++) same = cached.pagemaps[id] === pagemaps[id];
    if (same) return cached;
  }
  const locs: { location: string; device: number | null }[] = [{ location: RAM_LOCATION, device: null }];
  const byOwner = new Map<unknown, number>();
  const names = new Set<string>([RAM_LOCATION]);
  const locOf = new Int32Array(pagemaps.length).fill(-1);
  for (let id = 1; id < pagemaps.length; id++) {
    const pg = pagemaps[id];
    if (pg === undefined) continue;
    let l = byOwner.get(pg.owner);
    if (l === undefined) {
      let name = pg.name.replace(/#\d+$/, '');
      if (names.has(name)) name = `${name}@${id}`;
      names.add(name);
      l = locs.length;
      locs.push({ location: name, device: ownerDevice(pg.owner) });
      byOwner.set(pg.owner, l);
    }
    locOf[id] = l;
  }
  const emitted = new Float64Array(locs.length).fill(-1);
  // Locations that existed before keep what was last emitted for them.
  if (cached !== undefined) {
    cached.locs.forEach((old, i) => {
      const j = locs.findIndex((n) => n.location === old.location);
      if (j >= 0) emitted[j] = cached.emitted[i]!;
    });
  }
  const table: LocationTable = {
    pagemaps: [...pagemaps],
    locs,
    locOf,
    pages: new Float64Array(locs.length),
    emitted,
  };
  tables.set(ctx, table);
  return table;
}

/** Refreshes `table.pages` from the frame table's counts: O(pagemaps), no allocation. */
function residentPages(ctx: MmContext, table: LocationTable): Float64Array {
  const pages = table.pages;
  pages.fill(0);
  pages[0] = ctx.mem.nrUsed;
  const locOf = table.locOf;
  for (let id = 1; id < locOf.length; id++) {
    const l = locOf[id]!;
    if (l >= 0) pages[l]! += ctx.mem.deviceFramesInUse(id);
  }
  return pages;
}

/** Every memory location with its resident pages (see `mm.resident`). */
export function memoryLocations(ctx: MmContext): MemoryLocation[] {
  const table = locationTable(ctx);
  const pages = residentPages(ctx, table);
  return table.locs.map((l, i) => ({ location: l.location, device: l.device, pages: pages[i]! }));
}

/**
 * Emits an `mm.resident` event for each memory location whose resident pages changed since the
 * last one emitted, if anyone listens. O(pagemaps) when it does, one check when not.
 */
export function traceResident(ctx: MmContext): void {
  const bus = ctx.trace;
  if (!bus.enabled('mm.resident')) return;
  const table = locationTable(ctx);
  const pages = residentPages(ctx, table);
  const ts = ctx.sched.now;
  for (let i = 0; i < pages.length; i++) {
    const n = pages[i]!;
    if (table.emitted[i] === n) continue;
    table.emitted[i] = n;
    const l = table.locs[i]!;
    bus.emit({ type: 'mm.resident', ts, location: l.location, device: l.device, pages: n });
  }
}

interface MigrationTrace {
  readonly id: number;
  readonly began: number;
}

/** Migrations in flight (keyed by their `src` array) and the last id given, per machine. */
const migrations = new WeakMap<MmContext, { next: number; open: WeakMap<Float64Array, MigrationTrace> }>();

/** Location and device of the first frame of `entries` (migrate pfn entries) that has one. */
function firstLocation(
  ctx: MmContext,
  table: LocationTable,
  entries: Float64Array,
  n: number,
): { location: string | null; device: number | null } {
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    if ((e & 1) === 0) continue; // MIGRATE_PFN_VALID
    const pfn = Math.floor(e / 64); // the frame, above MIGRATE_PFN_SHIFT
    if (pfn < ctx.mem.nrRamFrames) return { location: RAM_LOCATION, device: null };
    const l = table.locOf[ctx.mem.owner[pfn]!] ?? -1;
    return l < 0 ? { location: null, device: null } : table.locs[l]!;
  }
  return { location: null, device: null };
}

/**
 * Emits an `mm.migrate` event if anyone listens, and counts pages migrated at a finalize (not for
 * an eviction, `mm` -1). `src`/`dst` are the migration's entry arrays (`src` identifies the
 * migration between setup and finalize); `began` is when the setup started.
 */
export function traceMigrate(
  ctx: MmContext,
  mm: number,
  start: number,
  end: number,
  phase: 'setup' | 'finalize',
  pages: number,
  restored: number,
  src: Float64Array,
  dst: Float64Array,
  n: number,
  began: number,
): void {
  const bus = ctx.trace;
  if (phase === 'finalize' && mm >= 0) bus.count('mm.migrate.pages', pages);
  if (!bus.enabled('mm.migrate')) return;
  let state = migrations.get(ctx);
  if (state === undefined) {
    state = { next: 1, open: new WeakMap() };
    migrations.set(ctx, state);
  }
  let id = -1;
  if (phase === 'setup') {
    id = state.next++;
    state.open.set(src, { id, began });
  } else {
    const open = state.open.get(src);
    if (open !== undefined) {
      id = open.id;
      began = open.began;
      state.open.delete(src);
    }
  }
  const table = locationTable(ctx);
  const from = firstLocation(ctx, table, src, n);
  const to = phase === 'finalize' ? firstLocation(ctx, table, dst, n) : { location: null, device: null };
  bus.emit({
    type: 'mm.migrate',
    ts: ctx.sched.now,
    mm,
    start,
    end,
    phase,
    pages,
    restored,
    id,
    began,
    from: from.location,
    to: to.location,
    device: from.device ?? to.device,
  });
}
