/**
 * The issue's "must show": the trace the showcase writes loads without problems in a real headless
 * Chromium (Debian's `chromium` package), through a page that checks it with the rules of
 * Perfetto's JSON importer (`@hmm/core`'s `validateChromeTrace`, run in the browser). Without
 * Chromium the test is skipped, except under CI (`CI` set), where it fails and says to install it.
 */
import { existsSync } from 'node:fs';
import { validateChromeTrace } from '@hmm/core';
import { DEBIAN_CHROMIUM, checkChromeTracesInBrowser } from '@hmm/core/trace-browser';
import { describe, expect, it } from 'vitest';
import { SHOWCASE_SCENARIOS, resolveScenarios, runScenarios } from './runner.js';

const haveChromium = existsSync(DEBIAN_CHROMIUM);

describe('the showcase trace in headless Chromium', () => {
  if (!haveChromium && process.env['CI'] !== undefined) {
    it('needs Chromium', () => {
      throw new Error(
        `${DEBIAN_CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)`,
      );
    });
  }

  it.skipIf(!haveChromium)(
    haveChromium
      ? 'loads without problems; a copy with an event without a time is reported'
      : `loads without problems (skipped: ${DEBIAN_CHROMIUM} not found; apt-get install -y chromium)`,
    async () => {
      // The showcase as `hmm-sim showcase` runs it: the scenarios that share one machine, traced.
      const r = await runScenarios(resolveScenarios(SHOWCASE_SCENARIOS), {
        seed: 1,
        shareMachine: true,
        trace: true,
        title: 'showcase',
      });
      const trace = r.trace;
      expect(trace).not.toBeNull();
      expect(r.traced.length).toBeGreaterThanOrEqual(4);
      // Round-trip through the file format the showcase writes.
      const text = JSON.stringify(trace);
      const parsed: unknown = JSON.parse(text);
      expect(validateChromeTrace(parsed)).toEqual([]);
      const n = trace!.traceEvents.length;
      const events = trace!.traceEvents;
      const bad = { ...trace, traceEvents: [...events, { ...events[events.length - 1]!, ts: null }] };
      const verdicts = await checkChromeTracesInBrowser({ showcase: parsed, bad });
      expect(verdicts['showcase']).toBe(`OK ${n} events`);
      expect(verdicts['bad']).toMatch(/^FAIL 1 problems/);
    },
    600_000,
  );
});
