/**
 * Deliberately broken pieces for tests that prove the checks can fail.
 *
 * @module
 */
import { HmmError, hmmRangeFault, mmuIntervalReadBegin, mmuIntervalReadRetry, PAGE_SIZE } from '@hmm/core';
import type { HmmRange } from '@hmm/core';
import type { FaultLoop } from './dmirror.js';
import type { DmirrorDevice } from './dmirror-device.js';
import type { DmirrorFactoryOptions } from './factory.js';

/**
 * The sequence loop without its `mmuIntervalReadRetry` check: it commits what `hmmRangeFault` saw
 * even if an invalidation landed between the walk and the commit — the bug the protocol prevents.
 */
export const loopWithoutReadRetry: FaultLoop = async (args) => {
  const mm = args.notifier.mm;
  const sched = mm.ctx.sched;
  for (;;) {
    const range: HmmRange = {
      notifier: args.notifier,
      notifierSeq: await mmuIntervalReadBegin(args.notifier),
      start: args.start,
      end: args.end,
      hmmPfns: new Float64Array((args.end - args.start) / 4096),
      defaultFlags: args.defaultFlags,
      pfnFlagsMask: 0,
      devPrivateOwner: args.devPrivateOwner ?? null,
    };
    await mm.mmapLock.read();
    try {
      await hmmRangeFault(range);
    } catch (e) {
      if (e instanceof HmmError && e.code === 'EBUSY') continue;
      throw e;
    } finally {
      mm.mmapLock.readUnlock();
    }
    if (sched.current !== null) await sched.yield();
    await args.driverLock.lock();
    try {
      await args.commit(range); // no mmuIntervalReadRetry here
      return range;
    } finally {
      args.driverLock.unlock();
    }
  }
};

/**
 * The sequence loop without a budget: it retries for as long as invalidations keep landing, with no
 * simulated-time deadline and no retry cap (`HMM_RANGE_DEFAULT_TIMEOUT` forgotten). Under an
 * invalidator that never stops, a device fault never returns.
 */
export const loopWithoutTimeout: FaultLoop = async (args) => {
  const mm = args.notifier.mm;
  const sched = mm.ctx.sched;
  for (;;) {
    const range: HmmRange = {
      notifier: args.notifier,
      notifierSeq: await mmuIntervalReadBegin(args.notifier),
      start: args.start,
      end: args.end,
      hmmPfns: new Float64Array((args.end - args.start) / PAGE_SIZE),
      defaultFlags: args.defaultFlags,
      pfnFlagsMask: 0,
      devPrivateOwner: args.devPrivateOwner ?? null,
    };
    await mm.mmapLock.read();
    try {
      await hmmRangeFault(range);
    } catch (e) {
      if (e instanceof HmmError && e.code === 'EBUSY') continue;
      throw e;
    } finally {
      mm.mmapLock.readUnlock();
    }
    if (sched.current !== null) await sched.yield();
    await args.driverLock.lock();
    try {
      if (mmuIntervalReadRetry(args.notifier, range.notifierSeq)) {
        args.onRetry?.('read-retry');
        continue; // no deadline, no retry cap
      }
      await args.commit(range);
      return range;
    } finally {
      args.driverLock.unlock();
    }
  }
};

/**
 * A loop that installs device entries during the walk: page by page, each page is committed as soon
 * as `hmmRangeFault` has walked it, without the driver lock and before the sequence check. The check
 * at the end only makes it walk (and map) again; between the walk of a page and the end, the device
 * may map a frame an invalidation has already taken away.
 */
export const loopMappingDuringWalk: FaultLoop = async (args) => {
  const mm = args.notifier.mm;
  const sched = mm.ctx.sched;
  const npages = (args.end - args.start) / PAGE_SIZE;
  for (;;) {
    const seq = await mmuIntervalReadBegin(args.notifier);
    const all = new Float64Array(npages);
    let busy = false;
    for (let i = 0; i < npages && !busy; i++) {
      const page: HmmRange = {
        notifier: args.notifier,
        notifierSeq: seq,
        start: args.start + i * PAGE_SIZE,
        end: args.start + (i + 1) * PAGE_SIZE,
        hmmPfns: new Float64Array(1),
        defaultFlags: args.defaultFlags,
        pfnFlagsMask: 0,
        devPrivateOwner: args.devPrivateOwner ?? null,
      };
      await mm.mmapLock.read();
      try {
        await hmmRangeFault(page);
      } catch (e) {
        if (e instanceof HmmError && e.code === 'EBUSY') busy = true;
        else throw e;
      } finally {
        mm.mmapLock.readUnlock();
      }
      if (busy) break;
      all[i] = page.hmmPfns[0]!;
      if (sched.current !== null) await sched.yield();
      await args.commit(page); // mapped mid-walk: no driver lock, no sequence check
    }
    if (busy) continue;
    await args.driverLock.lock();
    try {
      if (mmuIntervalReadRetry(args.notifier, seq)) continue;
      return {
        notifier: args.notifier,
        notifierSeq: seq,
        start: args.start,
        end: args.end,
        hmmPfns: all,
        defaultFlags: args.defaultFlags,
        pfnFlagsMask: 0,
        devPrivateOwner: args.devPrivateOwner ?? null,
      };
    } finally {
      args.driverLock.unlock();
    }
  }
};

