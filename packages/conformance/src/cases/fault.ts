/**
 * The fault-injection group (catalog: FAULT_CASES, beyond the kernel's tests): a failure injected at
 * each point a mirroring driver must recover from. A device-page allocation fails (`failNextAlloc`),
 * the copy engine stops mid-transfer (`TestDevice.failNextCopy`), the exporter's BAR is full,
 * another subscriber's invalidate callback throws, the OOM reaper invalidates non-blockably, the
 * process exits with device faults in flight, and the device is removed with pages in its memory
 * (`ConformanceTarget.removeDevice`).
 *
 * Each case checks that no byte is lost (the CPU data compared), that no frame is leaked (once the
 * process has exited and its device file is closed, no RAM or device frame is left in use that was
 * not in use before the case), and the runner's sanitizer watches every device opened.
 *
 * @module
 */
import {
  DevPerm,
  HmmError,
  MmuNotifierSubscriptions,
  P2pMapType,
  Prot,
  isHmmError,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
} from '@hmm/core';
import type { Machine, MmuIntervalNotifier, Process } from '@hmm/core';
import { ConformanceFailure, check, checkEqual, checkRejects, withSeed } from '../assert.js';
import { SnapshotByte } from '../target.js';
import type { ConformanceTarget, TestDevice } from '../target.js';
import {
  P,
  PRIV_ANON,
  RW,
  checkInts,
  checkMachine,
  checkUnmapped,
  command,
  devicePerms,
  hasDeviceMemory,
  ints,
} from './common.js';
import type { CaseContext, CaseFn } from './common.js';
import { PAGES, checkBytes, checkRevoked, checkType, pattern, withP2p } from './p2p.js';

/** Pages of the buffers of the fault cases. */
const N = 64;

/** Seeds the exit case runs over, at most (each builds a target). */
const EXIT_SEEDS = 5;

/**
 * Errors an in-flight device command may end with when its process exits under it: the fault
 * failed (EFAULT), the mm is gone (ESRCH, or EINVAL as dmirror's `mmget_not_zero` check returns),
 * the device context went away (ENODEV), or the command was flushed from a queue an earlier
 * failure stopped (EIO, e.g. an RDMA work request flushed from a QP in the error state).
 */
const EXIT_ERRNOS: readonly string[] = ['EFAULT', 'ESRCH', 'ENODEV', 'EINVAL', 'EIO'];

/** The snapshot byte of a writable page in this device's private memory. */
const LOCAL_WRITE = SnapshotByte.DEV_PRIVATE_LOCAL | SnapshotByte.WRITE;

/** The fixture of a fault case: the target's machine, a process and its open device. */
interface FaultFixture {
  readonly t: ConformanceTarget;
  readonly m: Machine;
  readonly p: Process;
  readonly dev: TestDevice;
}

/** Frames in use now: RAM and device. */
function framesInUse(m: Machine): { ram: Set<number>; device: Set<number> } {
  return { ram: new Set(m.mm.mem.allocatedFrames()), device: new Set(m.mm.mem.allocatedDeviceFrames()) };
}

/** Fails if a frame is in use now that was not in `before`. */
function checkNoLeak(m: Machine, before: { ram: Set<number>; device: Set<number> }, when: string): void {
  const ram = m.mm.mem.allocatedFrames().filter((f) => !before.ram.has(f));
  const device = m.mm.mem.allocatedDeviceFrames().filter((f) => !before.device.has(f));
  const list = (fs: number[]): string => fs.slice(0, 8).join(', ') + (fs.length > 8 ? ', ...' : '');
  check(ram.length === 0, `no RAM frame is leaked ${when}: ${ram.length} still in use (${list(ram)})`);
  check(
    device.length === 0,
    `no device frame is leaked ${when}: ${device.length} still in use (${list(device)})`,
  );
}

/**
 * Runs `body` in a task with a new process and the target's device opened for it (`before` runs
 * first, between the process's creation and the open); then closes the device, exits the process
 * and checks that no frame is leaked and the machine is consistent.
 */
async function withFaultDevice(
  t: ConformanceTarget,
  body: (f: FaultFixture) => Promise<void>,
  before?: (p: Process) => Promise<void>,
): Promise<void> {
  const m = t.machine;
  const inUse = framesInUse(m);
  await m.sched.runTask('fault-tests', async () => {
    const p = m.createProcess('fault-tests');
    await before?.(p);
    const dev = await t.open(p);
    try {
      await body({ t, m, p, dev });
    } finally {
      await dev.close();
      if (!p.exited) await p.exit(0);
    }
  });
  checkNoLeak(m, inUse, 'once the process has exited and its device file is closed');
  checkMachine(m);
}

