/**
 * The demo: one small simulated machine, one scenario, a report of what happened.
 *
 * A process fills more anonymous memory than the machine has RAM (reclaim swaps), forks, the child
 * writes (copy-on-write), the parent checks its data, pins a buffer (reclaim must skip it), writes a
 * file through a shared mapping, breaks a protection (a SIGSEGV-like error), unmaps and exits; at the
 * end every frame is back on the free list. Everything is seeded: two runs print the same report.
 *
 * Run it with `npx -y pnpm@10 demo` from the repository root.
 */
import {
  Foll,
  HmmError,
  Machine,
  MapFlag,
  PAGE_SIZE,
  Prot,
  RssCounter,
  SeededRandom,
  TraceRecorder,
} from '@hmm/core';
import type { Process } from '@hmm/core';

const SEED = 42;
const MiB = 1024 * 1024;
const RAM = 16 * MiB;
const SWAP = 64 * MiB;
const ANON = 24 * MiB;

// ── report helpers ────────────────────────────────────────────────────────────────────────────

const LABEL = 40;
let step = 0;

function section(title: string): void {
  console.log(`\n${String(++step).padStart(2)}. ${title}`);
}

function show(label: string, value: string | number): void {
  const v = typeof value === 'number' ? value.toLocaleString('en-US') : value;
  console.log(`    ${label.padEnd(LABEL)} ${v}`);
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const num = (n: number): string => n.toLocaleString('en-US');
const pages = (bytes: number): string => `${num(bytes / PAGE_SIZE)} pages`;

function rssLine(p: Process): string {
  const r = p.mm.rss;
  return `anon ${num(r[RssCounter.ANON]!)}, file ${num(r[RssCounter.FILE]!)}, shmem ${num(r[RssCounter.SHMEM]!)}, swap ${num(r[RssCounter.SWAP]!)}`;
}

function memLine(m: Machine): string {
  const s = m.stats();
  return `${num(s.usedPages)} used / ${num(s.freePages)} free frames, ${num(s.swapUsed)} swap slots used`;
}

/** The parent's data: page `i` is a seeded 4 KiB block whose first 4 bytes are replaced by `i`. */
function makePattern(bytes: number): Uint8Array {
  const rnd = new SeededRandom(SEED);
  const block = new Uint8Array(PAGE_SIZE);
  const bv = new DataView(block.buffer);
  for (let j = 0; j < PAGE_SIZE; j += 4) bv.setUint32(j, rnd.nextU32(), true);
  const out = new Uint8Array(bytes);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < bytes / PAGE_SIZE; i++) {
    out.set(block, i * PAGE_SIZE);
    ov.setUint32(i * PAGE_SIZE, i, true);
  }
  return out;
}