/**
 * Breaks a device's copies back to system memory (`'d2h'`): the driver takes a reference on each
 * source device page for the transfer and never drops it, so no device page that ever moved back
 * is freed (the device memory leaks and cannot be released).
 */
export function leakDeviceRefsOnCopyBack(d: DmirrorDevice): void {
  const copy = d.copy.bind(d);
  const mem = d.machine.mm.mem;
  d.copy = async (src, dst, dir) => {
    if (dir === 'd2h') for (const s of src) mem.refcount[s]!++;
    return copy(src, dst, dir);
  };
}

/**
 * Breaks a device's copies back to system memory (`'d2h'`) with an off-by-one: destination `k` gets
 * source `k + 1` (the last one gets the first). A single page still copies right.
 */
export function copyBackWrongBytes(d: DmirrorDevice): void {
  const copy = d.copy.bind(d);
  d.copy = async (src, dst, dir) => {
    if (dir !== 'd2h' || src.length < 2) return copy(src, dst, dir);
    return copy([...src.slice(1), src[0]!], dst, dir);
  };
}

/** One deliberately broken dmirror: the obligation it misses and how it is built. */
export interface BrokenVariant {
  /** Short name. */
  readonly name: string;
  /** The obligation the variant misses. */
  readonly obligation: string;
  /** The factory options that build it. */
  readonly options: DmirrorFactoryOptions;
}

/** The broken variants, each missing exactly one obligation of a mirroring driver. */
export const BROKEN_VARIANTS: readonly BrokenVariant[] = [
  {
    name: 'no-read-retry',
    obligation: 'commit only if mmuIntervalReadRetry says no invalidation hit the range',
    options: { mirror: { faultLoop: loopWithoutReadRetry } },
  },
  {
    name: 'no-set-seq',
    obligation: 'call mmuIntervalSetSeq in the invalidate callback, under the driver lock',
    options: { mirror: { broken: { skipSetSeq: true } } },
  },
  {
    name: 'ignores-invalidations',
    obligation: 'unmap the device entries of an invalidated range before returning',
    options: { mirror: { broken: { ignoreInvalidations: true } } },
  },
  {
    name: 'ignores-blockable',
    obligation: 'never sleep in a non-blockable invalidation (return false instead)',
    options: { mirror: { broken: { ignoreBlockable: true } } },
  },
  {
    name: 'writable-on-read',
    obligation: 'map a page writable only if hmm_range_fault reported it writable',
    options: { mirror: { broken: { writableOnRead: true } } },
  },
  {
    name: 'pins-forever',
    obligation: 'a mirror must not hold page pins (it relies on invalidations, not on pins)',
    options: { mirror: { broken: { pinFaulted: true } } },
  },
  {
    name: 'maps-old-frame-after-migrate',
    obligation: 'after migrate_vma_pages, map the new device frame and drop the old one',
    options: { mirror: { broken: { mapOldFrameOnMigrate: true } } },
  },
  {
    name: 'skips-every-migrate',
    obligation: "skip only its own MIGRATE invalidations (owner = this device), not other devices'",
    options: { mirror: { broken: { skipAllMigrate: true } } },
  },
  {
    name: 'leaks-device-pages',
    obligation: 'drop every reference it takes on a device page, so device memory can be freed',
    options: { patchDevice: leakDeviceRefsOnCopyBack },
  },
  {
    name: 'wrong-copy-back',
    obligation: 'copy each device page back into its own system page on migration to RAM',
    options: { patchDevice: copyBackWrongBytes },
  },
  {
    name: 'no-retry-timeout',
    obligation: 'give up (EBUSY) after a budget when invalidations keep racing the fault',
    options: { mirror: { faultLoop: loopWithoutTimeout } },
  },
  {
    name: 'maps-during-walk',
    obligation: 'install device entries only after hmm_range_fault returned and the sequence checked',
    options: { mirror: { faultLoop: loopMappingDuringWalk } },
  },
];
