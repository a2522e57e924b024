/**
 * The userptr group (catalog: USERPTR_CASES, beyond the kernel's tests): a driver's user-pointer
 * objects (`ConformanceTarget.userptr`: a GPU userptr BO, an RDMA memory region) against what the
 * CPU does to the memory under them. Each object says how it stays valid: `'pinned'` (frames pinned
 * at registration with FOLL_LONGTERM) or `'mirrored'` (an interval notifier and `hmm_range_fault`
 * before use), and each case holds it to that mode's contract: the data the device sees after a
 * CPU write, a fork with copy-on-write, a munmap and reclaim; what a registration of read-only or
 * unmapped memory does; and that releasing an object gives back every pin, notifier and device
 * translation.
 *
 * Every case ends with the objects released and the process exited, and then checks that no frame
 * and no pin is left that was not there before the case, the machine's invariants, and, for
 * objects that expose their device context (`UserptrHandle.binding`), a clean sanitizer.
 *
 * @module
 */
import {
  HmmSanitizer,
  MmuNotifierSubscriptions,
  Prot,
  Pte,
  RssCounter,
  isHmmError,
  shrinkNode,
} from '@hmm/core';
import type { Machine, Process } from '@hmm/core';
import { ConformanceFailure, check, checkRejects } from '../assert.js';
import type { ConformanceTarget, UserptrHandle, UserptrTarget } from '../target.js';
import { P, PAGE_INTS, PRIV_ANON, RW, checkInts, checkMachine, ints } from './common.js';
import type { CaseFn } from './common.js';

/** Pages of the buffers of the userptr cases. */
const N = 64;
/** Pages of the large object of `userptr.release_unpins`: 4 MiB. */
const BIG = 1024;
/** Registrations `userptr.release_unpins` makes and releases. */
const ROUNDS = 3;

/** Int `i` of the data generation `gen` (distinct for every generation and int, never 0). */
const val = (gen: number, i: number): number => ((gen << 24) ^ (i * 2654435761 + 0x5bd1e995) ^ 1) | 0;

/** Bytes of `npages` pages of generation `gen`. */
const data = (gen: number, npages: number): Uint8Array => ints((npages * P) / 4, (i) => val(gen, i));

/** Frames in use now. */
function framesInUse(m: Machine): Set<number> {
  return new Set([...m.mm.mem.allocatedFrames(), ...m.mm.mem.allocatedDeviceFrames()]);
}

/** A list of frames for a message. */
function list(fs: readonly number[]): string {
  return fs.slice(0, 8).join(', ') + (fs.length > 8 ? ', ...' : '');
}

/** Fails if a frame is in use now that was not in `before`. */
function checkNoLeak(m: Machine, before: Set<number>, when: string): void {
  const left = [...framesInUse(m)].filter((f) => !before.has(f));
  check(left.length === 0, `no frame is leaked ${when}: ${left.length} still in use (${list(left)})`);
}

/** Fails if a frame of `frames` (or any frame, without it) has more pins than in `base`. */
function checkNoPins(m: Machine, base: Uint16Array, when: string, frames?: Iterable<number>): void {
  const pc = m.mm.mem.pincount;
  const over: number[] = [];
  const all = frames ?? pc.keys();
  for (const pfn of all) if (pfn < pc.length && pc[pfn]! > (base[pfn] ?? 0)) over.push(pfn);
  check(
    over.length === 0,
    `no page is left pinned ${when}: ${over.length} frame(s) still pinned (${list(over)})`,
  );
}

/** The frames the CPU maps at the `npages` pages at `addr` of `p` (present PTEs only). */
function cpuFrames(m: Machine, p: Process, addr: number, npages: number): number[] {
  const out: number[] = [];
  if (p.exited) return out;
  const arena = m.mm.arena;
  for (let i = 0; i < npages; i++) {
    const slot = p.mm.pgtable.lookup(addr / P + i);
    if (slot >= 0 && (arena.pteFlags[slot]! & Pte.PRESENT) !== 0) out.push(arena.pteVal[slot]!);
  }
  return out;
}

