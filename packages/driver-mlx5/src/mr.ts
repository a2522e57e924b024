/**
 * Memory regions (`struct mlx5_ib_mr`, drivers/infiniband/hw/mlx5/mr.c): what every kind of MR
 * shares. An MR is a window `[start, start + length)` of one process's address space, reached by
 * its memory key (lkey = rkey here), with `IB_ACCESS_*` rights. Its translation table (the MTT, or
 * the implicit MR's KSM with its children) is one device-MMU context of the HCA, written only by
 * UMR: map and unmap commands on the device queue, whose fences are the barrier.
 *
 * The kinds: pinned ({@link PinnedMr}, `ib_umem_get`), explicit ODP ({@link OdpMr}), implicit ODP
 * ({@link ImplicitOdpMr}), and peer memory ({@link PeerMr}, the dma-buf importer). Create them
 * through a protection domain ({@link Mlx5Pd}).
 *
 * @module
 */
import { DevPerm, HmmError, PAGE_SIZE, hex } from '@hmm/core';
import type { Fence } from '@hmm/core';
import type { Mlx5Hca } from './hca.js';
import type { Mlx5Pd } from './pd.js';

/** `IB_ACCESS_*` (include/rdma/ib_verbs.h values). */
export const IbAccess = {
  LOCAL_WRITE: 1,
  REMOTE_WRITE: 2,
  REMOTE_READ: 4,
  REMOTE_ATOMIC: 8,
  /** `IB_ACCESS_ON_DEMAND`: pin nothing; translate on demand through page faults. */
  ON_DEMAND: 64,
} as const;

/** Every access bit the SDK knows. */
export const IB_ACCESS_ALL =
  IbAccess.LOCAL_WRITE |
  IbAccess.REMOTE_WRITE |
  IbAccess.REMOTE_READ |
  IbAccess.REMOTE_ATOMIC |
  IbAccess.ON_DEMAND;

/** Flags of {@link Mlx5Mr.pagefault} (`MLX5_PF_FLAGS_*`). */
export const PfFlags = {
  /** Map read-only even if the MR is writable (PREFETCH advice). */
  DOWNGRADE: 1,
  /** Map only what is present; fault nothing in (PREFETCH_NO_FAULT, the registration pass). */
  SNAPSHOT: 2,
  /** Count the pages as prefetched, not faulted. */
  PREFETCH: 4,
} as const;

/** What kind of MR. */
export type MrKind = 'pinned' | 'odp' | 'implicit' | 'peer';

/** Per-MR counters, as `rdma statistic show mr` prints them (all in pages). */
export interface MrStats {
  /** Pages mapped by page faults (`page_faults`). */
  faults: number;
  /** Page-fault events served for this MR (one EQE segment each). */
  faultEvents: number;
  /** Pages zapped by invalidations (`page_invalidations`). */
  invalidations: number;
  /** Pages mapped by prefetch (`page_prefetch`). */
  prefetchedPages: number;
}

/** True if `access` lets the HCA write memory of the MR. */
export function accessWritable(access: number): boolean {
  return (access & (IbAccess.LOCAL_WRITE | IbAccess.REMOTE_WRITE | IbAccess.REMOTE_ATOMIC)) !== 0;
}

/** One registered memory region. */
export abstract class Mlx5Mr {
  abstract readonly kind: MrKind;
  /** Memory key: lkey and rkey alike. */
  readonly lkey: number;
  /** The device-MMU context of its translation table. */
  readonly asid: number;
  readonly stats: MrStats = { faults: 0, faultEvents: 0, invalidations: 0, prefetchedPages: 0 };
  #destroyed = false;

  constructor(
    readonly pd: Mlx5Pd,
    /** First byte of the window. */
    readonly start: number,
    /** Bytes of the window. */
    readonly length: number,
    /** `IB_ACCESS_*` bits. */
    readonly access: number,
  ) {
    this.asid = pd.hca.device.allocAsid();
    this.lkey = pd.hca.allocMkey(this);
  }

  get hca(): Mlx5Hca {
    return this.pd.hca;
  }

  /** rkey (the same key). */
  get rkey(): number {
    return this.lkey;
  }

  /** First byte past the window. */
  get end(): number {
    return this.start + this.length;
  }

  /** True if the HCA may write through this MR (LOCAL_WRITE, REMOTE_WRITE or REMOTE_ATOMIC). */
  get writable(): boolean {
    return accessWritable(this.access);
  }

