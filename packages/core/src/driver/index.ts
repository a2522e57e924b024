/**
 * The driver layer: the plugin interfaces drivers implement and the registry a system keeps them in.
 *
 * @module
 */
export type { HmmMirror, HmmMirrorDriver, DriverCapability } from './hmm-mirror.js';
export { DriverRegistry, MACHINE, SANITIZER, COST_MODEL, DRIVERS } from './registry.js';
export type { DriverFactory } from './registry.js';
