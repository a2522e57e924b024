/**
 * A structural check of Chrome Trace Event JSON against what Perfetto's JSON importer (and
 * chrome://tracing) needs, so that a trace written by `toChromeTrace` is known to load.
 *
 * {@link validateChromeTrace} is one self-contained function with no imports and no outside
 * references: its source (`validateChromeTrace.toString()`) runs unchanged in a browser page, which
 * is how the Chromium test applies the same rules in a real browser.
 *
 * @module
 */

/**
 * Problems a Perfetto / chrome://tracing JSON importer would reject or drop, `[]` when none. Each
 * problem names the event (`event #<index> (<ph> "<name>")`) and the rule. The rules:
 *
 * - The trace is an array of events or an object with a `traceEvents` array; `displayTimeUnit`, if
 *   present, is `"ms"` or `"ns"`.
 * - Every event is an object with `name` (a non-empty string without control characters), `ph` (one
 *   of `B E X i I R C M b e n s t f`), `ts` (a finite number ≥ 0, microseconds), and integer `pid`
 *   and `tid` in [0, 2^32). `cat`, if present, is a string; `args`, if present, an object.
 * - `X` has a finite `dur` ≥ 0. On one thread (`pid`, `tid`), `X` slices and `B`/`E` pairs nest:
 *   two slices are disjoint or one contains the other, compared in whole ns as the importer does
 *   (`trunc(ts × 1000)`, end = start + `trunc(dur × 1000)`). Every `E` closes a `B` of the same
 *   name on its thread; every `B` is closed.
 * - `b`/`e`/`n` (async) have an `id` (or `id2.local`/`id2.global`); an `e` closes an open `b` with the
 *   same `pid`, `cat`, id and name; every `b` is closed.
 * - `i`/`I`/`R` scope `s`, if present, is `g`, `p` or `t`.
 * - `C` has `args` with at least one entry, every value a finite number.
 * - `M` is `process_name`/`thread_name` with a non-empty string `args.name`,
 *   `process_sort_index`/`thread_sort_index` with an integer `args.sort_index`, or
 *   `process_labels` with a string `args.labels`; each given once per process or thread.
 * - `s`/`t`/`f` (flows) have an `id` that is a whole number or a string of hex digits (the importer
 *   reads string ids as hex); a flow (`cat`, `name`, id) starts once with `s` before its `t`/`f`,
 *   in time order; `s`, `t` and `f` with `bp: "e"` lie inside a slice of their thread (start ≤ ts <
 *   end), an `f` without `bp` before a slice that starts on its thread; `bp`, if present, is `"e"`.
 * - Every process used has a `process_name` and every thread that holds slices, thread-scoped
 *   instants or flow events has a `thread_name`.
 *
 * At most 200 problems are listed (then one line counting the rest).
 */
