/**
 * The race group: seeded interleavings of a device fault with CPU invalidations, aimed at the
 * window the interval-notifier sequence protocol exists for. A driver faults a range in a loop
 * (`mmu_interval_read_begin`, `hmm_range_fault`, take the driver lock,
 * `mmu_interval_read_retry`, commit); an invalidation that lands after the walk and before the
 * commit must make it walk again. The cases install the core's race-injection point
 * (`MmContext.onRangeFaultDone`), which runs an invalidation right after a walk returns, in the
 * faulting task, and so lands it in that window every time; the seed picks which walk and which
 * pages. A driver that skips `mmu_interval_read_retry`, forgets `mmu_interval_set_seq` in its
 * invalidate callback, or maps pages before the walk ends commits a frame the invalidation took
 * away: the data checks and the sanitizer (stale mapping) catch it. The livelock case runs an
 * invalidation after every walk and checks that the fault gives up within a bounded time.
 *
 * @module
 */
import { Madv, isHmmError } from '@hmm/core';
import type { HmmRange, Machine, Process } from '@hmm/core';
import { ConformanceFailure, check, checkEqual, withSeed } from '../assert.js';
import type { ConformanceTarget, TestDevice } from '../target.js';
import { P, PRIV_ANON, RW, checkUnmapped, ints, withDevice } from './common.js';
import type { CaseContext, CaseFn } from './common.js';

/** Pages of a race buffer (small: the race is per walk, not per page). */
const RACE_PAGES = 32;
/** Bytes of a race buffer. */
const RACE_BYTES = RACE_PAGES * P;
/** Ints per page. */
const PAGE_INTS = P / 4;

/** What one injection point saw: the walks it matched and the injections it ran. */
interface Injection {
  /** Walks over the buffer that returned. */
  walks: number;
  /** Invalidations injected. */
  fired: number;
  /** Removes the injection point. */
  remove(): void;
}

/**
 * Installs the race-injection point on `m` for walks of `p` that overlap [addr, addr + bytes):
 * `action` runs after the walks selected by `select` (walk index from 0 → inject?), with the part
 * of the walked range inside the buffer.
 */
function injectAfterWalk(
  ctx: CaseContext,
  m: Machine,
  p: Process,
  addr: number,
  bytes: number,
  select: (walk: number) => boolean,
  action: (start: number, end: number, range: HmmRange) => Promise<void>,
): Injection {
  const mmCtx = m.mm;
  if (mmCtx.onRangeFaultDone !== null) {
    throw new Error('@hmm/conformance: a race injection is already installed');
  }
  let busy = false;
  const inj: Injection = {
    walks: 0,
    fired: 0,
    remove: () => {
      mmCtx.onRangeFaultDone = null;
    },
  };
  mmCtx.onRangeFaultDone = async (range) => {
    if (busy || range.notifier.mm !== p.mm) return;
    const start = Math.max(range.start, addr);
    const end = Math.min(range.end, addr + bytes);
    if (start >= end) return;
    // Whatever the driver mapped before this walk must be sound now: a mapping committed from an
    // earlier, invalidated walk would be overwritten by the next commit before any device access.
    ctx.sanitize();
    const walk = inj.walks++;
    if (!select(walk)) return;
    busy = true;
    try {
      inj.fired++;
      await action(start, end, range);
    } finally {
      busy = false;
    }
  };
  return inj;
}

/** A sub-range of [start, end) (page aligned, at least one page) drawn from `m`'s seeded random. */
function drawPages(m: Machine, start: number, end: number): [number, number] {
  const n = (end - start) / P;
  const lo = m.sched.random.nextInt(n);
  const hi = lo + 1 + m.sched.random.nextInt(n - lo);
  return [start + lo * P, start + hi * P];
}

/** Int `i` of the buffer written for seed `c`. */
const val = (c: number, i: number): number => ((c << 20) ^ (i * 7 + 1)) | 0;

/**
 * Runs `body` once per seed of the case (from `ctx.seed`, `ctx.seeds` of them), each on a fresh
 * target built with that seed (the first one is `t`), and reports a failure at its seed.
 */
