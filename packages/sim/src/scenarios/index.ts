/**
 * The built-in scenarios, in the order `hmm-sim list` shows them.
 *
 * @module
 */
import type { Scenario } from '../scenario.js';
import { fault2mScenario } from './fault-2m.js';
import { oversubscribeScenario } from './oversubscribe.js';
import { p2pVsStagedScenario } from './p2p-vs-staged.js';
import { pin8gScenario } from './pin-8g.js';
import { pinVsUserptrVsMirrorScenario } from './pin-vs-userptr-vs-mirror.js';
import { vecaddScenario } from './vecadd.js';

/** Every built-in scenario. */
export const SCENARIOS: readonly Scenario<object>[] = [
  pinVsUserptrVsMirrorScenario,
  vecaddScenario,
  fault2mScenario,
  pin8gScenario,
  p2pVsStagedScenario,
  oversubscribeScenario,
];

/** The scenario called `name`, or undefined. */
export function findScenario(name: string): Scenario<object> | undefined {
  return SCENARIOS.find((s) => s.name === name);
}
