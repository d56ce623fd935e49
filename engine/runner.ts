// The scheduler, the engine's generation loop: admits requests when a slot and KV blocks are free,
// spreads prompts over prefill batches, runs decode rounds for everything that is generating, and turns
// sampled ids into per-request TokenEvents (stop tokens, max tokens, cancellation). It runs where the
// Engine runs (a Worker for the server, the main thread for the CLI).
import type { Engine, PendingRound } from "./engine.ts";
import { TokenConstraint } from "./constraint.ts";
import { contextOverflow, type EngineStats, type GenerateRequest, type TokenEvent } from "./types.ts";

interface Active {
  req: GenerateRequest;
  emitted: number;
  stop: Set<number>;
  cancelled: boolean;
  prefilling: boolean;
  /** Every id reported so far (a preempted sequence resumes with them appended to its prompt). */
  tokens: number[];
  /** Set after prefill; reported with the first event, then cleared. */
  cachedPromptTokens?: number;
  /** Milliseconds from submit to admission; reported with the first event, then cleared. */
  queuedMs?: number;
  /** The grammar matcher of a constrained request: a mask before each token. */
  constraint?: TokenConstraint;
}

export type EventSink = (id: string, ev: TokenEvent) => void;

export interface RunnerOptions {
  /** Decode steps per round at most when nothing is waiting (more: fewer host syncs, coarser streaming). */
  roundSteps?: number;
  /** Decode steps per round at most while requests wait to be admitted or prompts are being prefilled. */
  busyRoundSteps?: number;
  /** Aim for decode rounds of about this many milliseconds (default 50). */
  targetRoundMs?: number;
}

/**
 * Steps for the next decode round. Each round ends in one readback, which costs Deno at least ~10 ms
 * whatever the work, so a fast GPU wants many steps per round; but tokens reach clients, stops are
 * noticed and cancellations land only at round ends, so a slow one (lavapipe) wants few. The round is
 * sized to take about `targetMs` at the measured time per step, within [1, cap], where the cap is
 * lower while other requests wait, and never past the largest remaining token budget.
 */
export function planRoundSteps(o: {
  maxSteps: number;
  busySteps: number;
  busy: boolean;
  msPerStep: number | null;
  targetMs: number;
  remaining: number;
}): number {
  const cap = o.busy ? Math.min(o.busySteps, o.maxSteps) : o.maxSteps;
  const fit = o.msPerStep === null || !(o.msPerStep > 0)
    ? Math.min(o.busySteps, cap)
    : Math.floor(o.targetMs / o.msPerStep);
  return Math.max(1, Math.min(cap, fit, o.remaining));
}

export class Runner {
  readonly engine: Engine;
  #sink: EventSink;
  #waiting: GenerateRequest[] = [];
  /** Sequences preempted when the KV cache ran out, oldest first; they go back in before new requests. */
  #preempted: Active[] = [];
  /** Preemptions since start (each recomputes the sequence's KV, mostly from the prefix cache). */
  preemptions = 0;
  #active = new Map<string, Active>();
  #wake: (() => void) | null = null;
  #closed = false;
  #roundSteps: number;
  #busySteps: number;
  #targetRoundMs: number;
  /** Smoothed wall time of one decode step (null until the first round). */
  #msPerStep: number | null = null;
  #promptTokens = 0;
  #generationTokens = 0;
  #prefixCacheQueries = 0;
  #prefixCacheHits = 0;
  /** performance.now() at submit, per request waiting to be admitted. */
  #submittedAt = new Map<string, number>();
  /** Set when the loop died on a GPU error: every later request fails with it. */
  fatal: string | null = null;
  /** The decode round on the GPU (submitted, not yet read), its sequences, and when the last one ended. */
  #inflight: PendingRound | null = null;
  #inflightIds = new Set<string>();
  #inflightSince = 0;

  constructor(engine: Engine, sink: EventSink, opts: RunnerOptions = {}) {
    this.engine = engine;
    this.#sink = sink;
    this.#roundSteps = Math.min(opts.roundSteps ?? engine.maxRoundSteps, engine.maxRoundSteps);
    this.#busySteps = Math.min(opts.busyRoundSteps ?? 4, this.#roundSteps);
    this.#targetRoundMs = opts.targetRoundMs ?? 50;
  }

  submit(req: GenerateRequest): void {
    if (this.fatal) {
      this.#sink(req.id, { ids: [], finishReason: "error", error: this.fatal });
      return;
    }
    const problem = req.promptIds.length === 0 ? `Request "${req.id}" has an empty prompt` : contextOverflow({
      promptTokens: req.promptIds.length,
      maxTokens: req.maxTokens,
      maxContext: this.engine.maxContext,
    });
    if (problem !== null) {
      this.#sink(req.id, { ids: [], finishReason: "error", error: problem });
      return;
    }
    this.#waiting.push(req);
    this.#submittedAt.set(req.id, performance.now());
    this.#wakeUp();
  }

