/**
 * Export of recorded trace events as Chrome Trace Event JSON, the format Perfetto's UI
 * (https://ui.perfetto.dev) and chrome://tracing open. {@link toChromeTrace} turns the events of a
 * {@link TraceRecorder} (oldest first) into one JSON object; {@link validateChromeTrace} (in
 * `chrome-trace-validate.ts`) checks a trace against the rules of Perfetto's JSON importer.
 *
 * Layout of the timeline:
 * - **Processes** (`pid`): `machine` (RAM counter, reclaim, lock contention, failed tasks), one per
 *   address space (`process <mm>`), one per device (`device <name>`), and, when nothing ties them to
 *   a device, one per device memory (`memory <location>`) or copy engine (`copy engine <name>`).
 * - **Lanes** (`tid`, named by `thread_name` metadata) inside a process: `faults` (CPU faults and
 *   `migrate_to_ram` as instants; on a device, device faults as instants and each resolved device
 *   fault as a slice from the fault to the map command that served it), `migrations` (each
 *   `migrate_vma` from the start of setup to finalize), `notifiers` (invalidation starts and
 *   contained callback failures as instants; each invalidation is also an async slice, with an
 *   id, from start to end), `syscalls`, `commands` (device commands from the start of their
 *   execution to their fence), `copy engine <name>` (transfers), `eviction` (migrations by frame
 *   number), `reclaim`, `locks`, `scheduler`, `events` (event types this exporter does not know).
 *   Slices that would overlap on a lane without nesting go to a numbered lane (`faults 2`, …), so
 *   slices on one lane always nest.
 * - **Counters**: resident pages per memory location (`resident RAM` on `machine`, `resident
 *   <location>` on the owning device), from `mm.resident`.
 * - **Flows** (fault → migrate → map): a resolved device fault (device D, ASID A, page address X)
 *   flows to the migration it caused, then to the map command that served it. The map command is
 *   the first `map` of D and A that completes at or after the fault and covers X's vpn (within the
 *   next 256 commands of D and A), unless the same page faulted again before it completed; the
 *   migration is the first `migrate_vma` (any address space: the ASID's address space is not in the
 *   events) that starts at or after the fault and before the map completes and whose range
 *   contains X (within 256 migrations). A fault served without a migration flows straight to the
 *   map command.
 *
 * Times: `ts` and `dur` are microseconds (simulated ns ÷ 1000) and `displayTimeUnit` is `'ns'`.
 * Perfetto truncates `ts × 1000` to whole ns; every value is written as (whole ns + ¼) ÷ 1000 so
 * that the importer recovers the exact whole ns (sub-ns times are floored), and nesting survives.
 *
 * @module
 */
import type { TraceEvent } from './trace.js';

/** One event of a Chrome trace (Trace Event Format). */
export interface ChromeTraceEvent {
  name: string;
  ph: string;
  /** Microseconds. */
  ts: number;
  pid: number;
  tid: number;
  cat?: string;
  /** Microseconds (`X` only). */
  dur?: number;
  id?: string;
  bp?: 'e';
  s?: 'g' | 'p' | 't';
  args?: Record<string, unknown>;
}

/** A Chrome trace: the JSON object to write to a `.json` file. */
export interface ChromeTrace {
  traceEvents: ChromeTraceEvent[];
  displayTimeUnit: 'ns';
  otherData?: Record<string, unknown>;
}

/** Options of {@link toChromeTrace}. */
export interface ChromeTraceOptions {
  /** Names for processes (mm id -> name); default `process <mm>`. */
  readonly mmNames?: ReadonlyMap<number, string>;
  /** Names for devices (device id -> name); default `device <name from the events>`. */
  readonly deviceNames?: ReadonlyMap<number, string>;
  /** Title, written to `otherData.title`. */
  readonly title?: string;
}

/** Bytes of a page (mm `PAGE_SIZE`), to turn addresses into vpns. */
const PAGE = 4096;
/** How far the flow matching looks ahead (commands of one device and ASID, migrations). */
const FLOW_LOOKAHEAD = 256;

