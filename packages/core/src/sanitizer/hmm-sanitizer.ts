/**
 * The HMM sanitizer: checks, on every device access and after every invalidation, that devices use
 * CPU memory only as the mirroring contract allows (DESIGN §2 principle 7). Kernel counterpart: none
 * in mainline — this is what a KASAN-like checker for secondary MMUs would do; the rules are those of
 * Documentation/mm/hmm.rst and include/linux/mmu_notifier.h.
 *
 * Rules (a frame the driver holds pinned is exempt from the first and the last):
 * - **stale mapping**: once an invalidation of a range has completed, no device mapping in the range
 *   may remain (a driver's own MIGRATE and EXCLUSIVE events, which it may skip, are excepted);
 * - **freed frame**: a device mapping must not point at a freed frame;
 * - **write beyond the CPU**: a device mapping may grant write (or atomic) only where the CPU page
 *   table maps the same frame writable (not a read-only, zero or copy-on-write page);
 * - **stale access**: a device access through a mapping whose frame the CPU no longer maps there.
 *
 * A device-private or device-exclusive entry of the CPU page table counts as the CPU mapping its
 * frame (writable as the entry and VMA allow); a migration entry as mapping the old frame read-only,
 * so a device write to a page in flight is caught. Device-memory rules, checked from the moment the
 * sanitizer exists:
 * - **migrated data**: when a migration commits, the destination must hold the source's bytes
 *   (zeros for an empty slot): the driver copied before `migrate_vma_pages`, as it must;
 * - **pagemap busy**: a pagemap removed while its frames are still mapped or referenced;
 * - **pinned device page** (in {@link HmmSanitizer.checkAll}): a device-private page with a pin;
 * - **device page leak** (in {@link HmmSanitizer.checkAll}): a device frame in use that nothing maps,
 *   pins or locks (a reference a driver forgot to drop).
 *
 * Importers of a special (device file) mapping map what the exporter's `p2pMap` gave them, which the
 * CPU page table need not map: there the CPU comparison is skipped, and instead
 * - **BAR out of range**: a device frame must be allocated peer memory of a BAR window (device memory
 *   outside the BAR has no bus address); system memory (the fallback) is fine.
 * A mapping a zap should have removed is a stale mapping, as for any invalidation.
 *
 * A violation is a {@link SanitizerViolation}; in `'throw'` mode a device access that breaks a rule
 * fails with it, and every violation is also recorded in {@link HmmSanitizer.violations}.
 *
 * @module
 */
import { HmmError, hex } from '../errors/errno.js';
import type { DeviceAccessKind, SimDevice } from '../device/device.js';
import { DevPerm } from '../device/device-mmu.js';
import { PAGE_SIZE } from '../mm/constants.js';
import type { MmContext } from '../mm/mm-context.js';
import type { MmStruct } from '../mm/mm-struct.js';
import type { MmuNotifierRange } from '../mm/mmu-notifier-hooks.js';
import { NOTIFY_EVENT_NAMES, NotifyEvent } from '../mm/mmu-notifier-hooks.js';
import { PG } from '../mm/page-flags.js';
import { Pte, PteType, pteType } from '../mm/pgtable.js';
import { MemoryType, isDevicePrivatePage, pagemapOf } from '../mm/memremap.js';
import { p2pdmaResourceOf } from '../pci/p2pdma.js';
import { MmuNotifierSubscriptions } from '../hmm/mmu-interval-notifier.js';

/** Which rule a violation broke. */
export type SanitizerRule =
  | 'stale-mapping'
  | 'freed-frame'
  | 'write-beyond-cpu'
  | 'stale-access'
  | 'migrated-data'
  | 'pagemap-busy'
  | 'pinned-device-page'
  | 'device-page-leak'
  | 'bar-out-of-range';

