import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { SCENARIO_PAGES, runTraceScenario } from '../testing/chrome-trace-scenario.js';
import type { TraceStep } from '../testing/chrome-trace-scenario.js';
import { toChromeTrace } from './chrome-trace.js';
import type { ChromeTrace, ChromeTraceEvent } from './chrome-trace.js';
import { validateChromeTrace } from './chrome-trace-validate.js';
import type { TraceEvent, TraceEventOf } from './trace.js';

/** Whole ns the importer reads from a ts or dur in µs. */
const ns = (us: number): number => Math.trunc(us * 1000);

function names(t: ChromeTrace, meta: 'process_name' | 'thread_name'): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of t.traceEvents) {
    if (e.ph === 'M' && e.name === meta) {
      out.set(meta === 'process_name' ? String(e.pid) : `${e.pid}/${e.tid}`, e.args!['name'] as string);
    }
  }
  return out;
}

/** `process name / lane name` of an event. */
function where(t: ChromeTrace, e: ChromeTraceEvent): string {
  return `${names(t, 'process_name').get(String(e.pid))} / ${names(t, 'thread_name').get(`${e.pid}/${e.tid}`)}`;
}

/** The X slice of the event's thread that contains its ts (whole ns). */
function enclosing(t: ChromeTrace, e: ChromeTraceEvent): ChromeTraceEvent | undefined {
  return t.traceEvents.find(
    (x) =>
      x.ph === 'X' &&
      x.pid === e.pid &&
      x.tid === e.tid &&
      ns(x.ts) <= ns(e.ts) &&
      ns(e.ts) < ns(x.ts) + ns(x.dur!),
  );
}

// Synthetic events (all fields of each type).
const mig = (
  ts: number,
  phase: 'setup' | 'finalize',
  id: number,
  began: number,
  o: Partial<TraceEventOf<'mm.migrate'>> = {},
): TraceEvent => ({
  type: 'mm.migrate',
  ts,
  mm: 1,
  start: 0x10000,
  end: 0x12000,
  phase,
  pages: 2,
  restored: 0,
  id,
  began,
  from: 'RAM',
  to: phase === 'finalize' ? 'vram' : null,
  device: phase === 'finalize' ? 1 : null,
  ...o,
});
const copy = (ts: number, dur: number, engine = 'gpu0:copy', device: number | null = null): TraceEvent => ({
  type: 'device.copy',
  ts,
  engine,
  device,
  dir: 'h2d',
  pages: 1,
  copied: 1,
  ns: dur,
});
const devFault = (ts: number, address: number, device = 1): TraceEvent => ({
  type: 'device.fault',
  ts,
  device,
  name: `gpu${device - 1}`,
  asid: 1,
  address,
  access: 'read',
  attempt: 1,
  handled: true,
});
const mapCmd = (ts: number, began: number, vpn: number, device = 1): TraceEvent => ({
  type: 'device.cmd',
  ts,
  device,
  name: `gpu${device - 1}`,
  seqno: 1,
  op: 'map',
  asid: 1,
  entries: 1,
  startVpn: null,
  endVpn: null,
  began,
  minVpn: vpn,
  maxVpn: vpn,
});
const inval = (ts: number, seq: number, end: boolean): TraceEvent =>
  end
    ? { type: 'mm.invalidate_end', ts, mm: 1, start: 0, end: 0x1000, event: 'CLEAR', seq, declined: false }
    : { type: 'mm.invalidate', ts, mm: 1, start: 0, end: 0x1000, event: 'CLEAR', blockable: true, seq };