  cancel(id: string): void {
    const p = this.#preempted.findIndex((a) => a.req.id === id);
    if (p >= 0) {
      this.#preempted.splice(p, 1);
      this.#sink(id, { ids: [], finishReason: "abort" });
      return;
    }
    const w = this.#waiting.findIndex((r) => r.id === id);
    if (w >= 0) {
      this.#waiting.splice(w, 1);
      this.#submittedAt.delete(id);
      this.#sink(id, { ids: [], finishReason: "abort" });
      return;
    }
    const a = this.#active.get(id);
    if (a) a.cancelled = true;
    this.#wakeUp();
  }

  stats(): EngineStats {
    const kv = this.engine.kvBlocks;
    return {
      running: this.#active.size,
      waiting: this.#waiting.length + this.#preempted.length,
      kvUsage: kv.usedBlocks / kv.numBlocks,
      kvBlocksTotal: kv.numBlocks,
      kvBlocksUsed: kv.usedBlocks,
      promptTokens: this.#promptTokens,
      generationTokens: this.#generationTokens,
      prefixCacheQueries: this.#prefixCacheQueries,
      prefixCacheHits: this.#prefixCacheHits,
      preemptions: this.preemptions,
    };
  }

  close(): void {
    this.#closed = true;
    this.#wakeUp();
  }

  #wakeUp(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /** Runs until close(); resolves when the loop has stopped. */
  async run(): Promise<void> {
    try {
      while (!this.#closed) {
        this.#reap();
        this.#admit();
        if (this.#active.size === 0) {
          // Nothing to run: read the last round, if any, then sleep until a request comes (checked again
          // after the read, since a request may arrive meanwhile).
          if (this.#inflight) await this.#drain();
          else await new Promise<void>((r) => (this.#wake = r));
          continue;
        }
        await this.#iteration();
      }
    } catch (e) {
      this.fatal = `Engine failed: ${e instanceof Error ? e.message : String(e)}`;
      for (const id of [...this.#active.keys(), ...this.#waiting.map((r) => r.id)]) {
        this.#sink(id, { ids: [], finishReason: "error", error: this.fatal });
      }
      this.#active.clear();
      this.#waiting = [];
      throw e;
    } finally {
      for (const [id, a] of this.#active) {
        this.engine.removeSequence(id);
        a.constraint?.close();
      }
    }
  }

  #reap(): void {
    for (const [id, a] of this.#active) {
      if (a.cancelled) this.#finish(id, a, [], [], "abort");
    }
  }

  /** Whether `req` should wait for a sequence still prefilling the same first block (n > 1, shared
   * system prompts): once that prefill is done, `req` reuses its blocks instead of recomputing them. */
  #sharesPendingPrefix(req: GenerateRequest): boolean {
    const bs = this.engine.kvBlocks.blockSize;
    if (!this.engine.prefixCache || req.promptIds.length <= bs) return false;
    for (const a of this.#active.values()) {
      if (!a.prefilling || a.req.promptIds.length <= bs) continue;
      let same = true;
      for (let i = 0; i < bs && same; i++) same = a.req.promptIds[i] === req.promptIds[i];
      if (same) return true;
    }
    return false;
  }

  #admit(): void {
    while (this.#preempted.length) {
      const a = this.#preempted[0];
      if (!this.engine.canAdmit(a.req.promptIds.length + a.tokens.length)) return;
      this.#preempted.shift();
      this.#start(a);
    }
    for (let i = 0; i < this.#waiting.length;) {
      const req = this.#waiting[i];
      if (this.#sharesPendingPrefix(req)) {
        i++;
        continue;
      }
      if (!this.engine.canAdmit(req.promptIds.length)) break;
      this.#waiting.splice(i, 1);
      this.#promptTokens += req.promptIds.length;
      this.#start({
        req,
        emitted: 0,
        stop: new Set(req.stopTokenIds),
        cancelled: false,
        prefilling: true,
        tokens: [],
        constraint: req.constraint ? new TokenConstraint(req.constraint) : undefined,
        queuedMs: performance.now() - (this.#submittedAt.get(req.id) ?? performance.now()),
      });
      this.#submittedAt.delete(req.id);
    }
  }

