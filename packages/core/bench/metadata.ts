/**
 * Bytes of metadata per resident page for a process with 1 GiB resident: the frame table's fixed
 * cost per frame (`FRAME_METADATA_BYTES`) plus page-table bytes per resident page, from the SDK's own
 * counter (`arena.bytesInUse`). Compared with the kernel's 64-byte `struct page`.
 *
 * @module
 */
import { FRAME_METADATA_BYTES } from '../src/index.js';
import { STRUCT_PAGE, TARGETS } from './anchors.js';
import type { Populated } from './fixture.js';
import { fmtBytes, fmtInt } from './harness.js';
import type { BenchConfig } from './harness.js';
import type { Row } from './report.js';

/** Row: metadata bytes per resident page. Reads counters only. */
export function benchMetadata(cfg: BenchConfig, fx: Populated): Row[] {
  const mm = fx.m.mm;
  const resident = fx.p.mm.rssPages;
  const pt = mm.arena.bytesInUse;
  const tables = mm.arena.tablesLive;
  const ptPerPage = pt / resident;
  const total = FRAME_METADATA_BYTES + ptPerPage;
  const reservedPerPage = mm.arena.bytesReserved / resident;
  // The content store's chunk index (per-chunk counters and slots), beyond the presence byte already
  // counted in FRAME_METADATA_BYTES: the store's metadata minus one byte per frame.
  const chunkIndex = (mm.mem.content.metadataBytes - mm.mem.nrFrames) / resident;
  cfg.log(`metadata: ${fmtInt(resident)} resident pages, ${fmtBytes(pt)} of page tables`);
  return [
    {
      id: 'metadata',
      measurement: 'metadata per resident page (1 GiB)',
      unit: 'B',
      sim: total,
      kernel: STRUCT_PAGE.value,
      kernelSource: STRUCT_PAGE.source,
      ratio: total / STRUCT_PAGE.value,
      target: `≤ ${TARGETS.metadataBytes} B`,
      verdict: total <= TARGETS.metadataBytes ? 'PASS' : 'FAIL',
      details: [
        `FRAME_METADATA_BYTES ${FRAME_METADATA_BYTES} B + page tables ${fmtInt(pt)} B / ${fmtInt(resident)} resident pages = ${ptPerPage.toFixed(3)} B`,
        `(${fmtInt(tables.leaves)} leaf tables of 512 PTEs, ${fmtInt(tables.dirs)} directory tables).`,
        `Not counted by the SDK's counters: the arena's spare capacity (reserved ${reservedPerPage.toFixed(2)} B/page after`,
        `doubling growth) and the content store's chunk index (${chunkIndex.toFixed(2)} B/page).`,
      ],
    },
  ];
}
