import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Machine, PAGE_SIZE } from '@hmm/core';
import type { Process } from '@hmm/core';
import { CASES } from './catalog.js';
import { ConformanceFailure, check, checkEqual, checkRejects } from './assert.js';
import { IMPLEMENTATIONS } from './cases/index.js';
import { planCases, runConformance } from './runner.js';
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
    expect(seeds).toEqual([1, 1, 1]);

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

  it('plans every catalogue case in both variants; never hides one', () => {
    const plan = planCases({
      name: 'x',
      capabilities: ['mirror', 'device-private', 'device-coherent', 'exclusive'],
    });
    expect(plan).toHaveLength(2 * CASES.length);
    const notImplemented = plan.filter(
      (c) => c.reason === 'not implemented in this version of @hmm/conformance',
    );
    expect(notImplemented.map((c) => c.info.id)).toContain('hmm.migrate');
    expect(notImplemented.map((c) => c.info.id)).toContain('hmm.exclusive');
    const runnable = plan.filter((c) => c.run !== null);
    expect(runnable).toHaveLength(2 * Object.keys(IMPLEMENTATIONS).length);
    for (const id of Object.keys(IMPLEMENTATIONS)) expect(CASES.some((c) => c.id === id)).toBe(true);
    expect(() => planCases({ name: 'x', capabilities: [] }, { only: ['hmm.nope'] })).toThrow(
      /unknown case id/,
    );
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
    expect(seeds).toEqual([1, 1]);
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
