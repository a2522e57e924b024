/**
 * The snapshot byte of one `hmm_range_fault` result word, as the kernel's test device encodes it
 * (`dmirror_mkentry` in lib/test_hmm.c), shared by every driver that implements
 * `TestDevice.snapshot`.
 *
 * @module
 */
import {
  HmmPfn,
  MMAP_MIN_ADDR,
  MemoryType,
  Mutex,
  PAGE_SIZE,
  ZERO_PFN,
  hmmPfnFlags,
  hmmPfnToPfn,
  hmmRangeFaultLoop,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
  pagemapOf,
} from '@hmm/core';
import type { MmContext, MmStruct } from '@hmm/core';
import { SnapshotByte } from './target.js';

/**
 * ERROR for an error word, NONE for a page not present, otherwise READ or WRITE or'ed with the kind:
 * device-private or device-coherent pages are LOCAL when their pagemap's owner is `localOwner` and
 * REMOTE otherwise; the shared zero page is ZERO. Map order 0 (no THP), so PMD/PUD are never set.
 */
export function snapshotByteOf(word: number, ctx: MmContext, localOwner: unknown): number {
  const flags = hmmPfnFlags(word);
  if ((flags & HmmPfn.ERROR) !== 0) return SnapshotByte.ERROR;
  if ((flags & HmmPfn.VALID) === 0) return SnapshotByte.NONE;
  const pfn = hmmPfnToPfn(word);
  const pgmap = pagemapOf(ctx, pfn);
  let kind: number = SnapshotByte.NONE;
  if (pgmap !== undefined) {
    const local = pgmap.owner === localOwner;
    if (pgmap.type === MemoryType.DEVICE_PRIVATE) {
      kind = local ? SnapshotByte.DEV_PRIVATE_LOCAL : SnapshotByte.DEV_PRIVATE_REMOTE;
    } else if (pgmap.type === MemoryType.DEVICE_COHERENT) {
      kind = local ? SnapshotByte.DEV_COHERENT_LOCAL : SnapshotByte.DEV_COHERENT_REMOTE;
    }
  } else if (pfn === ZERO_PFN) {
    kind = SnapshotByte.ZERO;
  }
  return kind | ((flags & HmmPfn.WRITE) !== 0 ? SnapshotByte.WRITE : SnapshotByte.READ);
}

/** Options of {@link snapshotRange}. */
export interface SnapshotRangeOptions {
  /**
   * The driver lock the temporary notifiers take around `mmu_interval_set_seq` (and the walk's
   * commit runs under): the driver's own update lock; default a private one.
   */
  readonly driverLock?: Mutex;
  /** Pages per `hmm_range_fault` call, each under its own temporary notifier; default 512. */
  readonly chunkPages?: number;
}

/**
 * `HMM_DMIRROR_SNAPSHOT` for any driver (`dmirror_snapshot` / `dmirror_range_snapshot`): walks the
 * `npages` pages at `addr` of `mm` with `hmm_range_fault` without fault flags, chunk by chunk, each
 * under a temporary interval notifier that only moves its sequence (declining a non-blockable
 * invalidation while the lock is held), and returns one {@link snapshotByteOf} byte per page.
 * Pages below `mmap_min_addr` read ERROR, as a hole. Runs inside a task.
 */
export async function snapshotRange(
  mm: MmStruct,
  addr: number,
  npages: number,
  localOwner: unknown,
  opts: SnapshotRangeOptions = {},
): Promise<Uint8Array> {
  const lock = opts.driverLock ?? new Mutex(mm.ctx.sched, 'snapshot');
  const chunk = opts.chunkPages ?? 512;
  const out = new Uint8Array(npages);
  const end = addr + npages * PAGE_SIZE;
  for (let a = addr; a < end;) {
    const base = (a - addr) / PAGE_SIZE;
    if (a < MMAP_MIN_ADDR) {
      const holeEnd = Math.min(end, MMAP_MIN_ADDR);
      out.fill(SnapshotByte.ERROR, base, base + (holeEnd - a) / PAGE_SIZE);
      a = holeEnd;
      continue;
    }
    const next = Math.min(end, a + chunk * PAGE_SIZE);
    const temp = mmuIntervalNotifierInsert(mm, a, next - a, {
      invalidate: (sub, range, seq) => {
        if (!range.blockable) {
          if (!lock.tryLock()) return false;
          mmuIntervalSetSeq(sub, seq);
          lock.unlock();
          return true;
        }
        return lock.lock().then(() => {
          mmuIntervalSetSeq(sub, seq);
          lock.unlock();
          return true;
        });
      },
    });
    try {
      await hmmRangeFaultLoop({
        notifier: temp,
        start: a,
        end: next,
        defaultFlags: 0,
        devPrivateOwner: localOwner,
        driverLock: lock,
        commit: (range) => {
          for (let i = 0; i < range.hmmPfns.length; i++) {
            out[base + i] = snapshotByteOf(range.hmmPfns[i]!, mm.ctx, localOwner);
          }
        },
      });
    } finally {
      await mmuIntervalNotifierRemove(temp);
    }
    a = next;
  }
  return out;
}
