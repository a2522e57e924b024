/**
 * Progress on stderr: a redrawn bar when the stream is a terminal, one plain line per step
 * otherwise (CI logs, pipes). It only formats; nothing here reads a clock.
 *
 * @module
 */

/** The part of a writable stream progress needs. */
export interface ProgressStream {
  write(s: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** Progress of a run of several scenarios. */
export class Progress {
  readonly #out: ProgressStream;
  readonly #tty: boolean;
  readonly #total: number;
  #index = 0;
  #name = '';
  #lastLine = '';
  #drawn = false;

  /** `total`: scenarios in the run. */
  constructor(out: ProgressStream, total: number) {
    this.#out = out;
    this.#tty = out.isTTY === true;
    this.#total = total;
  }

  /** A scenario starts (`index` from 0). */
  start(index: number, name: string): void {
    this.#index = index;
    this.#name = name;
    if (!this.#tty) this.#out.write(`[${index + 1}/${this.#total}] ${name} ...\n`);
    else this.#draw(0, 1, 'starting');
  }

  /** A step of the current scenario. */
  step(done: number, total: number, label: string): void {
    if (this.#tty) this.#draw(done, total, label);
  }

  /** The current scenario ended. */
  end(summary: string): void {
    if (this.#tty) {
      this.#clear();
      this.#out.write(`[${this.#index + 1}/${this.#total}] ${this.#name}: ${summary}\n`);
    } else {
      this.#out.write(`[${this.#index + 1}/${this.#total}] ${this.#name}: ${summary}\n`);
    }
  }

  /** Removes the bar (before other output). */
  done(): void {
    if (this.#tty) this.#clear();
  }

  #draw(done: number, total: number, label: string): void {
    const width = 24;
    const frac = (this.#index + (total > 0 ? Math.min(1, done / total) : 0)) / this.#total;
    const fill = Math.round(frac * width);
    const bar = `${'#'.repeat(fill)}${'.'.repeat(width - fill)}`;
    let line = `[${bar}] ${this.#index + 1}/${this.#total} ${this.#name}: ${label}`;
    const cols = this.#out.columns ?? 80;
    if (line.length > cols - 1) line = line.slice(0, cols - 1);
    if (line === this.#lastLine) return;
    this.#out.write(`\r${line.padEnd(this.#lastLine.length)}`);
    this.#lastLine = line;
    this.#drawn = true;
  }

  #clear(): void {
    if (!this.#drawn) return;
    this.#out.write(`\r${' '.repeat(this.#lastLine.length)}\r`);
    this.#lastLine = '';
    this.#drawn = false;
  }
}