export function validateChromeTrace(trace: unknown): string[] {
  const problems: string[] = [];
  let dropped = 0;
  const report = (msg: string): void => {
    if (problems.length < 200) problems.push(msg);
    else dropped++;
  };
  const isObj = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  const hasControl = (s: string): boolean => {
    for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) < 0x20) return true;
    return false;
  };
  const isU32 = (v: unknown): v is number =>
    typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  const toNs = (us: number): number => Math.trunc(us * 1000);

  let list: unknown[];
  if (Array.isArray(trace)) list = trace;
  else if (isObj(trace) && Array.isArray(trace['traceEvents'])) {
    list = trace['traceEvents'];
    const unit = trace['displayTimeUnit'];
    if (unit !== undefined && unit !== 'ms' && unit !== 'ns') {
      report(`displayTimeUnit must be "ms" or "ns", got ${JSON.stringify(unit)}`);
    }
  } else {
    return ['the trace must be an array of events or an object with a traceEvents array'];
  }

  const PHASES = 'BEXiIRCMbenstf';
  const THREAD_SCOPED = 'XBEstf';
  interface Interval {
    s: number;
    e: number;
    idx: number;
  }
  interface Timed {
    idx: number;
    ph: string;
    ns: number;
    ev: Record<string, unknown>;
  }
  const intervals = new Map<string, Interval[]>();
  const starts = new Map<string, number[]>();
  const pending: Timed[] = [];
  const procNamed = new Map<string, string>();
  const threadNamed = new Map<string, string>();
  const metaSeen = new Set<string>();
  const pidsUsed = new Map<number, number>();
  const threadsUsed = new Map<string, number>();

  for (let idx = 0; idx < list.length; idx++) {
    const ev = list[idx];
    if (!isObj(ev)) {
      report(`event #${idx}: must be an object`);
      continue;
    }
    const ph = ev['ph'];
    const name = ev['name'];
    const label = (): string =>
      `event #${idx} (${typeof ph === 'string' ? ph : '?'} ${JSON.stringify(typeof name === 'string' ? name : String(name))})`;
    let ok = true;
    const bad = (why: string): void => {
      report(`${label()}: ${why}`);
      ok = false;
    };
    if (typeof ph !== 'string' || ph.length !== 1 || !PHASES.includes(ph)) {
      bad(`ph ${JSON.stringify(ph)} is not a phase the importer reads (${PHASES.split('').join(' ')})`);
      continue;
    }
    if (typeof name !== 'string' || name.length === 0) bad('name must be a non-empty string');
    else if (hasControl(name)) bad('name contains a control character');
    const ts = ev['ts'];
    if (typeof ts !== 'number' || !Number.isFinite(ts) || ts < 0) {
      bad(`ts must be a finite number ≥ 0 (microseconds), got ${JSON.stringify(ts) ?? String(ts)}`);
    }
    const pid = ev['pid'];
    const tid = ev['tid'];
    if (!isU32(pid)) bad(`pid must be an integer in [0, 2^32), got ${JSON.stringify(pid) ?? 'nothing'}`);
    if (!isU32(tid)) bad(`tid must be an integer in [0, 2^32), got ${JSON.stringify(tid) ?? 'nothing'}`);
    const cat = ev['cat'];
    if (cat !== undefined && (typeof cat !== 'string' || hasControl(cat))) bad('cat must be a string');
    const args = ev['args'];
    if (args !== undefined && !isObj(args)) bad('args must be an object');
    const bp = ev['bp'];
    if (bp !== undefined && bp !== 'e') bad(`bp must be "e", got ${JSON.stringify(bp)}`);
    if (!ok) continue;
    const tsNs = toNs(ts as number);
    const threadKey = `${String(pid)}/${String(tid)}`;

    if (ph === 'M') {
      const a = isObj(args) ? args : {};
      if (name === 'process_name' || name === 'thread_name') {
        if (typeof a['name'] !== 'string' || a['name'].length === 0) {
          bad(`${String(name)} needs a non-empty string args.name`);
          continue;
        }
      } else if (name === 'process_sort_index' || name === 'thread_sort_index') {
        if (!Number.isInteger(a['sort_index'])) {
          bad(`${String(name)} needs an integer args.sort_index`);
          continue;
        }
      } else if (name === 'process_labels') {
        if (typeof a['labels'] !== 'string') {
          bad('process_labels needs a string args.labels');
          continue;
        }
      } else {
        bad(
          'metadata must be process_name, thread_name, process_sort_index, thread_sort_index or process_labels',
        );
        continue;
      }
      const scope = String(name).startsWith('process') ? String(pid) : threadKey;
      const key = `${String(name)}@${scope}`;
      if (metaSeen.has(key)) bad(`${String(name)} given twice for ${scope}`);
      metaSeen.add(key);
      if (name === 'process_name') procNamed.set(String(pid), a['name'] as string);
      if (name === 'thread_name') threadNamed.set(threadKey, a['name'] as string);
      continue;
    }

    if (!pidsUsed.has(pid as number)) pidsUsed.set(pid as number, idx);
    const scopeS = ev['s'];
    if (ph === 'i' || ph === 'I' || ph === 'R') {
      if (scopeS !== undefined && scopeS !== 'g' && scopeS !== 'p' && scopeS !== 't') {
        bad(`instant scope s must be "g", "p" or "t", got ${JSON.stringify(scopeS)}`);
        continue;
      }
      if ((scopeS === undefined || scopeS === 't') && !threadsUsed.has(threadKey))
        threadsUsed.set(threadKey, idx);
      continue;
    }
    if (THREAD_SCOPED.includes(ph) && !threadsUsed.has(threadKey)) threadsUsed.set(threadKey, idx);

    if (ph === 'X') {
      const dur = ev['dur'];
      if (typeof dur !== 'number' || !Number.isFinite(dur) || dur < 0) {
        bad(`an X slice needs a finite dur ≥ 0, got ${JSON.stringify(dur) ?? 'nothing'}`);
        continue;
      }
      let l = intervals.get(threadKey);
      if (l === undefined) intervals.set(threadKey, (l = []));
      const s = tsNs;
      l.push({ s, e: s + toNs(dur), idx });
      let st = starts.get(threadKey);
      if (st === undefined) starts.set(threadKey, (st = []));
      st.push(s);
      continue;
    }
    if (ph === 'C') {
      const a = isObj(args) ? args : undefined;
      if (a === undefined || Object.keys(a).length === 0) {
        bad('a counter needs args with at least one numeric value');
        continue;
      }
      for (const [k, v] of Object.entries(a)) {
        if (typeof v !== 'number' || !Number.isFinite(v))
          bad(`counter arg ${JSON.stringify(k)} is not a finite number`);
      }
      continue;
    }
    if (ph === 'b' || ph === 'e' || ph === 'n') {
      const id = ev['id'];
      const id2 = ev['id2'];
      const hasId =
        (typeof id === 'string' && id.length > 0) ||
        (typeof id === 'number' && Number.isFinite(id)) ||
        (isObj(id2) && (id2['local'] !== undefined || id2['global'] !== undefined));
      if (!hasId) {
        bad('an async event needs an id (or id2.local / id2.global); the importer drops it');
        continue;
      }
    }
    if (ph === 's' || ph === 't' || ph === 'f') {
      const id = ev['id'];
      const okId =
        (typeof id === 'number' && Number.isInteger(id) && id >= 0) ||
        (typeof id === 'string' && /^(0x)?[0-9a-fA-F]+$/.test(id));
      if (!okId) {
        bad(
          `a flow event needs an id that is a whole number or a hex string, got ${JSON.stringify(id) ?? 'nothing'}`,
        );
        continue;
      }
    }
    pending.push({ idx, ph, ns: tsNs, ev });
  }

  // Everything that depends on time order, stable by index for equal times.
  pending.sort((a, b) => a.ns - b.ns || a.idx - b.idx);
  const openB = new Map<string, { name: unknown; idx: number; s: number }[]>();
  const openAsync = new Map<string, { name: unknown; idx: number }[]>();
  const flowOpen = new Map<string, number>();
  const flowChecks: Timed[] = [];
  const labelOf = (t: Timed): string => `event #${t.idx} (${t.ph} ${JSON.stringify(t.ev['name'])})`;
  for (const t of pending) {
    const ev = t.ev;
    const threadKey = `${String(ev['pid'])}/${String(ev['tid'])}`;
    if (t.ph === 'B') {
      let st = openB.get(threadKey);
      if (st === undefined) openB.set(threadKey, (st = []));
      st.push({ name: ev['name'], idx: t.idx, s: t.ns });
    } else if (t.ph === 'E') {
      const st = openB.get(threadKey);
      const top = st?.pop();
      if (top === undefined) report(`${labelOf(t)}: E without an open B on thread ${threadKey}`);
      else {
        if (top.name !== ev['name']) {
          report(
            `${labelOf(t)}: E closes B ${JSON.stringify(top.name)} (event #${top.idx}) with another name`,
          );
        }
        let l = intervals.get(threadKey);
        if (l === undefined) intervals.set(threadKey, (l = []));
        l.push({ s: top.s, e: t.ns, idx: top.idx });
        let ss = starts.get(threadKey);
        if (ss === undefined) starts.set(threadKey, (ss = []));
        ss.push(top.s);
      }
    } else if (t.ph === 'b' || t.ph === 'e') {
      const id2 = isObj(ev['id2']) ? (ev['id2'] as Record<string, unknown>) : {};
      const id =
        ev['id'] !== undefined ? `id:${String(ev['id'])}` : `id2:${String(id2['global'] ?? id2['local'])}`;
      const key = `${String(ev['pid'])}|${String(ev['cat'] ?? '')}|${id}`;
      if (t.ph === 'b') {
        let st = openAsync.get(key);
        if (st === undefined) openAsync.set(key, (st = []));
        st.push({ name: ev['name'], idx: t.idx });
      } else {
        const top = openAsync.get(key)?.pop();
        if (top === undefined) report(`${labelOf(t)}: async end without an open begin (pid, cat, id ${key})`);
        else if (top.name !== ev['name']) {
          report(
            `${labelOf(t)}: async end closes begin ${JSON.stringify(top.name)} (event #${top.idx}) with another name`,
          );
        }
      }
    } else if (t.ph === 's' || t.ph === 't' || t.ph === 'f') {
      const key = `${String(ev['cat'] ?? '')}|${String(ev['name'])}|${String(ev['id'])}`;
      if (t.ph === 's') {
        if (flowOpen.has(key))
          report(`${labelOf(t)}: flow ${key} started again while open (event #${flowOpen.get(key)})`);
        flowOpen.set(key, t.idx);
      } else if (!flowOpen.has(key)) {
        report(
          `${labelOf(t)}: flow ${t.ph === 't' ? 'step' : 'end'} without a start before it (flow ${key})`,
        );
      } else if (t.ph === 'f') flowOpen.delete(key);
      flowChecks.push(t);
    }
  }
  for (const [threadKey, st] of openB) {
    for (const b of st)
      report(`event #${b.idx} (B ${JSON.stringify(b.name)}): B without an E on thread ${threadKey}`);
  }
  for (const st of openAsync.values()) {
    for (const b of st) report(`event #${b.idx} (b ${JSON.stringify(b.name)}): async begin without an end`);
  }

  // Nesting of slices per thread.
  for (const [threadKey, l] of intervals) {
    l.sort((a, b) => a.s - b.s || b.e - a.e || a.idx - b.idx);
    const stack: Interval[] = [];
    for (const cur of l) {
      while (stack.length > 0 && stack[stack.length - 1]!.e <= cur.s) stack.pop();
      const top = stack[stack.length - 1];
      if (top !== undefined && cur.e > top.e) {
        report(
          `event #${cur.idx}: slice [${cur.s}, ${cur.e}) ns overlaps slice [${top.s}, ${top.e}) ns (event #${top.idx}) on thread ${threadKey} without nesting; use async b/e with an id or another tid`,
        );
        continue;
      }
      stack.push(cur);
    }
  }

  // Flow binding: per thread, slices by start with the running maximum of their ends, so "some
  // slice contains t" is one binary search.
  const coverage = new Map<string, { s: number[]; maxE: number[] }>();
  const covers = (threadKey: string, t: number): boolean => {
    let c = coverage.get(threadKey);
    if (c === undefined) {
      const l = [...(intervals.get(threadKey) ?? [])].sort((a, b) => a.s - b.s);
      const maxE: number[] = [];
      l.forEach((iv, k) => maxE.push(k === 0 ? iv.e : Math.max(maxE[k - 1]!, iv.e)));
      c = { s: l.map((iv) => iv.s), maxE };
      coverage.set(threadKey, c);
    }
    let lo = 0;
    let hi = c.s.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (c.s[mid]! <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && c.maxE[lo - 1]! > t;
  };
  for (const t of flowChecks) {
    const ev = t.ev;
    const threadKey = `${String(ev['pid'])}/${String(ev['tid'])}`;
    if (t.ph === 'f' && ev['bp'] !== 'e') {
      const st = starts.get(threadKey) ?? [];
      if (!st.some((s) => s >= t.ns)) {
        report(
          `${labelOf(t)}: flow end (without bp "e") has no slice starting after it on thread ${threadKey}`,
        );
      }
    } else if (!covers(threadKey, t.ns)) {
      report(`${labelOf(t)}: flow event lies inside no slice of thread ${threadKey}, so it binds to nothing`);
    }
  }

  // Names.
  for (const [pid, idx] of pidsUsed) {
    if (!procNamed.has(String(pid))) report(`event #${idx}: pid ${pid} has no process_name metadata`);
  }
  for (const [threadKey, idx] of threadsUsed) {
    if (!threadNamed.has(threadKey)) report(`event #${idx}: thread ${threadKey} has no thread_name metadata`);
  }
  if (dropped > 0) problems.push(`… and ${dropped} more problems`);
  return problems;
}
