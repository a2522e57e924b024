/**
 * An MR over another device's memory (`ibv_reg_dmabuf_mr` with a dynamic attachment,
 * drivers/infiniband/hw/mlx5/mr.c and `pagefault_dmabuf_mr` in odp.c), imported through the SDK's
 * peer-to-peer interface: the range is a mapping of an exporter's device file, and the exporter
 * gives its frames with `p2pMap` (the 2019 linux-mm `p2p_map` proposal; BAR frames when the
 * topology has a peer path, system pages otherwise).
 *
 * - Registration maps nothing. The first access faults: the whole MR is mapped with `p2pMap`
 *   under the interval-notifier sequence protocol, and the whole MTT written by one UMR.
 * - A move notification (the invalidation an exporter's `zap_vma_ptes` sends, `move_notify` of
 *   dma-buf) zaps the **whole** MR synchronously and gives the mapping back (`p2pUnmap`); the next
 *   access faults it back. Non-blockable invalidations are declined.
 * - The HCA must sit on a PCI topology (the distance to the exporter decides the mapping type).
 *
 * @module
 */
import {
  HmmError,
  Mutex,
  PAGE_SIZE,
  hex,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
  p2pMapLoop,
  p2pUnmap,
} from '@hmm/core';
import type { MmuIntervalNotifier, P2pImporterRef, P2pMapping } from '@hmm/core';
import { Mlx5Mr, PfFlags, permOf } from './mr.js';
import type { MrKind } from './mr.js';
import type { Mlx5Pd } from './pd.js';

/** A peer-memory MR. */
export class PeerMr extends Mlx5Mr {
  readonly kind: MrKind = 'peer';
  /** The peer mapping held now, or null (after a move notification, before the next fault). */
  mapping: P2pMapping | null = null;
  /** `p2pMap` calls made. */
  maps = 0;
  /** Move notifications received. */
  moves = 0;
  readonly #lock: Mutex;
  readonly #sub: MmuIntervalNotifier;
  readonly #ref: P2pImporterRef;
  readonly #pageStart: number;
  readonly #pageEnd: number;

  /** @internal Use {@link Mlx5Pd.regPeerMr}. */
  constructor(pd: Mlx5Pd, start: number, length: number, access: number) {
    super(pd, start, length, access);
    const pci = pd.hca.pci;
    if (pci === null) {
      this.destroyKey();
      this.freeContext();
      throw new HmmError(
        'EINVAL',
        `ibv_reg_dmabuf_mr: ${pd.hca.name} has no PCI position (Mlx5HcaOptions.pci), so it cannot import peer memory`,
      );
    }
    this.#ref = { name: pd.hca.name, pci: pci.endpoint };
    this.#lock = new Mutex(pd.hca.machine.sched, `${pd.hca.name}:dmabuf${hex(this.lkey)}`);
    this.#pageStart = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
    this.#pageEnd = Math.ceil((start + length) / PAGE_SIZE) * PAGE_SIZE;
    this.#sub = mmuIntervalNotifierInsert(pd.process.mm, this.#pageStart, this.#pageEnd - this.#pageStart, {
      invalidate: (sub, range, seq) => {
        if (!range.blockable) return false;
        return this.#moveNotify(sub, seq);
      },
    });
  }

  /** `mlx5_ib_dmabuf_invalidate_cb`: zap the whole MR, then unmap the attachment. */
  async #moveNotify(sub: MmuIntervalNotifier, seq: number): Promise<boolean> {
    await this.#lock.lock();
    try {
      mmuIntervalSetSeq(sub, seq);
      if (this.mapping !== null) {
        const pages = this.mappedPages();
        await this.zapAll();
        p2pUnmap(this.mapping);
        this.mapping = null;
        this.stats.invalidations += pages;
        this.moves++;
      }
    } finally {
      this.#lock.unlock();
    }
    return true;
  }

  /**
   * `pagefault_dmabuf_mr`: maps the whole attachment (`p2pMap`, the exporter may place or move
   * the object first) and rewrites the whole MR. `va` and `bytes` only say the MR was touched.
   */
  async pagefault(_va: number, _bytes: number, flags: number): Promise<number> {
    if (this.destroyed) throw new HmmError('EINVAL', `mlx5: fault on deregistered MR ${hex(this.lkey)}`);
    if ((flags & PfFlags.SNAPSHOT) !== 0) return 0; // nothing is "present" for peer memory before a map
    if ((flags & PfFlags.PREFETCH) === 0) this.stats.faultEvents++;
    const m = await p2pMapLoop({
      notifier: this.#sub,
      start: this.#pageStart,
      end: this.#pageEnd,
      importer: this.#ref,
      write: this.writable,
      driverLock: this.#lock,
      onMap: () => {
        this.maps++;
      },
      commit: async (m) => {
        if (this.mapping !== null) {
          await this.zapAll();
          p2pUnmap(this.mapping);
        }
        this.mapping = m;
        const n = m.pfns.length;
        const vpns = new Float64Array(n);
        for (let i = 0; i < n; i++) vpns[i] = this.#pageStart / PAGE_SIZE + i;
        // A read-only MR maps read-only even when the exporter would allow writes.
        await this.umr(vpns, m.pfns, new Uint8Array(n).fill(permOf(m.writable && this.writable)));
      },
    });
    const n = m.pfns.length;
    if ((flags & PfFlags.PREFETCH) !== 0) this.stats.prefetchedPages += n;
    else this.stats.faults += n;
    return n;
  }

  async dereg(): Promise<void> {
    this.destroyKey();
    await mmuIntervalNotifierRemove(this.#sub);
    await this.#lock.lock();
    try {
      await this.zapAll();
      if (this.mapping !== null) {
        p2pUnmap(this.mapping);
        this.mapping = null;
      }
    } finally {
      this.#lock.unlock();
    }
    this.freeContext();
  }
}
