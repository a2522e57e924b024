import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { TimerHeap } from './timer-heap.js';

describe('TimerHeap', () => {
  it('pops in (time, arming order) order, like a stable sort', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 200 }), (times) => {
        const h = new TimerHeap<number>();
        times.forEach((t, i) => h.push(t, i));
        expect(h.size).toBe(times.length);
        const popped: number[] = [];
        for (let e = h.pop(); e !== undefined; e = h.pop()) popped.push(e.value);
        const expected = times
          .map((t, i) => ({ t, i }))
          .sort((a, b) => a.t - b.t || a.i - b.i)
          .map((x) => x.i);
        expect(popped).toEqual(expected);
        expect(h.size).toBe(0);
      }),
    );
  });

  it('interleaved push/pop keeps the minimum on top', () => {
    fc.assert(
      fc.property(
        fc.array(fc.option(fc.integer({ min: 0, max: 1000 }), { nil: undefined }), { maxLength: 200 }),
        (ops) => {
          const h = new TimerHeap<null>();
          const model: number[] = [];
          for (const op of ops) {
            if (op === undefined) {
              model.sort((a, b) => a - b);
              expect(h.pop()?.time).toBe(model.shift());
            } else {
              h.push(op, null);
              model.push(op);
            }
            expect(h.peek()?.time).toBe(model.length ? Math.min(...model) : undefined);
          }
        },
      ),
    );
  });
});
