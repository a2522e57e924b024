/**
 * The conformance suite's own peer-to-peer importer, written against the public `@hmm/core` API
 * only. The p2p cases use it for drivers that export peer memory but import none; any driver may
 * reuse it in its own tests as the importer side of `p2p_map`.
 *
 * @module
 */
import {
  DevPerm,
  HmmError,
  Mutex,
  PAGE_SIZE,
  SimDevice,
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
  p2pMapLoop,
  p2pUnmap,
} from '@hmm/core';
import type {
  Machine,
  MmuIntervalNotifier,
  P2pImporterRef,
  P2pMapping,
  PciEndpoint,
  PciTopology,
  Process,
} from '@hmm/core';
import type { P2pImporterHandle } from '../target.js';

/**
 * A reference peer-to-peer importer of the `pages` pages at `start` of one process (a mapping of an
 * exporter's device file): its own {@link SimDevice} at `endpoint` of `topology`, one ASID, and an
 * interval notifier over the range.
 *
 * - A device fault calls `p2pMap` for the whole range under the interval-notifier sequence protocol
 *   (`mmu_interval_read_begin`, `p2pMap` under the mmap read lock, then the driver lock and
 *   `mmu_interval_read_retry`; a stale result is given back and the fault retried) and maps the
 *   returned frames in the device page table.
 * - The invalidate callback takes the driver lock, sets the sequence (`mmu_interval_set_seq`),
 *   unmaps every device entry of the range through the command queue, waits for the fence, then
 *   gives the mapping back (`p2pUnmap`).
 * - {@link read} crosses the bus page by page, each page taking its simulated bus time, so an
 *   invalidation can land in the middle of a transfer of several pages.
 *
 * Implements {@link P2pImporterHandle}. Methods that can block run inside a task of the machine's
 * scheduler.
 */
export class ReferenceP2pImporter implements P2pImporterHandle {
  /** The importing device (charges bus time by path: it has a place on the PCI bus). */
  readonly device: SimDevice;
  /** The device context mapping the range. */
  readonly asid: number;
  /** The peer mapping held now, or null. */
  mapping: P2pMapping | null = null;
  /** `p2pMap` calls made so far. */
  maps = 0;
  readonly #lock: Mutex;
  readonly #sub: MmuIntervalNotifier;
  readonly #ref: P2pImporterRef;
  #closed = false;

  /**
   * An importer at `endpoint` (a device of `topology`) of the `pages` pages at `start` of `process`.
   * EINVAL for an unaligned or empty range.
   */
  constructor(
    machine: Machine,
    topology: PciTopology,
    endpoint: PciEndpoint,
    readonly process: Process,
    readonly start: number,
    readonly pages: number,
  ) {
    if (!(Number.isInteger(pages) && pages > 0) || start % PAGE_SIZE !== 0) {
      throw new HmmError(
        'EINVAL',
        `reference importer ${endpoint.name}: the range must be page aligned and not empty`,
        { address: start },
      );
    }
    this.device = new SimDevice(machine.mm, { name: endpoint.name, pci: { topology, endpoint } });
    this.asid = this.device.allocAsid();
    this.#ref = { name: endpoint.name, pci: endpoint };
    this.#lock = new Mutex(machine.sched, `${endpoint.name}:p2p${this.asid}`);
    const startVpn = start / PAGE_SIZE;
    const endVpn = startVpn + pages;
    this.#sub = mmuIntervalNotifierInsert(process.mm, start, pages * PAGE_SIZE, {
      invalidate: async (sub, _range, seq) => {
        await this.#lock.lock();
        try {
          mmuIntervalSetSeq(sub, seq);
          // The peer mapping covers the whole range and goes back whole, so every entry goes.
          await this.device.queue.submit({ op: 'unmap', asid: this.asid, startVpn, endVpn }).wait();
          this.#giveBack();
        } finally {
          this.#lock.unlock();
        }
        return true;
      },
    });
    this.device.setFaultHandler((f) => this.#fault(f.access !== 'read'), this.asid);
  }

  /** The device and context, for the runner's sanitizer. */
  get binding(): { readonly device: SimDevice; readonly asid: number } {
    return { device: this.device, asid: this.asid };
  }

  #giveBack(): void {
    if (this.mapping !== null) {
      p2pUnmap(this.mapping);
      this.mapping = null;
    }
  }

  /** The device fault: `p2pMap` of the whole range, committed under the sequence protocol. */
  async #fault(write: boolean): Promise<void> {
    await p2pMapLoop({
      notifier: this.#sub,
      start: this.start,
      end: this.start + this.pages * PAGE_SIZE,
      importer: this.#ref,
      write,
      driverLock: this.#lock,
      onMap: () => {
        this.maps++;
      },
      commit: async (m) => {
        this.#giveBack();
        this.mapping = m;
        const perm = m.writable ? DevPerm.READ | DevPerm.WRITE : DevPerm.READ;
        const vpns = Array.from({ length: this.pages }, (_, i) => this.start / PAGE_SIZE + i);
        await this.device.queue
          .submit({ op: 'map', asid: this.asid, vpns, pfns: Array.from(m.pfns), perms: vpns.map(() => perm) })
          .wait();
      },
    });
  }

  #checkRange(addr: number, len: number): void {
    if (this.#closed) {
      throw new HmmError('EBADF', `reference importer ${this.device.name}: used after close`);
    }
    if (!(len > 0) || addr < this.start || addr + len > this.start + this.pages * PAGE_SIZE) {
      throw new HmmError(
        'EINVAL',
        `reference importer ${this.device.name}: access outside the imported range`,
        { address: addr },
      );
    }
  }

  /**
   * The device reads `len` bytes at `addr` (inside the range), one page at a time over the bus,
   * faulting the mapping in through `p2pMap` when it holds none. EBADF after {@link close}, EINVAL
   * outside the range; the exporter's error (ENODEV after its teardown) when `p2pMap` fails.
   */
  async read(addr: number, len: number): Promise<Uint8Array> {
    this.#checkRange(addr, len);
    const out = new Uint8Array(len);
    for (let pos = addr; pos < addr + len;) {
      const n = Math.min(PAGE_SIZE - (pos % PAGE_SIZE), addr + len - pos);
      out.set(await this.device.read(this.asid, pos, n), pos - addr);
      pos += n;
    }
    return out;
  }

  /** The device writes `data` at `addr` (inside the range), one page at a time; errors as {@link read}. */
  async write(addr: number, data: Uint8Array): Promise<void> {
    this.#checkRange(addr, data.length);
    for (let pos = addr; pos < addr + data.length;) {
      const n = Math.min(PAGE_SIZE - (pos % PAGE_SIZE), addr + data.length - pos);
      await this.device.write(this.asid, pos, data.subarray(pos - addr, pos - addr + n));
      pos += n;
    }
  }

  /** Device page-table entries over the range now (0 once revoked). */
  devicePages(): number {
    let n = 0;
    const first = this.start / PAGE_SIZE;
    this.device.findMmu(this.asid)?.forEachEntry(first, first + this.pages, () => {
      n++;
    });
    return n;
  }

  /**
   * Importer teardown: drops every device entry, gives the mapping back, removes the notifier and
   * the device. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#lock.lock();
    try {
      await this.device.queue.submit({ op: 'unmap-all', asid: this.asid }).wait();
      this.#giveBack();
    } finally {
      this.#lock.unlock();
    }
    await mmuIntervalNotifierRemove(this.#sub);
    this.device.setFaultHandler(null, this.asid);
    this.device.freeAsid(this.asid);
    await this.device.remove();
  }
}
