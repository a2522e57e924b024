import { describe, expect, it } from 'vitest';
import { ConformanceFailure } from './assert.js';
import { findCase } from './catalog.js';
import type { Variant } from './catalog.js';
import { formatReport, reportToJson, reportToJunit, reproduceCommand, xmlEscape } from './report.js';
import type { ConformanceReportJson } from './report.js';
import { CASE_STATUSES } from './runner.js';
import type { CaseResult, CaseStatus, ConformanceReport } from './runner.js';

const NASTY = `bytes <0x20> & "quotes" 'too'\nline two\u0001`;

function result(
  id: string,
  variant: Variant,
  status: CaseStatus,
  extra: { reason?: string; contract?: string; seed?: number } = {},
): CaseResult {
  const info = findCase(id)!;
  const ran = status !== 'skipped' && status !== 'expected-skip';
  const seed = ran ? (extra.seed ?? 1) : null;
  const error =
    extra.contract === undefined
      ? null
      : new ConformanceFailure(extra.contract, { caseId: id, kernelRef: info.kernelRef, variant, seed });
  return {
    id,
    kernelRef: info.kernelRef,
    title: info.title,
    variant,
    status,
    reason: extra.reason ?? null,
    error,
    contract: error?.contract ?? null,
    seed,
    simNs: ran ? 1000 : null,
    replay:
      status === 'failed'
        ? {
            seed: seed ?? 1,
            seeds: 1,
            reproduced: true,
            tail: [{ type: 'sched.block', ts: 1500, task: 3, name: 'hmm-tests', on: 'mutex driver' }],
            events: null,
          }
        : null,
  };
}

function report(results: CaseResult[]): ConformanceReport {
  const counts = { total: results.length } as Record<CaseStatus, number> & { total: number };
  for (const s of CASE_STATUSES) counts[s] = results.filter((r) => r.status === s).length;
  return {
    driver: 'demo',
    seed: 1,
    seeds: 20,
    results,
    counts,
    ok: counts.failed + counts['unexpected-pass'] === 0,
    passed: results.filter((r) => r.status === 'passed'),
    failed: results.filter((r) => r.status === 'failed'),
    skipped: results.filter((r) => r.status === 'skipped'),
    lastTrace: null,
  };
}

const SAMPLE = report([
  result('hmm.open_close', 'device-private', 'passed'),
  result('hmm.anon_read', 'device-private', 'failed', { contract: NASTY, seed: 7 }),
  result('hmm.anon_write', 'device-private', 'unexpected-pass', {
    reason: 'thought broken',
    contract: 'stale expectation',
  }),
  result('hmm.file_read', 'device-private', 'expected-fail', { reason: 'known', contract: 'file READ' }),
  result('hmm.file_write', 'device-private', 'expected-skip', { reason: 'hangs' }),
  result('hmm.migrate', 'device-private', 'skipped', {
    reason: "driver 'demo' lacks capability device-private",
  }),
]);

