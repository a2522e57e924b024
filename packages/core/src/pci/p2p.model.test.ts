/**
 * Model-based property test of peer-to-peer: a process maps the device file of a p2p exporter
 * (`TestP2pExporter`, one object in its BAR or in system memory) and 1–3 importers
 * (`TestP2pImporter`: below the same switch, or on a root port of a host bridge without a peer
 * path) reach it through `p2pMap`. Random sequences of CPU reads and writes through the mapping,
 * importer reads and writes of random sub-ranges, `zapVmaPtes` of random sub-ranges, exporter moves
 * (alone or while an importer or the CPU reads or writes in another task), a third party filling
 * and freeing the BAR, importer close and re-creation, an mprotect that splits the mapping (special
 * mappings never merge back; the importers' whole-range `p2pMap` then fails with EINVAL), and
 * exporter teardown (at the end, or mid-way, possibly racing reads) run as simulated tasks against
 * a reference model of the object's bytes. After every step: every byte read equals the model, the
 * object's frames hold exactly the model (no byte lost), an importer's device entries all come from
 * its live p2p mapping, the sanitizer watching every importer saw nothing, and the memory manager's
 * invariants hold. After teardown, CPU access raises SIGBUS (EFAULT), importer access and `move`
 * fail with ENODEV, nothing hangs. At the end every RAM and device frame is free.
 * HMM_PROP_RUNS / HMM_PROP_SEED / HMM_PROP_STATS as in mm.model.test.ts.
 */
import { PROP_RUNS, PropStats, propParameters } from '../testing/property.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HmmError, isHmmError } from '../errors/errno.js';
import { Prot } from '../mm/constants.js';
import { zapVmaPtes } from '../mm/memory.js';
import type { Process } from '../mm/process.js';
import { mmuIntervalNotifierInsert, mmuIntervalNotifierRemove } from '../hmm/mmu-interval-notifier.js';
import { HmmSanitizer } from '../sanitizer/hmm-sanitizer.js';
import { Machine } from '../system/machine.js';
import { P } from '../testing/fixtures.js';
import { TestP2pExporter } from '../testing/p2p-exporter.js';
import { TestP2pImporter } from '../testing/p2p-importer.js';
import { p2pMappingLive } from './p2p-map.js';
import { p2pdmaAddResource } from './p2pdma.js';
import type { P2pdmaResource } from './p2pdma.js';
import { P2pMapType, PciTopology } from './topology.js';
import type { PciEndpoint } from './topology.js';

const STATS = new PropStats();

/** Counts an event for HMM_PROP_STATS (no-op otherwise). */
function stat(key: string, n = 1): void {
  STATS.add(key, n);
}

const RUNS = PROP_RUNS;
/** Simulated time a step may take before it counts as a livelock (ns). */
const STEP_BUDGET_NS = 5e9;

/** The machine of one run. */
interface Config {
  /** Pages of the object. */
  objPages: number;
  /** Pages of the BAR window (sometimes smaller than the object: always system memory). */
  barPages: number;
  /** A second importer below the same switch. */
  second: boolean;
  /** An importer below a host bridge without peer-to-peer support. */
  far: boolean;
  /** The process maps the device file read-only. */
  readOnly: boolean;
  /** Seed of the scheduler: which of the tasks ready at the same instant runs first. */
  seed: number;
}

/** One generated step; numbers are taken modulo the state when the step runs. */
type Op =
  | { t: 'cpuWrite'; off: number; len: number; byte: number }
  | { t: 'cpuRead'; off: number; len: number }
  | { t: 'impRead'; who: number; off: number; len: number }
  | { t: 'impWrite'; who: number; off: number; len: number; byte: number }
  | { t: 'zap'; from: number; pages: number }
  /** mprotect a sub-range read-only and back: the VMA splits, then merges again. */
  | { t: 'split'; from: number; pages: number; go: number }
  /** A move, alone or racing an access that starts `delay` ns later. */
  | {
      t: 'move';
      to: 'bar' | 'system';
      during: 'none' | 'read' | 'write' | 'cpu';
      who: number;
      off: number;
      len: number;
      byte: number;
      delay: number;
    }
  | { t: 'allRead' }
  | { t: 'hog'; pages: number }
  | { t: 'reopen'; who: number }
  /** Exporter teardown; `race`: while every importer reads the whole object. */
  | { t: 'teardown'; race: boolean };