/** A private anonymous buffer of `npages` pages holding `int[i] = f(i)`. */
async function intBuffer(p: Process, npages: number, f: (i: number) => number): Promise<number> {
  const a = await p.mmap({ length: npages * P, prot: RW, flags: PRIV_ANON });
  await p.write(a, ints((npages * P) / 4, f));
  return a;
}

/** Where the pages are: how many are in this device's memory; fails on a page that is neither there nor in RAM. */
async function devicePages(dev: TestDevice, a: number, npages: number, what: string): Promise<number> {
  const snap = Array.from(await dev.snapshot(a, npages));
  const odd = snap.findIndex((b) => b !== LOCAL_WRITE && b !== SnapshotByte.WRITE);
  check(
    odd < 0,
    `${what}: every page is either in this device's memory or in RAM, writable (snapshot byte of page ${odd} is 0x${(snap[odd] ?? 0).toString(16)})`,
  );
  return snap.filter((b) => b === LOCAL_WRITE).length;
}

/** Resolves to the command's result, or to its error if it rejects with an `HmmError` (else rethrows). */
async function settle<T>(promise: Promise<T>): Promise<{ ok: T } | { error: HmmError }> {
  try {
    return { ok: await promise };
  } catch (e) {
    if (!isHmmError(e)) throw e;
    return { error: e };
  }
}

/** The target's `removeDevice`, or a failure: the driver declared `fault-injection`. */
function removeDeviceOf(t: ConformanceTarget): () => Promise<void> {
  const remove = t.removeDevice;
  if (typeof remove !== 'function') {
    throw new ConformanceFailure(
      'the driver declares fault-injection, so its ConformanceTarget implements removeDevice()',
    );
  }
  return remove.bind(t);
}

/** The device's `failNextCopy`, or a failure: the driver declared `fault-injection`. */
function failNextCopyOf(dev: TestDevice): (afterPages: number) => void {
  const fail = dev.failNextCopy;
  if (typeof fail !== 'function') {
    throw new ConformanceFailure(
      'the driver declares fault-injection, so its TestDevice implements failNextCopy()',
    );
  }
  return fail.bind(dev);
}

/**
 * Runs the OOM reaper on `p` from a task of its own (the kernel's `oom_reaper` thread) and returns
 * whether it reaped everything. Fails if the driver's invalidate callback slept (core reports it with
 * EINVAL: the callback returned a promise in a non-blockable invalidation).
 */
async function oomReap(m: Machine, p: Process, when: string): Promise<boolean> {
  const reaper = m.sched.spawn('oom_reaper', (): unknown => {
    try {
      return m.oomReap(p);
    } catch (e) {
      return e;
    }
  });
  const r = await reaper.join();
  if (typeof r === 'boolean') return r;
  if (isHmmError(r, 'EINVAL') && /non-blockable/.test(r.message)) {
    throw new ConformanceFailure(
      `the driver's invalidate callback never sleeps in a non-blockable invalidation (the OOM reaper, ${when}): ` +
        `it declines (returns false) or finishes at once; core reported: ${r.message}`,
      {},
      { cause: r },
    );
  }
  throw new ConformanceFailure(
    `the OOM reaper (${when}) ends with true or false, got ${r instanceof Error ? `${r.name}: ${r.message}` : String(r)}`,
    {},
    { cause: r },
  );
}

