/**
 * A simulated process: a pid and an address space, with the system calls and CPU accesses a
 * program would make (`struct task_struct` with its `mm`). Every method validates its input and
 * throws an errno-coded {@link HmmError} without changing state when the input is bad.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import type { MadvAdvice } from './constants.js';
import { doMadvise } from './madvise.js';
import { doMmap, doMunmap, exitMmap } from './mmap.js';
import type { MmapArgs } from './mmap.js';
import { doMprotect } from './mprotect.js';
import { doMremap } from './mremap.js';
import type { MmContext } from './mm-context.js';
import type { MmStruct } from './mm-struct.js';
import { dupMm } from './fork.js';
import { getUserPages, pinUserPages, putUserPages, unpinUserPages } from './gup.js';
import { cpuFill, cpuRead, cpuWrite } from './uaccess.js';
import { traceResident, traceSyscall } from './trace-events.js';
import { clearSoftDirty, softDirtyPages } from './soft-dirty.js';

/** Allocates pids; the system layer provides one per machine. */
export interface PidAllocator {
  nextPid(): number;
  register(p: Process): void;
  unregister(p: Process): void;
}

/** One process of the simulated machine. */
export class Process {
  /** Exit status once exited. */
  exitCode: number | null = null;

  constructor(
    readonly ctx: MmContext,
    readonly pids: PidAllocator,
    /** Process id. */
    readonly pid: number,
    /** Its address space. */
    readonly mm: MmStruct,
    /** Name for traces (`comm`). */
    readonly comm: string,
  ) {}

  /** True once {@link exit} has run. */
  get exited(): boolean {
    return this.mm.state !== 'live';
  }

  /** `mmap(2)`: returns the mapping's address. */
  async mmap(args: MmapArgs): Promise<number> {
    const addr = await doMmap(this.ctx, this.mm, args);
    traceSyscall(this.ctx, this.mm.id, 'mmap', addr, args.length);
    return addr;
  }

  /** `munmap(2)`. */
  async munmap(addr: number, length: number): Promise<void> {
    await doMunmap(this.ctx, this.mm, addr, length);
    traceSyscall(this.ctx, this.mm.id, 'munmap', addr, length);
  }

  /** `mprotect(2)`. */
  async mprotect(addr: number, length: number, prot: number): Promise<void> {
    await doMprotect(this.ctx, this.mm, addr, length, prot);
    traceSyscall(this.ctx, this.mm.id, 'mprotect', addr, length);
  }

  /** `mremap(2)`: returns the mapping's (new) address. */
  async mremap(
    oldAddr: number,
    oldSize: number,
    newSize: number,
    flags = 0,
    newAddr?: number,
  ): Promise<number> {
    const addr = await doMremap(this.ctx, this.mm, oldAddr, oldSize, newSize, flags, newAddr);
    traceSyscall(this.ctx, this.mm.id, 'mremap', addr, newSize);
    return addr;
  }

  /** `madvise(2)` with MADV_DONTNEED, MADV_FREE or MADV_WILLNEED. */
  async madvise(addr: number, length: number, advice: MadvAdvice): Promise<void> {
    await doMadvise(this.ctx, this.mm, addr, length, advice);
    traceSyscall(this.ctx, this.mm.id, 'madvise', addr, length);
  }

  /** `fork(2)`: a child process with a copy-on-write copy of this address space. */
  async fork(comm = `${this.comm}-child`): Promise<Process> {
    const mm = await dupMm(this.ctx, this.mm);
    const child = new Process(this.ctx, this.pids, this.pids.nextPid(), mm, comm);
    this.pids.register(child);
    return child;
  }

  /** `exit(2)`: tears the address space down. ESRCH if already exited. */
  async exit(code = 0): Promise<void> {
    if (this.exited) throw new HmmError('ESRCH', `process ${this.pid} has already exited`);
    await exitMmap(this.ctx, this.mm);
    traceResident(this.ctx);
    this.exitCode = code;
    this.pids.unregister(this);
  }

  /** `echo 4 > /proc/<pid>/clear_refs`: clears soft-dirty bits (fires SOFT_DIRTY invalidations). */
  clearSoftDirty(): Promise<void> {
    return clearSoftDirty(this.ctx, this.mm);
  }

  /** Soft-dirty bits of `npages` pages at `addr` (`/proc/<pid>/pagemap` bit 55). */
  softDirtyPages(addr: number, npages: number): boolean[] {
    return softDirtyPages(this.ctx, this.mm, addr, npages);
  }

  /** Reads `len` bytes at `addr` from a CPU thread of this process. */
  read(addr: number, len: number): Promise<Uint8Array> {
    return cpuRead(this.ctx, this.mm, addr, len);
  }

  /** Writes bytes at `addr` from a CPU thread of this process. */
  write(addr: number, data: Uint8Array): Promise<void> {
    return cpuWrite(this.ctx, this.mm, addr, data);
  }

  /** Sets `len` bytes at `addr` to `value` (memset). */
  fill(addr: number, len: number, value: number): Promise<void> {
    return cpuFill(this.ctx, this.mm, addr, len, value);
  }

  /** Reads a little-endian 32-bit unsigned integer. */
  async readU32(addr: number): Promise<number> {
    const b = await this.read(addr, 4);
    return new DataView(b.buffer).getUint32(0, true);
  }

  /** Writes a little-endian 32-bit unsigned integer. */
  writeU32(addr: number, value: number): Promise<void> {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    return this.write(addr, b);
  }

  /** Reads a little-endian 64-bit float. */
  async readF64(addr: number): Promise<number> {
    const b = await this.read(addr, 8);
    return new DataView(b.buffer).getFloat64(0, true);
  }

  /** Writes a little-endian 64-bit float. */
  writeF64(addr: number, value: number): Promise<void> {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, value, true);
    return this.write(addr, b);
  }

  /** `get_user_pages`: references the pages (FOLL_* flags), returns their frame numbers. */
  getUserPages(start: number, nrPages: number, gupFlags = 0): Promise<Int32Array> {
    return getUserPages(this.ctx, this.mm, start, nrPages, gupFlags);
  }

  /** `pin_user_pages`: pins the pages (FOLL_WRITE, FOLL_LONGTERM), returns their frame numbers. */
  pinUserPages(start: number, nrPages: number, gupFlags = 0): Promise<Int32Array> {
    return pinUserPages(this.ctx, this.mm, start, nrPages, gupFlags);
  }

  /** `unpin_user_pages`: EINVAL (nothing changed) on a double unpin. */
  unpinUserPages(pfns: ArrayLike<number>): void {
    unpinUserPages(this.ctx, pfns);
  }

  /** `put_page` for pages from {@link getUserPages}. */
  putUserPages(pfns: ArrayLike<number>): void {
    putUserPages(this.ctx, pfns);
  }
}