const n = fc.nat({ max: 1 << 20 });
const byte = fc.nat({ max: 255 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('cpuWrite' as const), off: n, len: n, byte }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('cpuRead' as const), off: n, len: n }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('impRead' as const), who: n, off: n, len: n }) },
  {
    weight: 3,
    arbitrary: fc.record({ t: fc.constant('impWrite' as const), who: n, off: n, len: n, byte }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('zap' as const), from: n, pages: n }) },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant('move' as const),
      to: fc.constantFrom('bar' as const, 'system' as const),
      during: fc.constantFrom('none' as const, 'read' as const, 'write' as const, 'cpu' as const),
      who: n,
      off: n,
      len: n,
      byte,
      delay: fc.constantFrom(0, 0, 1, 100, 500, 2000, 10_000),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('allRead' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant('split' as const), from: n, pages: n, go: fc.nat({ max: 3 }) }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('hog' as const), pages: n }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('reopen' as const), who: n }) },
);

const configArb: fc.Arbitrary<Config> = fc
  .record({
    objPages: fc.integer({ min: 1, max: 6 }),
    barExtra: fc.integer({ min: -3, max: 8 }),
    second: fc.boolean(),
    far: fc.boolean(),
    ro: fc.nat({ max: 4 }),
    seed: fc.nat(),
  })
  .map(({ objPages, barExtra, second, far, ro, seed }) => ({
    objPages,
    barPages: Math.max(1, objPages + barExtra),
    second,
    far,
    readOnly: ro === 0,
    seed,
  }));

function pattern(len: number, b: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (b + i * 13) & 0xff);
}

/** `toEqual` on bytes, but fast when they are equal (it runs thousands of times). */
function expectBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  let same = got.length === want.length;
  for (let i = 0; same && i < got.length; i++) same = got[i] === want[i];
  if (!same) expect(got, what).toEqual(want);
}

function code(e: unknown): string {
  return isHmmError(e) ? e.code : String(e);
}

/** The topology: a switch with the exporter and two importers; a far importer below another root. */
function topo(m: Machine) {
  const t = new PciTopology(m.cost);
  const hb0 = t.addHostBridge('hb0', 'any');
  const hb1 = t.addHostBridge('hb1', 'none');
  const sw = t.addSwitch('sw0', hb0);
  const gpu = t.addEndpoint('gpu0', sw);
  const nic0 = t.addEndpoint('nic0', sw);
  const nic1 = t.addEndpoint('nic1', sw);
  const far = t.addEndpoint('far0', t.addSwitch('rp1', hb1));
  return { t, gpu, nic0, nic1, far };
}

class World {
  readonly m: Machine;
  readonly p: Process;
  readonly t: PciTopology;
  readonly gpu: PciEndpoint;
  readonly pcis: PciEndpoint[];
  readonly bar: P2pdmaResource;
  readonly exp: TestP2pExporter;
  readonly san: HmmSanitizer;
  readonly size: number;
  readonly model: Uint8Array;
  imps: TestP2pImporter[] = [];
  a = 0;
  hog = -1;
  dead = false;
  /** The mapping was split by mprotect (special mappings never merge again). */
  split = false;
  readonly log: string[] = [];