/** Index of the first differing byte, or -1 if equal. */
function firstMismatch(a: Uint8Array, b: Uint8Array): number {
  if (a.length === b.length && Buffer.compare(a, b) === 0) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** `a 2, b 1`: how many times each value occurs, sorted by value. */
function tally(values: readonly string[]): string {
  const n = new Map<string, number>();
  for (const v of values) n.set(v, (n.get(v) ?? 0) + 1);
  const parts = [...n].sort((a, b) => a[0].localeCompare(b[0])).map(([v, k]) => `${v} ${num(k)}`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const untext = (b: Uint8Array): string => new TextDecoder().decode(b).replace(/\0+$/, '');

// ── the scenario ──────────────────────────────────────────────────────────────────────────────

async function scenario(m: Machine): Promise<void> {
  const reclaim = (): ReturnType<Machine['stats']>['reclaim'] => m.stats().reclaim;

  section(`A process writes ${ANON / MiB} MiB into ${RAM / MiB} MiB of RAM`);
  const parent = m.createProcess('parent');
  const rw = Prot.READ | Prot.WRITE;
  const addr = await parent.mmap({ length: ANON, prot: rw, flags: MapFlag.PRIVATE | MapFlag.ANONYMOUS });
  const pattern = makePattern(ANON);
  await parent.write(addr, pattern);
  show('mapping', `${hex(addr)}, ${pages(ANON)}, private anonymous`);
  show('parent rss (pages)', rssLine(parent));
  show('reclaim so far', `${num(reclaim().swappedOut)} pages swapped out`);
  show('memory', memLine(m));

  section('fork; the child writes its copy (copy-on-write)');
  const child = await parent.fork('child');
  show('child pid / rss', `${child.pid} / ${rssLine(child)}`);
  const cowBefore = m.trace.counter('mm.fault.cow');
  // The last pages written are the ones still in RAM, shared by both processes until written.
  const cowAddr = addr + ANON - 2 * MiB;
  const worker = m.sched.spawn('child-main', async () => {
    await child.fill(cowAddr, 2 * MiB, 0xc0);
    const mine = await child.read(cowAddr, 8);
    const inherited = await child.read(addr + 12 * MiB, 8);
    return { mine, inherited };
  });
  const seen = await worker.join();
  show('child wrote', `2 MiB of 0xc0 at ${hex(cowAddr)}`);
  show('copy-on-write faults', m.trace.counter('mm.fault.cow') - cowBefore);
  show('child reads its write', [...seen.mine].map((b) => b.toString(16)).join(' '));
  show(
    'child reads inherited data',
    firstMismatch(seen.inherited, pattern.subarray(12 * MiB, 12 * MiB + 8)) < 0
      ? 'matches the parent pattern'
      : 'DIFFERS',
  );

  section('The parent checks all of its data');
  const swapinsBefore = m.trace.counter('mm.fault.swapin');
  const back = await parent.read(addr, ANON);
  const bad = firstMismatch(back, pattern);
  show('parent data', bad < 0 ? `all ${ANON / MiB} MiB intact` : `CORRUPT at byte ${bad}`);
  show('swap-ins while reading', m.trace.counter('mm.fault.swapin') - swapinsBefore);
  show('memory', memLine(m));
  show('note', 'the SDK has no swap cache: a page swapped in after fork is a private copy');

  section('A pinned buffer survives reclaim');
  const pinAddr = addr + 8 * MiB;
  const pinPages = (2 * MiB) / PAGE_SIZE;
  const pfns = await parent.pinUserPages(pinAddr, pinPages, Foll.LONGTERM | Foll.WRITE);
  const before = reclaim();
  const freed = await m.reclaim(m.stats().ramPages);
  const after = reclaim();
  const skips = after.skippedPinned - before.skippedPinned;
  show('pinned', `${num(pinPages)} pages at ${hex(pinAddr)} (FOLL_LONGTERM | FOLL_WRITE)`);
  show('m.reclaim(all of RAM) freed', `${num(freed)} pages`);
  show(
    'reclaim skipped a pinned page',
    `${num(skips)} times (${num(pinPages)} pages × ${skips / pinPages} passes)`,
  );
  const still = await parent.getUserPages(pinAddr, pinPages, Foll.NOFAULT);
  const same = still.every((pfn, i) => pfn === pfns[i]);
  parent.putUserPages(still);
  show('still resident, same frames', same ? `yes, all ${num(pinPages)} (checked with FOLL_NOFAULT)` : 'NO');
  parent.unpinUserPages(pfns);
  show('memory', memLine(m));

  section('A file written through a shared mapping, read back with pread');
  const file = await m.createFile('/var/log/journal', new Uint8Array(2 * PAGE_SIZE));
  const fileAddr = await parent.mmap({ length: 2 * PAGE_SIZE, prot: rw, flags: MapFlag.SHARED, file });
  const msg = 'written by a store into a MAP_SHARED mapping';
  await parent.write(fileAddr + 16, text(msg));
  const viaRead = await m.readFile(file, 16, msg.length);
  await m.writeFile(file, PAGE_SIZE, text('written by pwrite'));
  const viaMap = await parent.read(fileAddr + PAGE_SIZE, 17);
  show('mapping', `${hex(fileAddr)}, ${file.name}, ${pages(2 * PAGE_SIZE)}`);
  show('pread sees the store', JSON.stringify(untext(viaRead)));
  show('the mapping sees pwrite', JSON.stringify(untext(viaMap)));

  section('mprotect(PROT_READ), then a write: SIGSEGV');
  await parent.mprotect(addr, PAGE_SIZE, Prot.READ);
  try {
    await parent.writeU32(addr, 0xdeadbeef);
    show('write', 'unexpectedly succeeded');
  } catch (e) {
    if (!(e instanceof HmmError)) throw e;
    show('error', `${e.name} ${e.code} (errno ${e.errno}), ${e.signal ?? '-'} / ${e.sigCode ?? '-'}`);
    show('message', e.message);
    show('kernel reference', e.kernelRef ?? '-');
  }

  section('munmap and exit');
  await parent.munmap(fileAddr, 2 * PAGE_SIZE);
  await parent.munmap(addr, ANON);
  show('after munmap, parent rss', rssLine(parent));
  await child.exit(0);
  await parent.exit(0);
  show('processes left', m.processes().length);
  show('memory', memLine(m));
  const cached = m.stats().usedPages;
  const dropped = await m.reclaim(m.stats().ramPages);
  show('page cache written back and dropped', `${num(dropped)} of ${num(cached)} frames (file pages)`);
  const kept = await m.readFile(file, 16, msg.length);
  show('file still holds the store', JSON.stringify(untext(kept)));
  await m.truncate(file, 0);
}

async function main(): Promise<void> {
  const m = new Machine({ ramBytes: RAM, swapBytes: SWAP, seed: SEED });
  const recorder = new TraceRecorder(m.trace);
  console.log('HMM SDK demo: one simulated machine, one scenario');
  console.log(
    `machine: ${RAM / MiB} MiB RAM (${num(m.stats().ramPages)} frames incl. the zero page), ${SWAP / MiB} MiB swap, seed ${SEED}`,
  );

  await m.sched.runTask('demo', () => scenario(m));
  recorder.stop();

  section('Final state');
  const s = m.stats();
  const free = s.freePages === s.ramPages - 1;
  show(
    'frames',
    `${num(s.usedPages)} used, ${num(s.freePages)} free of ${num(s.ramPages - 1)} (+ the zero page)`,
  );
  show('every frame returned', free ? 'yes' : 'NO');
  show('swap slots used', s.swapUsed);
  show('page-table bytes / content bytes', `${num(s.pageTableBytes)} / ${num(s.contentBytes)}`);
  m.checkInvariants();
  show('invariants (checkInvariants)', 'hold');
  const now = m.sched.now;
  show(
    'simulated time',
    `${num(now)} ns${now === 0 ? ' (none of these operations charges simulated time yet)' : ''}`,
  );
  const r = s.reclaim;
  show('reclaim: scanned / freed', `${num(r.scanned)} / ${num(r.freed)}`);
  show('reclaim: swapped out / written back', `${num(r.swappedOut)} / ${num(r.writtenBack)}`);
  show('reclaim: skipped (pinned)', num(r.skippedPinned));

  section(`Trace (TraceRecorder): ${num(recorder.events.length)} events recorded`);
  const byType = new Map<string, number>();
  for (const e of recorder.events) byType.set(e.type, (byType.get(e.type) ?? 0) + 1);
  for (const [type, n] of [...byType].sort((a, b) => a[0].localeCompare(b[0]))) show(type, n);
  show('mm.fault events by kind', tally(recorder.ofType('mm.fault').map((e) => e.kind)));
  show('mm.syscall events by call', tally(recorder.ofType('mm.syscall').map((e) => e.call)));

  section('Counters (m.trace.counters())');
  for (const [name, n] of Object.entries(m.trace.counters())) show(name, n);

  if (!free) process.exitCode = 1;
}

await main();
