import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Machine, PAGE_SIZE } from '@hmm/core';
import type { Process } from '@hmm/core';
import { CASES, P2P_CASES, findCase } from './catalog.js';
import { ConformanceFailure, check, checkEqual, checkRejects } from './assert.js';
import { IMPLEMENTATIONS } from './cases/index.js';
import { planCases, runConformance } from './runner.js';
import type { ProgressEvent } from './runner.js';
import { SnapshotByte } from './target.js';
import type { ConformanceFactory, TestDevice } from './target.js';

/**
 * A broken "driver": its device READ returns zeros whatever memory holds; its WRITE goes through
 * the CPU (so anon_write holds). Seeds seen by the factory are recorded.
 */
function fakeFactory(seeds: number[] = []): ConformanceFactory {
  return async ({ seed }) => {
    seeds.push(seed);
    const machine = new Machine({ seed });
    return {
      machine,
      open: async (p: Process): Promise<TestDevice> => ({
        read: async (_addr, npages) => ({
          data: new Uint8Array(npages * PAGE_SIZE),
          cpages: npages,
          faults: 1,
        }),
        write: async (addr, data) => {
          await p.write(addr, data);
          return { cpages: data.length / PAGE_SIZE, faults: 1 };
        },
        snapshot: async (_addr, npages) => new Uint8Array(npages).fill(SnapshotByte.NONE),
        close: async () => {},
      }),
    };
  };
}

describe('runConformance', () => {
  it('reports a driver whose READ returns wrong data as failed, with the case, kernel reference and seed', async () => {
    const seeds: number[] = [];
    const report = await runConformance(
      fakeFactory(seeds),
      { name: 'fake', capabilities: ['mirror'] },
      { only: ['hmm.open_close', 'hmm.anon_read', 'hmm.anon_write', 'hmm.migrate', 'hmm.anon_write_huge'] },
    );
    expect(report.driver).toBe('fake');
    expect(report.passed.map((r) => r.id)).toEqual(['hmm.open_close', 'hmm.anon_write']);
    expect(report.failed).toHaveLength(1);
    const [failed] = report.failed;
    expect(failed).toMatchObject({
      id: 'hmm.anon_read',
      kernelRef: 'hmm-tests.c:anon_read',
      variant: 'device-private',
      status: 'failed',
    });
    const error = failed!.error!;
    expect(error).toBeInstanceOf(ConformanceFailure);
    expect(error).toMatchObject({
      caseId: 'hmm.anon_read',
      kernelRef: 'hmm-tests.c:anon_read',
      variant: 'device-private',
      seed: 1,
    });
    expect(error.contract).toBe('device READ data: int[2048] is 0, expected 2048');
    expect(error.message).toBe(
      'hmm.anon_read [device-private] (hmm-tests.c:anon_read) seed 1: device READ data: int[2048] is 0, expected 2048',
    );
    // One target per case run, plus the failing case's replay at its seed.
    expect(seeds).toEqual([1, 1, 1, 1]);
    expect(failed!.replay).toMatchObject({ seed: 1, seeds: 1, reproduced: true });
    expect(failed!.replay!.tail.length).toBeGreaterThan(0);
    expect(failed!.replay!.events).toBeNull();

    const skipped = Object.fromEntries(report.skipped.map((r) => [`${r.id} ${r.variant}`, r.reason]));
    // Cases needing device-private are skipped in both variants, with the missing capability.
    expect(skipped['hmm.migrate device-private']).toBe(`driver 'fake' lacks capability device-private`);
    expect(skipped['hmm.migrate device-coherent']).toBe(`driver 'fake' lacks capability device-private`);
    // The coherent variant needs the device-coherent capability.
    expect(skipped['hmm.anon_read device-coherent']).toBe(
      `variant device-coherent needs the 'device-coherent' capability`,
    );
    expect(skipped['hmm.anon_write_huge device-private']).toBe(
      'not simulated yet: transparent huge pages are not simulated yet',
    );
    expect(report.skipped).toHaveLength(7);
  });

  it("plans every catalogue case in its variants (the kernel's in both, p2p once); never hides one", () => {
    const plan = planCases({
      name: 'x',
      capabilities: [
        'mirror',
        'device-private',
        'device-coherent',
        'exclusive',
        'two-devices',
        'p2p-exporter',
        'p2p-importer',
        'fault-injection',
        'userptr',
      ],
    });
    expect(plan).toHaveLength(CASES.reduce((n, c) => n + c.variants.length, 0));
    expect(plan.filter((c) => c.group === 'p2p').map((c) => c.variant)).toEqual(
      P2P_CASES.map(() => 'device-private'),
    );
    // Every case is implemented; only those needing THP or hugetlbfs are skipped, with the reason.
    const skipped = plan.filter((c) => c.run === null);
    for (const c of skipped)
      expect(c.reason).toMatch(/^not simulated yet: (transparent huge pages|hugetlbfs)/);
    expect(new Set(skipped.map((c) => c.info.id)).size).toBe(
      CASES.filter((c) => c.unsupported !== null).length,
    );
    const runnable = plan.filter((c) => c.run !== null);
    expect(runnable).toHaveLength(
      Object.keys(IMPLEMENTATIONS).reduce((n, id) => n + findCase(id)!.variants.length, 0),
    );
    for (const id of Object.keys(IMPLEMENTATIONS)) expect(CASES.some((c) => c.id === id)).toBe(true);
    expect(runnable.map((c) => c.info.id)).toContain('hmm2.migrate_mixed');
    expect(() => planCases({ name: 'x', capabilities: [] }, { only: ['hmm.nope'] })).toThrow(
      /unknown case id/,
    );
  });

  it('skips the cases needing a second device without two-devices; hmm2.snapshot still runs', () => {
    const plan = planCases({ name: 'x', capabilities: ['mirror', 'device-private'] });
    const reason = (id: string): string | null | undefined =>
      plan.find((c) => c.info.id === id && c.variant === 'device-private')?.reason;
    expect(reason('hmm2.migrate_mixed')).toBe(`driver 'x' lacks capability two-devices`);
    expect(reason('hmm2.double_map')).toBe(`driver 'x' lacks capability two-devices`);
    expect(reason('hmm2.snapshot')).toBeNull();
    expect(reason('hmm.migrate')).toBeNull();
    expect(reason('hmm.exclusive')).toBe(`driver 'x' lacks capability exclusive`);
  });

  it('reports a seed-exploring case at the seed where it failed', async () => {
    const seeds: number[] = [];
    const report = await runConformance(
      fakeFactory(seeds),
      { name: 'fake', capabilities: ['mirror'] },
      { only: ['hmm.anon_teardown'], seeds: 3 },
    );
    expect(report.failed).toHaveLength(1);
    // The first seed fails (READ data); the target built for the run itself has the base seed.
    expect(report.failed[0]!.error).toMatchObject({ caseId: 'hmm.anon_teardown', seed: 1 });
    // The run, then its replay at the failing seed.
    expect(seeds).toEqual([1, 1, 1, 1]);
    expect(report.failed[0]!.replay).toMatchObject({ seed: 1, seeds: 1, reproduced: true });
  });
});