async function overSeeds(
  t: ConformanceTarget,
  ctx: CaseContext,
  body: (t: ConformanceTarget, seed: number) => Promise<void>,
): Promise<void> {
  for (let seed = ctx.seed; seed < ctx.seed + ctx.seeds; seed++) {
    await withSeed(seed, async () => {
      const target = seed === ctx.seed ? t : await ctx.createTarget(seed);
      await body(target, seed);
      // A violation is reported at the seed that caused it (the runner checks again at the end).
      const v = ctx.sanitize();
      if (v.length > 0) {
        throw new ConformanceFailure(
          `the driver keeps the mirroring contract (the sanitizer found ${v.length} violation(s); first: ${v[0]!.message})`,
          {},
          { cause: v[0] },
        );
      }
    });
  }
}

/** Checks that the injection ran: the driver walked the buffer with `hmm_range_fault`. */
function checkFired(inj: Injection, what: string): void {
  check(
    inj.fired > 0,
    `${what}: a mirror faults its device range with hmm_range_fault (the race injection after the walk never ran: ${inj.walks} walk(s) of the buffer)`,
  );
}

/**
 * Runs the device command `f` with the injection installed, removes the injection, and checks that
 * it ran: the command's result.
 */
async function racing<T>(inj: Injection, what: string, f: () => Promise<T>): Promise<T> {
  let r: T;
  try {
    r = await f();
  } finally {
    inj.remove();
  }
  checkFired(inj, what);
  return r;
}

/**
 * Checks `data` page by page: an untouched page (`touched[pg] === 0`) holds `before`; a touched page
 * holds either `before` or `after` in whole, as a read ordered before or after the invalidation.
 */
function checkBeforeOrAfter(
  data: Uint8Array,
  touched: Uint8Array,
  before: (i: number) => number,
  after: (i: number) => number,
  what: string,
): void {
  const v = new Int32Array(data.buffer, data.byteOffset, data.byteLength >> 2);
  for (let pg = 0; pg < touched.length; pg++) {
    const base = pg * PAGE_INTS;
    const late = touched[pg] !== 0 && v[base] === after(base) && before(base) !== after(base);
    for (let k = 0; k < PAGE_INTS; k++) {
      const got = v[base + k]!;
      const exp = late ? after(base + k) : before(base + k);
      check(
        got === exp,
        `${what}: page ${pg} int ${k} is ${got}, expected ${exp}: ${touched[pg] !== 0 ? 'a page the invalidation hit reads in whole as before or after it' : 'a page the invalidation did not hit keeps its data'}`,
      );
    }
  }
}

/** Marks the pages of [start, end) in `touched` (indexes from `base`). */
function touch(touched: Uint8Array, base: number, start: number, end: number): void {
  touched.fill(1, (start - base) / P, (end - base) / P);
}

/** The touched pages as `[a, b) [c, d)` for messages. */
function spans(touched: Uint8Array): string {
  const out: string[] = [];
  for (let i = 0; i < touched.length; i++) {
    if (touched[i] === 0 || (i > 0 && touched[i - 1] !== 0)) continue;
    let j = i;
    while (j < touched.length && touched[j] !== 0) j++;
    out.push(`[${i}, ${j})`);
  }
  return out.join(' ') || 'none';
}

/** Checks `data` int by int against `want` over pages [from, to). */
function checkPages(
  data: Uint8Array,
  from: number,
  to: number,
  want: (i: number) => number,
  what: string,
): void {
  const v = new Int32Array(data.buffer, data.byteOffset, data.byteLength >> 2);
  for (let i = from * PAGE_INTS; i < to * PAGE_INTS; i++) {
    if (v[i] !== want(i)) {
      check(
        false,
        `${what}: page ${Math.floor(i / PAGE_INTS)} int ${i % PAGE_INTS} is ${v[i]}, expected ${want(i)}`,
      );
    }
  }
}

async function read(dev: TestDevice, a: number, what: string): Promise<Uint8Array> {
  const r = await dev.read(a, RACE_PAGES);
  checkEqual(r.cpages, RACE_PAGES, `${what}: cpages`);
  return r.data;
}

