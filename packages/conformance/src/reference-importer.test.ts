import { describe, expect, it, vi } from 'vitest';
import {
  HmmError,
  HmmSanitizer,
  Machine,
  MapFlag,
  P2pMapType,
  PAGE_SIZE,
  PciTopology,
  Prot,
  p2pdmaAddResource,
  zapVmaPtes,
} from '@hmm/core';
import type {
  MmStruct,
  P2pImporterRef,
  P2pMapping,
  P2pdmaResource,
  PciEndpoint,
  Process,
  Vma,
  VmOperations,
} from '@hmm/core';
import { P2P_CASES } from './catalog.js';
import { ReferenceP2pImporter } from './index.js';
import { runConformance } from './runner.js';
import type {
  ConformanceFactory,
  ConformanceManifest,
  P2pExporterHandle,
  P2pPlace,
  P2pTarget,
} from './target.js';

const P = PAGE_SIZE;
const BAR_PAGES = 128;

/** A topology that records the names of the devices added to it. */
class RecordingTopology extends PciTopology {
  readonly endpoints: string[] = [];
  override addEndpoint(...args: Parameters<PciTopology['addEndpoint']>): PciEndpoint {
    this.endpoints.push(args[0]);
    return super.addEndpoint(...args);
  }
}

/**
 * A minimal exporter-only driver, on core's public API (the logic of core's test-only
 * `TestP2pExporter`): one object of `pages` pages, kept in the BAR or in system memory. Its device
 * file's `p2pMap` places the object in the BAR when the importer can reach it, else in system memory;
 * every move revokes the mappings (`zapVmaPtes`) first.
 */
class ExporterOnly implements P2pExporterHandle {
  #frames: Int32Array;
  #place: P2pPlace = 'system';
  #barRun = -1;
  #dead = false;
  readonly #mms = new Set<MmStruct>();
  readonly #hog: number[] = [];
  readonly ops: VmOperations;

  constructor(
    readonly machine: Machine,
    readonly topology: PciTopology,
    readonly pci: PciEndpoint,
    readonly bar: P2pdmaResource,
    readonly pages: number,
  ) {
    this.#frames = new Int32Array(pages);
    for (let i = 0; i < pages; i++) this.#frames[i] = this.#allocSystem();
    this.ops = {
      name: `${pci.name}-file`,
      fault: (vma, address) => (this.#dead ? -1 : this.#frames[this.#index(vma, address)]!),
      p2pMap: (vma, start, end, importer) => this.#p2pMap(vma, start, end, importer),
      p2pUnmap: () => {},
    };
  }

  get place(): P2pPlace {
    return this.#place;
  }

  #allocSystem(): number {
    const pfn = this.machine.mm.mem.alloc();
    if (pfn < 0) throw new HmmError('ENOMEM', 'exporter-only: no system page');
    return pfn;
  }

