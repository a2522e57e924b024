/**
 * Differential test of GUP's fast path (`takePresentPages`) against the per-page rule
 * (`followPage` plus the VMA check): on random address-space states the fast path never takes a page
 * the rule would refuse, takes the same frame where it does, and stops at the first page it does not
 * take. (It may stop earlier than the rule, e.g. at the zero page, which it leaves to the slow path.)
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ANON, P, RW, setup } from '../testing/fixtures.js';
import { Foll, Madv, MapFlag, Prot } from './constants.js';
import { followPage, takePresentPages } from './gup.js';

const N = 24;

describe('GUP fast path', () => {
  it('agrees with followPage on random states', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(
            fc.constantFrom('write', 'read', 'fork', 'ro', 'dontneed', 'pin', 'reclaim'),
            fc.nat({ max: N - 1 }),
          ),
          {
            maxLength: 25,
          },
        ),
        fc.constantFrom(0, Foll.WRITE, Foll.PIN, Foll.PIN | Foll.LONGTERM, Foll.PIN | Foll.WRITE, Foll.GET),
        async (steps, gupFlags) => {
          const { m, p } = setup({ ramPages: 32, swapPages: 256 });
          const a = await p.mmap({ length: N * P, prot: RW, flags: ANON });
          const f = await m.createFile('f', new Uint8Array(8 * P).fill(5));
          await p.mmap({
            addr: a + N * P,
            length: 8 * P,
            prot: Prot.READ,
            flags: MapFlag.PRIVATE | MapFlag.FIXED,
            file: f,
          });
          const pins: Int32Array[] = [];
          const readOnly = new Set<number>();
          for (const [op, i] of steps) {
            const at = a + i * P;
            if (op === 'write' && !readOnly.has(i)) await p.write(at, new Uint8Array([i + 1]));
            else if (op === 'read') await p.read(at, 1);
            else if (op === 'fork') await p.fork();
            else if (op === 'ro') {
              await p.mprotect(at, P, Prot.READ);
              readOnly.add(i);
            } else if (op === 'dontneed') await p.madvise(at, P, Madv.DONTNEED);
            else if (op === 'pin' && pins.length < 4) pins.push(await p.pinUserPages(a + (i % 8) * P, 1));
            else if (op === 'reclaim') await m.reclaim(8);
          }
          await p.read(a + N * P, 4 * P); // some private file pages present, read-only
          const total = N + 8;
          const out = new Int32Array(total);
          const before = m.mm.mem.refcount.slice();
          const pinsBefore = m.mm.mem.pincount.slice();
          const stop = takePresentPages(m.mm, p.mm, a, 0, total, gupFlags, out);
          const write = (gupFlags & Foll.WRITE) !== 0;
          for (let i = 0; i < total; i++) {
            const vma = p.mm.vmas.lookup(a + i * P)!;
            const allowed = !vma.isSpecial && (write ? vma.writable : vma.readable);
            const rule = allowed ? followPage(m.mm, p.mm, (a + i * P) / P, gupFlags) : -1;
            if (i < stop) {
              expect(rule, `page ${i} taken by the fast path`).toBe(out[i]);
            }
          }
          if (stop < total) {
            const vma = p.mm.vmas.lookup(a + stop * P)!;
            const allowed = !vma.isSpecial && (write ? vma.writable : vma.readable);
            const rule = allowed ? followPage(m.mm, p.mm, (a + stop * P) / P, gupFlags) : -1;
            // The fast path stopped: the rule refuses the page too, or it is the zero page (left to the slow path).
            expect(
              rule === -1 || rule === 0,
              `page ${stop}: fast path stopped where the rule gives ${rule}`,
            ).toBe(true);
          }
          // Undo what the fast path took, then everything must be as before.
          for (let i = 0; i < stop; i++) {
            m.mm.mem.refcount[out[i]!]!--;
            if ((gupFlags & Foll.PIN) !== 0) m.mm.mem.pincount[out[i]!]!--;
          }
          expect(m.mm.mem.refcount).toEqual(before);
          expect(m.mm.mem.pincount).toEqual(pinsBefore);
          for (const pin of pins) p.unpinUserPages(pin);
          m.checkInvariants();
        },
      ),
      { numRuns: 200 },
    );
  });
});
