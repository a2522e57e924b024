/**
 * The HMM sanitizer: checks of the mirroring contract on every device access and invalidation.
 *
 * @module
 */
export { HmmSanitizer, SanitizerViolation } from './hmm-sanitizer.js';
export type { SanitizerRule } from './hmm-sanitizer.js';