/** One round of fault.exit_with_faults_in_flight on `t` (seed `seed`). */
async function exitRound(t: ConformanceTarget, seed: number): Promise<void> {
  const m = t.machine;
  const inUse = framesInUse(m);
  await m.sched.runTask('fault-exit', async () => {
    const p = m.createProcess('fault-exit');
    const dev = await t.open(p);
    // The length of a cold READ of N pages on this device: the exit lands within about that long.
    const cal = await intBuffer(p, N, (i) => i);
    const t0 = m.sched.now;
    await dev.read(cal, N);
    const readNs = Math.max(2, Math.ceil(m.sched.now - t0));
    await p.munmap(cal, N * P);
    const bufs = [await intBuffer(p, N, (i) => i + seed), await intBuffer(p, N, (i) => i * 3 + seed)];
    const want = [(i: number) => i + seed, (i: number) => i * 3 + seed];
    // Daemons: a command that never ends is reported below, not as a deadlock of the run.
    const cmds = bufs.map((a, k) =>
      m.sched.spawn(`device-read-${k}`, () => settle(dev.read(a, N)), { daemon: true }),
    );
    await m.sched.sleep(m.sched.random.nextInt(Math.ceil(1.5 * readNs)) + 1);
    await p.exit(0);
    const exited = m.sched.now;
    // Every command in flight ends, well within ten READs' time.
    const deadline = m.sched.now + Math.max(10 * readNs, 10_000_000);
    const step = Math.max(1, Math.ceil(readNs / 20));
    const running = (): number => cmds.filter((c) => c.state !== 'done' && c.state !== 'failed').length;
    while (running() > 0 && m.sched.now < deadline) await m.sched.sleep(step);
    check(
      running() === 0,
      `every device command in flight ends after its process exits (resolves or fails): ${running()} still pending ${m.sched.now - exited} ns later`,
    );
    for (const [k, c] of cmds.entries()) {
      const r = await c.join();
      if ('ok' in r) {
        checkEqual(r.ok.cpages, N, `READ ${k} that completed across the exit: cpages`);
        checkInts(r.ok.data, want[k]!, `READ ${k} that completed across the exit`);
      } else {
        check(
          EXIT_ERRNOS.includes(r.error.code),
          `a READ cut short by the exit fails with one of ${EXIT_ERRNOS.join('/')}, got ${r.error.message}`,
        );
      }
    }
    // A command issued after the exit fails with a typed error; closing the file still works.
    const late = await settle(dev.read(bufs[0]!, 1));
    check('error' in late, 'a device READ issued after the process exited fails');
    await dev.close();
  });
  checkNoLeak(m, inUse, 'once the process has exited with commands in flight and its device file is closed');
  checkMachine(m);
}

