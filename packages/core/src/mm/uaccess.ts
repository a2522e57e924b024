/**
 * CPU access to user memory: loads and stores by a thread of the process, faulting like the MMU and
 * the x86 fault handler (`do_user_addr_fault`, arch/x86/mm/fault.c) followed by `handle_mm_fault`.
 *
 * The fast path walks the page table (with a cached leaf) and copies bytes; a missing or insufficient
 * PTE takes the fault path under `mmap_lock` for read and retries. No mapping → SIGSEGV (MAPERR);
 * an access the VMA does not allow → SIGSEGV (ACCERR); a file page beyond end of file → SIGBUS. The
 * signal is a thrown {@link HmmError} with errno EFAULT and `signal` set; bytes before the faulting
 * page have been transferred, as with a real partial copy.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE, TASK_SIZE } from './constants.js';
import { FaultFlag, handleMmFault } from './memory.js';
import type { MmContext } from './mm-context.js';
import type { MmStruct } from './mm-struct.js';
import { Pte } from './pgtable.js';
import type { Vma } from './vma.js';

function segv(addr: number, code: 'MAPERR' | 'ACCERR', why: string): HmmError {
  return new HmmError('EFAULT', `SIGSEGV at ${hex(addr)}: ${why}`, {
    address: addr,
    signal: 'SIGSEGV',
    sigCode: code,
    kernelRef: 'arch/x86/mm/fault.c:do_user_addr_fault',
  });
}

/** Checks the access against the VMA (`access_error`). */
function checkAccess(vma: Vma | undefined, addr: number, write: boolean): Vma {
  if (vma === undefined) throw segv(addr, 'MAPERR', 'no mapping at this address');
  if (write ? !vma.writable : !vma.readable) {
    throw segv(
      addr,
      'ACCERR',
      `${write ? 'write to' : 'read from'} ${vma.toString()}, which does not allow it`,
    );
  }
  return vma;
}

/** Takes a CPU fault at `addr` (`do_user_addr_fault`). */
async function cpuFault(ctx: MmContext, mm: MmStruct, addr: number, write: boolean): Promise<void> {
  if (!mm.mmapLock.tryRead()) await mm.mmapLock.read();
  try {
    mm.assertLive('CPU access');
    const vma = checkAccess(mm.vmas.lookup(addr), addr, write);
    await handleMmFault(ctx, vma, addr, write ? FaultFlag.WRITE : 0);
  } finally {
    mm.mmapLock.readUnlock();
  }
}

function checkRange(mm: MmStruct, addr: number, len: number): void {
  mm.assertLive('CPU access');
  if (!Number.isSafeInteger(addr) || addr < 0 || !Number.isSafeInteger(len) || len < 0) {
    throw new HmmError('EINVAL', `CPU access: address ${String(addr)} / length ${String(len)} are not valid`);
  }
  if (addr + len > TASK_SIZE)
    throw segv(Math.max(addr, TASK_SIZE), 'MAPERR', 'access beyond the user address space');
}

/**
 * Runs `fn(pfn, pageOffset, bufOffset, n)` for each page piece of [addr, addr+len) once the page is
 * accessible as asked, faulting it in as needed.
 */
async function forEachPiece(
  ctx: MmContext,
  mm: MmStruct,
  addr: number,
  len: number,
  write: boolean,
  fn: (pfn: number, pageOff: number, bufOff: number, n: number) => void,
): Promise<void> {
  checkRange(mm, addr, len);
  const arena = ctx.arena;
  const need = write ? Pte.PRESENT | Pte.WRITE : Pte.PRESENT;
  let vma: Vma | undefined;
  let off = 0;
  while (off < len) {
    const a = addr + off;
    if (vma === undefined || a < vma.start || a >= vma.end) vma = checkAccess(mm.vmas.lookup(a), a, write);
    const vpn = Math.floor(a / PAGE_SIZE);
    const pageOff = a - vpn * PAGE_SIZE;
    const n = Math.min(PAGE_SIZE - pageOff, len - off);
    const slot = mm.pgtable.lookup(vpn);
    const f = slot < 0 ? 0 : arena.pteFlags[slot]!;
    if ((f & need) !== need) {
      await cpuFault(ctx, mm, a, write);
      vma = undefined; // the layout may have changed while we slept
      continue;
    }
    arena.pteFlags[slot] = f | (write ? Pte.ACCESSED | Pte.DIRTY | Pte.SOFT_DIRTY : Pte.ACCESSED);
    fn(arena.pteVal[slot]!, pageOff, off, n);
    off += n;
  }
}

/** Reads `len` bytes at `addr` as the process's CPU would (`copy_from_user`). */
export async function cpuRead(ctx: MmContext, mm: MmStruct, addr: number, len: number): Promise<Uint8Array> {
  const out = new Uint8Array(len);
  const content = ctx.mem.content;
  await forEachPiece(ctx, mm, addr, len, false, (pfn, pageOff, bufOff, n) => {
    content.read(pfn, pageOff, out, bufOff, n);
  });
  return out;
}

/** Writes `data` at `addr` as the process's CPU would (`copy_to_user`). */
export async function cpuWrite(ctx: MmContext, mm: MmStruct, addr: number, data: Uint8Array): Promise<void> {
  const content = ctx.mem.content;
  await forEachPiece(ctx, mm, addr, data.length, true, (pfn, pageOff, bufOff, n) => {
    content.write(pfn, pageOff, data, bufOff, n);
  });
}

/** Sets `len` bytes at `addr` to `value` (`memset` by the CPU); faults pages in writable. */
export async function cpuFill(
  ctx: MmContext,
  mm: MmStruct,
  addr: number,
  len: number,
  value: number,
): Promise<void> {
  const content = ctx.mem.content;
  const v = value & 0xff;
  await forEachPiece(ctx, mm, addr, len, true, (pfn, pageOff, _bufOff, n) => {
    content.fill(pfn, pageOff, n, v);
  });
}
