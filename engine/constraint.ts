// A sequence's token constraint as the engine sees it: a MessagePort to a grammar matcher running
// elsewhere (a grammar Worker; see grammar/_protocol.ts for the other side). Before each token the
// sequence samples, the matcher must have seen every token before it: `advance` sends the new ids and
// asks for the next mask at once, `mask` waits for it. The engine never loads a grammar engine itself.

/** What the engine sends: the ids the sequence generated since the last message (none at first). */
export interface ConstraintRequest {
  accept: number[];
}

/** What the matcher answers: the next token's mask, bit (id & 31) of word (id >> 5) set when id may
 * follow, or why it cannot go on. */
export type ConstraintReply = { mask: Uint32Array<ArrayBuffer> } | { error: string };

export class ConstraintError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConstraintError";
  }
}

export class TokenConstraint {
  readonly #port: MessagePort;
  readonly #timeoutMs: number;
  #waiting: { resolve: (r: ConstraintReply) => void; timer: ReturnType<typeof setTimeout> }[] = [];
  #next: Promise<Uint32Array<ArrayBuffer>>;
  #closed = false;

  /** Asks for the first mask at once. A reply that takes longer than `timeoutMs` fails the sequence. */
  constructor(port: MessagePort, timeoutMs = 30_000) {
    this.#port = port;
    this.#timeoutMs = timeoutMs;
    port.onmessage = (e: MessageEvent<ConstraintReply>) => {
      const w = this.#waiting.shift();
      if (!w) return;
      clearTimeout(w.timer);
      w.resolve(e.data);
    };
    this.#next = this.#request([]);
  }

  /** Tells the matcher the sequence generated `ids`; the mask of the token after them is requested now. */
  advance(ids: readonly number[]): void {
    if (ids.length === 0 || this.#closed) return;
    this.#next = this.#request([...ids]);
  }

  /** The mask for the sequence's next token; rejects with ConstraintError when the matcher fails. */
  mask(): Promise<Uint32Array<ArrayBuffer>> {
    return this.#next;
  }

  /** Stops listening (the grammar side releases the matcher itself). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#waiting.splice(0)) {
      clearTimeout(w.timer);
      w.resolve({ error: "Constraint closed" });
    }
    this.#port.close();
  }

  #request(accept: number[]): Promise<Uint32Array<ArrayBuffer>> {
    const mask = this.#closed ? Promise.reject(new ConstraintError("Constraint closed")) : this.#send(accept);
    // Nobody may ever wait for a mask superseded by advance(); its failure must not go unhandled.
    mask.catch(() => {});
    return mask;
  }

  async #send(accept: number[]): Promise<Uint32Array<ArrayBuffer>> {
    const reply = new Promise<ConstraintReply>((resolve) => {
      const fail = () => {
        if (!this.#waiting.includes(entry)) return;
        this.#waiting = this.#waiting.filter((w) => w !== entry);
        resolve({ error: `The grammar matcher did not answer within ${this.#timeoutMs} ms` });
        // A late answer would be taken for the next request's: this port is done.
        this.close();
      };
      const entry = {
        resolve,
        // When this thread was blocked (a readback waits for the GPU queue), the answer may be queued
        // behind the expired timer: look again once queued messages have run before failing.
        timer: setTimeout(() => {
          entry.timer = setTimeout(fail, 100);
        }, this.#timeoutMs),
      };
      this.#waiting.push(entry);
    });
    this.#port.postMessage({ accept } satisfies ConstraintRequest);
    const r = await reply;
    if ("error" in r) throw new ConstraintError(r.error);
    return r.mask;
  }
}

/** Whether token `id` is allowed by `mask`. */
export function maskAllows(mask: Uint32Array, id: number): boolean {
  return ((mask[id >>> 5] >>> (id & 31)) & 1) === 1;
}
