/**
 * `hmm_range_fault` snapshot (no fault requested) of 1 GiB of present pages, against the kernel
 * estimate of ≈ 60 ns per present page (perf-anchors, `hmm.rangeFaultPerPresentPageNs`, [E]).
 *
 * @module
 */
import {
  HmmPfn,
  hmmPfnFlags,
  hmmRangeFault,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalReadBegin,
  mmuIntervalSetSeq,
} from '../src/index.js';
import type { HmmRange } from '../src/index.js';
import { HMM_SNAPSHOT } from './anchors.js';
import type { Populated } from './fixture.js';
import { fmtInt, repeat, timeNs } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

/** Row: snapshot per page. Leaves the fixture as it found it (the notifier is removed). */
export async function benchHmmSnapshot(cfg: BenchConfig, fx: Populated): Promise<Row[]> {
  cfg.log(`hmm_range_fault snapshot: ${fmtInt(fx.pages)} present pages`);
  const mm = fx.p.mm;
  const sub = mmuIntervalNotifierInsert(mm, fx.addr, fx.pages * 4096, {
    invalidate: (s, _r, seq) => {
      mmuIntervalSetSeq(s, seq);
      return true;
    },
  });
  const words = new Float64Array(fx.pages);
  const r = await repeat(cfg, 'hmm snapshot', async () => {
    const range: HmmRange = {
      notifier: sub,
      notifierSeq: await mmuIntervalReadBegin(sub),
      start: fx.addr,
      end: fx.addr + fx.pages * 4096,
      hmmPfns: words,
      defaultFlags: 0,
      pfnFlagsMask: 0,
      devPrivateOwner: null,
    };
    await mm.mmapLock.read();
    let ns: number;
    try {
      ns = await timeNs(() => hmmRangeFault(range));
    } finally {
      mm.mmapLock.readUnlock();
    }
    const want = HmmPfn.VALID | HmmPfn.WRITE;
    if (hmmPfnFlags(words[0]!) !== want || hmmPfnFlags(words[fx.pages - 1]!) !== want) {
      throw new Error('bench hmm snapshot: pages not reported VALID|WRITE');
    }
    return { snapshot: ns / fx.pages };
  });
  await mmuIntervalNotifierRemove(sub);
  const sim = r.snapshot.median;
  return [
    {
      id: 'hmm-snapshot',
      measurement: 'hmm_range_fault snapshot 1 GiB present',
      unit: 'ns',
      sim,
      kernel: HMM_SNAPSHOT.value,
      kernelSource: HMM_SNAPSHOT.source,
      ratio: sim / HMM_SNAPSHOT.value,
      target: `≤ ${HMM_SNAPSHOT.value} ns`,
      verdict: sim <= HMM_SNAPSHOT.value ? 'PASS' : 'FAIL',
      samples: r.snapshot.samples,
      warmup: r.snapshot.warmup,
      details: [
        `One call for all ${fmtInt(fx.pages)} pages, default flags 0 (no fault requested), every page present and writable.`,
        'The kernel figure is an estimate (no published hmm_range_fault per-page benchmark was found).',
      ],
    },
  ];
}
