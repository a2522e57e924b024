/**
 * Checking Chrome Trace Event JSON in a real browser: a self-contained HTML page that parses each
 * trace with `JSON.parse` and checks it with the very source of {@link validateChromeTrace} (the
 * rules of Perfetto's JSON importer), and a runner that loads the page in headless Chromium
 * (`--dump-dom`) and reads the verdicts back. Tooling for tests and CI, not used by the simulation;
 * a Node-only subpath (`@hmm/core/trace-browser`), so the main entry stays free of Node built-ins.
 *
 * @module @hmm/core/trace-browser
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { validateChromeTrace } from './chrome-trace-validate.js';

/** Where Debian's `chromium` package installs the browser. */
export const DEBIAN_CHROMIUM = '/usr/bin/chromium';

/** JSON that is safe inside a `<script>` element (no `</script>`, no `<!--`). */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

/**
 * A page that checks each trace of `traces` (name → trace object or bare event array): its
 * `<pre id="result-<name>">` gets `OK <n> events`, or `FAIL <k> problems` and one problem per line,
 * or `ERROR <message>` if the JSON does not parse. The traces and scripts remove themselves, so the
 * page's DOM afterwards holds only the verdicts. Names must match `[A-Za-z0-9_-]+`.
 */
export function chromeTraceCheckPage(traces: Readonly<Record<string, unknown>>): string {
  const data = Object.entries(traces)
    .map(([name, t]) => {
      if (!/^[A-Za-z0-9_-]+$/.test(name)) throw new Error(`chromeTraceCheckPage: bad trace name '${name}'`);
      return `<script type="application/json" id="trace-${name}">${scriptJson(t)}</script>`;
    })
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

/** The verdicts of a {@link chromeTraceCheckPage} read from the browser's dumped DOM, by trace name. */
export function chromeTraceCheckVerdicts(dom: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of dom.matchAll(/<pre id="result-([^"]+)">([\s\S]*?)<\/pre>/g)) out[m[1]!] = decodeHtml(m[2]!);
  return out;
}

/**
 * Loads a {@link chromeTraceCheckPage} of `traces` in headless Chromium (`browser`, default
 * {@link DEBIAN_CHROMIUM}) and resolves to each trace's verdict. Rejects if the browser fails.
 */
export async function checkChromeTracesInBrowser(
  traces: Readonly<Record<string, unknown>>,
  browser: string = DEBIAN_CHROMIUM,
): Promise<Record<string, string>> {
  const dir = mkdtempSync(join(tmpdir(), 'hmm-trace-check-'));
  try {
    const page = join(dir, 'check.html');
    writeFileSync(page, chromeTraceCheckPage(traces));
    const dom = await new Promise<string>((resolve, reject) => {
      execFile(
        browser,
        [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--no-first-run',
          `--user-data-dir=${join(dir, 'profile')}`,
          '--dump-dom',
          pathToFileURL(page).href,
        ],
        { maxBuffer: 256 * 1024 * 1024, timeout: 300_000 },
        (err, stdout, stderr) => {
          if (err !== null) reject(new Error(`${browser} failed: ${err.message}\n${stderr}`));
          else resolve(stdout);
        },
      );
    });
    return chromeTraceCheckVerdicts(dom);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
