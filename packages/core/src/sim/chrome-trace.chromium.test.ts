/**
 * Loads traces in a real headless Chromium (Debian's `chromium` package) through a small page that
 * parses each trace with `JSON.parse` and checks it with the very source of `validateChromeTrace`
 * (the rules of Perfetto's JSON importer), then reads the verdicts back from the DOM. Without
 * Chromium the test is skipped, except under CI (`CI` set), where it fails and says to install it.
 */
import { existsSync } from 'node:fs';
import { describe, it, expect } from 'vitest';
import { runTraceScenario } from '../testing/chrome-trace-scenario.js';
import { toChromeTrace } from './chrome-trace.js';
import type { ChromeTrace } from './chrome-trace.js';
import { validateChromeTrace } from './chrome-trace-validate.js';
import { DEBIAN_CHROMIUM, checkChromeTracesInBrowser } from './chrome-trace-browser.js';

const CHROMIUM = DEBIAN_CHROMIUM;
const haveChromium = existsSync(CHROMIUM);
const runInChromium = (traces: Record<string, unknown>): Promise<Record<string, string>> =>
  checkChromeTracesInBrowser(traces, CHROMIUM);

/** A copy of `t` with the problems a real exporter bug could cause. */
function broken(t: ChromeTrace): ChromeTrace {
  const events = t.traceEvents.map((e) => ({ ...e }));
  const x = events.find((e) => e.ph === 'X' && e.name === 'map')!;
  events.push({ ...x, name: 'overlapping map', ts: x.ts + x.dur! / 2 }); // does not nest
  const b = events.find((e) => e.ph === 'b')!;
  delete b.id; // async without id
  const c = events.find((e) => e.ph === 'C')!;
  c.args = { pages: 'many' }; // non-numeric counter
  const name = events.find((e) => e.ph === 'M' && e.name === 'thread_name')!;
  name.args = {}; // metadata without a name
  return { ...t, traceEvents: events };
}

describe('a trace in headless Chromium', () => {
  if (!haveChromium && process.env['CI'] !== undefined) {
    it('needs Chromium', () => {
      throw new Error(
        `${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium) to run the trace check in a real browser`,
      );
    });
  }

  it.skipIf(!haveChromium)(
    haveChromium
      ? 'loads without problems, and the same checker reports a broken trace'
      : `loads without problems (skipped: ${CHROMIUM} not found; apt-get install -y chromium)`,
    async () => {
      const { events } = await runTraceScenario(1);
      const good = toChromeTrace(events, { title: 'chromium check' });
      const bad = broken(good);
      const expectedBad = validateChromeTrace(bad);
      expect(validateChromeTrace(good)).toEqual([]);
      expect(expectedBad.length).toBeGreaterThanOrEqual(4);

      const result = await runInChromium({ good, bad, bare: good.traceEvents });
      expect(result['good']).toBe(`OK ${good.traceEvents.length} events`);
      expect(result['bare']).toBe(`OK ${good.traceEvents.length} events`);
      // The browser ran the same rules: the same problems, word for word.
      expect(result['bad']).toBe(`FAIL ${expectedBad.length} problems\n${expectedBad.join('\n')}`);
      expect(result['bad']).toMatch(/without nesting/);
      expect(result['bad']).toMatch(/async event needs an id/);
      expect(result['bad']).toMatch(/counter arg "pages" is not a finite number/);
      expect(result['bad']).toMatch(/thread_name needs a non-empty string args.name/);
    },
    180_000,
  );
});
