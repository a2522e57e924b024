/**
 * Shared set-up for the unit tests of `@hmm/core`: the usual constants, a small machine with one
 * process, page probes and a recording MMU-notifier subscriber.
 *
 * Test-only: `src/testing/**` is excluded from the published build and type-checked by
 * `tsconfig.test.json`.
 */
import { expect } from 'vitest';
import { MapFlag, PAGE_SIZE, Prot } from '../mm/constants.js';
import type { MmStruct } from '../mm/mm-struct.js';
import type { MmuNotifierHooks, MmuNotifierRange } from '../mm/mmu-notifier-hooks.js';
import { NOTIFY_EVENT_NAMES } from '../mm/mmu-notifier-hooks.js';
import type { Process } from '../mm/process.js';
import { Machine } from '../system/machine.js';

/** One page, in bytes. */
export const P = PAGE_SIZE;
/** `PROT_READ | PROT_WRITE`. */
export const RW = Prot.READ | Prot.WRITE;
/** `MAP_PRIVATE | MAP_ANONYMOUS`. */
export const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;

/** Sizes of a test machine, in pages. */
export interface MachineSize {
  /** RAM in pages (default 64). */
  readonly ramPages?: number;
  /** Swap in pages (default 256). */
  readonly swapPages?: number;
}

/** A machine with `ramPages` pages of RAM (default 64) and `swapPages` pages of swap (default 256). */
export function machine({ ramPages = 64, swapPages = 256 }: MachineSize = {}): Machine {
  return new Machine({ ramBytes: ramPages * P, swapBytes: swapPages * P });
}

/** A {@link machine} of the given size with one process. */
export function setup(size: MachineSize = {}): { m: Machine; p: Process } {
  const m = machine(size);
  return { m, p: m.createProcess() };
}

/** The pfn in the PTE mapping `addr` in `p` (no check that it is present). */
export function pfnAt(m: Machine, p: Process, addr: number): number {
  return m.mm.arena.pteVal[p.mm.pgtable.lookup(addr / P)]!;
}

/** Sum of the pin counts of every frame. */
export function totalPins(m: Machine): number {
  return m.mm.mem.pincount.reduce((s, x) => s + x, 0);
}

/** Sum of the reference counts of every frame. */
export function totalRefs(m: Machine): number {
  return m.mm.mem.refcount.reduce((s, x) => s + x, 0);
}

/** `[start, end)` of every VMA of `p`, in address order. */
export function layout(p: Process): [number, number][] {
  return p.mm.vmas.all().map((v) => [v.start, v.end]);
}

/** Byte-exact comparison (vitest's deep equality is slow on page-sized arrays). */
export function expectBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(actual, expected), 'byte contents differ').toBe(0);
}

/** Options of a {@link HookRecorder}. */
export interface HookRecorderOptions {
  /** Called from `release`, after the mm is recorded (to look at the mm at that moment). */
  readonly onRelease?: (mm: MmStruct) => void;
}

/**
 * MMU-notifier hooks that record every call and check that every start is ended exactly once:
 * an end without an open start throws.
 */
export class HookRecorder implements MmuNotifierHooks {
  /** Every range started, blocking or not (refused non-blocking starts included), in call order. */
  readonly starts: MmuNotifierRange[] = [];
  /** Every range ended, in call order. */
  readonly ends: MmuNotifierRange[] = [];
  /** The mms passed to `release`, in call order. */
  readonly released: MmStruct[] = [];
  /** The answer of `invalidateRangeStartNonblock`; false refuses (the range is not opened). */
  allowNonblock = true;
  private readonly open: MmuNotifierRange[] = [];

  constructor(private readonly options: HookRecorderOptions = {}) {}

  invalidateRangeStart(range: MmuNotifierRange): void {
    this.starts.push(range);
    this.open.push(range);
  }
  invalidateRangeStartNonblock(range: MmuNotifierRange): boolean {
    if (!this.allowNonblock) {
      this.starts.push(range);
      return false;
    }
    this.invalidateRangeStart(range);
    return true;
  }
  invalidateRangeEnd(range: MmuNotifierRange): void {
    const i = this.open.indexOf(range);
    if (i < 0) throw new Error(`end without start: ${JSON.stringify([range.start, range.end, range.event])}`);
    this.open.splice(i, 1);
    this.ends.push(range);
  }
  release(mm: MmStruct): void {
    this.released.push(mm);
    this.options.onRelease?.(mm);
  }

  /**
   * (event name, start, end) of the starts since the last take, checking they were all ended and
   * all blockable; clears the starts and ends.
   */
  take(): [string, number, number][] {
    expect(this.open).toEqual([]);
    expect(this.ends.length).toBe(this.starts.length);
    for (const r of this.starts) expect(r.blockable).toBe(true);
    const out = this.starts.map((r): [string, number, number] => [
      NOTIFY_EVENT_NAMES[r.event]!,
      r.start,
      r.end,
    ]);
    this.starts.length = 0;
    this.ends.length = 0;
    return out;
  }
}

/** Subscribes a new {@link HookRecorder} to `p`'s mm (replacing any other) and returns it. */
export function recordHooks(p: Process, options: HookRecorderOptions = {}): HookRecorder {
  const rec = new HookRecorder(options);
  p.mm.notifier = rec;
  return rec;
}