describe('toChromeTrace on a real scenario', () => {
  it('shows processes and devices as tracks, lanes, instants, slices, counters and fault → migrate → map flows', async () => {
    const { m, events, mm, device } = await runTraceScenario(1);
    const t = toChromeTrace(events, { mmNames: new Map([[mm, 'app (mm 1)']]), title: 'scenario' });
    expect(validateChromeTrace(t)).toEqual([]);
    expect(t.displayTimeUnit).toBe('ns');
    expect(t.otherData).toMatchObject({ title: 'scenario', sourceEvents: events.length });
    // Metadata first, once per process and lane.
    const firstTimed = t.traceEvents.findIndex((e) => e.ph !== 'M');
    expect(t.traceEvents.slice(firstTimed).some((e) => e.ph === 'M')).toBe(false);
    expect([...names(t, 'process_name').values()]).toEqual(['machine', 'app (mm 1)', 'device gpu0']);
    const lanes = [...names(t, 'thread_name').values()];
    for (const lane of [
      'faults',
      'migrations',
      'notifiers',
      'syscalls',
      'commands',
      'copy engine gpu0:copy',
      'eviction',
    ]) {
      expect(lanes).toContain(lane);
    }

    const byName = (ph: string, name: string): ChromeTraceEvent[] =>
      t.traceEvents.filter((e) => e.ph === ph && e.name === name);
    // Instants, thread-scoped, on their lanes.
    expect(byName('i', 'fault anon').map((e) => where(t, e))).toContain('app (mm 1) / faults');
    expect(byName('i', 'device fault write').map((e) => where(t, e))[0]).toMatch(/^device gpu0 \/ faults/);
    expect(
      byName('i', 'invalidate MIGRATE').every((e) => e.s === 't' && where(t, e) === 'app (mm 1) / notifiers'),
    ).toBe(true);
    expect(byName('i', 'migrate_to_ram')).toHaveLength(1);
    // Slices: migrations on the process, transfers, commands and the eviction on the device.
    const migrations = byName('X', 'migrate RAM → testdev');
    expect(migrations.length).toBeGreaterThanOrEqual(8);
    expect(migrations.every((e) => where(t, e).startsWith('app (mm 1) / migrations'))).toBe(true);
    expect(byName('X', 'migrate testdev → RAM')).toHaveLength(1);
    expect(byName('X', 'copy h2d').every((e) => where(t, e) === 'device gpu0 / copy engine gpu0:copy')).toBe(
      true,
    );
    expect(byName('X', 'map').every((e) => where(t, e) === 'device gpu0 / commands')).toBe(true);
    expect(byName('X', 'evict testdev → RAM').map((e) => where(t, e))).toEqual(['device gpu0 / eviction']);
    // Each slice's start and length read back as the simulated whole ns.
    const setup = events.find((e): e is TraceEventOf<'mm.migrate'> => e.type === 'mm.migrate' && e.id === 3)!;
    const fin = events.find(
      (e): e is TraceEventOf<'mm.migrate'> => e.type === 'mm.migrate' && e.id === 3 && e.phase === 'finalize',
    )!;
    const s3 = migrations.find((e) => e.args!['id'] === 3)!;
    expect(ns(s3.ts)).toBe(Math.floor(setup.began));
    expect(ns(s3.ts) + ns(s3.dur!)).toBe(Math.floor(fin.ts));
    // Invalidations as async slices with ids, one per ended invalidation.
    const ends = events.filter((e) => e.type === 'mm.invalidate_end').length;
    const begins = t.traceEvents.filter((e) => e.ph === 'b');
    expect(begins).toHaveLength(ends);
    expect(new Set(begins.map((e) => e.id)).size).toBe(ends);
    // Counters of resident pages: RAM on the machine, device memory on the device; all back to 0.
    const ram = byName('C', 'resident RAM');
    const vram = byName('C', 'resident testdev');
    expect(ram.every((e) => where(t, e).startsWith('machine'))).toBe(true);
    expect(new Set(vram.map((e) => e.pid))).toEqual(new Set([byName('X', 'map')[0]!.pid]));
    expect(Math.max(...vram.map((e) => e.args!['pages'] as number))).toBeGreaterThan(0);
    expect(ram.at(-1)!.args).toEqual({ pages: m.mm.mem.nrUsed });
    expect(vram.at(-1)!.args).toEqual({ pages: 0 });
    // Flows: every device fault served by a migration: fault slice → migration → map command.
    const flows = new Map<string, ChromeTraceEvent[]>();
    for (const e of t.traceEvents)
      if ('stf'.includes(e.ph)) flows.set(e.id!, [...(flows.get(e.id!) ?? []), e]);
    const faults = events.filter((e) => e.type === 'device.fault' && e.device === device.id).length;
    expect(flows.size).toBe(faults);
    for (const hops of flows.values()) {
      expect(hops.map((e) => e.ph)).toEqual(['s', 't', 'f']);
      expect(hops[2]!.bp).toBe('e');
      expect(hops.map((e) => enclosing(t, e)?.name)).toEqual([
        expect.stringMatching(/^serve (read|write) fault$/),
        'migrate RAM → testdev',
        'map',
      ]);
    }
  });

  it('is deterministic: the same seed gives the same JSON', async () => {
    const a = JSON.stringify(toChromeTrace((await runTraceScenario(5)).events));
    const b = JSON.stringify(toChromeTrace((await runTraceScenario(5)).events));
    expect(a).toBe(b);
  });

  it('always validates, for random extra device, CPU, migration and invalidation steps (fast-check)', async () => {
    const page = fc.integer({ min: 0, max: SCENARIO_PAGES - 1 });
    const step: fc.Arbitrary<TraceStep> = fc.oneof(
      fc.record({
        op: fc.constantFrom('deviceWrite', 'deviceRead', 'cpuRead', 'cpuWrite', 'mprotect'),
        page,
      }),
      fc.record({ op: fc.constantFrom('toDevice', 'toSystem'), page, pages: fc.integer({ min: 1, max: 4 }) }),
      fc.constant({ op: 'evict' as const }),
      fc.record({ op: fc.constant('sleep' as const), ns: fc.integer({ min: 0, max: 20_000 }) }),
    ) as fc.Arbitrary<TraceStep>;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 1000 }),
        fc.array(step, { maxLength: 6 }),
        async (seed, steps) => {
          const { events } = await runTraceScenario(seed, steps);
          expect(validateChromeTrace(toChromeTrace(events))).toEqual([]);
        },
      ),
      { numRuns: 12 },
    );
  });
});

