/**
 * `pin_user_pages(FOLL_LONGTERM | FOLL_WRITE)` of 1 GiB of present, exclusive anon pages, and
 * `unpin_user_pages` of the same pfns, against the kernel's gup_test figures.
 *
 * @module
 */
import { Foll } from '../src/index.js';
import { PIN, TARGETS, UNPIN } from './anchors.js';
import type { Populated } from './fixture.js';
import { fmtInt, repeat, timeNs } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

/** Rows: pin, unpin. Leaves the fixture as it found it (no pins, nothing faulted). */
export async function benchPin(cfg: BenchConfig, fx: Populated): Promise<Row[]> {
  cfg.log(`pin/unpin: ${fmtInt(fx.pages)} present pages`);
  const mem = fx.m.mm.mem;
  const faultsBefore = totalFaults(fx);
  const r = await repeat(cfg, 'pin/unpin', async () => {
    let pfns: Int32Array = new Int32Array(0);
    const pin = await timeNs(async () => {
      pfns = await fx.p.pinUserPages(fx.addr, fx.pages, Foll.LONGTERM | Foll.WRITE);
    });
    if (pfns.length !== fx.pages || mem.pincount[pfns[0]!] !== 1 || mem.pincount[pfns[fx.pages - 1]!] !== 1) {
      throw new Error('bench pin: pages are not pinned once each');
    }
    const unpin = await timeNs(() => fx.p.unpinUserPages(pfns));
    if (mem.pincount[pfns[0]!] !== 0) throw new Error('bench unpin: page still pinned');
    return { pin: pin / fx.pages, unpin: unpin / fx.pages };
  });
  const faults = totalFaults(fx) - faultsBefore;
  const pinNs = r.pin.median;
  const unpinNs = r.unpin.median;
  return [
    {
      id: 'pin',
      measurement: 'pin_user_pages 1 GiB, LONGTERM|WRITE',
      unit: 'ns',
      sim: pinNs,
      kernel: PIN.value,
      kernelSource: PIN.source,
      ratio: pinNs / PIN.value,
      target: `≤ ${TARGETS.pinNs} ns`,
      verdict: pinNs <= TARGETS.pinNs ? 'PASS' : 'FAIL',
      samples: r.pin.samples,
      warmup: r.pin.warmup,
      details: [
        `One call for all ${fmtInt(fx.pages)} pages (the kernel figure is 512 pages per call); pages already present,`,
        `writable and exclusive: ${faults} faults taken during ${1 + cfg.runs} pin calls.`,
      ],
    },
    {
      id: 'unpin',
      measurement: 'unpin_user_pages 1 GiB',
      unit: 'ns',
      sim: unpinNs,
      kernel: UNPIN.value,
      kernelSource: UNPIN.source,
      ratio: unpinNs / UNPIN.value,
      target: null,
      verdict: null,
      samples: r.unpin.samples,
      warmup: r.unpin.warmup,
      details: [],
    },
  ];
}

function totalFaults(fx: Populated): number {
  let n = 0;
  for (const [name, v] of Object.entries(fx.m.trace.counters())) if (name.startsWith('mm.fault.')) n += v;
  return n;
}
