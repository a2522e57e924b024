/**
 * Entry point of `hmm-sim` when run from the sources (`tsx src/main.ts ...`); the published bin
 * runs `dist/main.js`.
 *
 * @module
 */
import { main } from './cli.js';

process.exitCode = await main(process.argv.slice(2));
