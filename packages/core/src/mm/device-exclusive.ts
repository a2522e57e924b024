/**
 * Device-exclusive access (`make_device_exclusive`, mm/rmap.c): a device that cannot do atomics over
 * the bus on system memory takes the page away from the CPU for a while. The CPU PTE is replaced by a
 * device-exclusive entry; the first CPU access (or fork) restores the normal PTE after a CLEAR
 * invalidation, which tells the device to drop its atomic mapping.
 *
 * @module
 */
import { HmmError, hex, isHmmError } from '../errors/errno.js';
import { PAGE_SIZE } from './constants.js';
import { FaultFlag, handleMmFault, notifyEnd, notifyStart } from './memory.js';
import { lockPage, unlockPage } from './memremap.js';
import type { MmStruct } from './mm-struct.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { PG } from './page-flags.js';
import { Pte, PteType, nonPresentFlags } from './pgtable.js';

/** Retries when the page keeps changing under us (the kernel would loop). */
const MAX_TRIES = 100;

/**
 * Makes the anonymous page at `addr` exclusive to a device (`make_device_exclusive`). The caller
 * holds `mm.mmapLock` for read. The page is first faulted in writable; an EXCLUSIVE invalidation
 * carrying `owner` is sent (the caller's own notifier must skip it, or it would invalidate what it
 * is about to map); then the PTE becomes a device-exclusive entry.
 *
 * Returns the frame, locked and referenced: the driver maps it for atomics inside its notifier
 * critical section, then calls `unlockPage` and `ctx.putPage`. Errors, with nothing changed:
 * EINVAL for an unaligned address or a missing lock, EFAULT where no writable page can be had
 * (no mapping, read-only mapping, SIGBUS), EOPNOTSUPP for a page that is not anonymous.
 */
export async function makeDeviceExclusive(mm: MmStruct, addr: number, owner: unknown): Promise<number> {
  const fn = 'make_device_exclusive';
  if (!Number.isSafeInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) {
    throw new HmmError('EINVAL', `${fn}: address ${String(addr)} is not page aligned`);
  }
  if (!mm.mmapLock.heldByCurrent()) {
    throw new HmmError('EINVAL', `${fn}: the caller must hold the mmap lock of the mm`);
  }
  const ctx = mm.ctx;
  const arena = ctx.arena;
  const mem = ctx.mem;
  const vpn = addr / PAGE_SIZE;
  for (let tries = 0; tries < MAX_TRIES; tries++) {
    mm.assertLive(fn);
    const vma = mm.vmas.lookup(addr);
    if (vma === undefined || vma.isSpecial || !vma.writable) {
      throw new HmmError(
        'EFAULT',
        `${fn}: ${hex(addr)} is ${vma === undefined ? 'not mapped' : `in ${vma.toString()}, which cannot be written`}`,
        { address: addr, kernelRef: 'mm/rmap.c:make_device_exclusive' },
      );
    }
    let slot = mm.pgtable.lookup(vpn);
    let f = slot < 0 ? 0 : arena.pteFlags[slot]!;
    if ((f & (Pte.PRESENT | Pte.WRITE)) !== (Pte.PRESENT | Pte.WRITE) || (f & Pte.SPECIAL) !== 0) {
      try {
        await handleMmFault(ctx, vma, addr, FaultFlag.WRITE | FaultFlag.REMOTE);
      } catch (e) {
        if (isHmmError(e) && e.signal !== undefined) {
          throw new HmmError('EFAULT', `${fn}: fault at ${hex(addr)} failed: ${e.message}`, {
            address: addr,
          });
        }
        throw e;
      }
      continue;
    }
    const pfn = arena.pteVal[slot]!;
    if ((mem.flags[pfn]! & PG.ANON) === 0) {
      throw new HmmError('EOPNOTSUPP', `${fn}: the page at ${hex(addr)} is not anonymous`, {
        address: addr,
        kernelRef: 'mm/rmap.c:make_device_exclusive',
      });
    }
    mem.refcount[pfn]!++;
    await lockPage(ctx, pfn);
    const range = await notifyStart(mm, addr, addr + PAGE_SIZE, NotifyEvent.EXCLUSIVE, owner);
    slot = mm.pgtable.lookup(vpn);
    f = slot < 0 ? 0 : arena.pteFlags[slot]!;
    if (
      slot >= 0 &&
      arena.pteVal[slot] === pfn &&
      (f & (Pte.PRESENT | Pte.WRITE)) === (Pte.PRESENT | Pte.WRITE) &&
      (f & Pte.SPECIAL) === 0
    ) {
      if ((f & Pte.DIRTY) !== 0) mem.flags[pfn]! |= PG.DIRTY;
      arena.setPte(slot, pfn, nonPresentFlags(PteType.DEVICE_EXCLUSIVE));
      notifyEnd(mm, range);
      return pfn;
    }
    notifyEnd(mm, range);
    unlockPage(ctx, pfn);
    ctx.putPage(pfn);
  }
  throw new HmmError('EAGAIN', `${fn}: the page at ${hex(addr)} kept changing (${MAX_TRIES} tries)`, {
    address: addr,
  });
}
