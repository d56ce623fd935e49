// One choice of one request: its engine request, its AbortController, and the text path for its tokens
// (incremental detokenizer → stop-string hold-back → outputs, with logprobs riding along with their text).

import type { EngineHandle, FinishReason, GenerateRequest, TokenEvent } from "../engine/mod.ts";
import { ApiError } from "./errors.ts";
import type { Metrics } from "./metrics.ts";
import { StopMatcher } from "./stop.ts";
import type { TextCodec, TextDetokenizer } from "../text/mod.ts";

export interface TokenLogprob {
  id: number;
  /** NaN when the engine did not report one (serialized as null). */
  logprob: number;
  /** Character offset of the token's text in the choice's output text. */
  offset: number;
  /** The most likely tokens at this position, [id, logprob] best first (when asked for). */
  top?: [number, number][];
}

/** What a sequence hands to its route: released text, and on the last output a finish reason. */
export interface SequenceOutput {
  index: number;
  text: string;
  logprobs: TokenLogprob[];
  finishReason?: FinishReason;
  /** Set with finishReason "error". */
  error?: ApiError;
}

export interface SequenceOptions {
  /** What the engine generates; its id is unique per choice, e.g. `${requestId}-${index}`. */
  request: GenerateRequest;
  /** Position of the choice in the response. */
  index: number;
  stop: string[];
  includeStopStr: boolean;
  skipSpecialTokens: boolean;
  codec: TextCodec;
  /** performance.now() when the request arrived, for TTFT and e2e latency. */
  arrivalMs: number;
  metrics?: Metrics;
  /** Releases the grammar matcher of a constrained request (its port is request.constraint). */
  release?: () => void;
}

/** JSON has no -Infinity: tokens a grammar masked out report vLLM's floor, -9999, instead. */
export function floorLogprob(lp: number): number {
  return lp === -Infinity ? -9999 : lp;
}

interface PendingLogprob extends TokenLogprob {
  /** Offset just past the token's text; -1 until the detokenizer produced text for it. */
  end: number;
}

export class Sequence {
  readonly request: GenerateRequest;
  readonly index: number;
  completionTokens = 0;
  cachedPromptTokens = 0;
  finishReason: FinishReason | null = null;
  /** performance.now() of the first token, or null. */
  firstTokenMs: number | null = null;

  readonly #arrivalMs: number;
  readonly #wantLogprobs: boolean;
  readonly #detok: TextDetokenizer;
  readonly #stop: StopMatcher;
  readonly #metrics: Metrics | undefined;
  readonly #abort = new AbortController();
  #release: (() => void) | undefined;
  #emit: (out: SequenceOutput) => void = () => {};
  #sentAny = false;
  #decodedLen = 0;
  #emittedLen = 0;
  #unplaced: PendingLogprob[] = [];
  #pending: PendingLogprob[] = [];
  #lastEventMs = 0;
  #runMs = 0;

