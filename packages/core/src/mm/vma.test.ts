import { describe, it, expect } from 'vitest';
import { MapFlag, Prot, VmFlag } from './constants.js';
import { Vma, VmaTree } from './vma.js';
import { ANON, layout, machine, P, RW } from '../testing/fixtures.js';

const VM_RW = VmFlag.READ | VmFlag.WRITE | VmFlag.MAYREAD | VmFlag.MAYWRITE | VmFlag.MAYEXEC;

describe('VmaTree', () => {
  const m = machine({ swapPages: 64 });
  const mm = m.createProcess().mm;
  const mk = (s: number, e: number): Vma => new Vma(mm, s * P, e * P, VM_RW, null, s);

  function tree(): { t: VmaTree; a: Vma; b: Vma; c: Vma } {
    const t = new VmaTree();
    const a = mk(10, 20);
    const b = mk(20, 30);
    const c = mk(40, 50);
    t.insert(c);
    t.insert(a);
    t.insert(b);
    return { t, a, b, c };
  }

  it('keeps VMAs in address order', () => {
    const { t, a, b, c } = tree();
    expect(t.count).toBe(3);
    expect(t.all()).toEqual([a, b, c]);
    expect(t.prev(b)).toBe(a);
    expect(t.next(b)).toBe(c);
    expect(t.prev(a)).toBeUndefined();
    expect(t.next(c)).toBeUndefined();
  });

  it('lookup finds the VMA containing an address, with exclusive ends', () => {
    const { t, a, b, c } = tree();
    expect(t.lookup(10 * P)).toBe(a);
    expect(t.lookup(20 * P - 1)).toBe(a);
    expect(t.lookup(20 * P)).toBe(b);
    expect(t.lookup(35 * P)).toBeUndefined();
    expect(t.lookup(9 * P)).toBeUndefined();
    expect(t.lookup(50 * P)).toBeUndefined();
    expect(t.lookup(50 * P - 1)).toBe(c);
    expect(t.findFrom(35 * P)).toBe(c);
    expect(t.findFrom(0)).toBe(a);
    expect(t.findFrom(50 * P)).toBeUndefined();
  });

  it('intersecting returns the overlapping VMAs in order', () => {
    const { t, a, b, c } = tree();
    expect(t.intersecting(0, 10 * P)).toEqual([]);
    expect(t.intersecting(0, 10 * P + 1)).toEqual([a]);
    expect(t.intersecting(15 * P, 45 * P)).toEqual([a, b, c]);
    expect(t.intersecting(30 * P, 40 * P)).toEqual([]);
    expect(t.intersecting(29 * P, 41 * P)).toEqual([b, c]);
    expect(t.intersecting(50 * P, 60 * P)).toEqual([]);
  });

  it('covers is true only for ranges with no hole', () => {
    const { t } = tree();
    expect(t.covers(10 * P, 30 * P)).toBe(true);
    expect(t.covers(12 * P, 25 * P)).toBe(true);
    expect(t.covers(10 * P, 31 * P)).toBe(false);
    expect(t.covers(9 * P, 20 * P)).toBe(false);
    expect(t.covers(25 * P, 45 * P)).toBe(false);
    expect(t.covers(40 * P, 50 * P)).toBe(true);
    expect(t.covers(31 * P, 32 * P)).toBe(false);
  });

  it('rejects overlapping inserts and removal of a VMA not in the tree', () => {
    const { t } = tree();
    expect(() => t.insert(mk(25, 35))).toThrow(/overlaps/);
    expect(() => t.insert(mk(5, 11))).toThrow(/overlaps/);
    expect(() => t.remove(mk(10, 20))).toThrow(/not in tree/);
    expect(t.count).toBe(3);
    t.insert(mk(30, 40));
    expect(t.count).toBe(4);
  });

  it('Vma helpers: pages, fileIndex, cloneRange, canMergeWith', () => {
    const a = mk(10, 20);
    expect(a.pages).toBe(10);
    expect(a.isAnonymous).toBe(true);
    expect(a.isCow).toBe(true);
    expect(a.isShared).toBe(false);
    expect(a.readable && a.writable).toBe(true);
    expect(a.fileIndex(13 * P)).toBe(13);
    const c = a.cloneRange(14 * P, 16 * P);
    expect([c.start, c.end, c.pgoff, c.flags]).toEqual([14 * P, 16 * P, 14, a.flags]);
    expect(mk(10, 20).canMergeWith(mk(20, 25))).toBe(true);
    expect(mk(10, 20).canMergeWith(mk(21, 25))).toBe(false);
    const ro = new Vma(mm, 20 * P, 25 * P, VM_RW & ~VmFlag.WRITE, null, 20);
    expect(mk(10, 20).canMergeWith(ro)).toBe(false);
  });
});