/** Interval notifiers of `p` overlapping `[addr, addr + bytes)`. */
function notifiersOver(p: Process, addr: number, bytes: number): number {
  const subs = p.mm.notifier;
  if (!(subs instanceof MmuNotifierSubscriptions)) return 0;
  return subs.subscriptions().filter((s) => s.start < addr + bytes && addr < s.end).length;
}

/** What the fixture knows of a live object. */
interface Registered {
  readonly addr: number;
  readonly npages: number;
  /** Frames the CPU mapped in its range at registration (and later checks). */
  readonly frames: Set<number>;
}

/** The fixture of a userptr case. */
interface UserptrFixture {
  readonly m: Machine;
  /** The case's process. */
  readonly p: Process;
  /** Frames in use when the case started (after its process was created). */
  readonly baseline: Set<number>;
  /**
   * Registers `npages` pages at `addr` of the case's process: checks the handle's mode, and that a
   * `write` object can be written; watches its binding with the sanitizer.
   */
  register(addr: number, npages: number, write: boolean): Promise<UserptrHandle>;
  /**
   * Releases `h` and checks that it left nothing: no device translation, no notifier over its range,
   * no pin on a frame it could have held.
   */
  release(h: UserptrHandle): Promise<void>;
  /** Runs `body` in a task of its own (a thread of `child`), then exits `child`. */
  inChild(child: Process, body: () => Promise<void>): Promise<void>;
}

/**
 * Runs a userptr case: a process in a task of the machine's scheduler, every object it leaves
 * released and the process exited afterwards; then no frame or pin left beyond those in use before
 * the case, a clean sanitizer for the objects with a binding, and the machine's invariants.
 */
async function withUserptr(t: ConformanceTarget, body: (f: UserptrFixture) => Promise<void>): Promise<void> {
  const up: UserptrTarget | undefined = t.userptr;
  if (up === undefined) {
    throw new ConformanceFailure(
      'the driver declares the userptr capability, so its target has a `userptr` (UserptrTarget)',
    );
  }
  const m = t.machine;
  const baseline = framesInUse(m);
  const pins = Uint16Array.from(m.mm.mem.pincount);
  // The sanitizer, made when the first object with a binding is registered.
  const sanitizer: { san: HmmSanitizer | null } = { san: null };
  const live = new Map<UserptrHandle, Registered>();
  await m.sched.runTask('userptr', async () => {
    const p = m.createProcess('userptr');
    const f: UserptrFixture = {
      m,
      p,
      baseline,
      register: async (addr, npages, write) => {
        const h = await up.register(p, addr, npages, { write });
        const frames = new Set(cpuFrames(m, p, addr, npages));
        live.set(h, { addr, npages, frames });
        check(
          h.mode === 'pinned' || h.mode === 'mirrored',
          `a userptr object says how it stays valid: mode is 'pinned' or 'mirrored', got ${String(h.mode)}`,
        );
        check(
          !write || typeof h.write === 'function',
          'an object registered with write has a write() (the device writes the whole object)',
        );
        const b = h.binding;
        if (b !== undefined) {
          sanitizer.san ??= new HmmSanitizer(m.mm, 'record');
          sanitizer.san.watch(b.device, b.asid, p.mm, null);
        }
        return h;
      },
      release: async (h) => {
        const r = live.get(h);
        if (r === undefined) throw new Error('@hmm/conformance: releasing an object the case does not hold');
        for (const pfn of cpuFrames(m, p, r.addr, r.npages)) r.frames.add(pfn);
        sanitizer.san?.checkAll();
        const b = h.binding;
        live.delete(h);
        await h.release();
        if (b !== undefined) {
          sanitizer.san?.unwatch(b.device, b.asid);
          let left = 0;
          b.device.findMmu(b.asid)?.forEachEntry(r.addr / P, r.addr / P + r.npages, () => {
            left++;
          });
          check(
            left === 0,
            `release drops the object's device translations: ${left} of ${r.npages} pages still mapped`,
          );
        }
        const subs = p.exited ? 0 : notifiersOver(p, r.addr, r.npages * P);
        check(subs === 0, `release removes the object's interval notifier: ${subs} still over its range`);
        checkNoPins(m, pins, "after release (the object's frames)", r.frames);
      },
      inChild: async (child, fn) => {
        const task = m.sched.spawn(`userptr-child${child.pid}`, async () => {
          try {
            await fn();
          } finally {
            await child.exit(0);
          }
        });
        await task.join();
      },
    };
    // The first failure is the one reported: the case's, else the cleanup's.
    const failure: { error: unknown } | null = await body(f).then(
      () => null,
      (error: unknown) => ({ error }),
    );
    let first = failure;
    // Objects the case left (it failed, or forgot one) are released, then the process exits.
    for (const h of [...live.keys()]) {
      live.delete(h);
      await h.release().catch((error: unknown) => {
        first ??= { error };
      });
    }
    if (!p.exited) {
      await p.exit(0).catch((error: unknown) => {
        first ??= { error };
      });
    }
    if (first !== null) throw first.error;
  });
  checkNoLeak(m, baseline, 'once every object is released and the process has exited');
  checkNoPins(m, pins, 'once every object is released and the process has exited');
  const san = sanitizer.san;
  if (san !== null) {
    san.checkAll();
    const v = san.violations;
    if (v.length > 0) {
      throw new ConformanceFailure(
        `the driver keeps the mirroring contract (the sanitizer found ${v.length} violation(s); first: ${v[0]!.message})`,
        {},
        { cause: v[0] },
      );
    }
  }
  checkMachine(m);
}

