/**
 * The case groups and their implementations. A case belongs to the group of what it requires:
 * `mirror` (a mirror only), `migrate` (device memory), `exclusive` (exclusive access), `p2p`
 * (a peer-to-peer exporter); the groups beyond the kernel's tests are named by id prefix: `race`
 * (seeded interleavings of the sequence protocol), `fault` (fault injection), `userptr`. Cases of the
 * catalogue without an implementation in this version are still planned, and reported as skipped.
 *
 * @module
 */
import type { CaseInfo } from '../catalog.js';
import type { CaseFn } from './common.js';
import { EXCLUSIVE_CASES } from './exclusive.js';
import { MIGRATE_CASES } from './migrate.js';
import { MIRROR_CASES } from './mirror.js';
import { P2P_CASES_IMPL } from './p2p.js';
import { RACE_CASES_IMPL } from './race.js';
import { FAULT_CASES_IMPL } from './fault.js';
import { USERPTR_CASES_IMPL } from './userptr.js';

/** Name of a case group. */
export type GroupName = 'mirror' | 'migrate' | 'exclusive' | 'p2p' | 'race' | 'fault' | 'userptr';

/** Every group, in order. */
export const GROUPS: readonly GroupName[] = [
  'mirror',
  'migrate',
  'exclusive',
  'p2p',
  'race',
  'fault',
  'userptr',
];

/** The group a catalogue case belongs to. */
export function groupOf(info: CaseInfo): GroupName {
  if (info.id.startsWith('race.')) return 'race';
  if (info.id.startsWith('fault.')) return 'fault';
  if (info.id.startsWith('userptr.')) return 'userptr';
  const needs = [...info.requires, ...info.requiresAny];
  if (needs.includes('p2p-exporter') || needs.includes('p2p-importer')) return 'p2p';
  if (info.requires.includes('exclusive')) return 'exclusive';
  if (info.requires.includes('device-private') || info.requires.includes('device-coherent')) return 'migrate';
  return 'mirror';
}

/** Every implemented case, by catalogue id. */
export const IMPLEMENTATIONS: Readonly<Record<string, CaseFn>> = {
  ...MIRROR_CASES,
  ...MIGRATE_CASES,
  ...EXCLUSIVE_CASES,
  ...P2P_CASES_IMPL,
  ...RACE_CASES_IMPL,
  ...FAULT_CASES_IMPL,
  ...USERPTR_CASES_IMPL,
};

export { MIRROR_CASES } from './mirror.js';
export { MIGRATE_CASES } from './migrate.js';
export { EXCLUSIVE_CASES } from './exclusive.js';
export { P2P_CASES_IMPL } from './p2p.js';
export { RACE_CASES_IMPL } from './race.js';
export { FAULT_CASES_IMPL } from './fault.js';
export { USERPTR_CASES_IMPL } from './userptr.js';
export type { CaseContext, CaseFn } from './common.js';