  #index(vma: Vma, address: number): number {
    return (address - vma.start) / P + vma.pgoff;
  }

  #gone(what: string): HmmError {
    return new HmmError('ENODEV', `exporter-only ${this.pci.name}: ${what} after teardown`);
  }

  async mmap(p: Process): Promise<number> {
    const a = await p.mmap({
      length: this.pages * P,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.SHARED,
      ops: this.ops,
    });
    this.#mms.add(p.mm);
    return a;
  }

  /** `zapVmaPtes` over every mapping of the device file. */
  async #revokeAll(): Promise<void> {
    for (const mm of this.#mms) {
      if (mm.state !== 'live') continue;
      for (const vma of mm.vmas.all().filter((v) => v.ops === this.ops)) {
        if (mm.vmas.lookup(vma.start) === vma) await zapVmaPtes(vma, vma.start, vma.end - vma.start);
      }
    }
  }

  async #p2pMap(vma: Vma, start: number, end: number, importer: P2pImporterRef): Promise<P2pMapping> {
    if (this.#dead) throw this.#gone('p2pMap');
    const reach = this.topology.distance(this.pci, importer.pci).type;
    if (reach !== P2pMapType.NOT_SUPPORTED && this.#place === 'system') await this.move('bar');
    if (reach === P2pMapType.NOT_SUPPORTED && this.#place === 'bar') await this.move('system');
    if (this.#dead) throw this.#gone('p2pMap');
    const n = (end - start) / P;
    const first = this.#index(vma, start);
    const pfns = this.#frames.slice(first, first + n);
    const useBar = this.#place === 'bar';
    const bus = new Float64Array(n).fill(-1);
    if (useBar) for (let i = 0; i < n; i++) bus[i] = this.bar.toBus(pfns[i]!);
    return {
      start,
      end,
      pfns,
      bus,
      type: useBar ? reach : P2pMapType.NOT_SUPPORTED,
      writable: vma.writable,
    };
  }

  async move(to: P2pPlace): Promise<P2pPlace> {
    if (this.#dead) throw this.#gone('move');
    let run = -1;
    let place: P2pPlace = to;
    if (to === 'bar') {
      run = this.bar.alloc(this.pages);
      if (run < 0) place = 'system';
    }
    if (place === 'system' && this.#place === 'system' && to === 'bar') return 'system';
    await this.#revokeAll();
    if (this.#dead) {
      if (run >= 0) this.bar.free(run);
      throw this.#gone('move');
    }
    const next = new Int32Array(this.pages);
    for (let i = 0; i < this.pages; i++) {
      next[i] = place === 'bar' ? run + i : this.#allocSystem();
      this.machine.mm.mem.copyFrame(next[i]!, this.#frames[i]!);
    }
    this.#release();
    this.#frames = next;
    this.#place = place;
    this.#barRun = run;
    return place;
  }

  #release(): void {
    if (this.#place === 'bar') this.bar.free(this.#barRun);
    else for (const pfn of this.#frames) this.machine.mm.putPage(pfn);
    this.#barRun = -1;
  }

  exhaustBar(): void {
    for (;;) {
      const pfn = this.bar.alloc(1);
      if (pfn < 0) return;
      this.#hog.push(pfn);
    }
  }

  releaseBar(): void {
    for (const pfn of this.#hog.splice(0)) this.bar.free(pfn);
  }

  async teardown(): Promise<void> {
    if (this.#dead) return;
    this.#dead = true;
    await this.#revokeAll();
    this.#release();
    this.#frames = new Int32Array(0);
  }
}

/**
 * A factory of exporter-only targets: `hb0` → `sw0` → `gpu0` (the exporter, with a BAR). `peer`
 * `endpoint: false` leaves out `exporterEndpoint`; `seen` collects every target's topology.
 */
function exporterOnlyFactory(
  opts: { endpoint?: boolean; seen?: RecordingTopology[] } = {},
): ConformanceFactory {
  return async ({ seed }) => {
    const machine = new Machine({ seed });
    const topology = new RecordingTopology(machine.cost);
    const gpu = topology.addEndpoint('gpu0', topology.addSwitch('sw0', topology.addHostBridge('hb0', 'any')));
    const bar = p2pdmaAddResource(machine.mm, topology, gpu, { bar: 2, barBytes: BAR_PAGES * P });
    bar.published = true;
    const p2p: P2pTarget = {
      topology,
      ...(opts.endpoint === false ? {} : { exporterEndpoint: gpu }),
      createExporter: (pages) => Promise.resolve(new ExporterOnly(machine, topology, gpu, bar, pages)),
    };
    opts.seen?.push(topology);
    return {
      machine,
      open: () => Promise.reject(new HmmError('ENODEV', 'exporter-only driver: no mirror device')),
      p2p,
      teardown: () => machine.sched.runTask('unload', async () => bar.remove()),
    };
  };
}

const EXPORTER_ONLY: ConformanceManifest = { name: 'exporter-only', capabilities: ['p2p-exporter'] };
const P2P_IDS = P2P_CASES.map((c) => c.id);

describe('the p2p cases for an exporter-only driver (reference importer)', () => {
  it('runs every p2p case with the reference importer, and they all pass', async () => {
    const seen: RecordingTopology[] = [];
    const report = await runConformance(exporterOnlyFactory({ seen }), EXPORTER_ONLY, { only: P2P_IDS });
    expect(report.failed.map((r) => `${r.id}: ${r.error?.message}`)).toEqual([]);
    expect(report.skipped).toEqual([]);
    expect(report.passed.map((r) => r.id)).toEqual(P2P_IDS);
    // At most one reference device per position per target, however many importers a case made.
    expect(seen).toHaveLength(P2P_IDS.length);
    for (const t of seen) {
      const count = (name: string) => t.endpoints.filter((n) => n === name).length;
      expect(t.endpoints[0]).toBe('gpu0');
      expect(count('conformance-peer-importer')).toBe(1);
      expect(count('conformance-far-importer')).toBeLessThanOrEqual(1);
      expect(t.endpoints.length).toBe(
        1 + count('conformance-peer-importer') + count('conformance-far-importer'),
      );
    }
    // topology_fallback placed one importer without a peer path.
    expect(seen[P2P_IDS.indexOf('p2p.topology_fallback')]!.endpoints).toContain('conformance-far-importer');
  });

  it('fails the p2p cases of a driver declaring p2p-importer without createImporter', async () => {
    const report = await runConformance(
      exporterOnlyFactory(),
      { name: 'claims-importer', capabilities: ['p2p-exporter', 'p2p-importer'] },
      { only: P2P_IDS },
    );
    expect(report.passed).toEqual([]);
    expect(report.failed.map((r) => r.id)).toEqual(P2P_IDS);
    for (const r of report.failed) {
      expect(r.error?.contract).toMatch(
        /^the driver declares p2p-importer, so its P2pTarget supplies createImporter \(it has none;/,
      );
    }
  });

  it("watches the reference importers with the runner's sanitizer", async () => {
    const watch = vi.spyOn(HmmSanitizer.prototype, 'watch');
    try {
      const report = await runConformance(exporterOnlyFactory(), EXPORTER_ONLY, {
        only: ['p2p.topology_fallback'],
      });
      expect(report.passed.map((r) => r.id)).toEqual(['p2p.topology_fallback']);
      expect(watch.mock.calls.map(([device]) => device.name)).toEqual([
        'conformance-far-importer',
        'conformance-peer-importer',
      ]);
    } finally {
      watch.mockRestore();
    }
  });

  it('fails the p2p cases of a target with neither createImporter nor exporterEndpoint', async () => {
    const report = await runConformance(exporterOnlyFactory({ endpoint: false }), EXPORTER_ONLY, {
      only: ['p2p.map_read'],
    });
    expect(report.failed.map((r) => r.id)).toEqual(['p2p.map_read']);
    expect(report.failed[0]!.error?.contract).toMatch(/neither createImporter nor exporterEndpoint/);
  });
});

describe('ReferenceP2pImporter', () => {
  it('reads through the BAR page by page, taking bus time, and gives its mapping back on a zap', async () => {
    const machine = new Machine({ seed: 3 });
    const topology = new PciTopology(machine.cost);
    const sw = topology.addSwitch('sw0', topology.addHostBridge('hb0', 'any'));
    const gpu = topology.addEndpoint('gpu0', sw);
    const nic = topology.addEndpoint('nic0', sw);
    const bar = p2pdmaAddResource(machine.mm, topology, gpu, { bar: 2, barBytes: 16 * P });
    const exp = new ExporterOnly(machine, topology, gpu, bar, 4);
    await machine.sched.runTask('t', async () => {
      const p = machine.createProcess('t');
      const a = await exp.mmap(p);
      const data = new Uint8Array(4 * P).map((_, i) => (i * 13) & 0xff);
      await p.write(a, data);
      const imp = new ReferenceP2pImporter(machine, topology, nic, p, a, 4);
      const t0 = machine.sched.now;
      expect(await imp.read(a, 4 * P)).toEqual(data);
      expect(machine.sched.now).toBeGreaterThan(t0);
      expect(imp.mapping?.type).toBe(P2pMapType.BUS_ADDR);
      expect(exp.place).toBe('bar');
      expect(imp.devicePages()).toBe(4);
      // The first p2pMap moved the object into the BAR, which revoked it: the fault asked again.
      const maps = imp.maps;
      expect(maps).toBeGreaterThan(0);
      await zapVmaPtes(p.mm.vmas.lookup(a)!, a, 4 * P);
      expect(imp.mapping).toBeNull();
      expect(imp.devicePages()).toBe(0);
      expect(await imp.read(a + P, 10)).toEqual(data.subarray(P, P + 10));
      expect(imp.maps).toBe(maps + 1);
      await expect(imp.read(a + 4 * P, 1)).rejects.toMatchObject({ code: 'EINVAL' });
      await imp.close();
      expect(imp.mapping).toBeNull();
      await expect(imp.read(a, 1)).rejects.toMatchObject({ code: 'EBADF' });
      await exp.teardown();
      await p.munmap(a, 4 * P);
    });
    bar.remove();
    expect(machine.mm.mem.allocatedDeviceFrames()).toEqual([]);
    machine.checkInvariants();
  });
});
