/**
 * Loads traces in a real headless Chromium (Debian's `chromium` package) through a small page that
 * parses each trace with `JSON.parse` and checks it with the very source of `validateChromeTrace`
 * (the rules of Perfetto's JSON importer), then reads the verdicts back from the DOM. Without
 * Chromium the test is skipped, except under CI (`CI` set), where it fails and says to install it.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it, expect } from 'vitest';
import { runTraceScenario } from '../testing/chrome-trace-scenario.js';
import { toChromeTrace } from './chrome-trace.js';
import type { ChromeTrace } from './chrome-trace.js';
import { validateChromeTrace } from './chrome-trace-validate.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);

/** JSON that is safe inside a `<script>` element (no `</script>`, no `<!--`). */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

/**
 * A page that checks each trace: `<pre id="result-<name>">` gets `OK <n> events`, or
 * `FAIL <k> problems` and one problem per line. The traces and scripts remove themselves, so the
 * dumped DOM holds only the verdicts.
 */
function checkerPage(traces: Record<string, unknown>): string {
  const data = Object.entries(traces)
    .map(([name, t]) => `<script type="application/json" id="trace-${name}">${scriptJson(t)}</script>`)
    .join('\n');
  // `__name` is the helper some TS transpilers call to keep function names: make it harmless.
  const script = `
var __name = function (f) { return f; };
var validateChromeTrace = (${validateChromeTrace.toString()});
document.querySelectorAll('script[type="application/json"]').forEach(function (el) {
  var out = document.createElement('pre');
  out.id = 'result-' + el.id.slice('trace-'.length);
  try {
    var trace = JSON.parse(el.textContent);
    var problems = validateChromeTrace(trace);
    var n = Array.isArray(trace) ? trace.length : trace.traceEvents.length;
    out.textContent = problems.length === 0
      ? 'OK ' + n + ' events'
      : 'FAIL ' + problems.length + ' problems\\n' + problems.join('\\n');
  } catch (e) {
    out.textContent = 'ERROR ' + e;
  }
  el.remove();
  document.body.appendChild(out);
});
document.currentScript.remove();
`;
  return `<!doctype html>\n<html><head><meta charset="utf-8"><title>trace check</title></head><body>\n${data}\n<script>${script}</script>\n</body></html>\n`;
}

function decodeHtml(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&nbsp;/g, '\u00a0')
    .replace(/&amp;/g, '&');
}

/** Runs the page in headless Chromium and returns each `result-<name>` text. */
async function runInChromium(traces: Record<string, unknown>): Promise<Record<string, string>> {
  const dir = mkdtempSync(join(tmpdir(), 'hmm-trace-check-'));
  try {
    const page = join(dir, 'check.html');
    writeFileSync(page, checkerPage(traces));
    const dom = await new Promise<string>((resolve, reject) => {
      execFile(
        CHROMIUM,
        [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--no-first-run',
          `--user-data-dir=${join(dir, 'profile')}`,
          '--dump-dom',
          pathToFileURL(page).href,
        ],
        { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 },
        (err, stdout, stderr) => {
          if (err !== null) reject(new Error(`chromium failed: ${err.message}\n${stderr}`));
          else resolve(stdout);
        },
      );
    });
    const out: Record<string, string> = {};
    for (const m of dom.matchAll(/<pre id="result-([^"]+)">([\s\S]*?)<\/pre>/g))
      out[m[1]!] = decodeHtml(m[2]!);
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

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
