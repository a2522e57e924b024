import { HmmSanitizer, Machine, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import type { Process } from '@hmm/core';
import { describe, expect, it } from 'vitest';
import { NouveauGpu } from './gpu.js';
import { runJob } from './job.js';
import { NouveauSvm } from './svm.js';

const P = PAGE_SIZE;
const RW = Prot.READ | Prot.WRITE;
const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;

function rig(opts: { blocksInFlight?: number } = {}) {
  const m = new Machine({ seed: 1, ramBytes: 64 * 1024 * 1024 });
  const gpu = new NouveauGpu(m, { name: 'gp104', vramBytes: 16 * 1024 * 1024, ...opts });
  const svm = new NouveauSvm(gpu);
  return { m, gpu, svm };
}

async function floats(p: Process, addr: number, n: number, f: (i: number) => number): Promise<void> {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  await p.write(addr, new Uint8Array(a.buffer));
}

async function readFloats(p: Process, addr: number, n: number): Promise<Float32Array> {
  const b = await p.read(addr, n * 4);
  return new Float32Array(b.buffer, b.byteOffset, n);
}

describe('nouveau SVM fault path', () => {
  it('a vector add on malloc-style memory faults its pages in, one replay per batch, and is correct', async () => {
    const { m, gpu, svm } = rig();
    const san = new HmmSanitizer(m.mm);
    await m.sched.runTask('test', async () => {
      const p = m.createProcess('app');
      const n = 64 * 1024; // 64 pages per vector
      const bytes = n * 4;
      const a = await p.mmap({ length: bytes, prot: RW, flags: ANON });
      const b = await p.mmap({ length: bytes, prot: RW, flags: ANON });
      const c = await p.mmap({ length: bytes, prot: RW, flags: ANON });
      await floats(p, a, n, (i) => i);
      await floats(p, b, n, (i) => 2 * i);
      const svmm = svm.init(p);
      san.watch(gpu.device, svmm.asid, p.mm, svm.owner);
      const ch = svmm.channelNew();
      const r = await runJob(ch, {
        name: 'vecadd',
        args: [
          { addr: a, bytes, access: 'read' },
          { addr: b, bytes, access: 'read' },
          { addr: c, bytes, access: 'write' },
        ],
        run(blk) {
          const x = blk.f32(0);
          const y = blk.f32(1);
          const z = blk.f32(2);
          for (let i = 0; i < z.length; i++) z[i] = x[i]! + y[i]!;
        },
      });
      expect(r.blocks).toBe(64);
      expect(r.faults).toBe(3 * 64);
      const out = await readFloats(p, c, n);
      for (let i = 0; i < n; i += 997) expect(out[i]).toBe(3 * i);
      expect(svm.stats().batches).toBeGreaterThanOrEqual(1);
      expect(svm.stats().served).toBe(3 * 64);
      // A second run is fault free: every page is mapped.
      const r2 = await runJob(ch, { args: [{ addr: c, bytes, access: 'read' }], run() {} });
      expect(r2.faults).toBe(0);
      await svmm.fini();
      await p.exit();
    });
    expect(san.violations).toEqual([]);
  });

  it('a fault on an unmapped address cancels the channel with a clear error', async () => {
    const { m, svm } = rig();
    await m.sched.runTask('test', async () => {
      const p = m.createProcess('app');
      const svmm = svm.init(p);
      const ch = svmm.channelNew();
      await expect(
        runJob(ch, { args: [{ addr: 0x7000_0000, bytes: P, access: 'read' }], run() {} }),
      ).rejects.toThrow(/channel \d+ killed: its read fault at 0x70000000 could not be served/);
      expect(ch.killed).not.toBeNull();
      await expect(
        runJob(ch, { args: [{ addr: 0x7000_0000, bytes: P, access: 'read' }], run() {} }),
      ).rejects.toThrow(/killed/);
      await svmm.fini();
      await p.exit();
    });
  });

  it('atomics go through device-exclusive entries; a CPU touch takes the page back', async () => {
    const { m, svm } = rig();
    await m.sched.runTask('test', async () => {
      const p = m.createProcess('app');
      const a = await p.mmap({ length: P, prot: RW, flags: ANON });
      await p.write(a, new Uint8Array([5, 0, 0, 0]));
      const svmm = svm.init(p);
      const ch = svmm.channelNew();
      await runJob(ch, {
        blocks: 10,
        args: [{ addr: a, bytes: 4, access: 'atomic' }],
        run(blk) {
          blk.atomicAdd(0, 0, 1);
        },
      });
      expect(await p.readU32(a)).toBe(15);
      m.checkInvariants();
      await svmm.fini();
      await p.exit();
    });
  });

  it('SVM_BIND migration moves pages to VRAM, the GPU reads them there, a CPU touch moves one page back', async () => {
    const { m, svm, gpu } = rig();
    await m.sched.runTask('test', async () => {
      const p = m.createProcess('app');
      const n = 8 * 1024;
      const a = await p.mmap({ length: n * 4, prot: RW, flags: ANON });
      await floats(p, a, n, (i) => i + 1);
      const svmm = svm.init(p);
      const ch = svmm.channelNew();
      await p.mm.mmapLock.read();
      const r = await svm.dmem.migrateToVram(p.mm, a, a + n * 4).finally(() => p.mm.mmapLock.readUnlock());
      expect(r).toEqual({ migrated: 8, failed: 0 });
      let sum = 0;
      const job = await runJob(ch, {
        args: [{ addr: a, bytes: n * 4, access: 'read' }],
        run(blk) {
          for (const v of blk.f32(0)) sum += v;
        },
      });
      expect(job.faults).toBe(0);
      expect(job.bytes.vram).toBe(n * 4);
      expect(sum).toBe((n * (n + 1)) / 2);
      expect(svm.dmem.devmem.nrAllocated).toBe(8);
      expect(await p.readF64(a)).toBeGreaterThan(0);
      expect(svm.dmem.devmem.nrAllocated).toBe(7);
      await svm.fini();
      expect(svm.dmem.devmem.nrAllocated).toBe(0);
      const back = await readFloats(p, a, n);
      for (let i = 0; i < n; i += 101) expect(back[i]).toBe(i + 1);
      await p.exit();
      void gpu;
    });
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });
});