  constructor(opts: SequenceOptions) {
    this.index = opts.index;
    this.request = opts.request;
    this.#arrivalMs = opts.arrivalMs;
    this.#wantLogprobs = opts.request.logprobs !== undefined;
    this.#detok = opts.codec.newDetokenizer(opts.request.promptIds, {
      skipSpecialTokens: opts.skipSpecialTokens,
    });
    this.#stop = new StopMatcher(opts.stop, opts.includeStopStr);
    this.#metrics = opts.metrics;
    this.#release = opts.release;
  }

  /** Frees what the sequence holds outside the engine (its grammar matcher); safe to call again. */
  dispose(): void {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  get id(): string {
    return this.request.id;
  }

  get promptTokens(): number {
    return this.request.promptIds.length;
  }

  get done(): boolean {
    return this.finishReason !== null;
  }

  /** Where outputs go; set by Admission before the sequence runs. */
  attach(emit: (out: SequenceOutput) => void): void {
    this.#emit = emit;
  }

  /** Streams the engine's tokens through the text path until a finish; never throws. */
  async run(engine: EngineHandle): Promise<void> {
    if (this.done) return;
    this.#lastEventMs = performance.now();
    this.#runMs = this.#lastEventMs;
    let engineFinished = false;
    try {
      for await (const ev of engine.generate(this.request, this.#abort.signal)) {
        if (this.done) break;
        this.#observeTiming(ev);
        this.#accept(ev);
        if (this.done) break; // a stop string matched
        if (ev.finishReason !== undefined) {
          engineFinished = true;
          this.#finishFromEngine(ev, engine);
          break;
        }
      }
      if (!this.done) this.#fail(new ApiError("internal", "Engine ended a sequence without a finish reason"));
    } catch (err) {
      if (!this.done) {
        const detail = err instanceof Error ? err.message : String(err);
        this.#fail(new ApiError("internal", `Engine failed while generating: ${detail}`));
      }
    } finally {
      // Frees the engine's sequence (KV blocks) when we stopped it early: stop string, cancel, error.
      if (!engineFinished) this.#abort.abort();
      this.dispose();
    }
  }

  /** The client went away or the server is shutting down: finish as "abort" and stop the engine. */
  cancel(): void {
    if (this.done) return;
    this.#finish("abort", "", true);
    this.#abort.abort();
    this.dispose();
  }

  #observeTiming(ev: TokenEvent): void {
    if (ev.cachedPromptTokens) this.cachedPromptTokens = ev.cachedPromptTokens;
    // Queue time: waiting for a running slot here, then in the engine (reported with its first event).
    if (ev.queuedMs !== undefined) {
      this.#metrics?.observeQueueTime((this.#runMs - this.#arrivalMs + ev.queuedMs) / 1000);
    }
    if (ev.ids.length === 0) return;
    const t = performance.now();
    if (this.firstTokenMs === null) {
      this.firstTokenMs = t;
      this.#metrics?.observeTtft((t - this.#arrivalMs) / 1000);
    } else {
      this.#metrics?.observeItl((t - this.#lastEventMs) / 1000);
    }
    this.#lastEventMs = t;
  }

  #accept(ev: TokenEvent): void {
    for (let k = 0; k < ev.ids.length && !this.done; k++) {
      const id = ev.ids[k];
      this.completionTokens++;
      this.#metrics?.addGenerationTokens(1);
      if (this.#wantLogprobs) {
        const entry: PendingLogprob = {
          id,
          logprob: floorLogprob(ev.logprobs?.[k] ?? NaN),
          offset: -1,
          end: -1,
        };
        const top = ev.topLogprobs?.[k];
        if (top) entry.top = top.map(([t, lp]) => [t, floorLogprob(lp)]);
        this.#unplaced.push(entry);
      }
      const result = this.#stop.push(this.#decoded(this.#detok.push(id)));
      if (result.stopped) this.#finish("stop", result.text, false);
      else this.#send(result.text);
    }
  }

  /** Records where the tokens still without text land, now that the detokenizer produced `piece`. */
  #decoded(piece: string): string {
    if (piece === "") return piece;
    for (const lp of this.#unplaced) {
      lp.offset = this.#decodedLen;
      lp.end = this.#decodedLen + piece.length;
    }
    this.#pending.push(...this.#unplaced);
    this.#unplaced = [];
    this.#decodedLen += piece.length;
    return piece;
  }

  #finishFromEngine(ev: TokenEvent, engine: EngineHandle): void {
    const reason = ev.finishReason!;
    if (reason === "stop" || reason === "length") {
      const tail = this.#stop.push(this.#decoded(this.#detok.flush()));
      if (tail.stopped) this.#finish("stop", tail.text, false);
      else this.#finish(reason, tail.text + this.#stop.flush(), false);
    } else if (reason === "abort") {
      this.#fail(
        new ApiError("unavailable", "Engine cancelled the sequence", { code: "service_unavailable" }),
      );
    } else {
      const detail = ev.error ?? "no detail";
      this.#fail(
        engine.state() === "lost"
          ? new ApiError("unavailable", `Engine is unavailable: ${detail}`)
          : new ApiError("internal", `Engine failed while generating: ${detail}`),
      );
    }
  }

  #fail(error: ApiError): void {
    this.finishReason = "error";
    this.#metrics?.countFinished("error");
    this.#emit({ index: this.index, text: "", logprobs: [], finishReason: "error", error });
  }

  /** Sends released text with the logprobs of the tokens whose text it completes. */
  #send(text: string): void {
    this.#emittedLen += text.length;
    let n = 0;
    while (n < this.#pending.length && this.#pending[n].end <= this.#emittedLen) n++;
    const logprobs = this.#pending.splice(0, n);
    // The first token is reported even when its text is held back: it starts the choice (role chunk).
    if (text === "" && logprobs.length === 0 && (this.#sentAny || this.completionTokens === 0)) return;
    this.#sentAny = true;
    this.#emit({
      index: this.index,
      text,
      logprobs: logprobs.map(({ id, logprob, offset, top }) => ({
        id,
        logprob,
        offset,
        ...(top ? { top } : {}),
      })),
    });
  }

  #finish(reason: FinishReason, text: string, cancelled: boolean): void {
    this.#emittedLen += text.length;
    // Tokens of a matched stop string or of bytes never completed still get their logprobs, at the end.
    const rest = [...this.#pending, ...this.#unplaced].map(({ id, logprob, offset, top }) => ({
      ...(top ? { top } : {}),
      id,
      logprob,
      offset: offset === -1 ? this.#emittedLen : Math.min(offset, this.#emittedLen),
    }));
    this.#pending = [];
    this.#unplaced = [];
    this.finishReason = reason;
    this.#metrics?.countFinished(reason);
    if (!cancelled) this.#metrics?.observeE2e((performance.now() - this.#arrivalMs) / 1000);
    this.#emit({ index: this.index, text, logprobs: cancelled ? [] : rest, finishReason: reason });
  }
}