describe('formatReport', () => {
  it('lists failures first with the contract, kernel reference and the command reproducing them', () => {
    const text = formatReport(SAMPLE, { module: './drv.js' });
    expect(text).toContain(
      [
        'Failed (1):',
        '  hmm.anon_read [device-private] (hmm-tests.c:anon_read)',
        `      contract broken: ${NASTY}`,
        '      kernel reference: hmm-tests.c:anon_read',
        '      reproduce: hmm-conformance run ./drv.js --only hmm.anon_read --seed 7 --seeds 1 --trace trace.json',
        '      replay at seed 7 (1 seed): the replay failed the same way; its last 1 events:',
        '               1.500 µs  sched.block        task=3 name=hmm-tests on=mutex driver',
      ].join('\n'),
    );
    expect(text).toContain(
      [
        'Unexpected passes (expected to fail, but passed) (1):',
        '  hmm.anon_write [device-private] (hmm-tests.c:anon_write)',
        '      expectation: thought broken',
        '      contract broken: stale expectation',
      ].join('\n'),
    );
    expect(text).toContain('Passed (1):\n  hmm.open_close [device-private] (hmm-tests.c:open_close)');
    expect(text).toContain(
      "Skipped (1):\n  hmm.migrate [device-private]: driver 'demo' lacks capability device-private",
    );
    expect(text).toContain('Skipped by expectation (1):\n  hmm.file_write [device-private]: hangs');
    // Sections in order: what needs attention first.
    const order = ['Failed', 'Unexpected passes', 'Expected failures', 'Passed', 'Skipped by', 'Skipped ('];
    const at = order.map((h) => text.indexOf(`\n${h}`));
    expect(at.every((i) => i > 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(
      text.endsWith(
        '6 cases: 1 passed, 1 failed, 1 unexpected-pass, 1 expected-fail, 1 expected-skip, 1 skipped\nResult: FAILED\n',
      ),
    ).toBe(true);
    expect(formatReport(report([SAMPLE.results[0]!]))).toContain('1 cases: 1 passed\nResult: OK');
    expect(reproduceCommand(SAMPLE.results[1]!)).toBe(
      'hmm-conformance run <driver-module> --only hmm.anon_read --seed 7 --seeds 1 --trace trace.json',
    );
    // Without a reproducing replay the command names the seed only.
    expect(reproduceCommand({ ...SAMPLE.results[1]!, replay: null })).toBe(
      'hmm-conformance run <driver-module> --only hmm.anon_read --seed 7',
    );
  });
});

describe('reportToJson', () => {
  it('round-trips every result with its status, contract, message and seed', () => {
    const parsed = JSON.parse(reportToJson(SAMPLE)) as ConformanceReportJson;
    expect(parsed).toMatchObject({ driver: 'demo', ok: false, seed: 1, seeds: 20 });
    expect(parsed.counts).toEqual(SAMPLE.counts);
    expect(parsed.results.map((r) => r.status)).toEqual(SAMPLE.results.map((r) => r.status));
    expect(parsed.results[1]).toEqual({
      id: 'hmm.anon_read',
      variant: 'device-private',
      kernelRef: 'hmm-tests.c:anon_read',
      title: findCase('hmm.anon_read')!.title,
      status: 'failed',
      reason: null,
      contract: NASTY,
      message: `hmm.anon_read [device-private] (hmm-tests.c:anon_read) seed 7: ${NASTY}`,
      seed: 7,
      simNs: 1000,
      replay: {
        seed: 7,
        seeds: 1,
        reproduced: true,
        tail: ['       1.500 µs  sched.block        task=3 name=hmm-tests on=mutex driver'],
      },
    });
    expect(parsed.results[4]).toMatchObject({ status: 'expected-skip', reason: 'hangs', seed: null });
  });
});

/** A tiny XML reader: throws unless `xml` is well-formed; returns the element tree. */
interface El {
  name: string;
  attrs: Record<string, string>;
  children: El[];
  text: string;
}
function parseXml(xml: string): El {
  const unescape = (s: string): string => {
    if (/&(?!(amp|lt|gt|quot|apos|#\d+);)/.test(s)) throw new Error(`bare & in ${s}`);
    return s.replace(/&(amp|lt|gt|quot|apos|#\d+);/g, (_, e: string) =>
      e.startsWith('#')
        ? String.fromCharCode(Number(e.slice(1)))
        : { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[e]!,
    );
  };
  let rest = xml.replace(/^<\?xml version="1\.0" encoding="UTF-8"\?>\n/, '');
  if (rest === xml) throw new Error('no XML declaration');
  const root: El = { name: '#root', attrs: {}, children: [], text: '' };
  const stack: El[] = [root];
  const tag = /^<(\/?)([A-Za-z_][\w.-]*)((?:\s+[A-Za-z_][\w.-]*="[^"<]*")*)\s*(\/?)>/;
  while (rest.length > 0) {
    const lt = rest.indexOf('<');
    const text = lt < 0 ? rest : rest.slice(0, lt);
    if (text.includes('>')) throw new Error(`stray > in text`);
    stack.at(-1)!.text += unescape(text);
    if (lt < 0) break;
    rest = rest.slice(lt);
    const m = tag.exec(rest);
    if (m === null) throw new Error(`malformed tag at ${rest.slice(0, 40)}`);
    rest = rest.slice(m[0].length);
    const [, close, name, attrText, selfClose] = m;
    if (close === '/') {
      const top = stack.pop()!;
      if (top.name !== name) throw new Error(`</${name}> closes <${top.name}>`);
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of attrText!.matchAll(/([A-Za-z_][\w.-]*)="([^"<]*)"/g)) {
      if (a[1]! in attrs) throw new Error(`duplicate attribute ${a[1]}`);
      attrs[a[1]!] = unescape(a[2]!);
    }
    const el: El = { name: name!, attrs, children: [], text: '' };
    stack.at(-1)!.children.push(el);
    if (selfClose !== '/') stack.push(el);
  }
  if (stack.length !== 1) throw new Error(`unclosed <${stack.at(-1)!.name}>`);
  if (root.children.length !== 1 || root.text.trim() !== '') throw new Error('not one root element');
  return root.children[0]!;
}

describe('reportToJunit', () => {
  it('is well-formed JUnit XML whose counts match the testcases', () => {
    const xml = reportToJunit(SAMPLE, { module: './drv.js' });
    const suites = parseXml(xml);
    expect(suites.name).toBe('testsuites');
    const [suite] = suites.children;
    expect(suite!.name).toBe('testsuite');
    expect(suite!.attrs.name).toBe('@hmm/conformance: demo');
    const cases = suite!.children.filter((c) => c.name === 'testcase');
    const withChild = (n: string): El[] => cases.filter((c) => c.children.some((x) => x.name === n));
    for (const el of [suites, suite!]) {
      expect(el.attrs).toMatchObject({
        tests: String(cases.length),
        failures: String(withChild('failure').length),
        skipped: String(withChild('skipped').length),
        errors: '0',
      });
    }
    expect(cases).toHaveLength(6);
    expect(withChild('failure').map((c) => c.attrs.name)).toEqual([
      'hmm.anon_read [device-private]',
      'hmm.anon_write [device-private]',
    ]);
    expect(withChild('skipped')).toHaveLength(3);
    expect(cases[0]!.attrs).toEqual({
      classname: 'hmm-conformance.mirror',
      name: 'hmm.open_close [device-private]',
    });
    expect(cases[5]!.attrs.classname).toBe('hmm-conformance.migrate');
    // The failure's message is the contract, escaped and restored exactly (minus the control char).
    const failure = cases[1]!.children[0]!;
    const clean = NASTY.replace('\u0001', '');
    expect(failure.attrs.message).toBe(clean);
    expect(failure.attrs.type).toBe('ConformanceFailure');
    expect(failure.text).toBe(
      `hmm.anon_read [device-private] (hmm-tests.c:anon_read) seed 7: ${clean}\n` +
        'reproduce: hmm-conformance run ./drv.js --only hmm.anon_read --seed 7 --seeds 1 --trace trace.json',
    );
    expect(cases[2]!.children[0]!.attrs.type).toBe('UnexpectedPass');
    expect(cases[3]!.children[0]!.attrs.message).toBe('expected failure (known): file READ');
    expect(cases[5]!.children[0]!.attrs.message).toBe("driver 'demo' lacks capability device-private");
    // Deterministic: no time attributes.
    expect(xml).not.toMatch(/time=/);
  });

  it('escapes every XML special character, and the checker rejects malformed XML', () => {
    expect(xmlEscape(`<a href="x">&'\n</a>\u0000`)).toBe(
      '&lt;a href=&quot;x&quot;&gt;&amp;&apos;&#10;&lt;/a&gt;',
    );
    const head = '<?xml version="1.0" encoding="UTF-8"?>\n';
    expect(() => parseXml(`${head}<a><b></a></b>`)).toThrow('closes');
    expect(() => parseXml(`${head}<a m="1 & 2"/>`)).toThrow('bare &');
    expect(() => parseXml(`${head}<a>`)).toThrow('unclosed');
    expect(parseXml(`${head}<a m="&lt;"><b/>x</a>`)).toMatchObject({ attrs: { m: '<' }, text: 'x' });
  });
});
