/**
 * The device's page table for one address-space context (ASID): what a GPU's or NIC's MMU walks on
 * every device access.
 *
 * Hardware counterpart: a GPU's per-channel / per-VM page tables (nouveau `nvkm_vmm`, amdgpu
 * `amdgpu_vm`), an RDMA NIC's memory translation table (mlx5 MTT / KSM); in the kernel's test
 * device, the `dmirror` xarray keyed by virtual page number (lib/test_hmm.c).
 *
 * No TLB is modelled: the device sees an entry as soon as the command that writes it completes,
 * and never sees a cleared entry after the unmap command's fence signals. The unmap command's
 * latency stands for the PTE clear plus the device TLB invalidate.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';

/**
 * Permission bits of a device page-table entry; 0 = no entry. ATOMIC is the right to do atomics
 * on the page (dmirror's "atomic" tag, granted for device-exclusive pages).
 */
export const DevPerm = {
  READ: 1,
  WRITE: 2,
  ATOMIC: 4,
} as const;

/** A combination of {@link DevPerm} bits (1..7 for an entry, 0 for none). */
export type DevPermBits = number;

/** Number of virtual page numbers a device MMU can map: 2^35 (a 47-bit address space of 4 KiB pages). */
export const DEVICE_MMU_VPN_LIMIT = 2 ** 35;

/** Entries per leaf table. */
const LEAF_ENTRIES = 512;
const LEAF_MASK = LEAF_ENTRIES - 1;
const ALL_PERMS = DevPerm.READ | DevPerm.WRITE | DevPerm.ATOMIC;
const U32_MAX = 0xffff_ffff;

function checkVpn(where: string, vpn: number, inclusiveLimit = false): void {
  const ok =
    Number.isInteger(vpn) &&
    vpn >= 0 &&
    (inclusiveLimit ? vpn <= DEVICE_MMU_VPN_LIMIT : vpn < DEVICE_MMU_VPN_LIMIT);
  if (!ok) {
    throw new HmmError(
      'EINVAL',
      `${where}: virtual page number ${String(vpn)} is not an integer in [0, 2^35${inclusiveLimit ? ']' : ')'}`,
    );
  }
}

/**
 * One ASID's device page table: virtual page number (< 2^35) → frame number (u32) + {@link DevPerm}
 * bits.
 *
 * Storage follows the SDK's "no object per page" rule: leaves of 512 entries live in two pooled,
 * growable typed arrays (`Uint32Array` frame numbers, `Uint8Array` permissions), found through a
 * `Map` from leaf index (vpn >> 9) to leaf slot. A leaf whose last entry is cleared goes back to
 * the pool. Work is proportional to the entries and leaves touched, never to the address range.
 *
 * Only the device's command processor changes it (`set`, `clearRange`, `clearAll` are internal):
 * a driver programs it by submitting commands to the device's queue.
 */
export class DeviceMmu {
  /** The address-space context this table belongs to. */
  readonly asid: number;
  #pfns = new Uint32Array(LEAF_ENTRIES * 4);
  #perms = new Uint8Array(LEAF_ENTRIES * 4);
  /** Live entries per leaf slot. */
  #live = new Uint16Array(4);
  #leafSlots = 0;
  readonly #leaves = new Map<number, number>();
  readonly #freeSlots: number[] = [];
  #size = 0;

  constructor(asid: number) {
    this.asid = asid;
  }

  /** Number of live entries. */
  get size(): number {
    return this.#size;
  }

  /** Number of leaf tables in use (each 512 entries, 2.5 KiB). */
  get leafCount(): number {
    return this.#leaves.size;
  }

  /** Bytes of typed-array storage held, pooled leaves included. */
  get metadataBytes(): number {
    return this.#pfns.byteLength + this.#perms.byteLength + this.#live.byteLength;
  }

  /** Permission bits of the entry for `vpn`, 0 if none (also for a vpn outside the table's range). */
  lookup(vpn: number): DevPermBits {
    const slot = this.#leaves.get(Math.floor(vpn / LEAF_ENTRIES));
    if (slot === undefined) return 0;
    return this.#perms[slot * LEAF_ENTRIES + (vpn & LEAF_MASK)]!;
  }

  /** Frame number of the entry for `vpn`, or -1 if none. */
  pfnOf(vpn: number): number {
    const slot = this.#leaves.get(Math.floor(vpn / LEAF_ENTRIES));
    if (slot === undefined) return -1;
    const i = slot * LEAF_ENTRIES + (vpn & LEAF_MASK);
    return this.#perms[i] === 0 ? -1 : this.#pfns[i]!;
  }