describe('VMA split and merge through mmap and mprotect', () => {
  it('adjacent compatible anonymous mappings merge into one VMA', async () => {
    const m = machine({ swapPages: 64 });
    const p = m.createProcess();
    const a = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    const b = await p.mmap({ length: 4 * P, prot: RW, flags: ANON });
    expect(b).toBe(a - 4 * P); // top-down, directly below
    expect(p.mm.vmas.count).toBe(1);
    expect(layout(p)).toEqual([[b, a + 4 * P]]);
    // A mapping with different protection next to it does not merge.
    const c = await p.mmap({ length: 2 * P, prot: Prot.READ, flags: ANON });
    expect(c).toBe(b - 2 * P);
    expect(p.mm.vmas.count).toBe(2);
    // Filling a gap with a compatible mapping merges both sides.
    const hi = await p.mmap({ addr: a + 16 * P, length: 2 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    expect(p.mm.vmas.count).toBe(3);
    await p.mmap({ addr: a + 4 * P, length: 12 * P, prot: RW, flags: ANON | MapFlag.FIXED });
    expect(layout(p)).toEqual([
      [c, b],
      [b, hi + 2 * P],
    ]);
    m.checkInvariants();
  });

  it('mprotect of the middle splits into 3 and restoring merges back to 1', async () => {
    const m = machine({ swapPages: 64 });
    const p = m.createProcess();
    const a = await p.mmap({ length: 8 * P, prot: RW, flags: ANON });
    await p.fill(a, 8 * P, 0x11);
    await p.mprotect(a + 2 * P, 3 * P, Prot.READ);
    expect(layout(p)).toEqual([
      [a, a + 2 * P],
      [a + 2 * P, a + 5 * P],
      [a + 5 * P, a + 8 * P],
    ]);
    const vmas = p.mm.vmas.all();
    expect(vmas.map((v) => v.writable)).toEqual([true, false, true]);
    // pgoff follows the split.
    expect(vmas.map((v) => v.pgoff)).toEqual([a / P, a / P + 2, a / P + 5]);
    m.checkInvariants();
    await p.mprotect(a + 2 * P, 3 * P, RW);
    expect(layout(p)).toEqual([[a, a + 8 * P]]);
    expect(p.mm.vmas.all()[0]!.pgoff).toBe(a / P);
    expect(Array.from(await p.read(a, 8 * P)).every((x) => x === 0x11)).toBe(true);
    m.checkInvariants();
  });

  it('mprotect of a prefix or suffix splits into 2', async () => {
    const m = machine({ swapPages: 64 });
    const p = m.createProcess();
    const a = await p.mmap({ length: 6 * P, prot: RW, flags: ANON });
    await p.mprotect(a, 2 * P, Prot.READ);
    expect(layout(p)).toEqual([
      [a, a + 2 * P],
      [a + 2 * P, a + 6 * P],
    ]);
    await p.mprotect(a + 4 * P, 2 * P, Prot.READ);
    expect(p.mm.vmas.count).toBe(3);
    // Making everything read-only merges all three.
    await p.mprotect(a, 6 * P, Prot.READ);
    expect(layout(p)).toEqual([[a, a + 6 * P]]);
  });

  it('file mappings merge only when their file offsets are contiguous', async () => {
    const m = machine({ swapPages: 64 });
    const p = m.createProcess();
    const f = await m.createFile('f', new Uint8Array(16 * P));
    const base = 0x4000_0000;
    await p.mmap({
      addr: base,
      length: 2 * P,
      prot: Prot.READ,
      flags: MapFlag.SHARED | MapFlag.FIXED,
      file: f,
    });
    await p.mmap({
      addr: base + 2 * P,
      length: 2 * P,
      prot: Prot.READ,
      flags: MapFlag.SHARED | MapFlag.FIXED,
      file: f,
      offset: 2 * P,
    });
    expect(p.mm.vmas.count).toBe(1);
    expect(f.mappings.size).toBe(1);
    await p.mmap({
      addr: base + 4 * P,
      length: 2 * P,
      prot: Prot.READ,
      flags: MapFlag.SHARED | MapFlag.FIXED,
      file: f,
      offset: 8 * P,
    });
    expect(p.mm.vmas.count).toBe(2);
    expect(f.mappings.size).toBe(2);
    m.checkInvariants();
  });
});