/** A broken mirroring contract, with where and what. */
export class SanitizerViolation extends HmmError {
  constructor(
    readonly rule: SanitizerRule,
    readonly device: string,
    readonly asid: number,
    readonly vaddr: number,
    readonly pfn: number,
    /** The invalidation that should have removed the mapping, if any. */
    readonly invalidation: { event: string; start: number; end: number } | null,
    message: string,
  ) {
    super(
      'EFAULT',
      asid < 0
        ? `sanitizer: ${rule} on ${device} (frame ${hex(pfn)}): ${message}`
        : `sanitizer: ${rule} on ${device} asid ${asid} at ${hex(vaddr)} (frame ${hex(pfn)}): ${message}`,
      {
        ...(vaddr >= 0 ? { address: vaddr } : {}),
        kernelRef: 'Documentation/mm/hmm.rst',
      },
    );
  }
}

interface Watched {
  readonly device: SimDevice;
  readonly asid: number;
  readonly mm: MmStruct;
  readonly owner: unknown;
}

/** Checks the devices of one machine against the mirroring contract. */
export class HmmSanitizer {
  /** Every violation seen, oldest first. */
  readonly violations: SanitizerViolation[] = [];
  private readonly watched: Watched[] = [];
  private readonly observed = new Set<SimDevice>();
  private readonly subscribed = new Set<MmStruct>();

  private readonly bufA = new Uint8Array(PAGE_SIZE);
  private readonly bufB = new Uint8Array(PAGE_SIZE);

  constructor(
    readonly ctx: MmContext,
    /** `'throw'`: a device access that breaks a rule fails; `'record'`: only record. */
    public mode: 'throw' | 'record' = 'throw',
  ) {
    const prevMigrate = ctx.onMigratePage;
    ctx.onMigratePage = (src, dst) => {
      prevMigrate?.(src, dst);
      this.onMigratePage(src, dst);
    };
    const prevBusy = ctx.onMemunmapBusy;
    ctx.onMemunmapBusy = (pgmap, frames) => {
      prevBusy?.(pgmap, frames);
      for (const pfn of frames.slice(0, 16)) {
        this.report(
          new SanitizerViolation(
            'pagemap-busy',
            pgmap.name,
            -1,
            -1,
            pfn,
            null,
            `the pagemap is being removed while the frame is still in use (refcount ${ctx.mem.refcount[pfn]}, mapcount ${ctx.mem.mapcount[pfn]})`,
          ),
          false,
        );
      }
    };
  }

  /** A committed migration: the destination must hold what the source held (zeros for none). */
  private onMigratePage(src: number, dst: number): void {
    const content = this.ctx.mem.content;
    const a = this.bufA;
    const b = this.bufB;
    if (src >= 0) content.read(src, 0, a, 0, PAGE_SIZE);
    else a.fill(0);
    content.read(dst, 0, b, 0, PAGE_SIZE);
    for (let i = 0; i < PAGE_SIZE; i++) {
      if (a[i] !== b[i]) {
        this.report(
          new SanitizerViolation(
            'migrated-data',
            pagemapOf(this.ctx, dst)?.name ?? pagemapOf(this.ctx, src)?.name ?? 'ram',
            -1,
            -1,
            dst,
            null,
            `migration committed ${src >= 0 ? `frame ${hex(src)}` : 'an empty slot'} to frame ${hex(dst)}, whose byte ${i} differs (${b[i]} instead of ${a[i]}): the data was not copied before migrate_vma_pages`,
          ),
          false,
        );
        return;
      }
    }
  }

  /**
   * Declares that `device` mirrors `mm` in address-space context `asid`. `owner` is the driver's
   * owner token: invalidations it causes itself (MIGRATE, EXCLUSIVE with that owner) may be skipped.
   */
  watch(device: SimDevice, asid: number, mm: MmStruct, owner: unknown = null): void {
    this.watched.push({ device, asid, mm, owner });
    if (!this.observed.has(device)) {
      this.observed.add(device);
      device.onAccess((a, vpn, pfn, kind) => this.onAccess(device, a, vpn, pfn, kind));
    }
    if (!this.subscribed.has(mm)) {
      this.subscribed.add(mm);
      MmuNotifierSubscriptions.of(mm).completedObservers.add((range) => this.onInvalidated(range));
    }
  }