  /**
   * Calls `fn(vpn, pfn, perm)` for every entry with `startVpn ≤ vpn < endVpn`, in address order.
   * `fn` must not change the table (the command processor is the only writer, and it never runs
   * during a synchronous walk). EINVAL for a bad range.
   */
  forEachEntry(
    startVpn: number,
    endVpn: number,
    fn: (vpn: number, pfn: number, perm: DevPermBits) => void,
  ): void {
    this.#checkRange('forEachEntry', startVpn, endVpn);
    for (const [leaf, slot] of this.#leavesIn(startVpn, endVpn)) {
      const base = leaf * LEAF_ENTRIES;
      const from = Math.max(startVpn, base) - base;
      const to = Math.min(endVpn, base + LEAF_ENTRIES) - base;
      const off = slot * LEAF_ENTRIES;
      for (let i = from; i < to; i++) {
        const perm = this.#perms[off + i]!;
        if (perm !== 0) fn(base + i, this.#pfns[off + i]!, perm);
      }
    }
  }

  /**
   * Writes the entry for `vpn`: frame `pfn` with permissions `perm` (1..7), replacing any entry.
   * EINVAL for a bad vpn, pfn or perm; nothing changes then.
   * @internal Used by the device's command processor only.
   */
  set(vpn: number, pfn: number, perm: DevPermBits): void {
    checkVpn('DeviceMmu.set', vpn);
    if (!(Number.isInteger(pfn) && pfn >= 0 && pfn <= U32_MAX)) {
      throw new HmmError('EINVAL', `DeviceMmu.set: frame number ${String(pfn)} is not a u32`);
    }
    if (!(Number.isInteger(perm) && perm > 0 && (perm & ~ALL_PERMS) === 0)) {
      throw new HmmError(
        'EINVAL',
        `DeviceMmu.set: permission ${String(perm)} at vpn ${hex(vpn)} is not a non-empty combination of DevPerm bits (READ 1, WRITE 2, ATOMIC 4); clear entries with an unmap`,
      );
    }
    const leaf = Math.floor(vpn / LEAF_ENTRIES);
    let slot = this.#leaves.get(leaf);
    if (slot === undefined) {
      slot = this.#allocSlot();
      this.#leaves.set(leaf, slot);
    }
    const i = slot * LEAF_ENTRIES + (vpn & LEAF_MASK);
    if (this.#perms[i] === 0) {
      this.#live[slot]!++;
      this.#size++;
    }
    this.#pfns[i] = pfn;
    this.#perms[i] = perm;
  }

  /**
   * Clears every entry with `startVpn ≤ vpn < endVpn`; returns how many it cleared. Emptied leaves
   * go back to the pool. EINVAL for a bad range (start > end, or outside [0, 2^35]).
   * @internal Used by the device's command processor only.
   */
  clearRange(startVpn: number, endVpn: number): number {
    this.#checkRange('clearRange', startVpn, endVpn);
    let cleared = 0;
    for (const [leaf, slot] of this.#leavesIn(startVpn, endVpn)) {
      const base = leaf * LEAF_ENTRIES;
      const from = Math.max(startVpn, base) - base;
      const to = Math.min(endVpn, base + LEAF_ENTRIES) - base;
      const off = slot * LEAF_ENTRIES;
      let n = 0;
      for (let i = off + from; i < off + to; i++) {
        if (this.#perms[i] !== 0) {
          this.#perms[i] = 0;
          this.#pfns[i] = 0;
          n++;
        }
      }
      if (n === 0) continue;
      cleared += n;
      const live = this.#live[slot]! - n;
      this.#live[slot] = live;
      if (live === 0) {
        this.#leaves.delete(leaf);
        this.#freeSlots.push(slot);
      }
    }
    this.#size -= cleared;
    return cleared;
  }

  /**
   * Clears every entry; returns how many it cleared.
   * @internal Used by the device's command processor only.
   */
  clearAll(): number {
    const cleared = this.#size;
    for (const slot of this.#leaves.values()) {
      const off = slot * LEAF_ENTRIES;
      this.#perms.fill(0, off, off + LEAF_ENTRIES);
      this.#pfns.fill(0, off, off + LEAF_ENTRIES);
      this.#live[slot] = 0;
      this.#freeSlots.push(slot);
    }
    this.#leaves.clear();
    this.#size = 0;
    return cleared;
  }

  #checkRange(where: string, startVpn: number, endVpn: number): void {
    checkVpn(`DeviceMmu.${where}`, startVpn, true);
    checkVpn(`DeviceMmu.${where}`, endVpn, true);
    if (startVpn > endVpn) {
      throw new HmmError(
        'EINVAL',
        `DeviceMmu.${where}: start vpn ${hex(startVpn)} is above end vpn ${hex(endVpn)}`,
      );
    }
  }

  /**
   * The live leaves overlapping [startVpn, endVpn) as [leafIndex, slot], in address order: by
   * probing each leaf index when the range covers fewer leaves than are live, else by sorting the
   * live ones. Collected first, so callers may free leaves while iterating.
   */
  #leavesIn(startVpn: number, endVpn: number): [number, number][] {
    const out: [number, number][] = [];
    if (startVpn >= endVpn || this.#leaves.size === 0) return out;
    const first = Math.floor(startVpn / LEAF_ENTRIES);
    const last = Math.floor((endVpn - 1) / LEAF_ENTRIES);
    if (last - first + 1 <= this.#leaves.size) {
      for (let leaf = first; leaf <= last; leaf++) {
        const slot = this.#leaves.get(leaf);
        if (slot !== undefined) out.push([leaf, slot]);
      }
      return out;
    }
    for (const entry of this.#leaves) if (entry[0] >= first && entry[0] <= last) out.push(entry);
    out.sort((a, b) => a[0] - b[0]);
    return out;
  }

  #allocSlot(): number {
    const free = this.#freeSlots.pop();
    if (free !== undefined) return free;
    const slot = this.#leafSlots++;
    if (slot >= this.#live.length) {
      const n = this.#live.length * 2;
      const pfns = new Uint32Array(n * LEAF_ENTRIES);
      pfns.set(this.#pfns);
      this.#pfns = pfns;
      const perms = new Uint8Array(n * LEAF_ENTRIES);
      perms.set(this.#perms);
      this.#perms = perms;
      const live = new Uint16Array(n);
      live.set(this.#live);
      this.#live = live;
    }
    return slot;
  }
}
