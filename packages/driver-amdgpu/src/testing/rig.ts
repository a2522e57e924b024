/**
 * Test-only helpers of the amdgpu tests: a fresh machine and GPU per test, anonymous buffers, and
 * the errno a call rejects with. Not part of the package.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, PAGE_SIZE, Prot, isHmmError } from '@hmm/core';
import type { Process } from '@hmm/core';
import { AmdgpuDevice } from '../gpu.js';

/** A private anonymous read-write mapping of `pages` pages. */
export function anon(p: Process, pages: number): Promise<number> {
  return p.mmap({
    length: pages * PAGE_SIZE,
    prot: Prot.READ | Prot.WRITE,
    flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
  });
}

/** The errno `x` rejects with, or '' if it resolves. */
export async function errno(x: Promise<unknown>): Promise<string> {
  try {
    await x;
    return '';
  } catch (e) {
    if (isHmmError(e)) return e.code;
    throw e;
  }
}

/** Options of {@link withRig}. */
export interface RigOptions {
  /** RAM of the machine; default 64 MiB. */
  readonly ramBytes?: number;
  /** Check that no frame is left allocated afterwards (default true). */
  readonly leakCheck?: boolean;
}

/**
 * Runs `body` in a task on a fresh machine (seed 1) and GPU, removes the GPU, then checks the
 * machine's invariants and (unless disabled) that no frame leaked. EIO if a frame leaked.
 */
export async function withRig(
  body: (m: Machine, gpu: AmdgpuDevice) => Promise<void>,
  opts: RigOptions = {},
): Promise<void> {
  const m = new Machine({ seed: 1, ramBytes: opts.ramBytes ?? 64 * 1024 * 1024 });
  const gpu = new AmdgpuDevice(m);
  await m.sched.runTask('test', async () => {
    await body(m, gpu);
    await gpu.remove();
  });
  m.checkInvariants();
  const leaked = m.mm.mem.allocatedFrames();
  if (opts.leakCheck !== false && leaked.length > 0) {
    throw new HmmError('EIO', `frames left allocated after the test: ${leaked.length}`);
  }
}
