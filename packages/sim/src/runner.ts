/**
 * Runs scenarios in order, optionally sharing one simulated machine between those that can run on
 * a machine they are given, and records that machine's trace for export as Chrome Trace Event JSON
 * (Perfetto).
 *
 * @module
 */
import { HmmError, Machine, TraceRecorder, toChromeTrace } from '@hmm/core';
import type { ChromeTrace, Process, TraceEvent } from '@hmm/core';
import { findScenario, SCENARIOS } from './scenarios/index.js';
import type { Scenario, ScenarioResult, ScenarioSize } from './scenario.js';

/** Options of {@link runScenarios}. */
export interface RunScenariosOptions {
  readonly seed?: number;
  readonly size?: ScenarioSize;
  /**
   * Run the scenarios that can share a machine on one machine (in order), and record its trace.
   * The others run on machines of their own and are not in the trace.
   */
  readonly shareMachine?: boolean;
  /** Record the shared machine's trace (needs `shareMachine`). */
  readonly trace?: boolean;
  /** Trace title (Perfetto shows it as metadata). */
  readonly title?: string;
  /** Progress callbacks. */
  readonly onStart?: (index: number, scenario: Scenario<object>) => void;
  readonly onStep?: (done: number, total: number, label: string) => void;
  readonly onEnd?: (index: number, result: ScenarioResult) => void;
}

/** What {@link runScenarios} returns. */
export interface RunScenariosResult {
  readonly results: readonly ScenarioResult[];
  /** The shared machine's trace, if recorded. */
  readonly trace: ChromeTrace | null;
  /** Scenarios that ran on the shared machine (those in the trace). */
  readonly traced: readonly string[];
  /** Trace events recorded (resident-page counters sampled), and CPU page-fault events left out (beyond the per-process cap). */
  readonly traceEvents: number;
  readonly elidedFaults: number;
}

/** Scheduler bookkeeping events, too frequent to be useful on a timeline. */
const SCHED_NOISE = new Set<string>(['sched.clock', 'sched.run', 'sched.block', 'sched.wake']);

/** CPU page faults kept per address space in a trace (a 1 GiB buffer faults 262,144 times). */
export const TRACE_FAULTS_PER_MM = 2048;

/** Resident-page counter samples kept in a trace: the last value per location every 50 µs. */
export const RESIDENT_SAMPLE_NS = 50_000;

/** Two time-ordered event lists merged by time (stable: on equal times, `a` first). */
function mergeByTime(a: readonly TraceEvent[], b: readonly TraceEvent[]): TraceEvent[] {
  const out: TraceEvent[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i]!.ts <= b[j]!.ts)) out.push(a[i++]!);
    else out.push(b[j++]!);
  }
  return out;
}

/** The scenarios called `names`; EINVAL naming the unknown ones. */
export function resolveScenarios(names: readonly string[]): Scenario<object>[] {
  const unknown = names.filter((n) => findScenario(n) === undefined);
  if (unknown.length > 0) {
    throw new HmmError(
      'EINVAL',
      `unknown scenario${unknown.length > 1 ? 's' : ''} ${unknown.map((n) => `'${n}'`).join(', ')} (known: ${SCENARIOS.map((s) => s.name).join(', ')})`,
    );
  }
  return names.map((n) => findScenario(n)!);
}