  /** Stops checking `device` / `asid`. */
  unwatch(device: SimDevice, asid: number): void {
    const i = this.watched.findIndex((w) => w.device === device && w.asid === asid);
    if (i >= 0) this.watched.splice(i, 1);
  }

  /** The CPU frame mapped at `vpn` of `mm` and whether it is writable, or -1. */
  private cpuPfn(mm: MmStruct, vpn: number): { pfn: number; writable: boolean } {
    if (mm.state === 'dead') return { pfn: -1, writable: false };
    const slot = mm.pgtable.lookup(vpn);
    const f = slot < 0 ? 0 : this.ctx.arena.pteFlags[slot]!;
    if (f === 0) return { pfn: -1, writable: false };
    const vma = mm.vmas.lookup(vpn * PAGE_SIZE);
    const vmaWritable = vma !== undefined && vma.writable;
    const pfn = this.ctx.arena.pteVal[slot]!;
    if ((f & Pte.PRESENT) !== 0) return { pfn, writable: (f & Pte.WRITE) !== 0 && vmaWritable };
    const t = pteType(f);
    if (t === PteType.DEVICE_PRIVATE_READ || t === PteType.MIGRATION_READ || t === PteType.MIGRATION_WRITE) {
      return { pfn, writable: false };
    }
    if (t === PteType.DEVICE_PRIVATE_WRITE || t === PteType.DEVICE_EXCLUSIVE)
      return { pfn, writable: vmaWritable };
    return { pfn: -1, writable: false };
  }

  private pinned(pfn: number): boolean {
    return this.ctx.mem.pincount[pfn]! > 0;
  }

  private report(v: SanitizerViolation, fail: boolean): void {
    this.violations.push(v);
    if (fail && this.mode === 'throw') throw v;
  }

  /** Checks one mapping; returns the violation or null. */
  private checkMapping(w: Watched, vpn: number, pfn: number, perm: number): SanitizerViolation | null {
    const mem = this.ctx.mem;
    const name = w.device.name;
    if (pfn >= mem.nrFrames || (mem.flags[pfn]! & PG.ALLOCATED) === 0) {
      return new SanitizerViolation(
        'freed-frame',
        name,
        w.asid,
        vpn * PAGE_SIZE,
        pfn,
        null,
        'the device maps a frame that has been freed',
      );
    }
    if (this.pinned(pfn)) return null;
    const vma = w.mm.state === 'dead' ? undefined : w.mm.vmas.lookup(vpn * PAGE_SIZE);
    if (vma !== undefined && vma.isSpecial && vma.ops?.p2pMap !== undefined) {
      const pg = pagemapOf(this.ctx, pfn);
      if (
        pg !== undefined &&
        (pg.type !== MemoryType.PCI_P2PDMA || p2pdmaResourceOf(this.ctx, pfn)?.isAllocated(pfn) !== true)
      ) {
        return new SanitizerViolation(
          'bar-out-of-range',
          name,
          w.asid,
          vpn * PAGE_SIZE,
          pfn,
          null,
          "the importer reaches device memory that is not allocated peer memory of a BAR window (a bus address outside the exporter's BAR)",
        );
      }
      if ((perm & (DevPerm.WRITE | DevPerm.ATOMIC)) !== 0 && !vma.writable) {
        return new SanitizerViolation(
          'write-beyond-cpu',
          name,
          w.asid,
          vpn * PAGE_SIZE,
          pfn,
          null,
          'the importer may write a read-only device mapping',
        );
      }
      return null;
    }
    const cpu = this.cpuPfn(w.mm, vpn);
    if (cpu.pfn !== pfn) {
      return new SanitizerViolation(
        'stale-access',
        name,
        w.asid,
        vpn * PAGE_SIZE,
        pfn,
        null,
        cpu.pfn < 0 ? 'the CPU no longer maps this address' : `the CPU now maps frame ${hex(cpu.pfn)} there`,
      );
    }
    if ((perm & (DevPerm.WRITE | DevPerm.ATOMIC)) !== 0 && !cpu.writable) {
      return new SanitizerViolation(
        'write-beyond-cpu',
        name,
        w.asid,
        vpn * PAGE_SIZE,
        pfn,
        null,
        'the device may write where the CPU page table is read-only (a read-only, zero or copy-on-write page)',
      );
    }
    return null;
  }

