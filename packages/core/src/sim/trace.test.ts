import { describe, it, expect } from 'vitest';
import { TraceBus, TraceRecorder } from './trace.js';
import type { TraceEvent, TraceEventOf } from './trace.js';

// Another layer extends the event map by declaration merging; this proves the union is open.
declare module './trace.js' {
  interface TraceEventMap {
    'test.sim.custom': { value: number; label: string };
  }
}

describe('TraceBus', () => {
  it('reports whether anyone listens, per type and overall', () => {
    const bus = new TraceBus();
    expect(bus.hasListeners).toBe(false);
    expect(bus.enabled('sched.spawn')).toBe(false);
    const off = bus.on('sched.spawn', () => {});
    expect(bus.enabled('sched.spawn')).toBe(true);
    expect(bus.enabled('sched.end')).toBe(false);
    expect(bus.hasListeners).toBe(true);
    off();
    expect(bus.enabled('sched.spawn')).toBe(false);
    expect(bus.hasListeners).toBe(false);
    const offAny = bus.onAny(() => {});
    expect(bus.enabled('sched.end')).toBe(true);
    expect(bus.enabled('test.sim.custom')).toBe(true);
    offAny();
    expect(bus.hasListeners).toBe(false);
  });

  it('delivers events to typed listeners, then to any-listeners, and stops after off', () => {
    const bus = new TraceBus();
    const seen: string[] = [];
    const typed = (e: TraceEventOf<'test.sim.custom'>): void => {
      seen.push(`typed:${e.value}:${e.label}`);
    };
    const any = (e: TraceEvent): void => {
      seen.push(`any:${e.type}@${e.ts}`);
    };
    bus.on('test.sim.custom', typed);
    bus.onAny(any);
    bus.emit({ type: 'test.sim.custom', ts: 5, value: 1, label: 'x' });
    bus.emit({ type: 'sched.clock', ts: 9, from: 5 });
    bus.off('test.sim.custom', typed);
    bus.offAny(any);
    bus.emit({ type: 'test.sim.custom', ts: 10, value: 2, label: 'y' });
    expect(seen).toEqual(['typed:1:x', 'any:test.sim.custom@5', 'any:sched.clock@9']);
  });

  it('keeps counters and snapshots them sorted', () => {
    const bus = new TraceBus();
    expect(bus.counter('pgfault')).toBe(0);
    bus.count('pgfault');
    bus.count('pgfault', 2);
    bus.count('alloc', 5);
    bus.count('migrate', 0.5);
    expect(bus.counter('pgfault')).toBe(3);
    const snap = bus.counters();
    expect(Object.keys(snap)).toEqual(['alloc', 'migrate', 'pgfault']);
    expect(snap).toEqual({ alloc: 5, migrate: 0.5, pgfault: 3 });
    snap['alloc'] = 99; // a snapshot, not a view
    expect(bus.counter('alloc')).toBe(5);
    expect(() => bus.count('x', Number.NaN)).toThrow(/EINVAL/);
    bus.resetCounters();
    expect(bus.counters()).toEqual({});
  });
});

describe('TraceRecorder', () => {
  it('records in order and serializes to stable JSONL', () => {
    const bus = new TraceBus();
    const rec = new TraceRecorder(bus);
    bus.emit({ type: 'sched.spawn', ts: 0, task: 1, name: 'a', parent: null });
    bus.emit({ type: 'test.sim.custom', ts: 3, value: 7, label: 'q"uote' });
    expect(rec.toJSONL()).toBe(
      '{"type":"sched.spawn","ts":0,"task":1,"name":"a","parent":null}\n' +
        '{"type":"test.sim.custom","ts":3,"value":7,"label":"q\\"uote"}\n',
    );
    expect(rec.ofType('test.sim.custom').map((e) => e.value)).toEqual([7]);
    rec.stop();
    rec.stop(); // idempotent
    bus.emit({ type: 'sched.clock', ts: 4, from: 3 });
    expect(rec.events).toHaveLength(2);
    rec.clear();
    expect(rec.toJSONL()).toBe('');
  });

  it('applies its filter', () => {
    const bus = new TraceBus();
    const rec = new TraceRecorder(bus, (e) => e.type !== 'sched.clock');
    bus.emit({ type: 'sched.clock', ts: 4, from: 3 });
    bus.emit({ type: 'test.sim.custom', ts: 4, value: 1, label: '' });
    expect(rec.events.map((e) => e.type)).toEqual(['test.sim.custom']);
  });
});
