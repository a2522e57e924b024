import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '../mm/constants.js';
import { PageStore } from '../mm/page-store.js';
import { dmaTransferNs } from '../sim/cost-model.js';
import { Machine } from '../system/machine.js';
import { CopyEngine } from './copy-engine.js';

function stores(pages: number): { host: PageStore; dev: PageStore } {
  const host = new PageStore(pages);
  const dev = new PageStore(pages);
  for (let i = 0; i < pages; i++) host.fill(i, 0, PAGE_SIZE, i + 1);
  return { host, dev };
}

const at = (store: PageStore, n: number) => Array.from({ length: n }, (_, index) => ({ store, index }));

function byte(store: PageStore, i: number): number {
  const b = new Uint8Array(1);
  store.read(i, 0, b, 0, 1);
  return b[0]!;
}

describe('CopyEngine', () => {
  it('copies the bytes in the simulated time of the bus size curve', async () => {
    const m = new Machine({ ramBytes: 64 * PAGE_SIZE });
    const ce = new CopyEngine(m.sched, m.cost, { name: 'ce0' });
    const { host, dev } = stores(512);
    const r = await m.sched.runTask('copy', () => ce.copy(at(host, 512), at(dev, 512), 'h2d'));
    expect(r.copied).toBe(512);
    expect(r.error).toBeNull();
    expect(m.sched.now).toBeCloseTo(dmaTransferNs(m.cost, 2 * 2 ** 20, m.cost.link.pcie4PeakGBs), 6);
    expect([byte(dev, 0), byte(dev, 511)]).toEqual([1, 512 & 0xff]);
    // A 2 MiB transfer is far cheaper per byte than 512 one-page transfers (the size curve).
    expect(ce.transferNs(512, 'h2d')).toBeLessThan((512 * ce.transferNs(1, 'h2d')) / 4);
    expect(ce.transferNs(512, 'd2d')).toBeLessThan(ce.transferNs(512, 'h2d'));
    expect(ce.stats()).toMatchObject({ bytes: 512 * PAGE_SIZE, transfers: 1 });
  });

  it('runs transfers one at a time in arrival order', async () => {
    const m = new Machine({ ramBytes: 64 * PAGE_SIZE });
    const ce = new CopyEngine(m.sched, m.cost);
    const { host, dev } = stores(8);
    const ends: [string, number][] = [];
    m.sched.spawn('a', async () => {
      await ce.copy(at(host, 4), at(dev, 4), 'h2d');
      ends.push(['a', m.sched.now]);
    });
    m.sched.spawn('b', async () => {
      await ce.copy(at(host, 4), at(dev, 4), 'd2h');
      ends.push(['b', m.sched.now]);
    });
    await m.sched.run();
    const one = ce.transferNs(4, 'h2d');
    expect(ends.map(([, t]) => t)).toEqual([one, one + ce.transferNs(4, 'd2h')]);
  });

  it('fails the next transfer after the given pages, once; the rest never arrives', async () => {
    const m = new Machine({ ramBytes: 64 * PAGE_SIZE });
    const ce = new CopyEngine(m.sched, m.cost);
    const { host, dev } = stores(8);
    ce.failNext(3);
    const r = await m.sched.runTask('copy', () => ce.copy(at(host, 8), at(dev, 8), 'h2d'));
    expect(r.copied).toBe(3);
    expect(r.error).toMatchObject({ code: 'EIO' });
    expect([byte(dev, 2), byte(dev, 3)]).toEqual([3, 0]);
    const again = await m.sched.runTask('copy', () => ce.copy(at(host, 8), at(dev, 8), 'h2d'));
    expect(again).toMatchObject({ copied: 8, error: null });
    expect(() => ce.failNext(-1)).toThrow(/page count/);
    await expect(ce.copy(at(host, 2), at(dev, 1), 'h2d')).rejects.toMatchObject({ code: 'EINVAL' });
  });
});