  private onAccess(device: SimDevice, asid: number, vpn: number, pfn: number, kind: DeviceAccessKind): void {
    const w = this.watched.find((x) => x.device === device && x.asid === asid);
    if (w === undefined) return;
    const perm = kind === 'read' ? DevPerm.READ : kind === 'write' ? DevPerm.WRITE : DevPerm.ATOMIC;
    const v = this.checkMapping(w, vpn, pfn, perm);
    if (v !== null) this.report(v, true);
  }

  private onInvalidated(range: MmuNotifierRange): void {
    for (const w of this.watched) {
      if (w.mm !== range.mm) continue;
      if (
        (range.event === NotifyEvent.MIGRATE || range.event === NotifyEvent.EXCLUSIVE) &&
        range.owner === w.owner &&
        w.owner !== null
      ) {
        continue;
      }
      const mmu = w.device.findMmu(w.asid);
      if (mmu === undefined) continue;
      mmu.forEachEntry(range.start / PAGE_SIZE, range.end / PAGE_SIZE, (vpn, pfn) => {
        if (this.pinned(pfn)) return;
        this.report(
          new SanitizerViolation(
            'stale-mapping',
            w.device.name,
            w.asid,
            vpn * PAGE_SIZE,
            pfn,
            { event: NOTIFY_EVENT_NAMES[range.event]!, start: range.start, end: range.end },
            `the device still maps this page after the ${NOTIFY_EVENT_NAMES[range.event]} invalidation of [${hex(range.start)}, ${hex(range.end)}) completed`,
          ),
          false,
        );
      });
    }
  }

  /**
   * Checks every mapping of every watched device now (freed frames, stale mappings, write beyond the
   * CPU) and returns the violations found (also recorded). A clean run returns `[]`.
   */
  checkAll(): SanitizerViolation[] {
    const found: SanitizerViolation[] = [];
    const mem = this.ctx.mem;
    for (let pfn = mem.nrRamFrames; pfn < mem.nrFrames; pfn++) {
      const f = mem.flags[pfn]!;
      if ((f & PG.ALLOCATED) === 0) continue;
      const pg = pagemapOf(this.ctx, pfn);
      // Peer memory is held by its p2pdma allocator until freed; the resource's removal checks it.
      if (pg?.type === MemoryType.PCI_P2PDMA) continue;
      const name = pg?.name ?? 'device';
      if (mem.pincount[pfn]! > 0 && isDevicePrivatePage(this.ctx, pfn)) {
        found.push(
          new SanitizerViolation(
            'pinned-device-page',
            name,
            -1,
            -1,
            pfn,
            null,
            `a device-private page has ${mem.pincount[pfn]} pin(s); GUP must never return one`,
          ),
        );
      } else if (mem.mapcount[pfn] === 0 && mem.pincount[pfn] === 0 && (f & PG.LOCKED) === 0) {
        found.push(
          new SanitizerViolation(
            'device-page-leak',
            name,
            -1,
            -1,
            pfn,
            null,
            `the device page is in use (refcount ${mem.refcount[pfn]}) but nothing maps, pins or locks it: a reference was not dropped`,
          ),
        );
      }
    }
    for (const w of this.watched) {
      const mmu = w.device.findMmu(w.asid);
      if (mmu === undefined) continue;
      mmu.forEachEntry(0, 2 ** 35, (vpn, pfn, perm) => {
        const v = this.checkMapping(w, vpn, pfn, perm);
        if (v !== null) found.push(v);
      });
    }
    this.violations.push(...found);
    return found;
  }
}
