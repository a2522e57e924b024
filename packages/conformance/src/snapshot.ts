/**
 * The snapshot byte of one `hmm_range_fault` result word, as the kernel's test device encodes it
 * (`dmirror_mkentry` in lib/test_hmm.c), shared by every driver that implements
 * `TestDevice.snapshot`.
 *
 * @module
 */
import { HmmPfn, MemoryType, ZERO_PFN, hmmPfnFlags, hmmPfnToPfn, pagemapOf } from '@hmm/core';
import type { MmContext } from '@hmm/core';
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