  constructor(readonly cfg: Config) {
    this.m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P, seed: cfg.seed });
    this.p = this.m.createProcess();
    const { t, gpu, nic0, nic1, far } = topo(this.m);
    this.t = t;
    this.gpu = gpu;
    this.pcis = [nic0];
    if (cfg.second) this.pcis.push(nic1);
    if (cfg.far) this.pcis.push(far);
    expect(t.distance(gpu, far).type).toBe(P2pMapType.NOT_SUPPORTED);
    this.bar = p2pdmaAddResource(this.m.mm, t, gpu, { bar: 1, barBytes: cfg.barPages * P });
    this.exp = new TestP2pExporter(this.m, t, gpu, this.bar, cfg.objPages);
    this.san = new HmmSanitizer(this.m.mm, 'throw');
    this.size = cfg.objPages * P;
    this.model = new Uint8Array(this.size);
  }

  async init(): Promise<void> {
    const m = this.m;
    // Fill the object through a writable mapping first, then map it as configured.
    const init = pattern(this.size, 0x5a);
    const wr = await m.sched.runTask('map-rw', () => this.exp.mmap(this.p));
    await m.sched.runTask('init', () => this.p.write(wr, init));
    await m.sched.runTask('unmap-rw', () => this.p.munmap(wr, this.size));
    this.model.set(init);
    const prot = this.cfg.readOnly ? Prot.READ : Prot.READ | Prot.WRITE;
    this.a = await m.sched.runTask('map', () => this.exp.mmap(this.p, prot));
    for (const pci of this.pcis) this.imps.push(this.newImporter(pci));
    this.check();
  }

  newImporter(pci: PciEndpoint): TestP2pImporter {
    const imp = new TestP2pImporter(this.m, this.p, pci, this.a, this.cfg.objPages);
    this.san.watch(imp.device, imp.asid, this.p.mm);
    return imp;
  }

  /** Runs `fns` as concurrent tasks; fails on a livelock instead of hanging. */
  async run(name: string, ...fns: (() => Promise<unknown>)[]): Promise<PromiseSettledResult<unknown>[]> {
    const sched = this.m.sched;
    const tasks = fns.map((fn, i) => sched.spawn(`${name}${i}`, fn));
    const outcome = await sched.run({ until: sched.now + STEP_BUDGET_NS });
    expect(outcome, `${name}: still running after ${STEP_BUDGET_NS} simulated ns (livelock)`).toBe('idle');
    return Promise.allSettled(tasks.map((tk) => tk.result));
  }

  range(off: number, len: number, max = this.size): [number, number] {
    const o = off % this.size;
    return [o, 1 + (len % Math.min(max, this.size - o))];
  }

  /**
   * The errno an importer access must fail with, or null: EINVAL once the mapping is split (its
   * range is no longer inside one VMA: `p2pMap` refuses before asking the exporter), EPERM for a write
   * to a read-only mapping, ENODEV after teardown.
   */
  impError(write: boolean): string | null {
    if (this.split) return 'EINVAL';
    if (write && this.cfg.readOnly) return 'EPERM';
    return this.dead ? 'ENODEV' : null;
  }

  /** Expects a read result: the model's bytes, or the errno (CPU after teardown: EFAULT). */
  expectRead(r: PromiseSettledResult<unknown>, o: number, l: number, by: 'cpu' | 'imp', what: string): void {
    const err = by === 'imp' ? this.impError(false) : this.dead ? 'EFAULT' : null;
    if (err === null) {
      if (r.status === 'rejected') throw r.reason;
      expectBytes(r.value as Uint8Array, this.model.subarray(o, o + l), what);
    } else {
      expect(r.status, what).toBe('rejected');
      expect(code((r as PromiseRejectedResult).reason), what).toBe(err);
    }
  }

  /** Expects a CPU write result (SIGSEGV read-only, SIGBUS after teardown); updates the model. */
  expectCpuWrite(r: PromiseSettledResult<unknown>, o: number, data: Uint8Array): void {
    if (this.cfg.readOnly || this.dead) {
      expect(r.status).toBe('rejected');
      const e = (r as PromiseRejectedResult).reason as HmmError;
      expect(e.code).toBe('EFAULT');
      expect(e.signal).toBe(this.cfg.readOnly ? 'SIGSEGV' : 'SIGBUS');
    } else {
      if (r.status === 'rejected') throw r.reason;
      this.model.set(data, o);
    }
  }

  /** Expects an importer write result; updates the model when it succeeded. */
  expectImpWrite(r: PromiseSettledResult<unknown>, o: number, data: Uint8Array, what: string): void {
    const err = this.impError(true);
    if (err !== null) {
      expect(r.status, what).toBe('rejected');
      expect(code((r as PromiseRejectedResult).reason), what).toBe(err);
    } else {
      if (r.status === 'rejected') throw r.reason;
      this.model.set(data, o);
    }
  }

  async step(op: Op): Promise<void> {
    stat(`${op.t}${op.t === 'move' ? `-${op.during}` : ''}${this.dead ? '-dead' : ''}`);
    const { p, exp, a } = this;
    const who = (x: number) => this.imps[x % this.imps.length]!;
    switch (op.t) {
      case 'cpuWrite': {
        const [o, l] = this.range(op.off, op.len, 2 * P);
        const data = pattern(l, op.byte);
        this.log.push(`cpuWrite ${o}+${l}`);
        const [r] = await this.run('cpuWrite', () => p.write(a + o, data));
        this.expectCpuWrite(r!, o, data);
        break;
      }
      case 'cpuRead': {
        const [o, l] = this.range(op.off, op.len, 2 * P);
        this.log.push(`cpuRead ${o}+${l}`);
        const [r] = await this.run('cpuRead', () => p.read(a + o, l));
        if (this.dead) {
          expect(r!.status).toBe('rejected');
          expect(((r as PromiseRejectedResult).reason as HmmError).signal).toBe('SIGBUS');
        }
        this.expectRead(r!, o, l, 'cpu', 'cpu read');
        break;
      }
      case 'impRead': {
        const imp = who(op.who);
        const [o, l] = this.range(op.off, op.len);
        this.log.push(`impRead ${imp.pci.name} ${o}+${l}`);
        const [r] = await this.run('impRead', () => imp.read(a + o, l));
        this.expectRead(r!, o, l, 'imp', `${imp.pci.name} read`);
        if (!this.dead && imp.mapping !== null) {
          // The far importer never gets bus addresses; a near one gets them whenever the object is in the BAR.
          const reach = this.t.distance(this.gpu, imp.pci).type;
          if (reach === P2pMapType.NOT_SUPPORTED) expect(imp.mapping.type).toBe(P2pMapType.NOT_SUPPORTED);
          expect(imp.mapping.type === P2pMapType.NOT_SUPPORTED).toBe(exp.place === 'system');
        }
        break;
      }
      case 'impWrite': {
        const imp = who(op.who);
        const [o, l] = this.range(op.off, op.len);
        const data = pattern(l, op.byte);
        this.log.push(`impWrite ${imp.pci.name} ${o}+${l}`);
        const [r] = await this.run('impWrite', () => imp.write(a + o, data));
        this.expectImpWrite(r!, o, data, `${imp.pci.name} write`);
        break;
      }
      case 'zap': {
        const from = op.from % this.cfg.objPages;
        const pages = 1 + (op.pages % (this.cfg.objPages - from));
        // Inside the piece holding page `from` if the mapping was split.
        const vma = p.mm.vmas.lookup(a + from * P)!;
        const end = Math.min(a + (from + pages) * P, vma.end);
        this.log.push(`zap ${from}+${(end - a) / P - from}`);
        await this.run('zap', () => zapVmaPtes(vma, a + from * P, end - a - from * P));
        for (const imp of this.imps) {
          // The importers map the whole object: any overlap drops it all.
          expect(imp.mapping).toBeNull();
          for (let i = 0; i < this.cfg.objPages; i++)
            expect(imp.device.mmu(imp.asid).lookup(a / P + i)).toBe(0);
        }
        break;
      }
      case 'split': {
        if (op.go !== 0 || this.split) break;
        const from = op.from % this.cfg.objPages;
        const pages = 1 + (op.pages % (this.cfg.objPages - from));
        this.log.push(`split ${from}+${pages}`);
        const prot = this.cfg.readOnly ? Prot.NONE : Prot.READ;
        const back = this.cfg.readOnly ? Prot.READ : Prot.READ | Prot.WRITE;
        await this.run('split', () => p.mprotect(a + from * P, pages * P, prot));
        // While split: a CPU read of each piece's first page (faults it in through the piece).
        if (!this.cfg.readOnly) {
          const [r] = await this.run('splitRead', () => p.read(a + from * P, 1));
          this.expectRead(r!, from * P, 1, 'cpu', 'cpu read of a split piece');
        }
        await this.run('unsplit', () => p.mprotect(a + from * P, pages * P, back));
        const pieces = p.mm.vmas.all().filter((v) => v.ops === exp.ops).length;
        expect(pieces).toBe(1 + (from > 0 ? 1 : 0) + (from + pages < this.cfg.objPages ? 1 : 0));
        this.split = pieces > 1;
        if (this.split) stat('split-effective');
        for (const imp of this.imps) expect(imp.mapping).toBeNull(); // mprotect revoked them
        break;
      }
      case 'move': {
        const imp = who(op.who);
        const [o, l] = this.range(op.off, op.len);
        const data = pattern(l, op.byte);
        this.log.push(`move ${op.to} during ${op.during} by ${imp.pci.name} ${o}+${l}`);
        const sleep = () => (op.delay > 0 ? this.m.sched.sleep(op.delay) : Promise.resolve());
        const fns: (() => Promise<unknown>)[] = [() => exp.move(op.to)];
        if (op.during === 'read') fns.push(() => sleep().then(() => imp.read(a + o, l)));
        if (op.during === 'write') fns.push(() => sleep().then(() => imp.write(a + o, data)));
        if (op.during === 'cpu') fns.push(() => sleep().then(() => p.write(a + o, data)));
        const [mv, r] = await this.run('move', ...fns);
        if (this.dead) {
          expect(mv!.status).toBe('rejected');
          expect(code((mv as PromiseRejectedResult).reason)).toBe('ENODEV');
        } else if (mv!.status === 'rejected') throw mv.reason;
        if (op.during === 'read') this.expectRead(r!, o, l, 'imp', `${imp.pci.name} read during move`);
        if (op.during === 'write') this.expectImpWrite(r!, o, data, `${imp.pci.name} write during move`);
        if (op.during === 'cpu') this.expectCpuWrite(r!, o, data);
        break;
      }
      case 'allRead': {
        this.log.push('allRead');
        const rs = await this.run('allRead', ...this.imps.map((imp) => () => imp.read(a, this.size)));
        rs.forEach((r, i) => this.expectRead(r, 0, this.size, 'imp', `${this.imps[i]!.pci.name} read`));
        break;
      }
      case 'hog': {
        if (this.hog >= 0) {
          this.log.push('hog free');
          this.bar.free(this.hog);
          this.hog = -1;
        } else {
          const pages = 1 + (op.pages % this.cfg.barPages);
          this.hog = this.bar.alloc(pages);
          this.log.push(`hog alloc ${pages} -> ${this.hog}`);
        }
        break;
      }
      case 'reopen': {
        const i = op.who % this.imps.length;
        const old = this.imps[i]!;
        this.log.push(`reopen ${old.pci.name}`);
        await this.run('close', () => old.close());
        expect(old.mapping).toBeNull();
        this.san.unwatch(old.device, old.asid);
        this.imps[i] = this.newImporter(old.pci);
        break;
      }
      case 'teardown': {
        this.log.push(`teardown${op.race ? ' racing reads' : ''}`);
        const rs = await this.run(
          'teardown',
          () => exp.teardown(),
          ...(op.race ? this.imps.map((imp) => () => imp.read(a, this.size)) : []),
        );
        if (rs[0]!.status === 'rejected') throw rs[0].reason;
        // A read racing the teardown either finished first (the model's bytes) or failed cleanly.
        for (const r of rs.slice(1)) {
          if (r.status === 'fulfilled')
            expectBytes(r.value as Uint8Array, this.model, 'read racing teardown');
          else expect(code(r.reason)).toBe(this.split ? 'EINVAL' : 'ENODEV');
        }
        this.dead = true;
        for (const imp of this.imps) {
          expect(imp.mapping).toBeNull();
          expect(imp.device.mmu(imp.asid).lookup(a / P)).toBe(0);
        }
        break;
      }
    }
    this.check();
  }

  /** After every step: the object holds the model, nothing stale, invariants hold. */
  check(): void {
    const mem = this.m.mm.mem;
    if (!this.dead) {
      const buf = new Uint8Array(P);
      for (let i = 0; i < this.cfg.objPages; i++) {
        mem.content.read(this.exp.frames[i]!, 0, buf, 0, P);
        expectBytes(buf, this.model.subarray(i * P, (i + 1) * P), `object page ${i} (${this.exp.place})`);
      }
      if (this.exp.place === 'bar')
        for (const pfn of this.exp.frames) expect(this.bar.isAllocated(pfn)).toBe(true);
    }
    expect(this.san.checkAll()).toEqual([]);
    expect(this.san.violations).toEqual([]);
    for (const imp of this.imps) {
      const mmu = imp.device.mmu(imp.asid);
      if (imp.mapping === null) {
        // No p2p mapping held: no device entry either (every entry must come from a live mapping).
        for (let i = 0; i < this.cfg.objPages; i++) expect(mmu.lookup(this.a / P + i)).toBe(0);
        continue;
      }
      // A held importer mapping is live and is the object's current place.
      expect(p2pMappingLive(imp.mapping)).toBe(true);
      expect(Array.from(imp.mapping.pfns)).toEqual(Array.from(this.exp.frames));
      for (let i = 0; i < this.cfg.objPages; i++) {
        if (mmu.lookup(this.a / P + i) !== 0) expect(mmu.pfnOf(this.a / P + i)).toBe(this.exp.frames[i]);
      }
    }
    // The exporter holds one reference on each system page of the object (special PTEs hold none),
    // the p2pdma allocator one on each allocated BAR page.
    const held = new Set(!this.dead && this.exp.place === 'system' ? this.exp.frames : []);
    this.m.checkInvariants((pfn) => (held.has(pfn) || this.bar.isAllocated(pfn) ? 1 : 0));
  }

  async finish(): Promise<void> {
    const m = this.m;
    for (const imp of this.imps) {
      await this.run('close', () => imp.close());
      this.san.unwatch(imp.device, imp.asid);
    }
    this.imps = [];
    await this.run('teardown', () => this.exp.teardown());
    this.dead = true;
    if (this.hog >= 0) this.bar.free(this.hog);
    this.hog = -1;
    expect(this.bar.nrFree).toBe(this.bar.nrPages);
    this.bar.remove();
    await this.run('exit', () => this.p.exit());
    m.checkInvariants();
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  }
}