/** Checks that each page `pg` of `got` holds generation `gen(pg)`. */
function checkGen(got: Uint8Array, gen: (page: number) => number, what: string): void {
  checkInts(got, (i) => val(gen(Math.floor(i / PAGE_INTS)), i), what);
}

/** A fresh private anonymous RW buffer of `npages` pages holding generation `gen`. */
async function buffer(p: Process, npages: number, gen: number): Promise<number> {
  const a = await p.mmap({ length: npages * P, prot: RW, flags: PRIV_ANON });
  await p.write(a, data(gen, npages));
  return a;
}

/** The device write of `h` (checked present at registration). */
function devWrite(h: UserptrHandle, bytes: Uint8Array): Promise<void> {
  return h.write!(bytes);
}

/** The userptr group's cases, by catalogue id. */
export const USERPTR_CASES_IMPL: Readonly<Record<string, CaseFn>> = {
  'userptr.read_write': (t) =>
    withUserptr(t, async ({ p, register, release }) => {
      const a = await buffer(p, N, 1);
      const h = await register(a, N, true);
      checkGen(await h.read(), () => 1, `device read of a ${h.mode} object sees the CPU data`);
      await p.write(a, data(2, N));
      checkGen(
        await h.read(),
        () => 2,
        `device read of a ${h.mode} object after a CPU write sees the new data`,
      );
      await devWrite(h, data(3, N));
      checkGen(await p.read(a, N * P), () => 3, `the CPU sees the device write of a ${h.mode} object`);
      checkGen(await h.read(), () => 3, `device read of a ${h.mode} object after its own write`);
      await release(h);
      // A read-only object over the same memory.
      const r = await register(a, N, false);
      checkGen(await r.read(), () => 3, `device read of a read-only ${r.mode} object`);
      await p.write(a, data(4, N));
      checkGen(await r.read(), () => 4, `device read of a read-only ${r.mode} object after a CPU write`);
      await release(r);
      checkGen(await p.read(a, N * P), () => 4, 'the CPU data after the release');
      await p.munmap(a, N * P);
    }),

  'userptr.fork_cow': (t) =>
    withUserptr(t, async ({ p, register, release, inChild }) => {
      const a = await buffer(p, N, 1);
      const h = await register(a, N, true);
      checkGen(await h.read(), () => 1, `device read of a ${h.mode} object before fork`);
      const child = await p.fork();
      // The parent writes the first half after fork; the second half stays shared with the child.
      const half = N / 2;
      await p.write(a, data(2, N).subarray(0, half * P));
      const parentHalf = (pg: number): number => (pg < half ? 2 : 1);
      checkGen(
        await h.read(),
        parentHalf,
        `after fork and a parent CPU write, the ${h.mode} object sees the parent's data (${h.mode === 'pinned' ? 'fork copied the pinned pages for the child' : 'the COW break invalidated it'})`,
      );
      // The device writes every page: the parent's pages, never the ones the child still shares.
      await devWrite(h, data(3, N));
      checkGen(await p.read(a, N * P), () => 3, `the parent sees the device write of its ${h.mode} object`);
      checkGen(await h.read(), () => 3, `device read of the ${h.mode} object after its write`);
      await inChild(child, async () => {
        checkGen(
          await child.read(a, N * P),
          () => 1,
          `the child keeps its data: neither the parent's CPU write nor the device write of the parent's ${h.mode} object reaches it`,
        );
      });
      await release(h);
      checkGen(await p.read(a, N * P), () => 3, 'the parent data after the release');
      await p.munmap(a, N * P);
    }),

  'userptr.munmap': (t) =>
    withUserptr(t, async ({ m, p, register, release, baseline }) => {
      const a = await buffer(p, N, 1);
      const h = await register(a, N, true);
      checkGen(await h.read(), () => 1, `device read of a ${h.mode} object before munmap`);
      // Another buffer, placed now (a different address), filled after the munmap: its pages may
      // reuse the freed frames, so a device still reaching those frames would read or write them.
      const other = await p.mmap({ length: N * P, prot: RW, flags: PRIV_ANON });
      await p.munmap(a, N * P);
      await p.write(other, data(7, N));
      if (h.mode === 'mirrored') {
        await checkRejects(
          h.read(),
          'EFAULT',
          'a device read of a mirrored object after munmap of its memory',
        );
        await checkRejects(
          devWrite(h, data(8, N)),
          'EFAULT',
          'a device write of a mirrored object after munmap of its memory',
        );
      } else {
        checkGen(
          await h.read(),
          () => 1,
          'a device read of a pinned object after munmap reads the data as it was (it keeps its frames)',
        );
        await devWrite(h, data(8, N));
        checkGen(await h.read(), () => 8, 'a device read of a pinned object after its write, after munmap');
      }
      checkGen(
        await p.read(other, N * P),
        () => 7,
        `after munmap the ${h.mode} object reaches no other memory: a buffer mapped since keeps its data`,
      );
      await release(h);
      await p.munmap(other, N * P);
      checkNoLeak(m, baseline, 'after munmap and release');
    }),

  'userptr.readonly': (t) =>
    withUserptr(t, async ({ m, p, register, release }) => {
      const a = await buffer(p, N, 1);
      await p.mprotect(a, N * P, Prot.READ);
      const before = framesInUse(m);
      const pins = Uint16Array.from(m.mm.mem.pincount);
      let got: string;
      try {
        const h = await register(a, N, true);
        got = `success (a ${h.mode} object)`;
        await release(h);
      } catch (e) {
        if (!isHmmError(e)) throw e;
        got = e.code;
      }
      check(
        got === 'EFAULT' || got === 'EPERM',
        `a writable registration of PROT_READ memory fails with EFAULT or EPERM, got ${got}`,
      );
      checkNoLeak(m, before, 'by the failed registration');
      checkNoPins(m, pins, 'by the failed registration');
      const subs = notifiersOver(p, a, N * P);
      check(subs === 0, `the failed registration leaves no interval notifier: ${subs} over the range`);
      checkGen(await p.read(a, N * P), () => 1, 'the CPU data after the failed registration');
      // Unreadable memory cannot be registered at all.
      const none = await p.mmap({ length: N * P, prot: Prot.NONE, flags: PRIV_ANON });
      await checkRejects(register(none, N, false), 'EFAULT', 'a registration of PROT_NONE memory');
      const hole = await p.mmap({ length: N * P, prot: RW, flags: PRIV_ANON });
      await p.munmap(hole, N * P);
      await checkRejects(register(hole, N, false), 'EFAULT', 'a registration of unmapped memory');
      // A read-only object of read-only memory works.
      const r = await register(a, N, false);
      checkGen(await r.read(), () => 1, `device read of a read-only ${r.mode} object of PROT_READ memory`);
      await release(r);
      checkGen(await p.read(a, N * P), () => 1, 'the CPU data after the release');
      await p.munmap(none, N * P);
      await p.munmap(a, N * P);
    }),

  'userptr.release_unpins': (t) =>
    withUserptr(t, async ({ m, p, register, release }) => {
      const rss0 = p.mm.rssPages;
      const a = await buffer(p, BIG, 1);
      const rss = p.mm.rssPages;
      const frames = framesInUse(m);
      let gen = 1;
      for (let round = 0; round < ROUNDS; round++) {
        const write = round % 2 === 0;
        const h = await register(a, BIG, write);
        const g = gen;
        checkGen(await h.read(), () => g, `round ${round}: device read of a 4 MiB ${h.mode} object`);
        if (write) {
          gen++;
          await devWrite(h, data(gen, BIG));
        }
        await release(h);
        const g2 = gen;
        checkGen(await p.read(a, BIG * P), () => g2, `round ${round}: the CPU data after the release`);
        checkNoLeak(m, frames, `after round ${round}'s release (only the buffer's own frames)`);
        check(
          p.mm.rssPages === rss,
          `round ${round}: the process's RSS is back after the release: ${p.mm.rssPages} pages, expected ${rss}`,
        );
      }
      await p.munmap(a, BIG * P);
      check(p.mm.rssPages === rss0, `the RSS is back after munmap: ${p.mm.rssPages} pages, expected ${rss0}`);
    }),

  'userptr.reclaim': (t) =>
    withUserptr(t, async ({ m, p, register, release }) => {
      const a = await buffer(p, N, 1);
      const h = await register(a, N, false);
      checkGen(await h.read(), () => 1, `device read of a ${h.mode} object before reclaim`);
      const rss = p.mm.rssPages;
      // Reclaim everything it can, until a pass frees nothing more.
      for (let pass = 0; pass < 8; pass++) {
        if ((await shrinkNode(m.mm, 4 * N)) === 0) break;
      }
      const swapped = p.mm.rss[RssCounter.SWAP]!;
      if (h.mode === 'mirrored') {
        check(
          swapped === N,
          `a mirrored object holds no page reference, so reclaim can swap out all its pages: ${swapped} of ${N} swapped out`,
        );
      } else {
        check(
          swapped === 0 && p.mm.rssPages === rss,
          `reclaim cannot take the pages of a pinned object: ${swapped} of ${N} swapped out, ${p.mm.rssPages} of ${rss} resident`,
        );
      }
      checkGen(await h.read(), () => 1, `device read of a ${h.mode} object after reclaim sees the same data`);
      checkGen(await p.read(a, N * P), () => 1, 'the CPU data after reclaim');
      await p.write(a, data(2, N));
      checkGen(await h.read(), () => 2, `device read of a ${h.mode} object after reclaim and a CPU write`);
      await release(h);
      await p.munmap(a, N * P);
    }),
};