describe('toChromeTrace on synthetic events', () => {
  it('moves slices that would overlap without nesting to numbered lanes', () => {
    const t = toChromeTrace([
      mig(0, 'setup', 1, 0),
      mig(100, 'setup', 2, 50),
      mig(200, 'finalize', 1, 200),
      mig(300, 'finalize', 2, 300),
      mig(400, 'setup', 3, 350),
      mig(500, 'finalize', 3, 500),
    ]);
    expect(validateChromeTrace(t)).toEqual([]);
    const xs = t.traceEvents.filter((e) => e.ph === 'X');
    expect(xs.map((e) => [ns(e.ts), ns(e.dur!), where(t, e)])).toEqual([
      [0, 200, 'process 1 / migrations'],
      [50, 250, 'process 1 / migrations 2'],
      [350, 150, 'process 1 / migrations'],
    ]);
  });

  it('keeps unpaired and unknown events as instants, and drops nothing silently', () => {
    const custom = { type: 'test.custom', ts: 7, mm: 1, value: 3 } as unknown as TraceEvent;
    const t = toChromeTrace([
      mig(0, 'setup', 1, 0),
      mig(10, 'finalize', -1, 10),
      inval(20, 1, false),
      inval(30, 9, true),
      custom,
    ]);
    expect(validateChromeTrace(t)).toEqual([]);
    const timed = t.traceEvents.filter((e) => e.ph !== 'M');
    expect(timed.map((e) => [e.ph, e.name, where(t, e)])).toEqual([
      ['i', 'migrate setup', 'process 1 / migrations'],
      ['i', 'test.custom', 'process 1 / events'],
      ['i', 'migrate finalize', 'process 1 / migrations'],
      ['i', 'invalidate CLEAR', 'process 1 / notifiers'],
      ['i', 'invalidate CLEAR end', 'process 1 / notifiers'],
    ]);
    expect(timed[1]!.args).toEqual({ mm: 1, value: 3 });
  });

  it('puts a copy engine on its device (given, or by name prefix), else on its own process', () => {
    const t = toChromeTrace([
      devFault(0, 0x1000),
      copy(0, 10, 'gpu0:copy'),
      copy(0, 10, 'gpu0.bcs'),
      copy(0, 10, 'dma', 1),
      copy(0, 10, 'nic:rx'),
    ]);
    expect(validateChromeTrace(t)).toEqual([]);
    expect(t.traceEvents.filter((e) => e.ph === 'X').map((e) => where(t, e))).toEqual([
      'device gpu0 / copy engine gpu0:copy',
      'device gpu0 / copy engine gpu0.bcs',
      'device gpu0 / copy engine dma',
      'copy engine nic:rx / copy engine nic:rx',
    ]);
  });

  it('writes times the importer reads back as the exact whole ns, flooring sub-ns times', () => {
    const t = toChromeTrace([copy(1234.9, 0.7), copy(999_999_999_999.5, 3)]);
    const xs = t.traceEvents.filter((e) => e.ph === 'X');
    expect(xs.map((e) => [ns(e.ts), ns(e.dur!)])).toEqual([
      [1234, 1],
      [999_999_999_999, 3],
    ]);
  });

  it('links a fault to the migration and map of its page only; a refault before the map cuts the flow', () => {
    const t = toChromeTrace([
      devFault(0, 0x10000),
      devFault(5, 0x20000), // no map covers it
      mig(10, 'setup', 1, 10),
      mig(40, 'finalize', 1, 40),
      mapCmd(60, 50, 0x10),
      devFault(100, 0x30000),
      devFault(110, 0x30000), // refault of the same page before its map
      mapCmd(200, 150, 0x30),
    ]);
    expect(validateChromeTrace(t)).toEqual([]);
    const flow = t.traceEvents.filter((e) => 'stf'.includes(e.ph));
    expect(flow.map((e) => [e.ph, enclosing(t, e)?.name])).toEqual([
      ['s', 'serve read fault'],
      ['t', 'migrate RAM → vram'],
      ['f', 'map'],
      ['s', 'serve read fault'],
      ['f', 'map'],
    ]);
    expect(new Set(flow.map((e) => e.id))).toEqual(new Set(['1', '2']));
  });

  it('always validates, for random overlapping slices, instants, counters and flows (fast-check)', () => {
    const ev: fc.Arbitrary<(t: number) => TraceEvent[]> = fc.oneof(
      fc
        .record({ d: fc.nat(50), dev: fc.integer({ min: 1, max: 2 }) })
        .map(({ d, dev }) => (t: number) => [copy(t, d, `gpu${dev - 1}:copy`)]),
      fc
        .record({ page: fc.nat(3), dev: fc.integer({ min: 1, max: 2 }) })
        .map(({ page, dev }) => (t: number) => [devFault(t, 0x10000 + page * 0x1000, dev)]),
      fc
        .record({ page: fc.nat(3), d: fc.nat(30), dev: fc.integer({ min: 1, max: 2 }) })
        .map(({ page, d, dev }) => (t: number) => [mapCmd(t + d, t, 0x10 + page, dev)]),
      fc
        .record({ d: fc.nat(100), id: fc.integer({ min: 1, max: 6 }) })
        .map(({ d, id }) => (t: number) => [
          mig(t, 'setup', id, t, { start: 0x10000, end: 0x14000 }),
          mig(t + d, 'finalize', id, t + d),
        ]),
      fc
        .record({ d: fc.nat(40), seq: fc.integer({ min: 1, max: 4 }) })
        .map(({ d, seq }) => (t: number) => [inval(t, seq, false), inval(t + d, seq, true)]),
      fc
        .nat(100)
        .map((pages) => (t: number): TraceEvent[] => [
          { type: 'mm.resident', ts: t, location: 'RAM', device: null, pages },
        ]),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(200), ev), { maxLength: 30 }), (items) => {
        const events = items.flatMap(([t, mk]) => mk(t + 0.5)).sort((a, b) => a.ts - b.ts);
        const t = toChromeTrace(events);
        expect(validateChromeTrace(t)).toEqual([]);
        expect(JSON.stringify(toChromeTrace(events))).toBe(JSON.stringify(t));
      }),
      { numRuns: 300 },
    );
  });
});