/**
 * The buffer of a race case: [a, a + RACE_BYTES) filled with `val(c, i)`, and the race injection
 * installed: after each of the first 1 or 2 walks (drawn from the seed) it draws a run of the walked
 * pages, marks it in `touched` and runs `invalidate(a, start, end)` on it.
 */
async function raceBuffer(
  ctx: CaseContext,
  m: Machine,
  p: Process,
  c: number,
  invalidate: (a: number, start: number, end: number) => Promise<void>,
): Promise<{ a: number; touched: Uint8Array; inj: Injection }> {
  const a = await p.mmap({ length: RACE_BYTES, prot: RW, flags: PRIV_ANON });
  await p.write(
    a,
    ints(RACE_BYTES / 4, (i) => val(c, i)),
  );
  const nth = m.sched.random.nextInt(2);
  const touched = new Uint8Array(RACE_PAGES);
  const inj = injectAfterWalk(
    ctx,
    m,
    p,
    a,
    RACE_BYTES,
    (w) => w <= nth,
    async (s, e) => {
      const [zs, ze] = drawPages(m, s, e);
      touch(touched, a, zs, ze);
      await invalidate(a, zs, ze);
    },
  );
  return { a, touched, inj };
}

/** Simulated time an invalidation storm lasts: ten times the kernel's fault budget (`HMM_RANGE_DEFAULT_TIMEOUT`). */
export const STORM_NS = 10_000_000_000;
/** Simulated time each injected invalidation of the storm takes. */
export const STORM_STEP_NS = 1_000_000;

