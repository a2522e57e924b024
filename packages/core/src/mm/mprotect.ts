/**
 * `mprotect(2)` (mm/mprotect.c): changes the protection of whole pages. Removing a permission fires a
 * PROTECTION_VMA invalidation and write-protects the PTEs (`change_protection`); added write
 * permission is granted lazily by the next write fault, as the kernel does for COW and shared
 * mappings that track dirtying.
 *
 * Simplification: PROT_NONE keeps PTEs present; the CPU and GUP check the VMA's permissions.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE, Prot, VmFlag, pageAlignUp } from './constants.js';
import { notifyEnd, notifyStart } from './memory.js';
import { checkUserRange, mergeVma, protToVmFlags, splitRange } from './mmap.js';
import type { MmContext } from './mm-context.js';
import type { MmStruct } from './mm-struct.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { Pte, PteType, nonPresentFlags, pteType } from './pgtable.js';

const PROT_BITS = VmFlag.READ | VmFlag.WRITE | VmFlag.EXEC;

/**
 * Sets the protection of [addr, addr+length) to `prot`. EINVAL for an unaligned address or unknown
 * bits; ENOMEM if any part of the range is unmapped (checked before anything changes). A length of
 * 0 succeeds and does nothing, as in the kernel.
 */
export async function doMprotect(
  ctx: MmContext,
  mm: MmStruct,
  addr: number,
  length: number,
  prot: number,
): Promise<void> {
  mm.assertLive('mprotect');
  if ((prot & ~(Prot.READ | Prot.WRITE | Prot.EXEC)) !== 0) {
    throw new HmmError('EINVAL', `mprotect: unknown prot bits ${hex(prot)}`);
  }
  checkUserRange('mprotect', addr, length, 'ENOMEM');
  if (length === 0) return;
  const end = addr + pageAlignUp(length);
  await mm.mmapLock.write();
  try {
    mm.assertLive('mprotect');
    if (!mm.vmas.covers(addr, end)) {
      throw new HmmError('ENOMEM', `mprotect: range ${hex(addr)}-${hex(end)} is not fully mapped`);
    }
    const newProt = protToVmFlags(prot);
    const reduces = mm.vmas.intersecting(addr, end).some((v) => (v.flags & PROT_BITS & ~newProt) !== 0);
    const range = reduces ? await notifyStart(mm, addr, end, NotifyEvent.PROTECTION_VMA) : null;
    const vmas = splitRange(mm, addr, end);
    const arena = ctx.arena;
    for (const v of vmas) {
      const removed = v.flags & PROT_BITS & ~newProt;
      v.flags = (v.flags & ~PROT_BITS) | newProt;
      if ((removed & VmFlag.WRITE) !== 0) {
        mm.pgtable.forEachPte(v.start / PAGE_SIZE, v.end / PAGE_SIZE, (slot) => {
          const f = arena.pteFlags[slot]!;
          if ((f & Pte.PRESENT) !== 0) arena.pteFlags[slot] = f & ~Pte.WRITE;
          else if (pteType(f) === PteType.DEVICE_PRIVATE_WRITE)
            arena.pteFlags[slot] = nonPresentFlags(PteType.DEVICE_PRIVATE_READ);
          else if (pteType(f) === PteType.MIGRATION_WRITE)
            arena.pteFlags[slot] = nonPresentFlags(PteType.MIGRATION_READ);
        });
      }
    }
    for (const v of vmas) if (mm.vmas.lookup(v.start) === v) mergeVma(mm, v);
    notifyEnd(mm, range);
  } finally {
    mm.mmapLock.writeUnlock();
  }
}
