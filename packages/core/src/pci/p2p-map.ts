/**
 * The importer's side of the peer-to-peer contract (the 2019 linux-mm proposal's `p2p_map` /
 * `p2p_unmap` on `vm_operations_struct`; today dma-buf and p2pdma play the role).
 *
 * An importing driver that finds a special (VM_PFNMAP) mapping in a range it must reach asks the
 * exporting driver, through the VMA's ops, for the frames and bus addresses of the range. It must
 * subscribe an interval notifier over the range: the exporter revokes with `zapVmaPtes` (a CLEAR
 * invalidation), after which the importer drops its device mapping, unmaps, and maps again on its
 * next access, getting the object's new place.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import { PAGE_SIZE, isPageRange } from '../mm/constants.js';
import type { MmStruct } from '../mm/mm-struct.js';
import type { P2pImporterRef, P2pMapping, Vma, VmOperations } from '../mm/vma.js';
import { P2pMapType } from './topology.js';

/** The mappings handed out and not yet unmapped, with the VMA each came from. */
const live = new WeakMap<P2pMapping, { vma: Vma; importer: P2pImporterRef }>();

/**
 * Asks the exporter of the special mapping at `[start, end)` of `mm` for a peer mapping (`p2p_map`).
 * The caller holds `mm.mmapLock` for read. EINVAL, with nothing asked, for an unaligned or empty
 * range, a range not inside one VMA, or a VMA without a `p2pMap` op (not a device file mapping);
 * EINVAL too if the exporter returns a malformed mapping. Other errors are the exporter's.
 */
export async function p2pMap(
  mm: MmStruct,
  start: number,
  end: number,
  importer: P2pImporterRef,
  write = false,
): Promise<P2pMapping> {
  const fn = 'p2p_map';
  if (!isPageRange(start, end)) {
    throw new HmmError(
      'EINVAL',
      `${fn}: [${String(start)}, ${String(end)}) is not a non-empty page-aligned range`,
    );
  }
  if (!mm.mmapLock.heldByCurrent())
    throw new HmmError('EINVAL', `${fn}: the caller must hold the mmap lock of the mm`);
  const vma = mm.vmas.lookup(start);
  if (vma === undefined || end > vma.end) {
    throw new HmmError('EINVAL', `${fn}: [${hex(start)}, ${hex(end)}) is not inside one mapping`, {
      address: start,
    });
  }
  const op = vma.ops?.p2pMap;
  if (!vma.isSpecial || op === undefined) {
    throw new HmmError('EINVAL', `${fn}: ${vma.toString()} is not a device mapping with a p2pMap op`, {
      address: start,
    });
  }
  if (write && !vma.writable) {
    throw new HmmError('EPERM', `${fn}: write access requested to read-only ${vma.toString()}`, {
      address: start,
    });
  }
  const m = await op.call(vma.ops, vma, start, end, importer, write);
  const n = (end - start) / PAGE_SIZE;
  const ok =
    m !== null &&
    typeof m === 'object' &&
    m.start === start &&
    m.end === end &&
    m.pfns instanceof Int32Array &&
    m.bus instanceof Float64Array &&
    m.pfns.length === n &&
    m.bus.length === n &&
    (m.type === P2pMapType.BUS_ADDR ||
      m.type === P2pMapType.THRU_HOST_BRIDGE ||
      m.type === P2pMapType.NOT_SUPPORTED);
  if (!ok) {
    throw new HmmError(
      'EINVAL',
      `${fn}: the exporter ${vma.ops?.name ?? '?'} returned a malformed mapping for [${hex(start)}, ${hex(end)})`,
    );
  }
  live.set(m, { vma, importer });
  return m;
}

/**
 * Gives a mapping back to its exporter (`p2p_unmap`). EINVAL for a mapping not returned by
 * {@link p2pMap} or already unmapped. The exporter's `p2pUnmap` is called even if the VMA has been
 * unmapped meanwhile (importers learn of munmap through the UNMAP invalidation and unmap then).
 */
export function p2pUnmap(mapping: P2pMapping): void {
  const rec = live.get(mapping);
  if (rec === undefined) {
    throw new HmmError(
      'EINVAL',
      `p2p_unmap: [${hex(mapping.start)}, ${hex(mapping.end)}) is not a live p2p mapping (unmapped twice?)`,
    );
  }
  live.delete(mapping);
  rec.vma.ops?.p2pUnmap?.(rec.vma, mapping, rec.importer);
}

/** True if `mapping` came from {@link p2pMap} and has not been unmapped. */
export function p2pMappingLive(mapping: P2pMapping): boolean {
  return live.has(mapping);
}

/**
 * What an exporting driver implements: the ops of its device-file mapping with `p2pMap` and
 * `p2pUnmap` (and usually `fault`, for CPU access through the BAR).
 */
export type P2pExporterOps = VmOperations & Required<Pick<VmOperations, 'p2pMap' | 'p2pUnmap'>>;

/**
 * What an importing driver is to the exporter: its name and PCI endpoint. The importer's duties: call
 * {@link p2pMap} under the mmap lock for a range it must reach, map the frames in its device, subscribe
 * an interval notifier over the range, drop the device mapping and call {@link p2pUnmap} when the range
 * is invalidated, and map again on its next access.
 */
export type P2pImporter = P2pImporterRef;