describe('runConformance with expectations, seeds and progress', () => {
  const only = ['hmm.open_close', 'hmm.anon_read', 'hmm.anon_write'];

  it('reports expected failures, unexpected passes (an error) and expected skips', async () => {
    const seeds: number[] = [];
    const events: ProgressEvent[] = [];
    const report = await runConformance(
      fakeFactory(seeds),
      { name: 'fake', capabilities: ['mirror'] },
      {
        only,
        seed: 5,
        expectations: {
          'hmm.anon_read': { expect: 'fail', reason: 'READ returns zeros' },
          'hmm.open_close': { expect: 'fail', reason: 'stale' },
          'hmm.anon_write [device-private]': { expect: 'skip', reason: 'not today' },
        },
        onProgress: (e) => events.push(e),
      },
    );
    const status = Object.fromEntries(report.results.map((r) => [`${r.id} ${r.variant}`, r.status]));
    expect(status).toEqual({
      'hmm.open_close device-private': 'unexpected-pass',
      'hmm.open_close device-coherent': 'skipped',
      'hmm.anon_read device-private': 'expected-fail',
      'hmm.anon_read device-coherent': 'skipped',
      'hmm.anon_write device-private': 'expected-skip',
      'hmm.anon_write device-coherent': 'skipped',
    });
    expect(report.ok).toBe(false);
    expect(report.counts).toEqual({
      total: 6,
      passed: 0,
      failed: 0,
      'unexpected-pass': 1,
      'expected-fail': 1,
      'expected-skip': 1,
      skipped: 3,
    });
    // The legacy lists hold exactly their status.
    expect(report.passed).toEqual([]);
    expect(report.failed).toEqual([]);
    expect(report.skipped).toHaveLength(3);

    const [stale, , xfail, , xskip] = report.results;
    expect(stale).toMatchObject({ reason: 'stale', seed: 5 });
    expect(stale!.contract).toBe(
      "the case fails as the driver's expectation says ('stale'), but it passed: remove the stale expectation",
    );
    expect(stale!.error?.message).toMatch(
      /^hmm\.open_close \[device-private\] \(hmm-tests\.c:open_close\) seed 5: /,
    );
    expect(xfail).toMatchObject({
      reason: 'READ returns zeros',
      contract: 'device READ data: int[2048] is 0, expected 2048',
      seed: 5,
    });
    // A number (this fake costs no simulated time); null for what did not run.
    expect(xfail!.simNs).toBeTypeOf('number');
    expect(xskip).toMatchObject({ reason: 'not today', seed: null, simNs: null, error: null });
    expect(report.skipped[0]).toMatchObject({ seed: null, simNs: null, contract: null });
    // Only the two cases that ran built machines, both at the requested seed.
    expect(seeds).toEqual([5, 5]);

    // One started and one finished event per planned case, in plan order.
    expect(events).toHaveLength(12);
    expect(events[0]).toEqual({
      type: 'case-started',
      index: 0,
      total: 6,
      id: 'hmm.open_close',
      variant: 'device-private',
      runs: true,
    });
    expect(events.filter((e) => e.type === 'case-started' && !e.runs)).toHaveLength(4);
    const finished = events.flatMap((e) => (e.type === 'case-finished' ? [e.result] : []));
    expect(finished).toEqual(report.results);
    expect(events.map((e) => `${e.type} ${e.index}`)).toEqual(
      [0, 1, 2, 3, 4, 5].flatMap((i) => [`case-started ${i}`, `case-finished ${i}`]),
    );
  });

  it('is ok when every failure is expected; an unexpected failure is not', async () => {
    const expected = await runConformance(
      fakeFactory(),
      { name: 'fake', capabilities: ['mirror'] },
      { only, expectations: { 'hmm.anon_read [device-private]': { expect: 'fail', reason: 'zeros' } } },
    );
    expect(expected.ok).toBe(true);
    expect(expected.counts).toMatchObject({ passed: 2, 'expected-fail': 1, failed: 0 });
    const plain = await runConformance(fakeFactory(), { name: 'fake', capabilities: ['mirror'] }, { only });
    expect(plain.ok).toBe(false);
    expect(plain.failed[0]).toMatchObject({ id: 'hmm.anon_read', status: 'failed', seed: 1, reason: null });
    expect(plain.failed[0]!.contract).toBe(plain.failed[0]!.error!.contract);
  });

  it('rejects bad options before running anything', async () => {
    const seeds: number[] = [];
    const m = { name: 'fake', capabilities: ['mirror'] as const };
    await expect(
      runConformance(fakeFactory(seeds), m, {
        expectations: { 'hmm.gone': { expect: 'fail', reason: 'x' } },
      }),
    ).rejects.toThrow("expectation 'hmm.gone' names no case");
    await expect(runConformance(fakeFactory(seeds), m, { seed: 0 })).rejects.toThrow(
      'seed must be a positive integer',
    );
    await expect(runConformance(fakeFactory(seeds), m, { seeds: 1.5 })).rejects.toThrow(
      'seeds must be a positive integer',
    );
    expect(seeds).toEqual([]);
  });
});

