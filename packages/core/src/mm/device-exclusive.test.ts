import { describe, expect, it } from 'vitest';
import { ANON, P, RW, recordHooks, setup } from '../testing/fixtures.js';
import { MapFlag, Prot } from './constants.js';
import { makeDeviceExclusive } from './device-exclusive.js';
import { unlockPage } from './memremap.js';
import { NotifyEvent } from './mmu-notifier-hooks.js';
import { Pte, PteType, pteType } from './pgtable.js';
import type { Process } from './process.js';
import type { Machine } from '../system/machine.js';

function entry(m: Machine, p: Process, addr: number): { type: number; flags: number; pfn: number } {
  const slot = p.mm.pgtable.lookup(addr / P);
  const flags = m.mm.arena.pteFlags[slot]!;
  return { type: pteType(flags), flags, pfn: m.mm.arena.pteVal[slot]! };
}

async function exclusive(m: Machine, p: Process, addr: number, owner: unknown): Promise<number> {
  await p.mm.mmapLock.read();
  try {
    const pfn = await makeDeviceExclusive(p.mm, addr, owner);
    unlockPage(m.mm, pfn);
    m.mm.putPage(pfn);
    return pfn;
  } finally {
    p.mm.mmapLock.readUnlock();
  }
}

describe('make_device_exclusive', () => {
  it('faults the page in writable, sends EXCLUSIVE with the owner, and installs an exclusive entry', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.readU32(a); // zero page: must become a private writable page first
    const hooks = recordHooks(p);
    const owner = { name: 'gpu' };
    const pfn = await exclusive(m, p, a, owner);
    expect(entry(m, p, a)).toMatchObject({ type: PteType.DEVICE_EXCLUSIVE, pfn });
    const ex = hooks.starts.find((r) => r.event === NotifyEvent.EXCLUSIVE);
    expect(ex?.owner).toBe(owner);
    expect(m.mm.mem.mapcount[pfn]).toBe(1);
    m.checkInvariants();
  });

  it('a CPU access notifies (CLEAR) and restores the normal entry with the data', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 41);
    const pfn = await exclusive(m, p, a, {});
    const hooks = recordHooks(p);
    await p.writeU32(a, (await p.readU32(a)) + 1);
    expect(await p.readU32(a)).toBe(42);
    const e = entry(m, p, a);
    expect(e.type).toBe(PteType.NONE);
    expect(e.pfn).toBe(pfn);
    expect(e.flags & Pte.WRITE).toBe(Pte.WRITE);
    expect(hooks.starts.some((r) => r.event === NotifyEvent.CLEAR)).toBe(true);
    m.checkInvariants();
  });

  it('refuses file pages, read-only and missing mappings, leaving them as they were', async () => {
    const { m, p } = setup();
    const f = await m.createFile('f', new Uint8Array(P));
    const fa = await p.mmap({ length: P, prot: RW, flags: MapFlag.SHARED, file: f });
    await p.writeU32(fa, 1);
    const ro = await p.mmap({ length: P, prot: Prot.READ, flags: ANON });
    await p.mm.mmapLock.read();
    try {
      await expect(makeDeviceExclusive(p.mm, fa, {})).rejects.toThrow(/EOPNOTSUPP.*not anonymous/);
      await expect(makeDeviceExclusive(p.mm, ro, {})).rejects.toThrow(/EFAULT.*cannot be written/);
      await expect(makeDeviceExclusive(p.mm, ro + 16 * P, {})).rejects.toThrow(/EFAULT.*not mapped/);
      await expect(makeDeviceExclusive(p.mm, fa + 1, {})).rejects.toThrow(/EINVAL.*aligned/);
    } finally {
      p.mm.mmapLock.readUnlock();
    }
    await expect(makeDeviceExclusive(p.mm, fa, {})).rejects.toThrow(/mmap lock/);
    expect(entry(m, p, fa).type).toBe(PteType.NONE);
    m.checkInvariants();
  });

  it('fork restores the entry first; parent and child then see their own writes', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.writeU32(a, 5);
    await exclusive(m, p, a, {});
    const c = await p.fork();
    expect(entry(m, p, a).type).toBe(PteType.NONE);
    await c.writeU32(a, 6);
    await p.writeU32(a, 7);
    expect(await c.readU32(a)).toBe(6);
    expect(await p.readU32(a)).toBe(7);
    m.checkInvariants();
  });

  it('mprotect read-only keeps the entry; the restored PTE is read-only; munmap drops it', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.writeU32(a, 5);
    await p.writeU32(a + P, 6);
    await exclusive(m, p, a, {});
    await exclusive(m, p, a + P, {});
    await p.mprotect(a, 2 * P, Prot.READ);
    expect(await p.readU32(a)).toBe(5);
    expect(entry(m, p, a).flags & Pte.WRITE).toBe(0);
    await p.munmap(a + P, P);
    m.checkInvariants();
    await p.exit();
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
  });
});
