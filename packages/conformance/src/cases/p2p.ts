/**
 * The peer-to-peer group (beyond the kernel's tests): a driver's exporter puts an object behind a
 * device file (in its BAR, `drivers/pci/p2pdma.c`, or in system memory), a process maps the file,
 * and a driver's importer reaches the mapping through `p2pMap` (the 2019 linux-mm `p2p_map`
 * proposal). The cases check the data byte for byte, the mapping type (BUS_ADDR through the BAR,
 * NOT_SUPPORTED for the system-memory fallback), revocation by `zapVmaPtes` and both teardowns.
 *
 * They run for a driver declaring `p2p-exporter` or `p2p-importer`: a driver declaring
 * `p2p-importer` imports through its own `P2pTarget.createImporter` (from the target's exporter,
 * its own or any other); an exporter-only driver is checked against the suite's
 * {@link ReferenceP2pImporter}, placed on the target's topology relative to `P2pTarget.exporterEndpoint`.
 *
 * @module
 */
import { P2pMapType, isHmmError, zapVmaPtes } from '@hmm/core';
import type { Machine, PciEndpoint, PciSwitch, PciTopology, Process } from '@hmm/core';
import type { Capability } from '../catalog.js';
import { ConformanceFailure, check, checkEqual } from '../assert.js';
import { ReferenceP2pImporter } from '../reference/p2p-importer.js';
import { importerWatchOf } from '../reference/watch.js';
import type {
  ConformanceTarget,
  P2pExporterHandle,
  P2pImporterHandle,
  P2pPlace,
  P2pPosition,
  P2pTarget,
} from '../target.js';
import { P, checkMachine } from './common.js';
import type { CaseContext, CaseFn } from './common.js';

/** Pages of the exported object (a transfer of all of them takes a while on the bus). */
export const PAGES = 32;

/** The target's p2p side, or a failure: the driver declared the p2p capability. */
function p2pOf(t: ConformanceTarget): P2pTarget {
  if (t.p2p === undefined) {
    throw new ConformanceFailure(
      'the driver declares p2p-exporter or p2p-importer, so its target has a p2p member (P2pTarget)',
    );
  }
  return t.p2p;
}

/** Creates an importer of `pages` pages at `addr` of `process`, at `position`. */
type CreateImporter = (
  process: Process,
  addr: number,
  pages: number,
  position: P2pPosition,
) => Promise<P2pImporterHandle>;

/** Reference importer endpoints already added, by exporter endpoint and position. */
const referenceEndpoints = new WeakMap<PciEndpoint, Map<P2pPosition, PciEndpoint>>();

/**
 * The device of a reference importer at `position` relative to `exporter` on `topology`, added on
 * first use and reused after (one per exporter and position): `'peer'` below the exporter's
 * switch, `'no-peer-path'` below a switch of a new host bridge that forwards no peer traffic.
 */
function referenceEndpoint(topology: PciTopology, exporter: PciEndpoint, position: P2pPosition): PciEndpoint {
  let byPosition = referenceEndpoints.get(exporter);
  if (byPosition === undefined) {
    byPosition = new Map();
    referenceEndpoints.set(exporter, byPosition);
  }
  const known = byPosition.get(position);
  if (known !== undefined) return known;
  let ep: PciEndpoint;
  try {
    if (position === 'peer') {
      const parent = exporter.parent;
      if (parent === null || parent.kind !== 'switch') {
        throw new ConformanceFailure(
          `P2pTarget.exporterEndpoint '${exporter.name}' sits below a switch, so that a reference ` +
            `importer next to it reaches its BAR by bus address (its parent is ${
              parent === null ? 'none' : `${parent.kind} '${parent.name}'`
            })`,
        );
      }
      ep = topology.addEndpoint('conformance-peer-importer', parent as PciSwitch);
    } else {
      const bridge = topology.addHostBridge('conformance-hb-nop2p', 'none');
      ep = topology.addEndpoint('conformance-far-importer', topology.addSwitch('conformance-rp', bridge));
    }
  } catch (e) {
    if (e instanceof ConformanceFailure) throw e;
    throw new ConformanceFailure(
      `P2pTarget.exporterEndpoint is a device of P2pTarget.topology (placing a reference importer failed: ${
        e instanceof Error ? e.message : String(e)
      })`,
      {},
      { cause: e },
    );
  }
  byPosition.set(position, ep);
  return ep;
}

