import { describe, expect, it } from 'vitest';
import { CASES } from './catalog.js';
import { main } from './cli.js';

function run(args: string[]): { code: number; text: string } {
  let text = '';
  const code = main(args, (s) => (text += s));
  return { code, text };
}

describe('hmm-conformance list', () => {
  it('prints every case with id, kernel reference, capabilities and variants as JSON', () => {
    const { code, text } = run(['list', '--json']);
    expect(code).toBe(0);
    const parsed = JSON.parse(text) as {
      cases: {
        id: string;
        kernelRef: string;
        requires: string[];
        requiresAny: string[];
        variants: string[];
      }[];
    };
    // The 38 test functions of hmm-tests.c, then the 7 peer-to-peer cases.
    expect(parsed.cases).toHaveLength(38 + 7);
    expect(parsed.cases.filter((c) => c.id.startsWith('p2p.'))).toHaveLength(7);
    expect(parsed.cases[1]).toMatchObject({
      id: 'hmm.anon_read',
      kernelRef: 'hmm-tests.c:anon_read',
      requires: ['mirror'],
    });
    expect(parsed.cases.find((c) => c.id === 'hmm2.snapshot')).toBeDefined();
    expect(new Set(parsed.cases.map((c) => c.id)).size).toBe(parsed.cases.length);
    for (const c of parsed.cases) {
      if (c.id.startsWith('p2p.')) {
        expect(c.variants).toEqual(['device-private']);
        expect(c.requires).toEqual([]);
        expect(c.requiresAny).toEqual(['p2p-exporter', 'p2p-importer']);
        expect(c.kernelRef).toMatch(/p2p_map/);
      } else expect(c.variants).toEqual(['device-private', 'device-coherent']);
    }
  });

  it('prints a table, and usage errors exit with 2', () => {
    const t = run(['list']);
    expect(t.code).toBe(0);
    expect(t.text).toContain('hmm.anon_teardown');
    expect(t.text).toContain('p2p-exporter|p2p-importer');
    expect(t.text).toContain(`${CASES.length} cases`);
    expect(run(['frobnicate']).code).toBe(2);
    expect(run([]).code).toBe(2);
    expect(run(['list', '--bogus']).code).toBe(2);
    expect(run(['--help']).code).toBe(0);
  });
});