describe('p2p model-based property', () => {
  it(
    `random p2p sequences keep every byte (${RUNS} sequences)`,
    async () => {
      await fc.assert(
        fc.asyncProperty(
          configArb,
          fc.array(opArb, { minLength: 5, maxLength: 60, size: 'max' }),
          // A third of the runs tear the exporter down mid-way and keep going.
          fc.option(fc.record({ at: fc.nat(), race: fc.boolean() }), { freq: 2 }),
          async (cfg, ops, teardownAt) => {
            const w = new World(cfg);
            try {
              await w.init();
              for (const [i, op] of ops.entries()) {
                if (teardownAt !== null && i === teardownAt.at % ops.length)
                  await w.step({ t: 'teardown', race: teardownAt.race });
                await w.step(op);
              }
              await w.finish();
              stat(`exporter served bar`, w.exp.served.bar);
              stat(`exporter served system`, w.exp.served.system);
            } catch (e) {
              (e as Error).message += `\nconfig: ${JSON.stringify(cfg)}\nsteps:\n  ${w.log.join('\n  ')}`;
              throw e;
            }
          },
        ),
        propParameters(),
      );
      STATS.print();
    },
    Math.max(60_000, RUNS * 300),
  );
});

describe('p2p exporter teardown', () => {
  async function rig() {
    const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P });
    const p = m.createProcess();
    const { t, gpu, nic0 } = topo(m);
    const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 8 * P });
    const exp = new TestP2pExporter(m, t, gpu, bar, 2);
    const a = await m.sched.runTask('mmap', () => exp.mmap(p));
    const data = pattern(2 * P, 3);
    await m.sched.runTask('write', () => p.write(a, data));
    const imp = new TestP2pImporter(m, p, nic0, a, 2);
    const san = new HmmSanitizer(m.mm, 'throw');
    san.watch(imp.device, imp.asid, p.mm);
    return { m, p, bar, exp, a, data, imp, san };
  }

  it('fails CPU access with SIGBUS and importer access and move with ENODEV, without hanging', async () => {
    const { m, p, bar, exp, a, data, imp, san } = await rig();
    expect(await m.sched.runTask('read', () => imp.read(a, 2 * P))).toEqual(data);
    expect(exp.place).toBe('bar');
    await m.sched.runTask('teardown', () => exp.teardown());
    expect(imp.mapping).toBeNull();
    expect(bar.nrFree).toBe(bar.nrPages);
    await expect(m.sched.runTask('cpu', () => p.read(a, 1))).rejects.toMatchObject({
      code: 'EFAULT',
      signal: 'SIGBUS',
    });
    await expect(m.sched.runTask('cpu', () => p.write(a + P, new Uint8Array(1)))).rejects.toMatchObject({
      code: 'EFAULT',
      signal: 'SIGBUS',
    });
    await expect(m.sched.runTask('imp', () => imp.read(a, 1))).rejects.toMatchObject({ code: 'ENODEV' });
    await expect(m.sched.runTask('imp', () => imp.write(a, new Uint8Array(1)))).rejects.toMatchObject({
      code: 'ENODEV',
    });
    await expect(m.sched.runTask('move', () => exp.move('bar'))).rejects.toMatchObject({ code: 'ENODEV' });
    await m.sched.runTask('again', () => exp.teardown()); // idempotent
    expect(san.checkAll()).toEqual([]);
    expect(san.violations).toEqual([]);
    await m.sched.runTask('close', () => imp.close());
    bar.remove();
    await m.sched.runTask('exit', () => p.exit());
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });

  it('a teardown racing a move and a read frees everything once', async () => {
    const { m, p, bar, exp, a, data, imp, san } = await rig();
    const mv = m.sched.spawn('move', () => exp.move('bar'));
    const rd = m.sched.spawn('read', () => imp.read(a, 2 * P));
    const td = m.sched.spawn('teardown', () => exp.teardown());
    expect(await m.sched.run()).toBe('idle');
    await td.result;
    const [mr, rr] = await Promise.allSettled([mv.result, rd.result]);
    if (mr.status === 'rejected') expect(code(mr.reason)).toBe('ENODEV');
    if (rr.status === 'rejected') expect(code(rr.reason)).toBe('ENODEV');
    else expect(rr.value).toEqual(data);
    expect(bar.nrFree).toBe(bar.nrPages);
    expect(san.violations).toEqual([]);
    await m.sched.runTask('close', () => imp.close());
    bar.remove();
    await m.sched.runTask('exit', () => p.exit());
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });
});

