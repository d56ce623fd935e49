// Admission between the routes and the engine: a bounded waiting queue, a cap on running sequences,
// cancellation, and graceful drain. Routes submit sequences; Admission decides when each one starts.
//
// Design note. The scheduling itself happens inside the engine (engine/runner.ts): EngineHandle.generate()
// adds a sequence to the engine's continuous batch and yields its tokens as the engine steps (schedule →
// forward → sample → update, like vLLM's EngineCore.step). There is no prefill/decode split up here either:
// a sequence is just "submitted" (the engine owns it until it finishes) or "waiting" (we hold it). So this
// is vLLM's admission layer, not its step planner:
//   - At most `maxRunning` sequences are handed to the engine at once, so its KV cache is not
//     oversubscribed by a burst; the rest wait here in FIFO order, bounded by sequence count and by
//     prompt tokens. Beyond either bound a request is refused with 429 + Retry-After *before* any
//     GPU work, all-or-nothing for its n choices.
//   - A request's n choices are n sequences; their outputs are merged into one stream in arrival order.
//   - A client disconnect aborts the request's sequences: waiting ones leave the queue without
//     prefill, running ones abort their engine sequence (the engine frees their KV blocks within a step).
//   - shutdown(): new work gets 503, accepted work has a grace period, then everything is cancelled.

import type { EngineHandle } from "../engine/mod.ts";
import { Channel } from "./channel.ts";
import { ApiError } from "./errors.ts";
import type { Sequence, SequenceOutput } from "./sequence.ts";

export interface AdmissionOptions {
  engine: EngineHandle;
  maxRunning: number;
  maxWaiting: number;
  maxWaitingTokens: number;
  /** Sent as Retry-After on 429 and 503. */
  retryAfterS: number;
}

/** One admitted request: its merged outputs (ending after every sequence finished) and a cancel. */
export interface Submission {
  outputs: AsyncIterable<SequenceOutput>;
  cancel(): void;
}

export class Admission {
  readonly #opts: AdmissionOptions;
  readonly #queue: Sequence[] = [];
  readonly #running = new Set<Sequence>();
  readonly #runs = new Set<Promise<void>>();
  #waitingTokens = 0;
  #draining = false;
  #onIdle: (() => void) | null = null;

  constructor(opts: AdmissionOptions) {
    this.#opts = opts;
  }

  /** Sequences handed to the engine and not yet finished. */
  get running(): number {
    return this.#running.size;
  }

  /** Sequences admitted but waiting for a running slot. */
  get waiting(): number {
    return this.#queue.length;
  }

  get waitingTokens(): number {
    return this.#waitingTokens;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Throws ApiError 503 while loading, lost or draining, and 429 when the waiting queue cannot take
   * the sequences that find no free running slot. Otherwise starts what fits and queues the rest.
   */
  submit(seqs: Sequence[], signal?: AbortSignal): Submission {
    this.checkAvailable();
    this.checkCount(seqs.length);
    const free = this.#queue.length === 0 ? Math.max(0, this.#opts.maxRunning - this.#running.size) : 0;
    const overflow = seqs.slice(free);
    const overflowTokens = overflow.reduce((sum, s) => sum + s.promptTokens, 0);
    if (
      overflow.length > 0 &&
      (this.#queue.length + overflow.length > this.#opts.maxWaiting ||
        this.#waitingTokens + overflowTokens > this.#opts.maxWaitingTokens)
    ) {
      throw new ApiError(
        "rate_limited",
        `Server is busy: the waiting queue is full (${this.#queue.length} of ${this.#opts.maxWaiting} sequences, ` +
          `${this.#waitingTokens} of ${this.#opts.maxWaitingTokens} prompt tokens); retry later`,
        { retryAfterS: this.#opts.retryAfterS },
      );
    }

    const channel = new Channel<SequenceOutput>();
    let unfinished = seqs.length;
    const cancel = () => seqs.forEach((s) => this.#cancel(s));
    const onAbort = () => cancel();
    for (const seq of seqs) {
      seq.attach((out) => {
        channel.push(out);
        if (out.finishReason !== undefined && --unfinished === 0) {
          signal?.removeEventListener("abort", onAbort);
          channel.close();
        }
      });
    }
    seqs.slice(0, free).forEach((s) => this.#start(s));
    for (const seq of overflow) {
      this.#queue.push(seq);
      this.#waitingTokens += seq.promptTokens;
    }
    if (signal?.aborted) cancel();
    else signal?.addEventListener("abort", onAbort, { once: true });
    return { outputs: channel, cancel };
  }

  /**
   * Graceful drain: refuse new work (503), let running and waiting sequences finish for up to
   * `graceMs`, then cancel whatever is left and wait for the engine calls to return.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.#draining = true;
    if (!this.#idle()) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#onIdle = resolve),
        new Promise<void>((resolve) => timer = setTimeout(resolve, graceMs)),
      ]);
      clearTimeout(timer);
      this.#onIdle = null;
    }
    for (const seq of [...this.#queue, ...this.#running]) this.#cancel(seq);
    await Promise.allSettled([...this.#runs]);
  }

  /**
   * A 400 for a request of more sequences (prompts × n) than this server admits at once: retrying could
   * never help, so it is not a 429. Routes call it before encoding anything.
   */
  checkCount(sequences: number): void {
    const capacity = this.#opts.maxRunning + this.#opts.maxWaiting;
    if (sequences > capacity) {
      throw new ApiError(
        "invalid_request",
        `Request needs ${sequences} sequences (prompts × n), more than this server admits at once (${capacity})`,
        { param: "n" },
      );
    }
  }

  /** Throws ApiError 503 while the model loads, after the GPU was lost, or while draining. */
  checkAvailable(): void {
    const retryAfterS = this.#opts.retryAfterS;
    if (this.#draining) {
      throw new ApiError("unavailable", "Server is shutting down and takes no new requests", { retryAfterS });
    }
    const state = this.#opts.engine.state();
    if (state === "loading") {
      throw new ApiError("unavailable", "Model is still loading; retry later", {
        code: "model_loading",
        retryAfterS,
      });
    }
    if (state === "lost") {
      throw new ApiError("unavailable", "Engine is unavailable: the GPU device was lost", { retryAfterS });
    }
  }

  #start(seq: Sequence): void {
    this.#running.add(seq);
    const run: Promise<void> = seq.run(this.#opts.engine).finally(() => {
      this.#running.delete(seq);
      this.#runs.delete(run);
      this.#pump();
      if (this.#idle()) this.#onIdle?.();
    });
    this.#runs.add(run);
  }

  #pump(): void {
    while (this.#queue.length > 0 && this.#running.size < this.#opts.maxRunning) {
      const seq = this.#queue.shift()!;
      this.#waitingTokens -= seq.promptTokens;
      if (!seq.done) this.#start(seq);
    }
  }

  #cancel(seq: Sequence): void {
    const i = this.#queue.indexOf(seq);
    if (i !== -1) {
      this.#queue.splice(i, 1);
      this.#waitingTokens -= seq.promptTokens;
      if (this.#idle()) this.#onIdle?.();
    }
    seq.cancel();
  }

  #idle(): boolean {
    return this.#running.size === 0 && this.#queue.length === 0;
  }
}