describe('assertions', () => {
  it('check, checkEqual and checkRejects throw ConformanceFailure naming the contract', async () => {
    expect(() => check(false, 'a contract')).toThrow(ConformanceFailure);
    expect(() => checkEqual([1, 2], [1, 3], 'pair')).toThrow('pair: got [1,2], expected [1,3]');
    expect(() => checkEqual(new Uint8Array([1]), new Uint8Array([1]), 'bytes')).not.toThrow();
    await expect(checkRejects(Promise.resolve(), 'EFAULT', 'READ')).rejects.toThrow(
      'READ fails with EFAULT, got success',
    );
    const f = new ConformanceFailure('x').locate({
      caseId: 'hmm.a',
      kernelRef: 'k',
      seed: 4,
      variant: 'device-private',
    });
    expect(f.message).toBe('hmm.a [device-private] (k) seed 4: x');
  });
});

describe('package entry', () => {
  it('only the vitest entry imports vitest', () => {
    const dir = new URL('.', import.meta.url);
    const files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter(
      (f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && f !== 'define-suite.ts',
    );
    expect(files).toContain('index.ts');
    for (const f of files) expect(readFileSync(new URL(f, dir), 'utf8')).not.toMatch(/from 'vitest'/);
  });
});

describe('the sanitizer in every case', () => {
  it('fails a case whose driver leaves a stale device mapping, naming the rule', async () => {
    const { Machine, SimDevice, DevPerm } = await import('@hmm/core');
    const { runConformance } = await import('./runner.js');
    // A device that maps every page on READ and never unmaps: it ignores invalidations.
    const factory = async ({ seed }: { seed: number }) => {
      const machine = new Machine({ seed });
      const device = new SimDevice(machine.mm, { name: 'leaky' });
      return {
        machine,
        open: async (process: import('@hmm/core').Process) => {
          const asid = device.allocAsid();
          return {
            binding: { device, asid },
            read: async (addr: number, npages: number) => {
              const pfns = await process.getUserPages(addr, npages);
              const vpns = Array.from({ length: npages }, (_, i) => addr / 4096 + i);
              await device.queue
                .submit({
                  op: 'map',
                  asid,
                  vpns,
                  pfns: Array.from(pfns),
                  perms: vpns.map(() => DevPerm.READ),
                })
                .wait();
              process.putUserPages(pfns);
              return { cpages: npages, faults: 1, data: await process.read(addr, npages * 4096) };
            },
            write: async () => ({ cpages: 0, faults: 0 }),
            snapshot: async (_a: number, n: number) => new Uint8Array(n),
            close: async () => {},
          };
        },
      };
    };
    const report = await runConformance(
      factory,
      { name: 'leaky', capabilities: ['mirror'] },
      { only: ['hmm.anon_teardown'], seeds: 2 },
    );
    expect(report.failed.map((r) => r.id)).toEqual(['hmm.anon_teardown']);
    expect(report.failed[0]!.error?.message).toMatch(
      /sanitizer found .* violation.*(stale-mapping|freed-frame)/,
    );
  });
});

describe('device-memory cases', () => {
  /**
   * A driver declaring device-private memory whose MIGRATE_TO_DEV copies nothing anywhere: it only
   * reads the pages back through the CPU. A second flavour lacks the command altogether.
   */
  function fakeMigrator(implement: boolean): ConformanceFactory {
    return async ({ seed }) => {
      const machine = new Machine({ seed });
      return {
        machine,
        open: async (p: Process): Promise<TestDevice> => {
          const base: TestDevice = {
            read: async (addr, npages) => ({
              data: await p.read(addr, npages * PAGE_SIZE),
              cpages: npages,
              faults: 1,
            }),
            write: async (addr, data) => {
              await p.write(addr, data);
              return { cpages: data.length / PAGE_SIZE, faults: 1 };
            },
            snapshot: async (_addr, npages) => new Uint8Array(npages).fill(SnapshotByte.WRITE),
            close: async () => {},
          };
          if (!implement) return base;
          return {
            ...base,
            migrateToDevice: async (addr, npages) => ({
              data: await p.read(addr, npages * PAGE_SIZE),
              cpages: npages,
              faults: 0,
            }),
          };
        },
      };
    };
  }

  it('fails a driver whose migration leaves the pages in system memory, by the snapshot', async () => {
    const report = await runConformance(
      fakeMigrator(true),
      { name: 'fake', capabilities: ['mirror', 'device-private'] },
      { only: ['hmm.migrate'] },
    );
    expect(report.failed.map((r) => `${r.id} ${r.variant}`)).toEqual(['hmm.migrate device-private']);
    expect(report.failed[0]!.error?.contract).toMatch(
      /^snapshot: every page is in the device memory, writable: got \[2,2,.*expected \[34,34,/,
    );
    expect(report.skipped.map((r) => r.variant)).toEqual(['device-coherent']);
  });

  it('fails a driver that declares device-private but has no migrateToDevice, naming the command', async () => {
    const report = await runConformance(
      fakeMigrator(false),
      { name: 'fake', capabilities: ['mirror', 'device-private'] },
      { only: ['hmm.migrate', 'hmm.anon_write_child'] },
    );
    expect(report.failed.map((r) => r.id)).toEqual(['hmm.anon_write_child', 'hmm.migrate']);
    for (const r of report.failed) expect(r.error?.contract).toMatch(/implements migrateToDevice\(\)/);
  });
});