/** The race group's cases, by catalogue id. */
export const RACE_CASES_IMPL: Readonly<Record<string, CaseFn>> = {
  'race.dontneed_read': (t, ctx) =>
    overSeeds(t, ctx, async (target, c) => {
      const m = target.machine;
      await withDevice(target, async ({ p, dev }) => {
        const {
          a,
          touched: zapped,
          inj,
        } = await raceBuffer(ctx, m, p, c, (_a, zs, ze) => p.madvise(zs, ze - zs, Madv.DONTNEED));
        const what = 'device READ racing MADV_DONTNEED';
        const first = await racing(inj, what, () => read(dev, a, what));
        const old = (i: number): number => val(c, i);
        const now = (i: number): number => (zapped[Math.floor(i / PAGE_INTS)] !== 0 ? 0 : val(c, i));
        checkBeforeOrAfter(first, zapped, old, () => 0, what);
        // No stale mapping survived: the device now reads the zapped pages as zeros.
        checkPages(
          await read(dev, a, 'device READ after the race'),
          0,
          RACE_PAGES,
          now,
          `device READ after MADV_DONTNEED of pages ${spans(zapped)} landed between the walk and the commit`,
        );
        checkPages(await p.read(a, RACE_BYTES), 0, RACE_PAGES, now, 'CPU read after the race');
        await p.munmap(a, RACE_BYTES);
        checkUnmapped(dev, a, RACE_PAGES, 'munmap invalidates the device mappings');
      });
    }),

  'race.dontneed_write': (t, ctx) =>
    overSeeds(t, ctx, async (target, c) => {
      const m = target.machine;
      await withDevice(target, async ({ p, dev }) => {
        const {
          a,
          touched: zapped,
          inj,
        } = await raceBuffer(ctx, m, p, c, (_a, zs, ze) => p.madvise(zs, ze - zs, Madv.DONTNEED));
        const data = (i: number): number => ~val(c, i);
        const what = 'device WRITE racing MADV_DONTNEED';
        const r = await racing(inj, what, () => dev.write(a, ints(RACE_BYTES / 4, data)));
        checkEqual(r.cpages, RACE_PAGES, `${what}: cpages`);
        // The zap came before the commit, so the device wrote into the pages that replaced the
        // zapped ones: the CPU sees every byte it wrote. A stale commit writes into freed frames.
        checkPages(
          await p.read(a, RACE_BYTES),
          0,
          RACE_PAGES,
          data,
          `CPU read after a device WRITE whose walk was followed by MADV_DONTNEED of pages ${spans(zapped)}`,
        );
        checkPages(
          await read(dev, a, 'device READ after the race'),
          0,
          RACE_PAGES,
          data,
          'device READ after the race',
        );
        await p.munmap(a, RACE_BYTES);
      });
    }),

  'race.cow_read': (t, ctx) =>
    overSeeds(t, ctx, async (target, c) => {
      const m = target.machine;
      await withDevice(target, async ({ p, dev }) => {
        const fresh = (i: number): number => -val(c, i) - 1;
        // The parent's CPU write breaks COW: new frames, a CLEAR of the old ones.
        const {
          a,
          touched: written,
          inj,
        } = await raceBuffer(ctx, m, p, c, (a, ws, we) => {
          const off = (ws - a) / 4;
          return p.write(
            ws,
            ints((we - ws) / 4, (i) => fresh(off + i)),
          );
        });
        // After fork every page is shared copy-on-write with the child (fork walks nothing).
        const child = await p.fork();
        const what = 'device READ racing a COW break';
        const first = await racing(inj, what, () => read(dev, a, what));
        const now = (i: number): number => (written[Math.floor(i / PAGE_INTS)] !== 0 ? fresh(i) : val(c, i));
        checkBeforeOrAfter(first, written, (i) => val(c, i), fresh, what);
        // The device now reads the parent's new pages, not the frames the child kept.
        checkPages(
          await read(dev, a, 'device READ after the race'),
          0,
          RACE_PAGES,
          now,
          `device READ after the parent's COW write of pages ${spans(written)} landed between the walk and the commit`,
        );
        const task = m.sched.spawn('child', async () => {
          checkPages(
            await child.read(a, RACE_BYTES),
            0,
            RACE_PAGES,
            (i) => val(c, i),
            'the child keeps its data',
          );
          await child.exit(0);
        });
        await task.join();
        await p.munmap(a, RACE_BYTES);
      });
    }),

  'race.livelock': async (t, ctx) => {
    // Not seed-exploring: the storm invalidates after every walk, whatever the interleaving.
    const m = t.machine;
    await withDevice(t, async ({ p, dev }) => {
      const a = await p.mmap({ length: RACE_BYTES, prot: RW, flags: PRIV_ANON });
      await p.write(
        a,
        ints(RACE_BYTES / 4, (i) => i),
      );
      const last = a + RACE_BYTES - P;
      const start = m.sched.now;
      const inj = injectAfterWalk(
        ctx,
        m,
        p,
        a,
        RACE_BYTES,
        () => m.sched.now - start < STORM_NS,
        async () => {
          await m.sched.sleep(STORM_STEP_NS);
          await p.madvise(last, P, Madv.DONTNEED);
        },
      );
      let outcome: string;
      try {
        await dev.read(a, RACE_PAGES);
        outcome = 'it succeeded';
      } catch (e) {
        outcome = isHmmError(e) ? e.code : `it threw ${String(e)}`;
        if (!isHmmError(e)) throw e;
      } finally {
        inj.remove();
      }
      const took = m.sched.now - start;
      checkFired(inj, 'device READ under an invalidation storm');
      check(
        took < STORM_NS && outcome !== 'it succeeded',
        `a device fault invalidated after every walk gives up within a bounded time (the kernel's HMM_RANGE_DEFAULT_TIMEOUT is 1 s): it ended after ${(took / 1e9).toFixed(3)} s of simulated time (${inj.fired} walks invalidated) when the ${STORM_NS / 1e9} s storm ${took < STORM_NS ? 'was still running' : 'stopped'}, ${outcome}`,
      );
      // After the storm the device reads the buffer (the last page was zapped: zeros).
      const after = await read(dev, a, 'device READ after the storm');
      checkPages(after, 0, RACE_PAGES - 1, (i) => i, 'device READ after the storm');
      checkPages(after, RACE_PAGES - 1, RACE_PAGES, () => 0, 'device READ after the storm, zapped page');
      await p.munmap(a, RACE_BYTES);
    });
  },
};