  /** True after {@link dereg}. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** True for the kinds whose misses are page faults (ODP, implicit, peer). */
  get onDemand(): boolean {
    return this.kind !== 'pinned';
  }

  /** The frame `vpn` translates to for a read (or a write), or -1: a miss. */
  translate(vpn: number, write: boolean): number {
    return this.hca.device.translate(this.asid, vpn, write ? 'write' : 'read');
  }

  /** Translation-table entries now (pages the HCA can reach without faulting). */
  mappedPages(): number {
    return this.hca.device.findMmu(this.asid)?.size ?? 0;
  }

  /**
   * Why an access of `bytes` at `va` needing `need` (`IbAccess` bits; 0 = local read) is refused,
   * or null: the MR is gone, the range leaves the window, or a right is missing.
   */
  accessError(va: number, bytes: number, need: number, from: string): HmmError | null {
    if (this.#destroyed) {
      return new HmmError('EINVAL', `${from}: mkey ${hex(this.lkey)} was deregistered`, { address: va });
    }
    if (!(Number.isFinite(va) && bytes >= 0 && va >= this.start && va + bytes <= this.end)) {
      return new HmmError(
        'EFAULT',
        `${from}: ${bytes} bytes at ${hex(va)} leave MR ${hex(this.lkey)} [${hex(this.start)}, ${hex(this.end)})`,
        { address: va },
      );
    }
    if ((this.access & need) !== need) {
      return new HmmError(
        'EACCES',
        `${from}: MR ${hex(this.lkey)} was registered without the access this operation needs (have ${hex(
          this.access,
        )}, need ${hex(need)})`,
        { address: va },
      );
    }
    return null;
  }

  /**
   * Makes `[va, va + bytes)` (clipped to the window) reachable by the HCA: the fault path's
   * `pagefault_mr`. Resolves to the pages mapped. `flags` are {@link PfFlags}. Rejects with the
   * error of `hmm_range_fault` (EFAULT for a hole or PROT_NONE, EPERM for a write fault on
   * read-only memory) or of the exporter (peer MRs).
   */
  abstract pagefault(va: number, bytes: number, flags: number): Promise<number>;

  /** Deregisters (`ibv_dereg_mr`): drops the translation, the notifier, pins or peer mappings. */
  abstract dereg(): Promise<void>;

  /** @internal Marks the MR destroyed and frees its key and context (once). */
  protected destroyKey(): void {
    if (this.#destroyed) {
      throw new HmmError('EINVAL', `mlx5: MR ${hex(this.lkey)} is already deregistered`);
    }
    this.#destroyed = true;
    this.hca.freeMkey(this.lkey);
  }

  /** @internal Frees the device context once its entries are gone. */
  protected freeContext(): void {
    this.hca.device.freeAsid(this.asid);
  }

  /**
   * UMR: writes translation entries (page-aligned `vpns` → `pfns` with `perms`) and waits for the
   * command to complete (`mlx5_ib_update_xlt`). Resolves at once for no entries.
   */
  async umr(vpns: ArrayLike<number>, pfns: ArrayLike<number>, perms: ArrayLike<number>): Promise<void> {
    if (vpns.length === 0) return;
    await this.hca.device.queue.submit({ op: 'map', asid: this.asid, vpns, pfns, perms }).wait();
  }

  /** UMR-ZAP of `[startVpn, endVpn)`; returns the fence (commands complete in order). */
  zap(startVpn: number, endVpn: number): Fence {
    return this.hca.device.queue.submit({ op: 'unmap', asid: this.asid, startVpn, endVpn });
  }

  /** UMR-ZAP of the whole translation table and wait. */
  async zapAll(): Promise<void> {
    await this.hca.device.queue.submit({ op: 'unmap-all', asid: this.asid }).wait();
  }
}

/** Device permission of a page mapped with write rights or not. */
export function permOf(write: boolean): number {
  return write ? DevPerm.READ | DevPerm.WRITE : DevPerm.READ;
}

/** Page-aligned clip of `[va, va + bytes)` to `[lo, hi)`: `[start, end)`, empty if start ≥ end. */
export function clipPages(va: number, bytes: number, lo: number, hi: number): [number, number] {
  const s = Math.max(lo, Math.floor(va / PAGE_SIZE) * PAGE_SIZE);
  const e = Math.min(hi, Math.ceil((va + Math.max(bytes, 1)) / PAGE_SIZE) * PAGE_SIZE);
  return [s, e];
}
