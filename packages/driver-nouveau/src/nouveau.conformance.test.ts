/** The nouveau-like driver run through the conformance suite (the ported hmm-tests.c cases). */
import { MapFlag, PAGE_SIZE, Prot, isHmmError } from '@hmm/core';
import { SnapshotByte } from '@hmm/conformance';
import { defineConformanceSuite } from '@hmm/conformance/vitest';
import { describe, expect, it } from 'vitest';
import { nouveauFactory, nouveauManifest } from './conformance.js';

defineConformanceSuite(nouveauFactory, nouveauManifest);

const P = PAGE_SIZE;
const RW = Prot.READ | Prot.WRITE;
const ANON = MapFlag.PRIVATE | MapFlag.ANONYMOUS;

describe('nouveau conformance target', () => {
  it('MIGRATE_TO_SYS moves the VRAM pages back; a killed channel is replaced; unload leaks nothing', async () => {
    const t = await nouveauFactory({ seed: 3, variant: 'device-private' });
    const m = t.machine;
    await m.sched.runTask('test', async () => {
      const p = m.createProcess('app');
      const dev = await t.open(p);
      const n = 8;
      const a = await p.mmap({ length: n * P, prot: RW, flags: ANON });
      const data = new Uint8Array(n * P).map((_, i) => i % 251);
      await p.write(a, data);
      const r = await dev.migrateToDevice!(a, n);
      expect(r.cpages).toBe(n);
      expect(r.data).toEqual(data);
      expect(Array.from(await dev.snapshot(a, n))).toEqual(
        new Array<number>(n).fill(SnapshotByte.DEV_PRIVATE_LOCAL | SnapshotByte.WRITE),
      );
      // Only this GPU's pages count: half of them first, then the rest.
      expect((await dev.migrateToSystem!(a, n / 2)).cpages).toBe(n / 2);
      expect((await dev.migrateToSystem!(a, n)).cpages).toBe(n / 2);
      expect(Array.from(await dev.snapshot(a, n))).toEqual(new Array<number>(n).fill(SnapshotByte.WRITE));
      expect(await p.read(a, n * P)).toEqual(data);
      // A cancelled fault kills the channel; the next command runs on a new one.
      const hole = await p.mmap({ length: P, prot: Prot.NONE, flags: ANON });
      const err: unknown = await dev.read(hole, 1).catch((e: unknown) => e);
      expect(isHmmError(err) && err.code).toBe('EFAULT');
      const again = await dev.read(a, n);
      expect(again.data).toEqual(data);
      // Everything is mapped now: a warm READ takes no fault round.
      expect(again.faults).toBe(1);
      expect((await dev.read(a, n)).faults).toBe(0);
      await dev.migrateToDevice!(a, n);
      await dev.close();
      await p.exit();
    });
    await t.teardown!();
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    m.checkInvariants();
  });
});