describe('TestP2pImporter after a partial zap', () => {
  it('keeps no device entry of a mapping it gave back (regression)', async () => {
    const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P });
    const p = m.createProcess();
    const { t, gpu, nic0 } = topo(m);
    const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 8 * P });
    const exp = new TestP2pExporter(m, t, gpu, bar, 2);
    const a = await m.sched.runTask('mmap', () => exp.mmap(p));
    const imp = new TestP2pImporter(m, p, nic0, a, 2);
    await m.sched.runTask('read', () => imp.read(a, 2 * P));
    const given = imp.mapping!;
    const maps = imp.maps;
    await m.sched.runTask('zap', () => zapVmaPtes(p.mm.vmas.lookup(a)!, a, P));
    // The whole p2p mapping was given back: the device must not keep any page of it.
    expect(imp.mapping).toBeNull();
    expect(p2pMappingLive(given)).toBe(false);
    expect(imp.device.mmu(imp.asid).lookup(a / P + 1)).toBe(0);
    await m.sched.runTask('read', () => imp.read(a + P, 1));
    expect(imp.maps).toBe(maps + 1);
    await m.sched.runTask('close', () => imp.close());
    await m.sched.runTask('teardown', () => exp.teardown());
  });
});

describe('TestP2pExporter with a split mapping', () => {
  it('revokes the piece mprotect split off before it moves the object (regression)', async () => {
    const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P });
    const p = m.createProcess();
    const { t, gpu } = topo(m);
    const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 8 * P });
    const exp = new TestP2pExporter(m, t, gpu, bar, 2);
    const a = await m.sched.runTask('mmap', () => exp.mmap(p));
    await m.sched.runTask('write', () => p.write(a, pattern(2 * P, 7)));
    await m.sched.runTask('mprotect', () => p.mprotect(a + P, P, Prot.READ));
    expect(p.mm.vmas.all().filter((v) => v.ops === exp.ops)).toHaveLength(2);
    const cpuPfn = (addr: number) => {
      const slot = p.mm.pgtable.lookup(addr / P);
      return slot < 0 || m.mm.arena.pteFlags[slot] === 0 ? -1 : m.mm.arena.pteVal[slot]!;
    };
    await m.sched.runTask('move', () => exp.move('bar'));
    expect(cpuPfn(a + P)).toBe(-1); // revoked: the next access faults in the BAR page
    expect(await m.sched.runTask('read', () => p.read(a + P, 1))).toEqual(pattern(P + 1, 7).subarray(P));
    expect(cpuPfn(a + P)).toBe(exp.frames[1]);
    await m.sched.runTask('move', () => exp.move('system'));
    // Without the revocation, page 1's CPU PTE still names the object's first, freed, system frame.
    expect(await m.sched.runTask('read', () => p.read(a, 2 * P))).toEqual(pattern(2 * P, 7));
    await m.sched.runTask('teardown', () => exp.teardown());
    await expect(m.sched.runTask('read', () => p.read(a + P, 1))).rejects.toMatchObject({ signal: 'SIGBUS' });
    bar.remove();
    await m.sched.runTask('exit', () => p.exit());
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
    expect(m.mm.mem.allocatedDeviceFrames()).toEqual([]);
  });
});

