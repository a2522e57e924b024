import { describe, it, expect } from 'vitest';
import type { Machine } from '../system/machine.js';
import { Foll, Madv, MapFlag, MremapFlag, Prot } from './constants.js';
import { ANON, P, recordHooks, RW, setup } from '../testing/fixtures.js';

/** Frames held by the page caches of named files (they may outlive every process). */
function cachedPages(m: Machine): number {
  let n = 0;
  for (let id = 1; id <= m.mm.files.count + 8; id++) n += m.mm.files.get(id)?.pageCache.size ?? 0;
  return n;
}

describe('process exit', () => {
  it('returns every frame, swap slot and page table once all processes have exited', async () => {
    const { m, p } = setup({ ramPages: 16 });
    const f = await m.createFile('f', new Uint8Array(3 * P).fill(1));
    const a = await p.mmap({ length: 24 * P, prot: RW, flags: ANON });
    await p.fill(a, 24 * P, 0x31); // more than RAM: some is in swap
    const s = await p.mmap({ length: 2 * P, prot: RW, flags: MapFlag.SHARED | MapFlag.ANONYMOUS });
    await p.fill(s, 2 * P, 2);
    const fm = await p.mmap({ length: 3 * P, prot: RW, flags: MapFlag.PRIVATE, file: f });
    await p.read(fm, 3 * P);
    await p.fill(fm, 1, 9);
    const c = await p.fork();
    await c.fill(a, P, 0x32);
    const q = m.createProcess();
    const fq = await q.mmap({ length: 3 * P, prot: RW, flags: MapFlag.SHARED, file: f });
    await q.fill(fq + P, 1, 7);
    expect(m.stats().swapUsed).toBeGreaterThan(0);
    m.checkInvariants();

    await p.exit(3);
    expect(p.exitCode).toBe(3);
    expect(p.exited).toBe(true);
    m.checkInvariants();
    await c.exit();
    await q.exit();
    expect(m.stats().processes).toBe(0);
    expect(m.stats().swapUsed).toBe(0);
    expect(m.stats().usedPages).toBe(cachedPages(m));
    expect(cachedPages(m)).toBeLessThanOrEqual(3);
    expect(m.mm.arena.tablesLive).toEqual({ dirs: 0, leaves: 0 });
    expect(m.mm.files.count).toBe(1); // only the named file; shmem is gone
    expect(m.mm.liveMms()).toEqual([]);
    m.checkInvariants();
    // The shared write reached the file, the private ones did not.
    expect(Array.from(await m.readFile(f, 0, 1))).toEqual([1]);
    expect(Array.from(await m.readFile(f, P, 1))).toEqual([7]);
  });

  it('after exit every operation is ESRCH', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.exit();
    const ops: [string, () => Promise<unknown>][] = [
      ['exit', () => p.exit()],
      ['mmap', () => p.mmap({ length: P, prot: RW, flags: ANON })],
      ['munmap', () => p.munmap(a, P)],
      ['mprotect', () => p.mprotect(a, P, Prot.READ)],
      ['mremap', () => p.mremap(a, P, 2 * P, MremapFlag.MAYMOVE)],
      ['madvise', () => p.madvise(a, P, Madv.DONTNEED)],
      ['read', () => p.read(a, 1)],
      ['write', () => p.write(a, new Uint8Array(1))],
      ['fill', () => p.fill(a, 1, 0)],
      ['fork', () => p.fork()],
      ['pin', () => p.pinUserPages(a, 1)],
      ['gup', () => p.getUserPages(a, 1)],
    ];
    for (const [name, op] of ops) {
      await expect(op(), name).rejects.toMatchObject({ code: 'ESRCH' });
    }
    expect(() => m.process(p.pid)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(m.stats().usedPages).toBe(0);
  });

  it('pages pinned at exit stay allocated until unpinned', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 3 * P, prot: RW, flags: ANON });
    await p.fill(a, 3 * P, 0x5c);
    const pins = await p.pinUserPages(a, 2, Foll.WRITE | Foll.LONGTERM);
    await p.exit();
    expect(m.stats().usedPages).toBe(2);
    for (const pfn of pins) {
      expect(m.mm.mem.mapcount[pfn]).toBe(0);
      expect(m.mm.mem.pincount[pfn]).toBe(1);
      expect(m.mm.mem.refcount[pfn]).toBe(1);
      const b = new Uint8Array(1);
      m.mm.mem.content.read(pfn, 0, b, 0, 1);
      expect(b[0]).toBe(0x5c); // a device may still DMA from it
    }
    m.checkInvariants();
    // Reclaim must not touch them.
    await m.reclaim(100);
    expect(m.stats().usedPages).toBe(2);
    p.unpinUserPages(pins);
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });

  it('pages referenced by get_user_pages at exit are freed by the last putUserPages', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: 2 * P, prot: RW, flags: ANON });
    await p.fill(a, 2 * P, 1);
    const refs = await p.getUserPages(a, 2);
    await p.exit();
    expect(m.stats().usedPages).toBe(2);
    m.checkInvariants((pfn) => (refs.includes(pfn) ? 1 : 0));
    p.putUserPages(refs);
    expect(m.stats().usedPages).toBe(0);
    m.checkInvariants();
  });

  it('exit calls the notifier release hook once, with the mm, before the mappings go', async () => {
    const { m, p } = setup();
    const a = await p.mmap({ length: P, prot: RW, flags: ANON });
    await p.fill(a, P, 1);
    let rssAtRelease = -1;
    const rec = recordHooks(p, {
      onRelease: (mm) => {
        rssAtRelease = mm.rssPages;
      },
    });
    const mm = p.mm;
    await p.exit();
    expect(rec.released).toEqual([mm]);
    expect(rssAtRelease).toBe(1);
    expect(mm.state).toBe('dead');
    expect(m.stats().usedPages).toBe(0);
  });

  it('processes get distinct pids and are listed until they exit', async () => {
    const { m, p } = setup();
    const c = await p.fork('kid');
    expect(c.pid).not.toBe(p.pid);
    expect(c.comm).toBe('kid');
    expect(
      m
        .processes()
        .map((x) => x.pid)
        .sort(),
    ).toEqual([p.pid, c.pid].sort());
    expect(m.process(c.pid)).toBe(c);
    await c.exit();
    expect(m.processes()).toEqual([p]);
  });
});