/**
 * How the case creates importers: the driver's `createImporter`, or, for an exporter-only driver,
 * a {@link ReferenceP2pImporter} next to `exporterEndpoint` (watched by the runner's sanitizer).
 * Fails if the driver declares `p2p-importer` without `createImporter`, or supplies neither
 * `createImporter` nor `exporterEndpoint`.
 */
function importerFactoryOf(
  t: ConformanceTarget,
  p2p: P2pTarget,
  capabilities: readonly Capability[],
): CreateImporter {
  if (p2p.createImporter !== undefined) {
    return (process, addr, pages, position) => p2p.createImporter!(process, addr, pages, position);
  }
  if (capabilities.includes('p2p-importer')) {
    throw new ConformanceFailure(
      'the driver declares p2p-importer, so its P2pTarget supplies createImporter (it has none; ' +
        "an exporter-only driver leaves p2p-importer out and the cases use the suite's reference importer)",
    );
  }
  const exporter = p2p.exporterEndpoint;
  if (exporter === undefined) {
    throw new ConformanceFailure(
      'a P2pTarget without createImporter gives exporterEndpoint (the exporter on its topology, next ' +
        'to which the reference importer is placed): the target has neither createImporter nor exporterEndpoint',
    );
  }
  const watch = importerWatchOf(p2p);
  return async (process, addr, pages, position) => {
    const ep = referenceEndpoint(p2p.topology, exporter, position);
    const imp = new ReferenceP2pImporter(t.machine, p2p.topology, ep, process, addr, pages);
    watch?.(imp, process);
    return imp;
  };
}

/** `len` bytes of a pattern that differs with `salt`. */
export function pattern(len: number, salt: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 7 + salt * 31 + (i >> 12)) & 0xff);
}

/** Byte-for-byte equality, reporting the first mismatch. */
export function checkBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  checkEqual(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) {
      throw new ConformanceFailure(`${what}: byte ${i} is ${got[i]}, expected ${want[i]}`);
    }
  }
}

/** Checks the importer's mapping type. */
export function checkType(imp: P2pImporterHandle, type: number, what: string): void {
  check(imp.mapping !== null, `${what}: the importer holds a peer mapping after its read`);
  checkEqual(
    imp.mapping.type,
    type,
    `${what}: mapping type (${type === P2pMapType.BUS_ADDR ? 'BUS_ADDR' : 'NOT_SUPPORTED'} expected)`,
  );
}

/** Checks that the importer holds nothing: no peer mapping, no device entry. */
export function checkRevoked(imp: P2pImporterHandle, what: string): void {
  check(imp.mapping === null, `${what}: the importer gave its peer mapping back (p2pUnmap)`);
  checkEqual(imp.devicePages(), 0, `${what}: device page-table entries left over the range`);
}

/** The fixture of a p2p case. */
export interface P2pFixture {
  readonly m: Machine;
  readonly p: Process;
  readonly p2p: P2pTarget;
  readonly exp: P2pExporterHandle;
  /** Address of the device-file mapping. */
  readonly a: number;
  /** What the CPU wrote into the object. */
  readonly data: Uint8Array;
  importer(position?: 'peer' | 'no-peer-path'): Promise<P2pImporterHandle>;
  /** Tears the exporter down (once) and checks no device frame is left allocated. */
  teardownExporter(): Promise<void>;
}

/**
 * Creates a process and an exporter of {@link PAGES} pages, maps its device file and writes a
 * pattern through the CPU mapping; runs `body` in a task (which closes its importers); then
 * tears the exporter down, unmaps, and checks no device frame is left and the machine is consistent.
 */
export async function withP2p(
  t: ConformanceTarget,
  ctx: CaseContext,
  body: (f: P2pFixture) => Promise<void>,
): Promise<void> {
  const m = t.machine;
  const p2p = p2pOf(t);
  const createImporter = importerFactoryOf(t, p2p, ctx.capabilities);
  await m.sched.runTask('p2p-tests', async () => {
    const p = m.createProcess('p2p-tests');
    const exp = await p2p.createExporter(PAGES);
    checkEqual(exp.pages, PAGES, 'pages of the exported object');
    const a = await exp.mmap(p);
    const data = pattern(PAGES * P, 1);
    await p.write(a, data);
    checkBytes(await p.read(a, PAGES * P), data, 'CPU read-back through the device-file mapping');
    const importers: P2pImporterHandle[] = [];
    let torn = false;
    const f: P2pFixture = {
      m,
      p,
      p2p,
      exp,
      a,
      data,
      importer: async (position = 'peer') => {
        const imp = await createImporter(p, a, PAGES, position);
        importers.push(imp);
        return imp;
      },
      teardownExporter: async () => {
        if (torn) return;
        torn = true;
        await exp.teardown();
        checkEqual(
          m.mm.mem.allocatedDeviceFrames(),
          [],
          'device frames still allocated after the exporter teardown (BAR memory freed)',
        );
      },
    };
    try {
      await body(f);
    } catch (e) {
      // A failed case may leave importers open; close them best-effort (each case closes its own).
      for (const imp of importers) await imp.close().catch(() => {});
      throw e;
    }
    await f.teardownExporter();
    await p.munmap(a, PAGES * P);
  });
  checkMachine(m);
}