/** Runs `scenarios` in order (see {@link RunScenariosOptions}). */
export async function runScenarios(
  scenarios: readonly Scenario<object>[],
  opts: RunScenariosOptions = {},
): Promise<RunScenariosResult> {
  const seed = opts.seed ?? 1;
  const size = opts.size ?? 'quick';
  if (opts.trace === true && opts.shareMachine !== true) {
    throw new HmmError('EINVAL', 'runScenarios: a trace is recorded only on a shared machine (shareMachine)');
  }
  const sharing = opts.shareMachine === true ? scenarios.filter((s) => s.sharesMachine) : [];
  let machine: Machine | null = null;
  let recorder: TraceRecorder | null = null;
  const mmNames = new Map<number, string>();
  let elidedFaults = 0;
  const residentSamples: TraceEvent[] = [];
  let flushResident = (): void => {};
  let stopResident = (): void => {};
  if (sharing.length > 0) {
    const ramBytes = Math.max(...sharing.map((s) => s.ramBytes(size)));
    machine = new Machine({ seed, ramBytes, swapBytes: 0 });
    // Name every address space after its process, for the trace's process tracks.
    const m = machine;
    const create = m.createProcess.bind(m);
    m.createProcess = (comm?: string): Process => {
      const p = create(comm);
      mmNames.set(p.mm.id, `${p.comm} (pid ${p.pid})`);
      return p;
    };
    if (opts.trace === true) {
      const faults = new Map<number, number>();
      // Resident-page counters change on every page: keep the last value per location and
      // RESIDENT_SAMPLE_NS bucket (merged back in by time when the trace is built).
      let lastBucket = new Map<string, number>();
      const pendingResident = new Map<string, TraceEvent>();
      stopResident = m.trace.on('mm.resident', (e) => {
        const bucket = Math.floor(e.ts / RESIDENT_SAMPLE_NS);
        const prev = lastBucket.get(e.location);
        if (prev !== undefined && prev !== bucket) {
          const p = pendingResident.get(e.location);
          if (p !== undefined) residentSamples.push(p);
        }
        lastBucket.set(e.location, bucket);
        pendingResident.set(e.location, e);
      });
      flushResident = () => {
        for (const p of pendingResident.values()) residentSamples.push(p);
        pendingResident.clear();
        lastBucket = new Map();
      };
      recorder = new TraceRecorder(m.trace, (e: TraceEvent) => {
        if (SCHED_NOISE.has(e.type) || e.type === 'mm.resident') return false;
        if (e.type === 'mm.fault') {
          const n = (faults.get(e.mm) ?? 0) + 1;
          faults.set(e.mm, n);
          if (n > TRACE_FAULTS_PER_MM) {
            elidedFaults++;
            return false;
          }
        }
        return true;
      });
    }
  }
  const results: ScenarioResult[] = [];
  for (let i = 0; i < scenarios.length; i++) {
    const s = scenarios[i]!;
    opts.onStart?.(i, s);
    const shared = machine !== null && s.sharesMachine;
    const r = await s.run({
      seed,
      size,
      ...(shared ? { machine: machine! } : {}),
      ...(opts.onStep === undefined ? {} : { onProgress: opts.onStep }),
    });
    results.push(r);
    opts.onEnd?.(i, r);
  }
  if (machine !== null) {
    machine.checkInvariants();
    const ram = machine.mm.mem.allocatedFrames().length;
    const dev = machine.mm.mem.allocatedDeviceFrames().length;
    if (ram !== 0 || dev !== 0) {
      throw new HmmError(
        'EIO',
        `shared machine: ${ram} RAM and ${dev} device frames still in use after every scenario`,
      );
    }
  }
  recorder?.stop();
  stopResident();
  flushResident();
  residentSamples.sort((x, y) => x.ts - y.ts);
  const trace =
    recorder === null
      ? null
      : toChromeTrace(mergeByTime(recorder.events, residentSamples), {
          mmNames,
          title: opts.title ?? `hmm-sim: ${sharing.map((s) => s.name).join(', ')}`,
        });
  return {
    results,
    trace,
    traced: sharing.map((s) => s.name),
    traceEvents: (recorder?.events.length ?? 0) + residentSamples.length,
    elidedFaults,
  };
}

/** Scenarios of the showcase, in order: those sharing one machine first, then the vector add. */
export const SHOWCASE_SCENARIOS: readonly string[] = [
  'pin-vs-userptr-vs-mirror',
  'fault-2m',
  'p2p-vs-staged',
  'oversubscribe',
  'vecadd',
];
