import { describe, expect, it } from 'vitest';
import { P2P_CASES, runConformance } from '@hmm/conformance';
import { dmirrorFactory, dmirrorManifest, makeDmirrorFactory } from './factory.js';

const ids = P2P_CASES.map((c) => c.id);

describe('dmirror peer-to-peer', () => {
  it('passes every p2p conformance case as exporter and importer', async () => {
    const report = await runConformance(dmirrorFactory, dmirrorManifest, { only: ids });
    expect(report.failed.map((r) => r.error?.message)).toEqual([]);
    expect(report.passed.map((r) => r.id)).toEqual(ids);
  });

  it('an importer that ignores invalidations fails the revocation cases', async () => {
    const broken = makeDmirrorFactory({ p2pImporter: { ignoreInvalidations: true } });
    const report = await runConformance(broken, dmirrorManifest, {
      only: [
        'p2p.zap_mid_transfer',
        'p2p.exporter_moves',
        'p2p.exporter_teardown',
        'p2p.bar_exhausted_fallback',
      ],
    });
    expect(report.passed).toEqual([]);
    expect(report.failed.map((r) => r.id)).toEqual([
      'p2p.bar_exhausted_fallback',
      'p2p.zap_mid_transfer',
      'p2p.exporter_moves',
      'p2p.exporter_teardown',
    ]);
    for (const r of report.failed)
      expect(r.error?.message).toMatch(/gave its peer mapping back|stale|sanitizer|byte \d+ is/);
  });
});
