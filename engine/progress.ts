// Weight-loading progress on stderr: a redrawn one-line bar on a terminal, a log line every 10%
// otherwise (docker logs, CI). Driven by the weight loader with the bytes it has uploaded.

export interface LoadProgressOptions {
  /** Receives text as it is produced; defaults to writing stderr. */
  write?: (text: string) => void;
  /** Draw the bar; defaults to `Deno.stderr.isTerminal()`. */
  tty?: boolean;
  /** Milliseconds clock; defaults to `performance.now`. */
  now?: () => number;
}

const BAR_WIDTH = 24;
/** ~10 redraws per second at most. */
const REDRAW_MS = 100;

export class LoadProgress {
  readonly total: number;
  readonly label: string;
  #loaded = 0;
  #write: (text: string) => void;
  #tty: boolean;
  #now: () => number;
  #start: number;
  #lastDraw = -Infinity;
  #lastDecile = 0;
  #finished = false;

  constructor(total: number, label = "loading weights", options: LoadProgressOptions = {}) {
    this.total = Math.max(0, total);
    this.label = label;
    this.#write = options.write ?? writeStderr;
    this.#tty = options.tty ?? Deno.stderr.isTerminal();
    this.#now = options.now ?? (() => performance.now());
    this.#start = this.#now();
  }

  get loaded(): number {
    return this.#loaded;
  }

  advance(bytes: number): void {
    if (this.#finished) return;
    this.#loaded += bytes;
    const t = this.#now();
    if (this.#tty) {
      if (t - this.#lastDraw >= REDRAW_MS || this.#loaded >= this.total) {
        this.#lastDraw = t;
        this.#write(`\r${this.#barLine(t)}\x1b[K`);
      }
      return;
    }
    // One line per advance, for the highest 10% step crossed.
    const decile = this.total > 0 ? Math.min(10, Math.floor((this.#loaded / this.total) * 10)) : 10;
    if (decile > this.#lastDecile) {
      this.#lastDecile = decile;
      const r = this.#rate(t);
      this.#write(
        `${this.label}: ${decile * 10}% (${sizePair(this.#loaded, this.total)}, ${formatRate(r)})\n`,
      );
    }
  }

  /** Ends the display with a summary line; later calls do nothing. */
  done(): void {
    if (this.#finished) return;
    this.#finished = true;
    const t = this.#now();
    const secs = (t - this.#start) / 1000;
    const line = `${this.label}: done, ${formatBytes(this.#loaded)} in ${secs.toFixed(1)} s ` +
      `(${formatRate(this.#rate(t))})`;
    this.#write(this.#tty ? `\r${line}\x1b[K\n` : `${line}\n`);
  }

  /** Bytes per second since construction. */
  #rate(t: number): number {
    const secs = (t - this.#start) / 1000;
    return secs > 0 ? this.#loaded / secs : 0;
  }

  #barLine(t: number): string {
    const frac = this.total > 0 ? Math.min(1, this.#loaded / this.total) : 1;
    const filled = Math.round(frac * BAR_WIDTH);
    const bar = "#".repeat(filled) + "-".repeat(BAR_WIDTH - filled);
    const r = this.#rate(t);
    const eta = r > 0 ? formatDuration(Math.max(0, this.total - this.#loaded) / r) : "--:--";
    const pct = `${Math.floor(frac * 100)}`.padStart(3);
    return `${this.label} [${bar}] ${pct}% ${sizePair(this.#loaded, this.total)} ${formatRate(r)} ETA ${eta}`;
  }
}

function writeStderr(text: string): void {
  const bytes = new TextEncoder().encode(text);
  let n = 0;
  while (n < bytes.length) n += Deno.stderr.writeSync(bytes.subarray(n));
}

const UNITS: [number, string][] = [[1e9, "GB"], [1e6, "MB"], [1e3, "kB"]];

function unitFor(bytes: number): [number, string] {
  return UNITS.find(([scale]) => bytes >= scale) ?? [1, "B"];
}

/** Decimal units, one decimal: "8.1 GB". */
export function formatBytes(bytes: number): string {
  const [scale, unit] = unitFor(bytes);
  return scale === 1 ? `${Math.round(bytes)} B` : `${(bytes / scale).toFixed(1)} ${unit}`;
}

/** "8.1 / 20.2 GB": both sides in the total's unit. */
function sizePair(loaded: number, total: number): string {
  const [scale, unit] = unitFor(total);
  const fmt = (b: number) => (scale === 1 ? `${b}` : (b / scale).toFixed(1));
  return `${fmt(loaded)} / ${fmt(total)} ${unit}`;
}

function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** "m:ss", or "h:mm:ss" past an hour. */
export function formatDuration(seconds: number): string {
  const s = Math.ceil(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const ss = `${sec}`.padStart(2, "0");
  return h > 0 ? `${h}:${`${m}`.padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}
