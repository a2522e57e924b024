/**
 * The case-count audit: every `hmm-tests.c` function that needs neither huge pages nor hugetlbfs is
 * implemented and runs in both variants; the others are listed with the reason.
 */
import { describe, expect, it } from 'vitest';
import { CASES } from './catalog.js';
import { IMPLEMENTATIONS, groupOf } from './cases/index.js';

const kernel = CASES.filter((c) => c.kernelRef?.startsWith('hmm-tests.c:') === true);

describe('catalogue audit', () => {
  it('lists the 38 test functions of hmm-tests.c, 26 of them runnable in both variants', () => {
    expect(kernel).toHaveLength(38);
    const runnable = kernel.filter((c) => c.unsupported === null);
    const huge = kernel.filter((c) => c.unsupported !== null);
    expect(runnable).toHaveLength(26);
    for (const c of runnable) {
      expect(IMPLEMENTATIONS[c.id], c.id).toBeTypeOf('function');
      expect(c.variants, c.id).toEqual(['device-private', 'device-coherent']);
    }
    // The 12 left out need THP or hugetlbfs, and say so.
    expect(huge).toHaveLength(12);
    for (const c of huge) expect(c.unsupported, c.id).toMatch(/huge pages|hugetlbfs/);
  });

  it('implements every case beyond the kernel tests, each in its group, with a kernel reference', () => {
    for (const c of CASES.filter((x) => !kernel.includes(x))) {
      expect(IMPLEMENTATIONS[c.id], c.id).toBeTypeOf('function');
      expect(c.kernelRef, c.id).toBeTruthy();
      expect(c.id.startsWith(`${groupOf(c)}.`), `${c.id} in group ${groupOf(c)}`).toBe(true);
    }
  });

  it('has unique ids', () => {
    expect(new Set(CASES.map((c) => c.id)).size).toBe(CASES.length);
  });
});