/** Lane order inside a process (by the lane name's base). */
const LANE_ORDER = [
  'faults',
  'migrations',
  'notifiers',
  'syscalls',
  'commands',
  'copy engine',
  'eviction',
  'reclaim',
  'locks',
  'scheduler',
  'events',
];

interface Slice {
  readonly pid: string;
  readonly lane: string;
  readonly name: string;
  readonly cat: string;
  /** Whole ns. */
  readonly s: number;
  readonly e: number;
  readonly args: Record<string, unknown>;
  /** Sub-lane, set by lane assignment. */
  sub: number;
}

interface Instant {
  readonly pid: string;
  readonly lane: string;
  readonly name: string;
  readonly cat: string;
  readonly t: number;
  readonly args: Record<string, unknown>;
  /** Put the instant on this slice's lane. */
  attach: Slice | null;
}

interface Counter {
  readonly pid: string;
  readonly name: string;
  readonly t: number;
  readonly args: Record<string, number>;
}

interface AsyncSpan {
  readonly pid: string;
  readonly name: string;
  readonly cat: string;
  readonly id: string;
  readonly s: number;
  readonly e: number;
  readonly args: Record<string, unknown>;
}

interface Proc {
  readonly key: string;
  readonly group: number;
  readonly order: number | string;
  readonly name: string;
}

function hexOf(n: number): string {
  return n < 0 ? `-0x${(-n).toString(16)}` : `0x${n.toString(16)}`;
}

/** Whole ns of a simulated time (floored: monotone, so order and nesting are kept). */
function wholeNs(ns: number): number {
  return Math.floor(ns);
}

/** Microseconds that Perfetto reads back as exactly `ns` whole ns. */
function usOf(ns: number): number {
  return (ns + 0.25) / 1000;
}

function laneRank(lane: string): number {
  for (let i = 0; i < LANE_ORDER.length; i++) if (lane.startsWith(LANE_ORDER[i]!)) return i;
  return LANE_ORDER.length;
}

