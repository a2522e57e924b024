/**
 * Test-only: the smallest correct peer-to-peer importer. A {@link SimDevice} context that reaches a
 * device-file mapping of a process through `p2pMap`: its fault handler maps the whole mapping under the
 * interval-notifier sequence protocol; its invalidate callback unmaps the device entries, waits for the
 * fence, and gives the mapping back (`p2pUnmap`). Not part of the package.
 *
 * @module
 */
import { DevPerm } from '../device/device-mmu.js';
import { SimDevice } from '../device/device.js';
import {
  mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove,
  mmuIntervalSetSeq,
} from '../hmm/mmu-interval-notifier.js';
import type { MmuIntervalNotifier } from '../hmm/mmu-interval-notifier.js';
import { PAGE_SIZE } from '../mm/constants.js';
import type { Process } from '../mm/process.js';
import type { P2pMapping } from '../mm/vma.js';
import { p2pUnmap } from '../pci/p2p-map.js';
import { p2pMapLoop } from '../pci/p2p-map-loop.js';
import type { PciEndpoint } from '../pci/topology.js';
import { Mutex } from '../sim/locks.js';
import type { Machine } from '../system/machine.js';

/** A p2p importer of one range of one process. */
export class TestP2pImporter {
  readonly device: SimDevice;
  readonly asid: number;
  readonly lock: Mutex;
  readonly sub: MmuIntervalNotifier;
  mapping: P2pMapping | null = null;
  /** p2pMap calls made. */
  maps = 0;

  constructor(
    readonly m: Machine,
    readonly p: Process,
    readonly pci: PciEndpoint,
    readonly start: number,
    readonly pages: number,
  ) {
    this.device = new SimDevice(m.mm, { name: pci.name });
    this.asid = this.device.allocAsid();
    this.lock = new Mutex(m.sched, `${pci.name}:lock`);
    const end = start + pages * PAGE_SIZE;
    this.sub = mmuIntervalNotifierInsert(p.mm, start, pages * PAGE_SIZE, {
      invalidate: async (s, _range, seq) => {
        await this.lock.lock();
        mmuIntervalSetSeq(s, seq);
        // The p2p mapping covers the whole range and is given back whole below, so every device
        // entry of it goes, not only those of the invalidated part.
        await this.device.queue
          .submit({ op: 'unmap', asid: this.asid, startVpn: start / PAGE_SIZE, endVpn: end / PAGE_SIZE })
          .wait();
        if (this.mapping !== null) {
          p2pUnmap(this.mapping);
          this.mapping = null;
        }
        this.lock.unlock();
        return true;
      },
    });
    this.device.setFaultHandler((f) => this.fault(f.access !== 'read'), this.asid);
  }

  private get name(): string {
    return this.pci.name;
  }

  private async fault(write: boolean): Promise<void> {
    await p2pMapLoop({
      notifier: this.sub,
      start: this.start,
      end: this.start + this.pages * PAGE_SIZE,
      importer: { name: this.name, pci: this.pci },
      write,
      driverLock: this.lock,
      onMap: () => {
        this.maps++;
      },
      commit: async (m) => {
        if (this.mapping !== null) p2pUnmap(this.mapping);
        this.mapping = m;
        const vpns: number[] = [];
        const perms: number[] = [];
        for (let i = 0; i < this.pages; i++) {
          vpns.push(this.start / PAGE_SIZE + i);
          perms.push(m.writable ? DevPerm.READ | DevPerm.WRITE : DevPerm.READ);
        }
        await this.device.queue
          .submit({ op: 'map', asid: this.asid, vpns, pfns: Array.from(m.pfns), perms })
          .wait();
      },
    });
  }

  /** The device reads `len` bytes at `addr` (faulting the mapping in through `p2pMap`). */
  read(addr: number, len: number): Promise<Uint8Array> {
    return this.device.read(this.asid, addr, len);
  }

  /** The device writes. */
  write(addr: number, data: Uint8Array): Promise<void> {
    return this.device.write(this.asid, addr, data);
  }

  /** Importer teardown: drop everything, give the mapping back, stop listening. */
  async close(): Promise<void> {
    await this.lock.lock();
    await this.device.queue.submit({ op: 'unmap-all', asid: this.asid }).wait();
    if (this.mapping !== null) {
      p2pUnmap(this.mapping);
      this.mapping = null;
    }
    this.lock.unlock();
    await mmuIntervalNotifierRemove(this.sub);
    this.device.freeAsid(this.asid);
  }
}
