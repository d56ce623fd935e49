// Stop strings on detokenized text (docs/API.md §8): text that could still grow into a stop string is held
// back, so a partial stop string never reaches the client; the earliest match ends the sequence.

export interface StopResult {
  /** Text that is final and may be sent. */
  text: string;
  /** True once a stop string matched; `text` then ends just before it (or after, when included). */
  stopped: boolean;
}

export class StopMatcher {
  readonly #stops: readonly string[];
  readonly #includeStop: boolean;
  #held = "";
  #stopped = false;

  constructor(stops: readonly string[], includeStop = false) {
    this.#stops = stops.filter((s) => s !== "");
    this.#includeStop = includeStop;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Adds newly decoded text; returns what can be released now. */
  push(piece: string): StopResult {
    if (this.#stopped) return { text: "", stopped: true };
    if (this.#stops.length === 0) return { text: piece, stopped: false };
    const buf = this.#held + piece;

    // The earliest starting match wins; on a tie the longer stop string.
    let at = -1;
    let len = 0;
    for (const stop of this.#stops) {
      const i = buf.indexOf(stop);
      if (i !== -1 && (at === -1 || i < at || (i === at && stop.length > len))) {
        at = i;
        len = stop.length;
      }
    }
    if (at !== -1) {
      this.#stopped = true;
      this.#held = "";
      return { text: buf.slice(0, this.#includeStop ? at + len : at), stopped: true };
    }

    // Hold back the longest tail of buf that is a proper prefix of some stop string.
    let hold = buf.length;
    for (let i = Math.max(0, buf.length - this.#longest() + 1); i < buf.length; i++) {
      const tail = buf.slice(i);
      if (this.#stops.some((s) => s.startsWith(tail))) {
        hold = i;
        break;
      }
    }
    this.#held = buf.slice(hold);
    return { text: buf.slice(0, hold), stopped: false };
  }

  /** At the end of the sequence: held text turned out not to be a stop string. */
  flush(): string {
    const rest = this.#held;
    this.#held = "";
    return rest;
  }

  #longest(): number {
    return Math.max(...this.#stops.map((s) => s.length));
  }
}