/** First index of `arr` whose `key(x) >= v` (arr sorted by key). */
function lowerBound<T>(arr: readonly T[], v: number, key: (x: T) => number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (key(arr[mid]!) < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A binary min-heap. */
class MinHeap<T> {
  readonly #a: T[] = [];
  constructor(private readonly cmp: (x: T, y: T) => number) {}

  get size(): number {
    return this.#a.length;
  }

  peek(): T | undefined {
    return this.#a[0];
  }

  push(v: T): void {
    const a = this.#a;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.cmp(a[i]!, a[p]!) >= 0) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }

  pop(): T | undefined {
    const a = this.#a;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.cmp(a[l]!, a[m]!) < 0) m = l;
        if (r < a.length && this.cmp(a[r]!, a[m]!) < 0) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

/** Payload of an event without `type` and `ts`. */
function payloadOf(e: TraceEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e)) if (k !== 'type' && k !== 'ts') out[k] = v;
  return out;
}

interface CmdRec {
  readonly ts: number;
  readonly op: string;
  readonly minVpn: number | null;
  readonly maxVpn: number | null;
  readonly slice: Slice;
}

interface FaultRec {
  readonly device: number;
  readonly asid: number;
  readonly address: number;
  readonly access: string;
  readonly ts: number;
  readonly handled: boolean;
  readonly instant: Instant;
}

interface MigrationRec {
  readonly began: number;
  readonly end: number;
  readonly start: number;
  readonly stop: number;
  readonly slice: Slice;
}

/**
 * Converts recorded trace events (oldest first, as a {@link TraceRecorder} keeps them) to a Chrome
 * Trace Event JSON object (layout, flows and time rules in the module doc). Deterministic: the
 * same events give the same object, key for key. Event types it does not know become instants on
 * an `events` lane of their process, device or the machine.
 */
export function toChromeTrace(events: readonly TraceEvent[], opts: ChromeTraceOptions = {}): ChromeTrace {
  const mmNames = opts.mmNames ?? new Map<number, string>();
  const deviceNames = opts.deviceNames ?? new Map<number, string>();
  const procs = new Map<string, Proc>();
  const deviceNameSeen = new Map<number, string>();
  const slices: Slice[] = [];
  const instants: Instant[] = [];
  const counters: Counter[] = [];
  const asyncs: AsyncSpan[] = [];

  // Devices' names first, so that copy engines can be matched to devices by name.
  for (const e of events) {
    if (e.type === 'device.fault' || e.type === 'device.cmd') {
      if (!deviceNameSeen.has(e.device)) deviceNameSeen.set(e.device, e.name);
    }
  }
  const deviceByName = new Map<string, number>();
  for (const [id, name] of deviceNameSeen) if (!deviceByName.has(name)) deviceByName.set(name, id);

  const sysPid = (): string => {
    if (!procs.has('sys')) procs.set('sys', { key: 'sys', group: 0, order: 0, name: 'machine' });
    return 'sys';
  };
  const mmPid = (mm: number): string => {
    const key = `mm:${mm}`;
    if (!procs.has(key)) {
      procs.set(key, { key, group: 1, order: mm, name: mmNames.get(mm) ?? `process ${mm}` });
    }
    return key;
  };
  const devPid = (device: number): string => {
    const key = `dev:${device}`;
    if (!procs.has(key)) {
      const seen = deviceNameSeen.get(device);
      const name = deviceNames.get(device) ?? `device ${seen ?? String(device)}`;
      procs.set(key, { key, group: 2, order: device, name });
    }
    return key;
  };
  const memPid = (location: string): string => {
    const key = `mem:${location}`;
    if (!procs.has(key)) procs.set(key, { key, group: 3, order: location, name: `memory ${location}` });
    return key;
  };
  const enginePid = (engine: string): string => {
    const key = `ce:${engine}`;
    if (!procs.has(key)) procs.set(key, { key, group: 4, order: engine, name: `copy engine ${engine}` });
    return key;
  };
  const locationPid = (location: string | null, device: number | null): string =>
    device !== null ? devPid(device) : location === null || location === 'RAM' ? sysPid() : memPid(location);

  const slice = (
    pid: string,
    lane: string,
    name: string,
    cat: string,
    startNs: number,
    endNs: number,
    args: Record<string, unknown>,
  ): Slice => {
    const s = wholeNs(startNs);
    const sl: Slice = { pid, lane, name, cat, s, e: Math.max(s, wholeNs(endNs)), args, sub: 0 };
    slices.push(sl);
    return sl;
  };
  const instant = (
    pid: string,
    lane: string,
    name: string,
    cat: string,
    ns: number,
    args: Record<string, unknown>,
  ): Instant => {
    const it: Instant = { pid, lane, name, cat, t: wholeNs(ns), args, attach: null };
    instants.push(it);
    return it;
  };

  const faults: FaultRec[] = [];
  const cmds = new Map<string, CmdRec[]>();
  const migrations: MigrationRec[] = [];
  const openMigrations = new Map<number, TraceEvent & { type: 'mm.migrate' }>();
  const openInvalidations = new Map<string, TraceEvent & { type: 'mm.invalidate' }>();
  let asyncIds = 0;

  for (const e of events) {
    switch (e.type) {
      case 'sched.spawn':
      case 'sched.run':
      case 'sched.block':
      case 'sched.wake':
      case 'sched.clock':
        break;
      case 'sched.end':
        if (!e.ok) {
          instant(sysPid(), 'scheduler', 'task failed', 'sched', e.ts, {
            task: e.task,
            name: e.name,
            error: e.error,
          });
        }
        break;
      case 'lock.contended':
        instant(sysPid(), 'locks', `contended ${e.lock}`, 'lock', e.ts, {
          kind: e.kind,
          task: e.task,
          holder: e.holder,
        });
        break;
      case 'mm.fault':
        instant(mmPid(e.mm), 'faults', `fault ${e.kind}`, 'mm', e.ts, {
          address: hexOf(e.address),
          write: e.write,
        });
        break;
      case 'mm.migrate_to_ram':
        instant(mmPid(e.mm), 'faults', 'migrate_to_ram', 'mm', e.ts, {
          address: hexOf(e.address),
          pfn: e.pfn,
          write: e.write,
        });
        break;
      case 'mm.syscall':
        instant(mmPid(e.mm), 'syscalls', e.call, 'mm', e.ts, {
          address: hexOf(e.address),
          length: e.length,
        });
        break;
      case 'mm.notifier_error':
        instant(mmPid(e.mm), 'notifiers', 'notifier error', 'notifier', e.ts, {
          event: e.event,
          start: hexOf(e.start),
          end: hexOf(e.end),
          blockable: e.blockable,
          error: e.error,
        });
        break;
      case 'mm.reclaim':
        instant(sysPid(), 'reclaim', `reclaim ${e.how}`, 'mm', e.ts, { pfn: e.pfn });
        break;
      case 'mm.invalidate':
        instant(mmPid(e.mm), 'notifiers', `invalidate ${e.event}`, 'notifier', e.ts, {
          start: hexOf(e.start),
          end: hexOf(e.end),
          blockable: e.blockable,
          seq: e.seq,
        });
        openInvalidations.set(`${e.mm}:${e.seq}`, e);
        break;
      case 'mm.invalidate_end': {
        const key = `${e.mm}:${e.seq}`;
        const start = openInvalidations.get(key);
        if (start === undefined) {
          instant(mmPid(e.mm), 'notifiers', `invalidate ${e.event} end`, 'notifier', e.ts, payloadOf(e));
          break;
        }
        openInvalidations.delete(key);
        asyncs.push({
          pid: mmPid(e.mm),
          name: `invalidate ${e.event}`,
          cat: 'notifier',
          id: `inv${++asyncIds}`,
          s: wholeNs(start.ts),
          e: Math.max(wholeNs(start.ts), wholeNs(e.ts)),
          args: {
            start: hexOf(e.start),
            end: hexOf(e.end),
            blockable: start.blockable,
            declined: e.declined,
          },
        });
        break;
      }
      case 'mm.migrate':
        if (e.phase === 'setup') {
          if (e.id > 0) openMigrations.set(e.id, e);
          else instant(migrationPid(e), migrationLane(e), 'migrate setup', 'migrate', e.ts, payloadOf(e));
          break;
        } else {
          const setup = e.id > 0 ? openMigrations.get(e.id) : undefined;
          if (setup === undefined) {
            instant(migrationPid(e), migrationLane(e), 'migrate finalize', 'migrate', e.ts, payloadOf(e));
            break;
          }
          openMigrations.delete(e.id);
          // An eviction pass over a chunk with nothing in use is no event worth a slice.
          if (e.mm < 0 && setup.pages === 0 && e.pages === 0) break;
          const from = setup.from ?? e.from;
          const args: Record<string, unknown> = {
            id: e.id,
            collected: setup.pages,
            moved: e.pages,
            restored: e.restored,
            from,
            to: e.to,
          };
          if (e.mm >= 0) {
            args['mm'] = e.mm;
            args['start'] = hexOf(e.start);
            args['end'] = hexOf(e.end);
          }
          const what = e.mm >= 0 ? 'migrate' : 'evict';
          const name =
            setup.pages === 0 && e.pages === 0
              ? `${what} (nothing collected)`
              : `${what} ${from ?? 'empty'} → ${e.to ?? 'nothing'}`;
          const pid = migrationPid(e.device !== null ? e : setup);
          const sl = slice(pid, migrationLane(e), name, 'migrate', setup.began, e.ts, args);
          if (e.mm >= 0)
            migrations.push({ began: setup.began, end: e.ts, start: e.start, stop: e.end, slice: sl });
        }
        break;
      case 'mm.resident': {
        const pid = locationPid(e.location, e.device);
        counters.push({ pid, name: `resident ${e.location}`, t: wholeNs(e.ts), args: { pages: e.pages } });
        break;
      }
      case 'device.fault': {
        const it = instant(devPid(e.device), 'faults', `device fault ${e.access}`, 'device', e.ts, {
          asid: e.asid,
          address: hexOf(e.address),
          attempt: e.attempt,
          handled: e.handled,
        });
        faults.push({
          device: e.device,
          asid: e.asid,
          address: e.address,
          access: e.access,
          ts: e.ts,
          handled: e.handled,
          instant: it,
        });
        break;
      }
      case 'device.cmd': {
        const args: Record<string, unknown> = { seqno: e.seqno, entries: e.entries };
        if (e.asid !== null) args['asid'] = e.asid;
        if (e.minVpn !== null && e.maxVpn !== null) {
          args['first'] = hexOf(e.minVpn * PAGE);
          args['last'] = hexOf(e.maxVpn * PAGE);
        }
        const sl = slice(devPid(e.device), 'commands', e.op, 'device', e.began, e.ts, args);
        if (e.asid !== null) {
          const key = `${e.device}:${e.asid}`;
          let list = cmds.get(key);
          if (list === undefined) cmds.set(key, (list = []));
          list.push({ ts: e.ts, op: e.op, minVpn: e.minVpn, maxVpn: e.maxVpn, slice: sl });
        }
        break;
      }
      case 'device.copy': {
        let pid: string;
        if (e.device !== null) pid = devPid(e.device);
        else {
          const prefix = /^[^:.]+/.exec(e.engine)?.[0] ?? e.engine;
          const dev = deviceByName.get(e.engine) ?? deviceByName.get(prefix);
          pid = dev !== undefined ? devPid(dev) : enginePid(e.engine);
        }
        slice(pid, `copy engine ${e.engine}`, `copy ${e.dir}`, 'copy', e.ts, e.ts + e.ns, {
          pages: e.pages,
          copied: e.copied,
        });
        break;
      }
      default: {
        const ev = e as unknown as { type: string; ts: number } & Record<string, unknown>;
        const args = payloadOf(e);
        const pid =
          typeof ev['mm'] === 'number' && ev['mm'] >= 0
            ? mmPid(ev['mm'])
            : typeof ev['device'] === 'number'
              ? devPid(ev['device'])
              : sysPid();
        instant(pid, 'events', String(ev.type), 'other', ev.ts, args);
      }
    }
  }
  for (const e of openMigrations.values()) {
    instant(migrationPid(e), migrationLane(e), 'migrate setup', 'migrate', e.ts, payloadOf(e));
  }

  // Fault → migrate → map.
  const flows: Slice[][] = [];
  const nextSame = new Map<string, number>();
  const refaultAt: number[] = new Array<number>(faults.length);
  for (let i = faults.length - 1; i >= 0; i--) {
    const f = faults[i]!;
    const key = `${f.device}:${f.asid}:${f.address}`;
    refaultAt[i] = nextSame.get(key) ?? Infinity;
    nextSame.set(key, f.ts);
  }
  migrations.sort((a, b) => a.began - b.began);
  for (let i = 0; i < faults.length; i++) {
    const f = faults[i]!;
    if (!f.handled) continue;
    const list = cmds.get(`${f.device}:${f.asid}`);
    if (list === undefined) continue;
    const vpn = Math.floor(f.address / PAGE);
    let map: CmdRec | undefined;
    const from = lowerBound(list, f.ts, (c) => c.ts);
    for (let k = from; k < list.length && k < from + FLOW_LOOKAHEAD; k++) {
      const c = list[k]!;
      if (c.op === 'map' && c.minVpn !== null && c.maxVpn !== null && c.minVpn <= vpn && vpn <= c.maxVpn) {
        map = c;
        break;
      }
    }
    if (map === undefined || refaultAt[i]! < map.ts) continue;
    const served = slice(devPid(f.device), 'faults', `serve ${f.access} fault`, 'device', f.ts, map.ts, {
      asid: f.asid,
      address: hexOf(f.address),
    });
    f.instant.attach = served;
    const hops = [served];
    const m0 = lowerBound(migrations, f.ts, (m) => m.began);
    for (let k = m0; k < migrations.length && k < m0 + FLOW_LOOKAHEAD; k++) {
      const m = migrations[k]!;
      if (m.began > map.ts) break;
      if (m.start <= f.address && f.address < m.stop) {
        hops.push(m.slice);
        break;
      }
    }
    hops.push(map.slice);
    flows.push(hops);
  }

  return assemble(events.length, opts, procs, slices, instants, counters, asyncs, flows);

  function migrationPid(e: TraceEvent & { type: 'mm.migrate' }): string {
    return e.mm >= 0 ? mmPid(e.mm) : locationPid(e.from ?? e.to, e.device);
  }
  function migrationLane(e: TraceEvent & { type: 'mm.migrate' }): string {
    return e.mm >= 0 ? 'migrations' : 'eviction';
  }
}

/** Lanes, pids, tids and ordering: builds the final event list. */
function assemble(
  nEvents: number,
  opts: ChromeTraceOptions,
  procs: Map<string, Proc>,
  slices: Slice[],
  instants: Instant[],
  counters: Counter[],
  asyncs: AsyncSpan[],
  flows: Slice[][],
): ChromeTrace {
  // Sub-lanes: on each lane, a slice that does not nest in the slices before it moves to the first
  // sub-lane where it does (slices here never contain one another, so "nests" means "after").
  const byLane = new Map<string, Slice[]>();
  for (const s of slices) {
    const key = `${s.pid}\u0000${s.lane}`;
    let l = byLane.get(key);
    if (l === undefined) byLane.set(key, (l = []));
    l.push(s);
  }
  for (const list of byLane.values()) {
    const order = list
      .map((_s, i) => i)
      .sort((a, b) => list[a]!.s - list[b]!.s || list[b]!.e - list[a]!.e || a - b);
    // Busy sub-lanes by end time, free ones by number: each slice takes the lowest free sub-lane.
    const busy = new MinHeap<[number, number]>((a, b) => a[0] - b[0] || a[1] - b[1]);
    const free = new MinHeap<number>((a, b) => a - b);
    let lanesUsed = 0;
    for (const i of order) {
      const s = list[i]!;
      while (busy.size > 0 && busy.peek()![0] <= s.s) free.push(busy.pop()![1]);
      const sub = free.size > 0 ? free.pop()! : lanesUsed++;
      busy.push([s.e, sub]);
      s.sub = sub;
    }
  }
  const laneName = (lane: string, sub: number): string => (sub === 0 ? lane : `${lane} ${sub + 1}`);

  // Processes and lanes in a fixed order: machine, processes by mm, devices by id, the rest by name.
  const procList = [...procs.values()].sort(
    (a, b) =>
      a.group - b.group ||
      (typeof a.order === 'number' && typeof b.order === 'number'
        ? a.order - b.order
        : String(a.order) < String(b.order)
          ? -1
          : String(a.order) > String(b.order)
            ? 1
            : 0),
  );
  const pidOf = new Map<string, number>();
  procList.forEach((p, i) => pidOf.set(p.key, i + 1));
  const lanes = new Map<string, Map<string, { base: string; sub: number }>>();
  const useLane = (pid: string, base: string, sub: number): string => {
    let m = lanes.get(pid);
    if (m === undefined) lanes.set(pid, (m = new Map()));
    const name = laneName(base, sub);
    if (!m.has(name)) m.set(name, { base, sub });
    return name;
  };
  for (const s of slices) useLane(s.pid, s.lane, s.sub);
  for (const it of instants) {
    if (it.attach !== null) useLane(it.attach.pid, it.attach.lane, it.attach.sub);
    else useLane(it.pid, it.lane, 0);
  }
  const tidOf = new Map<string, number>();
  let nextTid = procList.length + 1;
  const meta: ChromeTraceEvent[] = [];
  for (const p of procList) {
    const pid = pidOf.get(p.key)!;
    meta.push({ name: 'process_name', ph: 'M', ts: 0, pid, tid: pid, args: { name: p.name } });
    meta.push({ name: 'process_sort_index', ph: 'M', ts: 0, pid, tid: pid, args: { sort_index: pid } });
    const m = lanes.get(p.key);
    if (m === undefined) continue;
    const names = [...m.entries()].sort(
      ([an, a], [bn, b]) =>
        laneRank(a.base) - laneRank(b.base) ||
        (a.base < b.base ? -1 : a.base > b.base ? 1 : 0) ||
        a.sub - b.sub ||
        (an < bn ? -1 : 1),
    );
    let k = 0;
    for (const [name] of names) {
      const tid = nextTid++;
      tidOf.set(`${p.key}\u0000${name}`, tid);
      meta.push({ name: 'thread_name', ph: 'M', ts: 0, pid, tid, args: { name } });
      meta.push({ name: 'thread_sort_index', ph: 'M', ts: 0, pid, tid, args: { sort_index: ++k } });
    }
  }
  const tidFor = (pid: string, lane: string, sub: number): number =>
    tidOf.get(`${pid}\u0000${laneName(lane, sub)}`)!;

  // Timed events, with a sort key: time, then class (slices longest first, so they open before what
  // they contain), then creation order.
  const timed: { t: number; cls: number; len: number; seq: number; ev: ChromeTraceEvent }[] = [];
  let seq = 0;
  const push = (t: number, cls: number, len: number, ev: ChromeTraceEvent): void => {
    timed.push({ t, cls, len, seq: seq++, ev });
  };
  for (const s of slices) {
    const pid = pidOf.get(s.pid)!;
    push(s.s, 0, s.e - s.s, {
      name: s.name,
      cat: s.cat,
      ph: 'X',
      ts: usOf(s.s),
      dur: usOf(s.e - s.s),
      pid,
      tid: tidFor(s.pid, s.lane, s.sub),
      args: s.args,
    });
  }
  for (const a of asyncs) {
    const pid = pidOf.get(a.pid)!;
    push(a.s, 1, a.e - a.s, {
      name: a.name,
      cat: a.cat,
      ph: 'b',
      ts: usOf(a.s),
      pid,
      tid: pid,
      id: a.id,
      args: a.args,
    });
    push(a.e, 4, 0, { name: a.name, cat: a.cat, ph: 'e', ts: usOf(a.e), pid, tid: pid, id: a.id });
  }
  for (const it of instants) {
    const owner = it.attach ?? null;
    const pid = pidOf.get(it.pid)!;
    const tid = owner !== null ? tidFor(owner.pid, owner.lane, owner.sub) : tidFor(it.pid, it.lane, 0);
    push(it.t, 2, 0, {
      name: it.name,
      cat: it.cat,
      ph: 'i',
      s: 't',
      ts: usOf(it.t),
      pid,
      tid,
      args: it.args,
    });
  }
  for (const c of counters) {
    const pid = pidOf.get(c.pid)!;
    push(c.t, 3, 0, { name: c.name, cat: 'memory', ph: 'C', ts: usOf(c.t), pid, tid: pid, args: c.args });
  }
  // Flow points: strictly inside each hop's slice and strictly increasing (the importer binds a
  // flow event to the slice open on its lane at its time, in time order).
  let flowIds = 0;
  for (const hops of flows) {
    const points: { hop: Slice; t: number }[] = [];
    let prev = -Infinity;
    for (const hop of hops) {
      const t = Math.max(prev + 1, hop.s + 1);
      if (t >= hop.e) continue;
      points.push({ hop, t });
      prev = t;
    }
    if (points.length < 2) continue;
    const id = (++flowIds).toString(16);
    points.forEach(({ hop, t }, i) => {
      const ev: ChromeTraceEvent = {
        name: 'fault → migrate → map',
        cat: 'flow',
        ph: i === 0 ? 's' : i === points.length - 1 ? 'f' : 't',
        ts: usOf(t),
        pid: pidOf.get(hop.pid)!,
        tid: tidFor(hop.pid, hop.lane, hop.sub),
        id,
      };
      if (ev.ph === 'f') ev.bp = 'e';
      push(t, 5, 0, ev);
    });
  }
  timed.sort((a, b) => a.t - b.t || a.cls - b.cls || b.len - a.len || a.seq - b.seq);
  const otherData: Record<string, unknown> = {
    generator: '@hmm/core toChromeTrace',
    timeUnit: 'simulated time; ts in µs = simulated ns / 1000',
    sourceEvents: nEvents,
  };
  if (opts.title !== undefined) otherData['title'] = opts.title;
  return {
    displayTimeUnit: 'ns',
    traceEvents: [...meta, ...timed.map((x) => x.ev)],
    otherData,
  };
}