/** A trace with a named process 1 (thread 2) followed by `events`. */
function traceOf(...events: Record<string, unknown>[]): Record<string, unknown> {
  return {
    displayTimeUnit: 'ns',
    traceEvents: [
      { name: 'process_name', ph: 'M', ts: 0, pid: 1, tid: 1, args: { name: 'p' } },
      { name: 'thread_name', ph: 'M', ts: 0, pid: 1, tid: 2, args: { name: 'lane' } },
      ...events,
    ],
  };
}
const X = (ts: number, dur: number, o: Record<string, unknown> = {}): Record<string, unknown> => ({
  name: 'x',
  ph: 'X',
  ts,
  dur,
  pid: 1,
  tid: 2,
  ...o,
});

describe('validateChromeTrace', () => {
  it('accepts a well-formed trace, as an object or a bare array', () => {
    const t = traceOf(
      X(0, 10),
      X(1, 2),
      X(10, 1),
      { name: 'i', ph: 'i', s: 't', ts: 3, pid: 1, tid: 2 },
      { name: 'c', ph: 'C', ts: 3, pid: 1, tid: 1, args: { pages: 4 } },
      { name: 'a', cat: 'k', ph: 'b', ts: 0, pid: 1, tid: 1, id: 'a1' },
      { name: 'a', cat: 'k', ph: 'e', ts: 5, pid: 1, tid: 1, id: 'a1' },
      { name: 'f', cat: 'flow', ph: 's', ts: 1.5, pid: 1, tid: 2, id: '1f' },
      { name: 'f', cat: 'flow', ph: 'f', bp: 'e', ts: 10.5, pid: 1, tid: 2, id: '1f' },
    );
    expect(validateChromeTrace(t)).toEqual([]);
    expect(validateChromeTrace(t['traceEvents'])).toEqual([]);
  });

  it('rejects what is not a trace', () => {
    for (const bad of [null, 3, 'x', {}, { traceEvents: {} }]) {
      expect(validateChromeTrace(bad)).toEqual([
        'the trace must be an array of events or an object with a traceEvents array',
      ]);
    }
    expect(validateChromeTrace({ traceEvents: [], displayTimeUnit: 'us' })).toEqual([
      'displayTimeUnit must be "ms" or "ns", got "us"',
    ]);
  });

  it('rejects X slices on one thread that overlap without nesting, compared in whole ns', () => {
    expect(validateChromeTrace(traceOf(X(0, 10), X(5, 10)))).toEqual([
      'event #3: slice [5000, 15000) ns overlaps slice [0, 10000) ns (event #2) on thread 1/2 without nesting; use async b/e with an id or another tid',
    ]);
    // Touching is not overlapping; on another thread nothing is compared.
    expect(validateChromeTrace(traceOf(X(0, 10), X(10, 10), X(5, 10, { tid: 1 })))).toEqual([
      'event #4: thread 1/1 has no thread_name metadata',
    ]);
    // 1.9999 µs is 1999 ns for the importer: it starts inside [1000, 2000).
    expect(validateChromeTrace(traceOf(X(1, 1), X(1.9999, 1)))).toHaveLength(1);
    expect(validateChromeTrace(traceOf(X(1, 1), X(2.0009, 1)))).toEqual([]);
  });

  it('rejects an async event without an id, and unmatched async begins and ends', () => {
    expect(validateChromeTrace(traceOf({ name: 'a', ph: 'b', ts: 0, pid: 1, tid: 1 }))).toEqual([
      'event #2 (b "a"): an async event needs an id (or id2.local / id2.global); the importer drops it',
    ]);
    expect(
      validateChromeTrace(
        traceOf(
          { name: 'a', ph: 'b', ts: 0, pid: 1, tid: 1, id2: { local: '7' } },
          { name: 'a', ph: 'e', ts: 1, pid: 1, tid: 1, id2: { local: '7' } },
        ),
      ),
    ).toEqual([]);
    expect(
      validateChromeTrace(
        traceOf(
          { name: 'a', cat: 'k', ph: 'b', ts: 0, pid: 1, tid: 1, id: '1' },
          { name: 'a', cat: 'other', ph: 'e', ts: 1, pid: 1, tid: 1, id: '1' },
        ),
      ),
    ).toEqual([
      'event #3 (e "a"): async end without an open begin (pid, cat, id 1|other|id:1)',
      'event #2 (b "a"): async begin without an end',
    ]);
  });

  it('rejects a missing or malformed pid or tid', () => {
    expect(validateChromeTrace(traceOf(X(0, 1, { pid: undefined })))).toEqual([
      'event #2 (X "x"): pid must be an integer in [0, 2^32), got nothing',
    ]);
    expect(validateChromeTrace(traceOf(X(0, 1, { tid: -1 })))).toEqual([
      'event #2 (X "x"): tid must be an integer in [0, 2^32), got -1',
    ]);
  });

  it('rejects counters without numeric args', () => {
    const c = (args: unknown): Record<string, unknown> => ({
      name: 'c',
      ph: 'C',
      ts: 0,
      pid: 1,
      tid: 1,
      args,
    });
    expect(validateChromeTrace(traceOf(c({ pages: '4' }), c({}), c(undefined)))).toEqual([
      'event #2 (C "c"): counter arg "pages" is not a finite number',
      'event #3 (C "c"): a counter needs args with at least one numeric value',
      'event #4 (C "c"): a counter needs args with at least one numeric value',
    ]);
  });

  it('rejects metadata without args.name, unknown metadata and metadata given twice', () => {
    expect(
      validateChromeTrace(
        traceOf(
          { name: 'thread_name', ph: 'M', ts: 0, pid: 1, tid: 3, args: {} },
          { name: 'thread_sort_index', ph: 'M', ts: 0, pid: 1, tid: 2, args: { sort_index: 'a' } },
          { name: 'process_name', ph: 'M', ts: 0, pid: 1, tid: 1, args: { name: 'q' } },
          { name: 'process_color', ph: 'M', ts: 0, pid: 1, tid: 1, args: { name: 'q' } },
        ),
      ),
    ).toEqual([
      'event #2 (M "thread_name"): thread_name needs a non-empty string args.name',
      'event #3 (M "thread_sort_index"): thread_sort_index needs an integer args.sort_index',
      'event #4 (M "process_name"): process_name given twice for 1',
      'event #5 (M "process_color"): metadata must be process_name, thread_name, process_sort_index, thread_sort_index or process_labels',
    ]);
  });

  it('rejects a ts that is not a finite number ≥ 0, and an X without a dur', () => {
    expect(
      validateChromeTrace(
        traceOf(X(Number.NaN, 1), X(Infinity, 1), X(-1, 1), X('3' as unknown as number, 1), X(0, -1)),
      ),
    ).toEqual([
      'event #2 (X "x"): ts must be a finite number ≥ 0 (microseconds), got null',
      'event #3 (X "x"): ts must be a finite number ≥ 0 (microseconds), got null',
      'event #4 (X "x"): ts must be a finite number ≥ 0 (microseconds), got -1',
      'event #5 (X "x"): ts must be a finite number ≥ 0 (microseconds), got "3"',
      'event #6 (X "x"): an X slice needs a finite dur ≥ 0, got -1',
    ]);
  });

  it('rejects flows without an id, out of order, or bound to no slice', () => {
    const fl = (
      ph: string,
      ts: number,
      id?: unknown,
      o: Record<string, unknown> = {},
    ): Record<string, unknown> => ({
      name: 'f',
      cat: 'flow',
      ph,
      ts,
      pid: 1,
      tid: 2,
      ...(id === undefined ? {} : { id }),
      ...o,
    });
    expect(validateChromeTrace(traceOf(X(0, 10), fl('s', 1), fl('s', 1, 'xyz')))).toEqual([
      'event #3 (s "f"): a flow event needs an id that is a whole number or a hex string, got nothing',
      'event #4 (s "f"): a flow event needs an id that is a whole number or a hex string, got "xyz"',
    ]);
    expect(
      validateChromeTrace(traceOf(X(0, 10), fl('t', 1, 5), fl('s', 2, 5), fl('f', 20, 5, { bp: 'e' }))),
    ).toEqual([
      'event #3 (t "f"): flow step without a start before it (flow flow|f|5)',
      'event #5 (f "f"): flow event lies inside no slice of thread 1/2, so it binds to nothing',
    ]);
    expect(validateChromeTrace(traceOf(X(0, 10), fl('s', 2, 5), fl('f', 20, 5)))).toEqual([
      'event #4 (f "f"): flow end (without bp "e") has no slice starting after it on thread 1/2',
    ]);
    expect(validateChromeTrace(traceOf(X(0, 10), fl('s', 2, 5), fl('f', 3, 5, { bp: 'x' })))).toEqual([
      'event #4 (f "f"): bp must be "e", got "x"',
    ]);
  });

  it('rejects unknown phases, bad instant scopes, unmatched B/E and names that break the importer', () => {
    expect(
      validateChromeTrace(
        traceOf(
          { name: 'q', ph: 'Q', ts: 0, pid: 1, tid: 2 },
          { name: 'i', ph: 'i', s: 'x', ts: 0, pid: 1, tid: 2 },
          { name: 'b', ph: 'B', ts: 0, pid: 1, tid: 2 },
          { name: 'other', ph: 'E', ts: 1, pid: 1, tid: 2 },
          { name: 'lost', ph: 'E', ts: 2, pid: 1, tid: 2 },
          { name: 'B2', ph: 'B', ts: 3, pid: 1, tid: 2 },
          X(0, 1, { name: 'a\u0001b' }),
          X(0, 1, { name: '' }),
          X(0, 1, { args: [1] }),
        ),
      ),
    ).toEqual([
      'event #2 (Q "q"): ph "Q" is not a phase the importer reads (B E X i I R C M b e n s t f)',
      'event #3 (i "i"): instant scope s must be "g", "p" or "t", got "x"',
      'event #8 (X "a\\u0001b"): name contains a control character',
      'event #9 (X ""): name must be a non-empty string',
      'event #10 (X "x"): args must be an object',
      'event #5 (E "other"): E closes B "b" (event #4) with another name',
      'event #6 (E "lost"): E without an open B on thread 1/2',
      'event #7 (B "B2"): B without an E on thread 1/2',
    ]);
  });

  it('requires a process_name for every process and a thread_name for every thread with slices', () => {
    expect(
      validateChromeTrace({
        traceEvents: [
          X(0, 1, { pid: 7, tid: 8 }),
          { name: 'c', ph: 'C', ts: 0, pid: 9, tid: 9, args: { v: 1 } },
          { name: 'i', ph: 'i', s: 'p', ts: 0, pid: 9, tid: 10 },
        ],
      }),
    ).toEqual([
      'event #0: pid 7 has no process_name metadata',
      'event #1: pid 9 has no process_name metadata',
      'event #0: thread 7/8 has no thread_name metadata',
    ]);
  });

  it('lists at most 200 problems, then counts the rest', () => {
    const many = Array.from({ length: 250 }, () => X(0, 1, { pid: 'x' }));
    const p = validateChromeTrace(traceOf(...many));
    expect(p).toHaveLength(201);
    expect(p.at(-1)).toBe('… and 50 more problems');
  });
});