describe('TestP2pExporter moving under a CPU fault', () => {
  it('leaves no CPU PTE to the old place when the CPU faults between two pieces (regression)', async () => {
    const m = new Machine({ ramBytes: 64 * P, swapBytes: 256 * P });
    const p = m.createProcess();
    const { t, gpu } = topo(m);
    const bar = p2pdmaAddResource(m.mm, t, gpu, { bar: 1, barBytes: 8 * P });
    const exp = new TestP2pExporter(m, t, gpu, bar, 2);
    const a = await m.sched.runTask('mmap', () => exp.mmap(p));
    await m.sched.runTask('write', () => p.write(a, pattern(2 * P, 7)));
    await m.sched.runTask('split', async () => {
      await p.mprotect(a + P, P, Prot.READ);
      await p.mprotect(a + P, P, Prot.READ | Prot.WRITE);
    });
    // While the move revokes the second piece, the CPU writes the first one (already revoked).
    let raced = false;
    const sub = mmuIntervalNotifierInsert(p.mm, a + P, P, {
      invalidate: async () => {
        if (!raced) {
          raced = true;
          m.sched.spawn('cpu', () => p.write(a, new Uint8Array([1])));
          await m.sched.sleep(1000);
        }
        return true;
      },
    });
    await m.sched.runTask('move', () => exp.move('bar'));
    expect(raced).toBe(true);
    const slot = p.mm.pgtable.lookup(a / P);
    const pte = slot < 0 ? 0 : m.mm.arena.pteFlags[slot]!;
    expect(pte === 0 || m.mm.arena.pteVal[slot] === exp.frames[0]).toBe(true);
    const want = pattern(2 * P, 7);
    want[0] = 1;
    expect(await m.sched.runTask('read', () => p.read(a, 2 * P))).toEqual(want);
    await m.sched.runTask('unsub', () => mmuIntervalNotifierRemove(sub));
    await m.sched.runTask('teardown', () => exp.teardown());
    bar.remove();
    await m.sched.runTask('exit', () => p.exit());
    expect(m.mm.mem.allocatedFrames()).toEqual([]);
  });
});
