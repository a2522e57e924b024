/**
 * `pin-8g`: long-term pinning of 8 GiB of pre-faulted 4 KiB pages, as `gup_test -LT -m 8192 -n 512`
 * measures it (perf-anchors §1, calibration check (c)), through the amdgpu-like driver's pinning mode
 * (`gemUserptr` with `mode: 'pin'`: `pin_user_pages(FOLL_LONGTERM | FOLL_WRITE)` at creation, unpinned
 * when the BO is freed).
 *
 * The full run pins 8 GiB (2,097,152 pages; about 15 s of wall time, most of it pre-faulting). The
 * quick run pins 1 GiB and reports the 8 GiB figures as 8 × its own: pinning is charged per page, so
 * the figure is linear in the size.
 *
 * @module
 */
import { HmmError, Machine, MapFlag, PAGE_SIZE, Prot } from '@hmm/core';
import { AmdgpuDevice, gemUserptr } from '@hmm/driver-amdgpu';
import { ANCHORS } from '../anchors.js';
import { assertNoLeaks, figure, formatBytes, runParams } from '../scenario.js';
import type { Scenario, ScenarioResult, ScenarioRunOptions } from '../scenario.js';

const GiB = 1024 ** 3;
const ANCHOR_BYTES = 8 * GiB;

/** Bytes pinned in each size. */
export const PIN_BYTES = { quick: GiB, full: ANCHOR_BYTES } as const;

/** Details of a {@link pin8gScenario} run. */
export interface Pin8gDetails {
  readonly bytes: number;
  readonly pages: number;
  /** Simulated ns of the pin (BO creation). */
  readonly pinNs: number;
  /** Simulated ns of the unpin (BO free). */
  readonly unpinNs: number;
  /** Pages the pin had to fault in (0: the buffer was pre-faulted). */
  readonly faultedIn: number;
  /** Frames pinned right after the pin. */
  readonly pinnedFrames: number;
}

/** Runs the scenario on a fresh machine. */
export async function runPin8g(opts?: ScenarioRunOptions): Promise<ScenarioResult<Pin8gDetails>> {
  const { seed, size } = runParams(opts);
  const bytes = PIN_BYTES[size];
  const pages = bytes / PAGE_SIZE;
  const m = new Machine({ seed, ramBytes: bytes + 64 * 1024 * 1024, swapBytes: 0 });
  const steps = 3;
  opts?.onProgress?.(0, steps, 'pre-fault');
  const d = await m.sched.runTask('pin-8g', async (): Promise<Pin8gDetails> => {
    const gpu = new AmdgpuDevice(m, { name: 'amdgpu-pin' });
    const p = m.createProcess('gup_test');
    const a = await p.mmap({
      length: bytes,
      prot: Prot.READ | Prot.WRITE,
      flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS,
    });
    await p.fill(a, bytes, 0); // pre-fault every page (gup_test's buffer is touched first)
    opts?.onProgress?.(1, steps, 'pin');
    const rss = p.mm.rssPages;
    const t0 = m.sched.now;
    const bo = await gemUserptr(gpu, p, { addr: a, size: bytes, flags: 0, mode: 'pin' });
    const pinNs = m.sched.now - t0;
    const faultedIn = p.mm.rssPages - rss;
    let pinnedFrames = 0;
    const pins = m.mm.mem.pincount;
    for (const pfn of bo.pfns) if (pfn >= 0 && pins[pfn]! > 0) pinnedFrames++;
    opts?.onProgress?.(2, steps, 'unpin');
    const t1 = m.sched.now;
    await bo.free();
    const unpinNs = m.sched.now - t1;
    await p.exit();
    await gpu.remove();
    return { bytes, pages, pinNs, unpinNs, faultedIn, pinnedFrames };
  });
  opts?.onProgress?.(steps, steps, 'done');
  assertNoLeaks(m, 'pin-8g');
  if (d.pinnedFrames !== pages) {
    throw new HmmError('EIO', `pin-8g: ${d.pinnedFrames} of ${pages} frames were pinned`);
  }
  const scale = ANCHOR_BYTES / bytes;
  const note =
    scale === 1 ? undefined : `${formatBytes(bytes)} pinned, × ${scale} (pinning is charged per page)`;
  return {
    scenario: 'pin-8g',
    seed,
    size,
    setup: `pin_user_pages(FOLL_LONGTERM) of ${formatBytes(bytes)} of pre-faulted 4 KiB pages (amdgpu-like userptr BO, pinning mode)`,
    figures: [
      figure('pinMs', 'pin 8 GiB', 'ms', (d.pinNs * scale) / 1e6, ANCHORS.pin8gPinMs, note),
      figure('unpinMs', 'unpin 8 GiB', 'ms', (d.unpinNs * scale) / 1e6, ANCHORS.pin8gUnpinMs, note),
      figure('pinNsPerPage', 'pin per page', 'ns', d.pinNs / pages, null),
    ],
    details: d,
  };
}

/** The scenario. */
export const pin8gScenario: Scenario<Pin8gDetails> = {
  name: 'pin-8g',
  description: 'pin_user_pages(FOLL_LONGTERM) of 8 GiB of pre-faulted 4 KiB pages, then unpin',
  anchors: [ANCHORS.pin8gPinMs, ANCHORS.pin8gUnpinMs],
  steps: 3,
  sharesMachine: false,
  ramBytes: (size) => PIN_BYTES[size] + 64 * 1024 * 1024,
  run: runPin8g,
};