/** Implementations of the fault group, by catalogue id. */
export const FAULT_CASES_IMPL: Readonly<Record<string, CaseFn>> = {
  'fault.devmem_alloc_failure': async (t) => {
    await withFaultDevice(t, async ({ p, dev }) => {
      const migrate = command(dev, 'migrateToDevice');
      const a = await intBuffer(p, N, (i) => i);
      command(dev, 'failNextAlloc')();
      const first = await settle(migrate(a, N));
      const onDevice = await devicePages(dev, a, N, 'after MIGRATE_TO_DEV with a failed allocation');
      if ('ok' in first) {
        // The driver recovered (e.g. retried the allocation): then everything moved.
        checkEqual(first.ok.cpages, N, 'MIGRATE_TO_DEV cpages after a recovered allocation failure');
        checkInts(first.ok.data, (i) => i, 'what the device read back');
        checkEqual(onDevice, N, 'pages in device memory after a successful MIGRATE_TO_DEV');
      } else {
        checkEqual(
          first.error.code,
          'ENOENT',
          `MIGRATE_TO_DEV with a failed device-page allocation fails with ENOENT (${first.error.message}); errno`,
        );
        check(onDevice < N, 'MIGRATE_TO_DEV reports ENOENT only when a page stayed in RAM');
      }
      // The device reads every page, wherever it is.
      const r = await dev.read(a, N);
      checkEqual(r.cpages, N, 'device READ after the failed allocation: cpages');
      checkInts(r.data, (i) => i, 'device READ after the failed allocation');
      // A later migration, with allocations working again, moves everything.
      const again = await migrate(a, N);
      checkEqual(again.cpages, N, 'the later MIGRATE_TO_DEV: cpages');
      checkInts(again.data, (i) => i, 'what the device read back the second time');
      checkEqual(await devicePages(dev, a, N, 'after the later migration'), N, 'pages in device memory');
      checkInts(await p.read(a, N * P), (i) => i, 'CPU data after the migrations');
      await p.munmap(a, N * P);
    });
  },

  'fault.copy_failure_mid_migration': async (t) => {
    const m = t.machine;
    await withFaultDevice(t, async ({ p, dev }) => {
      const failNextCopy = failNextCopyOf(dev);
      const toDevice = command(dev, 'migrateToDevice');
      const toSystem = command(dev, 'migrateToSystem');
      const a = await intBuffer(p, N, (i) => i);
      // To the device: the copy stops after k pages (seeded).
      const k = 1 + m.sched.random.nextInt(N - 2);
      failNextCopy(k);
      const there = await settle(toDevice(a, N));
      const onDevice = await devicePages(
        dev,
        a,
        N,
        `after MIGRATE_TO_DEV whose copy stopped after ${k} pages`,
      );
      if ('ok' in there) {
        checkEqual(there.ok.cpages, N, 'MIGRATE_TO_DEV cpages after a recovered copy failure');
        checkInts(there.ok.data, (i) => i, 'what the device read back');
      } else {
        check(onDevice < N, `MIGRATE_TO_DEV fails (${there.error.message}) only when a page stayed in RAM`);
      }
      check(onDevice > 0, `the ${k} pages copied before the copy engine failed were migrated`);
      checkInts((await dev.read(a, N)).data, (i) => i, 'device READ after the failed copy to the device');
      // Back to RAM: the copy stops after j pages (seeded); pages not copied stay on the device.
      const j = m.sched.random.nextInt(onDevice);
      failNextCopy(j);
      const back = await settle(toSystem(a, N));
      const left = await devicePages(dev, a, N, `after MIGRATE_TO_SYS whose copy stopped after ${j} pages`);
      if ('ok' in back) {
        checkEqual(
          back.ok.cpages,
          onDevice - left,
          'MIGRATE_TO_SYS cpages: the pages that left device memory',
        );
      }
      check(left <= onDevice, 'MIGRATE_TO_SYS moves no page into device memory');
      checkInts((await dev.read(a, N)).data, (i) => i, 'device READ after the failed copy back');
      checkInts(await p.read(a, N * P), (i) => i, 'CPU data after both failed copies');
      // Still readable and writable by both.
      await p.write(
        a,
        ints((N * P) / 4, (i) => 3 * i),
      );
      checkInts(
        (await dev.read(a, N)).data,
        (i) => 3 * i,
        'device READ of what the CPU wrote after the failures',
      );
      checkEqual(
        (
          await dev.write(
            a,
            ints((N * P) / 4, (i) => -i),
          )
        ).cpages,
        N,
        'device WRITE cpages',
      );
      checkInts(await p.read(a, N * P), (i) => -i, 'CPU read of what the device wrote after the failures');
      // A later migration, with the engine healthy, moves everything.
      const again = await toDevice(a, N);
      checkEqual(again.cpages, N, 'the later MIGRATE_TO_DEV: cpages');
      checkInts(again.data, (i) => -i, 'what the device read back after the later migration');
      checkInts(await p.read(a, N * P), (i) => -i, 'CPU data at the end');
      await p.munmap(a, N * P);
    });
  },

  'fault.bar_exhausted': async (t, ctx) => {
    await withP2p(t, ctx, async ({ p, exp, a, data, importer }) => {
      // An importer maps the object in the BAR before the BAR fills up.
      const early = await importer('peer');
      checkBytes(await early.read(a, PAGES * P), data, 'early importer read');
      checkType(early, P2pMapType.BUS_ADDR, 'early importer, before the BAR filled up');
      // The object leaves the BAR, which then fills up: the early importer follows it to system memory.
      checkEqual(await exp.move('system'), 'system', 'move to system memory');
      checkRevoked(early, 'early importer after the move to system memory');
      exp.exhaustBar();
      checkEqual(await exp.move('bar'), 'system', 'a move to the full BAR falls back to system memory');
      checkBytes(await early.read(a, PAGES * P), data, 'early importer read with the BAR full');
      checkType(early, P2pMapType.NOT_SUPPORTED, 'early importer with the BAR full');
      // A fresh importer maps system memory too; the CPU writes: neither reads stale data.
      const fresh = await importer('peer');
      checkBytes(await fresh.read(a, PAGES * P), data, 'fresh importer read with the BAR full');
      checkType(fresh, P2pMapType.NOT_SUPPORTED, 'fresh importer with the BAR full');
      const newer = pattern(PAGES * P, 3);
      await p.write(a, newer);
      checkBytes(await early.read(a, PAGES * P), newer, 'early importer read after the CPU wrote');
      checkBytes(await fresh.read(a, PAGES * P), newer, 'fresh importer read after the CPU wrote');
      // The BAR is freed: the object moves back, both importers follow it to the BAR.
      exp.releaseBar();
      checkEqual(await exp.move('bar'), 'bar', 'move to the BAR once it has room');
      checkRevoked(early, 'early importer after the move to the BAR');
      checkRevoked(fresh, 'fresh importer after the move to the BAR');
      checkBytes(await early.read(a, PAGES * P), newer, 'early importer read after the move to the BAR');
      checkBytes(await fresh.read(a, PAGES * P), newer, 'fresh importer read after the move to the BAR');
      checkType(early, P2pMapType.BUS_ADDR, 'early importer once the BAR has room');
      checkType(fresh, P2pMapType.BUS_ADDR, 'fresh importer once the BAR has room');
      checkBytes(await p.read(a, PAGES * P), newer, 'CPU read at the end');
      await fresh.close();
      await early.close();
    });
  },

  'fault.callback_throws': async (t, ctx) => {
    const half = N / 2;
    let a = 0;
    const calls = { before: 0, after: 0 };
    let before: MmuIntervalNotifier | null = null;
    await withFaultDevice(
      t,
      async ({ p, dev }) => {
        // A second subscriber, after the driver's: its callback rejects (a typed error of its own).
        const after = mmuIntervalNotifierInsert(p.mm, a, N * P, {
          invalidate: async () => {
            calls.after++;
            throw new HmmError('EIO', 'conformance: an invalidate callback that rejects');
          },
        });
        const r = await dev.read(a, N);
        checkInts(r.data, (i) => i, 'device READ before any invalidation');
        // mprotect of the first half: resolves, and the driver was reached.
        const n0 = { ...calls };
        await p.mprotect(a, half * P, Prot.READ);
        check(
          calls.before > n0.before && calls.after > n0.after,
          'the throwing subscribers were called for the mprotect',
        );
        const perms = devicePerms(dev, a, half);
        if (perms !== null) {
          const w = perms.findIndex((x) => (x & DevPerm.WRITE) !== 0);
          check(
            w < 0,
            `after mprotect(PROT_READ) the device maps no page of the range writable (page ${w} is)`,
          );
        }
        await checkRejects(
          dev.write(
            a,
            ints(P / 4, () => 5),
          ),
          'EPERM',
          'device WRITE to the half made read-only while other callbacks threw',
        );
        // One READ per VMA (mprotect split the buffer; some devices map one VMA per object).
        checkInts((await dev.read(a, half)).data, (i) => i, 'device READ of the read-only half');
        checkInts(
          (await dev.read(a + half * P, half)).data,
          (i) => i + (half * P) / 4,
          'device READ of the writable half',
        );
        const reread = devicePerms(dev, a, half);
        if (reread !== null) {
          const w = reread.findIndex((x) => (x & DevPerm.WRITE) !== 0);
          check(w < 0, `a READ after mprotect(PROT_READ) maps no page of the range writable (page ${w} is)`);
        }
        // munmap of the second half: resolves, the driver drops its mappings.
        const n1 = { ...calls };
        await p.munmap(a + half * P, half * P);
        check(
          calls.before > n1.before && calls.after > n1.after,
          'the throwing subscribers were called for the munmap',
        );
        checkUnmapped(dev, a + half * P, half, 'munmap with throwing callbacks still invalidates the device');
        await checkRejects(dev.read(a + half * P, 1), 'EFAULT', 'device READ of the unmapped half');
        // A migration (its MIGRATE invalidation reaches the throwing callbacks too).
        if (hasDeviceMemory(ctx)) {
          const n2 = { ...calls };
          const m2 = await command(dev, 'migrateToDevice')(a, half);
          checkEqual(m2.cpages, half, 'MIGRATE_TO_DEV cpages with throwing callbacks');
          checkInts(m2.data, (i) => i, 'what the device read back');
          check(
            calls.before > n2.before && calls.after > n2.after,
            'the throwing subscribers were called for the migration',
          );
        }
        checkInts(await p.read(a, half * P), (i) => i, 'CPU data of the first half');
        // Core contained every failure and recorded it as a typed error.
        const failures = MmuNotifierSubscriptions.of(p.mm).callbackFailures.filter(
          (f) => f.sub === before || f.sub === after,
        );
        check(failures.length >= 4, `core recorded the contained callback failures (${failures.length})`);
        for (const f of failures) {
          check(f.error instanceof HmmError, 'a contained callback failure is a typed HmmError');
          if (f.sub === after) checkEqual(f.error.code, 'EIO', 'errno of a contained rejection');
        }
        await mmuIntervalNotifierRemove(after);
        await mmuIntervalNotifierRemove(before!);
        await p.munmap(a, half * P);
      },
      async (p) => {
        a = await intBuffer(p, N, (i) => i);
        // A subscriber before the driver's whose callback throws synchronously.
        before = mmuIntervalNotifierInsert(p.mm, a, N * P, {
          invalidate: () => {
            calls.before++;
            throw new Error('conformance: an invalidate callback that throws');
          },
        });
      },
    );
  },

  'fault.oom_reap': async (t) => {
    const m = t.machine;
    await withFaultDevice(t, async ({ p, dev }) => {
      const a = await intBuffer(p, N, (i) => i);
      const t0 = m.sched.now;
      checkInts((await dev.read(a, N)).data, (i) => i, 'device READ before the OOM reaper');
      const readNs = Math.max(2, Math.ceil(m.sched.now - t0));
      // Round 1: the range mapped by the device, nothing else running.
      let reaped = await oomReap(m, p, 'with the range mapped by the device');
      if (!reaped) {
        checkInts((await dev.read(a, N)).data, (i) => i, 'device READ after a declined reap');
        checkInts(await p.read(a, N * P), (i) => i, 'CPU data after a declined reap');
        // Round 2: a device READ of a cold buffer in flight, the reaper at a seeded moment of it.
        const b = await intBuffer(p, N, (i) => 7 * i);
        const reader = m.sched.spawn('device-read', () => settle(dev.read(b, N)));
        await m.sched.sleep(m.sched.random.nextInt(readNs) + 1);
        reaped = await oomReap(m, p, 'while a device READ faults');
        const r = await reader.join();
        if (!reaped) {
          check(
            'ok' in r,
            `a device READ under a declined reap succeeds${'error' in r ? `, got ${r.error.message}` : ''}`,
          );
          checkInts(r.ok.data, (i) => 7 * i, 'device READ under a declined reap');
          checkInts(await p.read(a, N * P), (i) => i, 'CPU data of the first buffer after a declined reap');
          checkInts(
            await p.read(b, N * P),
            (i) => 7 * i,
            'CPU data of the second buffer after a declined reap',
          );
        }
        await p.munmap(b, N * P);
      }
      // A reap that went through took the victim's memory: the device must not keep any of it.
      if (reaped) checkUnmapped(dev, a, N, 'after the OOM reaper unmapped the range');
      await p.munmap(a, N * P);
    });
  },

  'fault.exit_with_faults_in_flight': async (t, ctx: CaseContext) => {
    const seeds = Math.max(1, Math.min(ctx.seeds, EXIT_SEEDS));
    for (let s = ctx.seed; s < ctx.seed + seeds; s++) {
      await withSeed(s, async () => {
        await exitRound(s === ctx.seed ? t : await ctx.createTarget(s), s);
      });
    }
  },

  'fault.remove_with_pages_migrated': async (t) => {
    const removeDevice = removeDeviceOf(t);
    await withFaultDevice(t, async ({ m, p, dev }) => {
      const deviceBefore = new Set(m.mm.mem.allocatedDeviceFrames());
      const a = await intBuffer(p, N, (i) => i);
      const r = await command(dev, 'migrateToDevice')(a, N);
      checkEqual(r.cpages, N, 'MIGRATE_TO_DEV cpages');
      await removeDevice();
      const left = m.mm.mem.allocatedDeviceFrames().filter((f) => !deviceBefore.has(f));
      checkEqual(left.length, 0, 'device frames still in use after the device was removed');
      checkInts(await p.read(a, N * P), (i) => i, 'CPU read after the device was removed');
      // A second removal fails cleanly and changes nothing.
      const ram = m.mm.mem.allocatedFrames().length;
      const again = await settle(removeDevice());
      check(
        'error' in again && (again.error.code === 'EINVAL' || again.error.code === 'ENODEV'),
        `a second removal of the device fails with EINVAL or ENODEV${'error' in again ? `, got ${again.error.message}` : ', but it succeeded'}`,
      );
      checkEqual(m.mm.mem.allocatedFrames().length, ram, 'RAM frames in use after the second removal');
      // The removed device no longer reaches memory: its commands fail with a typed error.
      const late = await settle(dev.read(a, N));
      check('error' in late, 'a device READ after the device was removed fails');
      checkUnmapped(dev, a, N, 'after the device was removed');
      await p.write(
        a,
        ints((N * P) / 4, (i) => 2 * i),
      );
      checkInts(await p.read(a, N * P), (i) => 2 * i, 'CPU write and read after the device was removed');
      await p.munmap(a, N * P);
    });
  },
};