  /** Hands a sequence to the engine: a new one, or a preempted one with what it generated appended. */
  #start(a: Active): void {
    this.engine.addSequence({ request: a.req, resumed: a.tokens, constrained: a.constraint !== undefined });
    const s = this.engine.sequences.get(a.req.id)!;
    this.#prefixCacheQueries += s.promptIds.length;
    this.#prefixCacheHits += s.cachedPrompt;
    a.prefilling = true;
    this.#active.set(a.req.id, a);
  }

  async #iteration(): Promise<void> {
    const prefilling = [...this.#active.values()].filter((a) => a.prefilling).map((a) => a.req.id);
    if (prefilling.length) {
      // Prefill shares the metadata buffers a prepared round filled: the round in flight ends first.
      await this.#drain();
      // One prefill batch per iteration, so a long prompt does not stall the streams beside it. The batch
      // is filled fewest-remaining-tokens first: a short prompt admitted during a long one rides in the
      // next batch instead of waiting for the whole long prefill.
      const first = await this.engine.prefill(await this.#withMasks(this.#byRemainingPrompt(prefilling)), 1);
      for (const [id, out] of first) {
        const a = this.#active.get(id)!;
        a.prefilling = false;
        if (a.emitted === 0) a.cachedPromptTokens = this.engine.sequences.get(id)?.cachedPrompt ?? 0;
        this.#deliver(id, a, out.ids, out.logprobs, out.top);
      }
      await this.#afterPrefillBatch(first.size > 0);
    }
    const decoding = [...this.#active.values()].filter((a) => !a.prefilling && !a.cancelled);
    // Tokens each sequence still may make, counting the round in flight.
    const pending = (a: Active) =>
      a.req.maxTokens - a.emitted - (this.#inflightIds.has(a.req.id) ? this.#inflight!.steps : 0);
    // A constrained sequence needs its token from the round in flight before its next mask: it sits out
    // the round recorded now and joins the one after (every other round while rounds overlap).
    const next = decoding.filter((a) => pending(a) > 0 && !(a.constraint && this.#inflightIds.has(a.req.id)));
    if (next.length === 0) {
      await this.#drain();
      return;
    }
    const busy = this.#waiting.length > 0 || decoding.length < this.#active.size;
    const steps = planRoundSteps({
      maxSteps: this.#roundSteps,
      busySteps: this.#busySteps,
      busy,
      msPerStep: this.#msPerStep,
      targetMs: this.#targetRoundMs,
      // Constrained sequences take one step of any round: the others' budgets size it.
      remaining: Math.max(1, ...next.filter((a) => !a.constraint).map(pending)),
    });
    // Take the KV blocks the next round needs. When the cache is full, finish the round in flight, then
    // preempt the most recently admitted sequence (vLLM's recompute policy: it resumes later, its prompt
    // blocks mostly from the prefix cache) until the rest fit.
    let ids = next.map((a) => a.req.id);
    let failed = this.engine.grow(ids, steps);
    if (failed.length && this.#inflight) {
      await this.#drain();
      return;
    }
    while (failed.length) {
      const victim = [...this.#active.values()].at(-1)!;
      this.#preempt(victim);
      ids = ids.filter((id) => id !== victim.req.id);
      failed = failed.filter((id) => id !== victim.req.id);
      if (failed.length) failed = this.engine.grow(failed, steps);
    }
    ids = await this.#withMasks(ids);
    if (ids.length === 0) return;
    // Record the next round while the one in flight runs; it is queued the moment that one ends.
    const round = this.engine.prepareRound(ids, steps);
    if (!this.#inflight) {
      this.engine.submitRound(round);
      this.#inflight = round;
      this.#inflightIds = new Set(ids);
      this.#inflightSince = performance.now();
      return;
    }
    await this.#collect(round);
    this.#inflight = round;
    this.#inflightIds = new Set(ids);
  }

  /** Reads the round in flight, queueing `next` as soon as the GPU is idle, and delivers its tokens. */
  async #collect(next?: PendingRound): Promise<void> {
    const r = this.#inflight!;
    this.#inflight = null;
    this.#inflightIds = new Set();
    const out = await this.engine.collectRound(r, next);
    // With rounds back to back, a round takes from the last collection to this one.
    const now = performance.now();
    const perStep = (now - this.#inflightSince) / Math.max(1, out.steps);
    this.#inflightSince = now;
    if (out.steps) {
      this.#msPerStep = this.#msPerStep === null ? perStep : 0.7 * this.#msPerStep + 0.3 * perStep;
    }
    for (const [id, t] of out.tokens) {
      const a = this.#active.get(id);
      if (a) this.#deliver(id, a, t.ids, t.logprobs, t.top);
    }
  }

  /** Finishes the round in flight, if any, queueing nothing after it. */
  async #drain(): Promise<void> {
    if (this.#inflight) await this.#collect();
  }

  /**
   * Uploads each constrained sequence's mask for its next token, waiting for its matcher; returns `ids`
   * without the sequences whose matcher failed (they finish with an error).
   */
  async #withMasks(ids: string[]): Promise<string[]> {
    const ok: string[] = [];
    for (const id of ids) {
      const a = this.#active.get(id);
      if (a?.constraint) {
        try {
          this.engine.setTokenMask(id, await a.constraint.mask());
        } catch (e) {
          this.#active.delete(id);
          this.engine.removeSequence(id);
          a.constraint.close();
          const error = `Constrained decoding failed: ${e instanceof Error ? e.message : String(e)}`;
          this.#sink(id, { ...this.#event(a, [], []), finishReason: "error", error });
          continue;
        }
      }
      ok.push(id);
    }
    return ok;
  }

  /** `ids` ordered by prompt tokens still to prefill, fewest first (stable). */
  #byRemainingPrompt(ids: string[]): string[] {
    const left = (id: string) => {
      const s = this.engine.sequences.get(id);
      return s ? s.promptIds.length - s.cached : 0;
    };
    return ids.map((id) => ({ id, n: left(id) })).sort((a, b) => a.n - b.n).map((x) => x.id);
  }

  /**
   * A prefill batch that completed no prompt read nothing back, so nothing waited for the GPU: without a
   * wait here the loop would submit every batch of a long prompt in one synchronous burst, and the
   * Worker would handle no message (cancel, generate) and post no stats until all of it had run. So wait
   * for the batch (Deno's WebGPU waits block the thread until the queue is idle), then let queued events
   * in: a cancellation lands, and a new request is admitted, within one prefill batch.
   */
  async #afterPrefillBatch(readBack: boolean): Promise<void> {
    if (!readBack) await this.engine.gpu.device.queue.onSubmittedWorkDone();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }

  #preempt(a: Active): void {
    if (a.cancelled) return this.#finish(a.req.id, a, [], [], "abort");
    this.#active.delete(a.req.id);
    this.engine.removeSequence(a.req.id);
    a.prefilling = true;
    this.#preempted.push(a);
    this.preemptions++;
  }

  /** Applies stop rules to freshly sampled ids and emits what the client should see. */
  #deliver(id: string, a: Active, ids: number[], logprobs: number[], top?: [number, number][][]): void {
    if (a.cancelled) return this.#finish(id, a, [], [], "abort");
    const minTokens = a.req.minTokens ?? 0;
    const keep: number[] = [];
    const keepLp: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const t = ids[i];
      const n = a.emitted + keep.length;
      // A grammar allows a stop token only once its output is complete: then it ends the sequence.
      if (a.stop.has(t) && (a.constraint !== undefined || (!a.req.ignoreEos && n >= minTokens))) {
        return this.#finish(id, a, keep, keepLp, "stop", top?.slice(0, keep.length));
      }
      keep.push(t);
      keepLp.push(logprobs[i]);
      if (n + 1 >= a.req.maxTokens) {
        return this.#finish(id, a, keep, keepLp, "length", top?.slice(0, keep.length));
      }
    }
    a.emitted += keep.length;
    a.tokens.push(...keep);
    a.constraint?.advance(keep);
    this.#generationTokens += keep.length;
    if (keep.length) this.#sink(id, this.#event(a, keep, keepLp, top?.slice(0, keep.length)));
  }

  #event(a: Active, ids: number[], lps: number[], top?: [number, number][][]): TokenEvent {
    const ev: TokenEvent = { ids };
    if ((a.req.logprobs ?? -1) >= 0) ev.logprobs = lps;
    if ((a.req.logprobs ?? 0) > 0 && top) ev.topLogprobs = top;
    if (a.cachedPromptTokens !== undefined) {
      ev.cachedPromptTokens = a.cachedPromptTokens;
      a.cachedPromptTokens = undefined;
    }
    if (a.queuedMs !== undefined) {
      ev.queuedMs = a.queuedMs;
      a.queuedMs = undefined;
    }
    return ev;
  }

  #finish(
    id: string,
    a: Active,
    ids: number[],
    lps: number[],
    reason: TokenEvent["finishReason"],
    top?: [number, number][][],
  ): void {
    this.#active.delete(id);
    this.engine.removeSequence(id);
    a.constraint?.close();
    a.emitted += ids.length;
    this.#generationTokens += ids.length;
    this.#sink(id, { ...this.#event(a, ids, lps, top), finishReason: reason });
  }
}