/** The p2p group's cases, by catalogue id. */
export const P2P_CASES_IMPL: Readonly<Record<string, CaseFn>> = {
  'p2p.map_read': async (t, ctx) => {
    await withP2p(t, ctx, async ({ exp, a, data, importer }) => {
      const imp = await importer('peer');
      checkBytes(await imp.read(a, PAGES * P), data, 'importer read of the whole object');
      checkType(imp, P2pMapType.BUS_ADDR, "importer below the exporter's switch");
      checkEqual(exp.place, 'bar', 'where the object is once a peer importer mapped it');
      checkEqual(imp.devicePages(), PAGES, 'device page-table entries of the importer');
      checkBytes(
        await imp.read(a + 3 * P + 100, 2 * P),
        data.subarray(3 * P + 100, 5 * P + 100),
        'importer read at an offset',
      );
      await imp.close();
    });
  },

  'p2p.bar_exhausted_fallback': async (t, ctx) => {
    await withP2p(t, ctx, async ({ exp, a, data, importer }) => {
      exp.exhaustBar();
      const imp = await importer('peer');
      checkBytes(await imp.read(a, PAGES * P), data, 'importer read with the BAR full');
      checkType(imp, P2pMapType.NOT_SUPPORTED, 'BAR full: system-memory fallback');
      checkEqual(exp.place, 'system', 'where the object is with the BAR full');
      exp.releaseBar();
      checkEqual(await exp.move('bar'), 'bar', 'move to the BAR once it has room');
      checkRevoked(imp, 'after the move');
      checkBytes(await imp.read(a, PAGES * P), data, 'importer read after the move to the BAR');
      checkType(imp, P2pMapType.BUS_ADDR, 'BAR freed: peer mapping');
      await imp.close();
    });
  },

  'p2p.topology_fallback': async (t, ctx) => {
    await withP2p(t, ctx, async ({ exp, a, data, importer }) => {
      const imp = await importer('no-peer-path');
      checkBytes(await imp.read(a, PAGES * P), data, 'importer read without a peer path');
      checkType(imp, P2pMapType.NOT_SUPPORTED, 'importer without a peer path');
      checkEqual(exp.place, 'system', 'where the object is for an importer without a peer path');
      // A peer importer meanwhile reads the same data, wherever the exporter serves it from.
      const peer = await importer('peer');
      checkBytes(await peer.read(a, PAGES * P), data, 'peer importer read next to the far one');
      checkBytes(await imp.read(a, PAGES * P), data, 'far importer read again');
      check(imp.mapping !== null, 'the far importer holds a mapping after its read');
      checkEqual(imp.mapping.type, P2pMapType.NOT_SUPPORTED, 'far importer mapping type');
      await peer.close();
      await imp.close();
    });
  },

  'p2p.zap_mid_transfer': async (t, ctx) => {
    await withP2p(t, ctx, async ({ m, p, exp, a, data, importer }) => {
      const imp = await importer('peer');
      let done = false;
      let got: Uint8Array | null = null;
      const transfer = m.sched.spawn('importer-transfer', async () => {
        got = await imp.read(a, PAGES * P);
        done = true;
      });
      // Wait until the transfer has its mapping (a device fault may take a while: up to 10 ms of
      // simulated time), then zap while it is still running.
      const deadline = m.sched.now + 10_000_000;
      while (m.sched.now < deadline && imp.mapping === null && !done) await m.sched.sleep(20);
      check(
        imp.mapping !== null && !done,
        'the transfer of several pages takes simulated time after mapping',
      );
      const before = imp.mapping;
      const mapsBefore = imp.maps;
      const vma = p.mm.vmas.lookup(a);
      check(vma !== undefined, 'the device-file mapping exists');
      await zapVmaPtes(vma, a, PAGES * P);
      const runningAfterZap = !done;
      if (imp.maps === mapsBefore) checkRevoked(imp, 'right after the zap');
      else check(imp.mapping !== before, 'after the zap the importer holds only a mapping taken after it');
      await transfer.join();
      check(got !== null, 'the transfer finished');
      checkBytes(got, data, 'the transfer that was zapped in the middle');
      // The rest of a transfer still running when the zap completed went through a new mapping.
      if (runningAfterZap) check(imp.maps > mapsBefore, 'the transfer mapped again after the zap');
      // Quiet now: a zap leaves nothing; the object moves and gets new data; the next read maps again.
      await zapVmaPtes(vma, a, PAGES * P);
      checkRevoked(imp, 'after a completed zap');
      const place: P2pPlace = exp.place === 'bar' ? 'system' : 'bar';
      checkEqual(await exp.move(place), place, 'the move after the zap');
      const fresh = pattern(PAGES * P, 2);
      await p.write(a, fresh);
      const maps = imp.maps;
      checkBytes(await imp.read(a, PAGES * P), fresh, 'the read after the zap and move (no stale data)');
      check(imp.maps > maps, 'the read after a zap maps again (p2pMap)');
      await imp.close();
    });
  },

  'p2p.exporter_moves': async (t, ctx) => {
    await withP2p(t, ctx, async ({ m, exp, a, data, importer }) => {
      const imp = await importer('peer');
      // Pace the moves by the importer's own speed: one cold read (a fault and a transfer) each.
      const t0 = m.sched.now;
      checkBytes(await imp.read(a, PAGES * P), data, 'first importer read');
      const readNs = Math.max(1000, m.sched.now - t0);
      const reads: string[] = [];
      let moves = 0;
      let moving = true;
      const reader = m.sched.spawn('importer', async () => {
        for (let i = 0; moving || i < 3; i++) {
          const got = await imp.read(a, PAGES * P);
          const bad = got.findIndex((b, j) => b !== data[j]);
          if (bad >= 0) reads.push(`read ${i}: byte ${bad} is ${got[bad]}, expected ${data[bad]}`);
          await m.sched.sleep(readNs / 10);
        }
      });
      const mover = m.sched.spawn('exporter', async () => {
        for (let i = 0; i < 10; i++) {
          await m.sched.sleep(readNs);
          const to: P2pPlace = i % 2 === 0 ? 'system' : 'bar';
          const went = await exp.move(to);
          if (went !== to) reads.push(`move ${i} to ${to} went to ${went}`);
          moves++;
        }
        moving = false;
      });
      await reader.join();
      await mover.join();
      checkEqual(moves, 10, 'moves done');
      checkEqual(reads, [], 'every read under the moving exporter matches the data');
      check(imp.maps > 5, `the importer mapped again after the moves (${imp.maps} p2pMap calls)`);
      await imp.close();
    });
  },

  'p2p.importer_teardown': async (t, ctx) => {
    await withP2p(t, ctx, async ({ a, data, importer, teardownExporter }) => {
      const imp = await importer('peer');
      checkBytes(await imp.read(a, PAGES * P), data, 'importer read');
      checkType(imp, P2pMapType.BUS_ADDR, 'before the importer teardown');
      await imp.close();
      checkRevoked(imp, 'after the importer teardown');
      // Nothing is left mapped: the exporter tears down and frees everything.
      await teardownExporter();
    });
  },

  'p2p.exporter_teardown': async (t, ctx) => {
    await withP2p(t, ctx, async ({ exp, a, data, importer, teardownExporter }) => {
      const one = await importer('peer');
      const two = await importer('peer');
      checkBytes(await one.read(a, PAGES * P), data, 'first importer read');
      checkBytes(await two.read(a, PAGES * P), data, 'second importer read');
      checkType(one, P2pMapType.BUS_ADDR, 'first importer before the exporter teardown');
      checkType(two, P2pMapType.BUS_ADDR, 'second importer before the exporter teardown');
      checkEqual(exp.place, 'bar', 'where the object is while imported');
      // Revokes both importers, then frees the BAR memory (checked: no device frame left).
      await teardownExporter();
      checkRevoked(one, 'first importer after the exporter teardown');
      checkRevoked(two, 'second importer after the exporter teardown');
      let failed = false;
      try {
        await one.read(a, P);
      } catch (e) {
        if (!isHmmError(e)) throw e;
        failed = true;
      }
      check(failed, 'a read after the exporter teardown fails instead of reaching freed memory');
      checkRevoked(one, 'first importer after the refused read');
      await one.close();
      await two.close();
    });
  },
};
