// The engine: owns the device, the weights, the paged KV cache and the activation buffers, and runs
// sequences through prefill and pipelined decode rounds. Its parts sit beside it, one job each:
// buffer_plan.ts sizes every buffer, sequences.ts gives each sequence a slot and KV blocks, batch.ts lays
// out each forward pass's metadata, forward.ts is the transformer, sampler.ts turns logits into tokens,
// readback.ts brings results home. runner.ts (the scheduler) decides what runs when.
//
// Design note (docs/ARCHITECTURE.md, "Threads"): Deno's mapAsync blocks the JS thread until the whole
// queue is idle and then sleeps ~10 ms, so a loop that reads each token back caps decode far below the
// GPU's speed. A decode round therefore encodes N steps at once: step s reads its input ids from row s
// of a device-side history buffer, samples on the GPU, and writes row s + 1; only after all N steps does
// the host copy the history back in one map. A stop found inside a round (EOS, max tokens, a stop string
// found by the server) discards the overshoot: the KV blocks those extra steps wrote stay allocated to
// the sequence until it is freed, and the tokens are never reported.
import { type Gpu, openGpu, storageBuffer } from "./gpu.ts";
import { type Checkpoint, openCheckpoint } from "./checkpoint.ts";
import type { ModelConfig } from "./model_config.ts";
import { destroyWeights, loadWeights, type ModelWeights } from "./weights.ts";
import { type Activations, encodeForward, type ForwardModel, type KvCacheBuffers } from "./forward.ts";
import { type BufferPlan, planBuffers, type PlanLimits } from "./buffer_plan.ts";
import {
  type BatchBuffers,
  type BatchLayout,
  decodeLayout,
  forwardBatch,
  prefillLayout,
  promptLogitsLayout,
  u32Range,
} from "./batch.ts";
import { processesLogits, readTopPairs, Sampler, type SampleRow } from "./sampler.ts";
import { Readback } from "./readback.ts";
import { type GpuSpan, ROUND_CLOCK_BYTES, RoundClock } from "./round_clock.ts";
import type { KvBlockAllocator } from "./kv_cache.ts";
import { type AddSequenceOptions, type EngineSequence, SequenceTable } from "./sequences.ts";
import { EngineError } from "./errors.ts";
import { LoadProgress } from "./progress.ts";
import type { SamplingParams } from "./types.ts";
import {
  buildRopeTable,
  type CapturedDispatch,
  gatherU32,
  type Kernels,
  scatterU32,
} from "../kernels/mod.ts";

export { EngineError };
export type { AddSequenceOptions, EngineSequence, SequenceRequest } from "./sequences.ts";

export interface EngineOptions {
  modelDir: string;
  /** Longest prompt + completion per sequence (default: min(model's, 4096)). */
  maxContext?: number;
  /** Sequences decoded together at most. */
  maxSeqs?: number;
  /** Tokens per prefill forward pass at most (longer prompts are chunked). */
  maxBatchTokens?: number;
  /** KV cache size in tokens over all sequences (default: maxSeqs * maxContext, capped by memory). */
  kvTokens?: number;
  /** Largest buffer for one part of the embedding / lm_head (default: the device's binding limit; tests
   * lower it to exercise split tables). */
  maxPartBytes?: number;
  /** Reuse the KV blocks of prompt prefixes seen before (default true). */
  prefixCache?: boolean;
  /** Decode steps per round at most (tokens generated between two host readbacks). */
  maxRoundSteps?: number;
  gpu?: Gpu;
  progress?: boolean;
  /**
   * Timestamp each decode round's pass on the GPU (RoundResult.gpuSpan) when the device has
   * `timestamp-query`: the benchmarks' GPU idle fraction. Default false.
   */
  roundTimestamps?: boolean;
}

/** Tokens of one sequence from a prefill or a round: ids, their logprobs, and the top alternatives per
 * token ([id, logprob] best first) when the sequence asked for them. */
export interface TokenBatch {
  ids: number[];
  logprobs: number[];
  top?: [number, number][][];
}

/** A decode round recorded by prepareRound(): submitted by submitRound(), read by collectRound(). */
export interface PendingRound {
  seqs: EngineSequence[];
  steps: number;
  cmd: GPUCommandBuffer | null;
  rb: GPUBuffer | null;
  /** Bytes of ids (and of logprobs) and of top-logprob pairs in the readback. */
  bytes: number;
  topBytes: number;
  nTop: number;
  submittedAt?: number;
  /** The round's RoundClock slot when its pass is timestamped. */
  clockSlot?: number;
}

export interface RoundResult {
  /** Per sequence id, the ids produced this round in order, and their logprobs when asked. */
  tokens: Map<string, TokenBatch>;
  steps: number;
  gpuMs: number;
  /** The round's pass on the GPU's clock (EngineOptions.roundTimestamps). */
  gpuSpan?: GpuSpan;
}

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };

export class Engine {
  readonly gpu: Gpu;
  readonly kernels: Kernels;
  readonly cfg: ModelConfig;
  readonly weights: ModelWeights;
  readonly maxContext: number;
  readonly maxSeqs: number;
  readonly maxBatchTokens: number;
  readonly maxRoundSteps: number;
  readonly prefixCache: boolean;
  readonly kvBlocks: KvBlockAllocator;
  readonly ckpt: Checkpoint;
  #model: ForwardModel;
  #ropeMaxPos: number;
  #blockTable: GPUBuffer; // u32 (maxSeqs, maxBlocksPerSeq)
  #seqs: SequenceTable;
  #lastToken: GPUBuffer; // u32 (maxSeqs): the latest sampled id of each slot
  #history: GPUBuffer; // u32 (maxRoundSteps + 1, maxSeqs): ids per decode step
  #historyLogprobs: GPUBuffer; // f32 (maxRoundSteps + 1, maxSeqs); prefill's go at the slot
  #meta: GPUBuffer; // u32 batch metadata (batch.ts)
  #prefillTokens: GPUBuffer; // u32 (maxBatchTokens)
  #logits: GPUBuffer; // f32 (maxSeqs, vocab)
  #sampler: Sampler;
  #readback: Readback;
  #clock: RoundClock | null;
  /** Captured decode steps by shape (kernels/core.ts capture): replaying one costs three calls a dispatch. */
  #stepCache = new Map<string, CapturedDispatch[]>();

  private constructor(o: {
    gpu: Gpu;
    ckpt: Checkpoint;
    weights: ModelWeights;
    limits: PlanLimits;
    plan: BufferPlan;
    prefixCache: boolean;
    roundTimestamps: boolean;
  }) {
    const { limits, plan } = o;
    this.gpu = o.gpu;
    this.kernels = o.gpu.kernels;
    this.ckpt = o.ckpt;
    this.cfg = o.ckpt.config;
    this.weights = o.weights;
    this.maxContext = limits.maxContext;
    this.maxSeqs = limits.maxSeqs;
    this.maxBatchTokens = limits.maxBatchTokens;
    this.maxRoundSteps = limits.maxRoundSteps;
    this.prefixCache = o.prefixCache;
    const dev = this.gpu.device;
    const buf = (label: string, bytes: number) => storageBuffer(dev, label, bytes);
    const layers = Array.from({ length: this.cfg.nLayers }, (_, l) => l);
    const kv: KvCacheBuffers = {
      k: layers.map((l) => buf(`kcache.${l}`, plan.kvLayerBytes)),
      v: layers.map((l) => buf(`vcache.${l}`, plan.kvLayerBytes)),
      numBlocks: plan.numBlocks,
      blockSize: plan.blockSize,
      maxBlocksPerSeq: plan.maxBlocksPerSeq,
    };
    const a = plan.activations;
    const act: Activations = {
      maxTokens: limits.maxBatchTokens,
      x: [buf("x0", a.x), buf("x1", a.x)],
      xin: buf("xin", a.xin),
      y: buf("y", a.y),
      q: buf("q", a.q),
      att: buf("att", a.att),
      h: buf("h", a.h),
      lastNormed: buf("lastNormed", a.lastNormed),
      attnScratch: buf("attnScratch", a.attnScratch),
    };
    this.#ropeMaxPos = plan.ropeMaxPos;
    const rope = createRopeTable(dev, this.cfg, plan.ropeMaxPos);
    this.#model = { kernels: this.kernels, cfg: this.cfg, weights: this.weights, act, kv, rope };
    this.#blockTable = buf("blockTable", plan.blockTableBytes);
    this.#seqs = new SequenceTable({
      device: dev,
      blockTable: this.#blockTable,
      maxBlocksPerSeq: plan.maxBlocksPerSeq,
      numBlocks: plan.numBlocks,
      blockSize: plan.blockSize,
      maxSeqs: limits.maxSeqs,
      maxContext: limits.maxContext,
      maxRoundSteps: limits.maxRoundSteps,
      prefixCache: o.prefixCache,
    });
    this.kvBlocks = this.#seqs.kvBlocks;
    this.#lastToken = buf("lastToken", plan.lastTokenBytes);
    this.#history = buf("history", plan.historyBytes);
    this.#historyLogprobs = buf("historyLogprobs", plan.historyBytes);
    this.#meta = buf("meta", plan.metaWords * 4);
    this.#prefillTokens = buf("prefillTokens", plan.prefillTokensBytes);
    this.#logits = buf("logits", plan.logitsBytes);
    this.#sampler = new Sampler({
      kernels: this.kernels,
      vocabSize: this.cfg.vocabSize,
      bytes: plan.sampler,
    });
    this.#readback = new Readback(dev);
    this.#clock = o.roundTimestamps && dev.features.has("timestamp-query") ? new RoundClock(dev) : null;
  }

  /** Opens the GPU, reads the checkpoint and uploads it. */
  static async load(opts: EngineOptions): Promise<Engine> {
    const ckpt = await openCheckpoint(opts.modelDir);
    const cfg = ckpt.config;
    const gpu = opts.gpu ?? await openGpu();
    const dev = gpu.device;
    const limits: PlanLimits = {
      maxContext: Math.min(opts.maxContext ?? 4096, cfg.maxPositionEmbeddings),
      maxSeqs: opts.maxSeqs ?? 64,
      maxBatchTokens: opts.maxBatchTokens ?? 2048,
      maxRoundSteps: opts.maxRoundSteps ?? 32,
      kvTokens: opts.kvTokens,
      maxBindingBytes: dev.limits.maxStorageBufferBindingSize,
    };
    const plan = planBuffers(cfg, limits);
    const progress = opts.progress === false
      ? undefined
      : new LoadProgress(ckpt.totalBytes, "loading weights");
    const weights = await loadWeights(ckpt, dev, progress, { maxPartBytes: opts.maxPartBytes });
    progress?.done();
    dev.pushErrorScope("out-of-memory");
    const engine = new Engine({
      gpu,
      ckpt,
      weights,
      limits,
      plan,
      prefixCache: opts.prefixCache ?? true,
      roundTimestamps: opts.roundTimestamps ?? false,
    });
    const oom = await dev.popErrorScope();
    if (oom) {
      engine.destroy();
      throw new EngineError(
        `The GPU ran out of memory allocating the KV cache (${plan.kvTokens} tokens) and activation buffers ` +
          `after the weights: lower --kv-cache-tokens, --max-running or --max-context (${oom.message})`,
      );
    }
    return engine;
  }

  get sequences(): ReadonlyMap<string, EngineSequence> {
    return this.#seqs.all;
  }

  /** Whether a new sequence with `promptTokens` prompt tokens can start now (SequenceTable.canAdmit). */
  canAdmit(promptTokens: number): boolean {
    return this.#seqs.canAdmit(promptTokens);
  }

  /** Takes the KV blocks for `steps` more decode steps; returns the ids the full cache could not grow. */
  grow(ids: readonly string[], steps: number): string[] {
    return this.#seqs.grow(ids, steps);
  }

  /** Registers a sequence, takes KV blocks for its prompt and a first round, and readies its slot's
   * sampling state. */
  addSequence(o: AddSequenceOptions): void {
    const s = this.#seqs.add(o);
    this.#sampler.startSlot(s.slot, s.request.sampling, o.resumed ?? []);
  }

  /** Sets a constrained sequence's mask for its next token: bit (id & 31) of word (id >> 5) = id allowed. */
  setTokenMask(id: string, mask: Uint32Array<ArrayBuffer>): void {
    this.#sampler.setMask(this.#seqs.get(id).slot, mask);
  }

  /** Frees a sequence's slot and KV blocks. */
  removeSequence(id: string): void {
    this.#seqs.remove(id);
  }

  /**
   * Runs the prompts of `ids` (sequences with uncached prompt tokens) in batches of at most
   * maxBatchTokens (at most `maxBatches` of them, so a long prompt can be spread over several calls
   * with decode rounds in between), and samples the first new token of each sequence whose prompt
   * completed. Returns those tokens.
   */
  async prefill(ids: string[], maxBatches = Infinity): Promise<Map<string, TokenBatch>> {
    const done: EngineSequence[] = [];
    let pending = ids.map((id) => this.#seqs.get(id)).filter((s) => s.cached < s.promptIds.length);
    for (let batch = 0; pending.length && batch < maxBatches; batch++) {
      // Fill one batch with chunks of as many sequences as fit.
      let budget = this.maxBatchTokens;
      const parts: { s: EngineSequence; from: number; n: number }[] = [];
      for (const s of pending) {
        if (budget === 0) break;
        const n = Math.min(budget, s.promptIds.length - s.cached);
        parts.push({ s, from: s.cached, n });
        budget -= n;
      }
      // Every batch reuses the same metadata buffers, so each one is submitted before the next is written.
      const enc = this.gpu.device.createCommandEncoder({ label: "prefill" });
      this.#encodePrefill(enc, parts);
      this.gpu.device.queue.submit([enc.finish()]);
      for (const p of parts) {
        p.s.cached += p.n;
        // Later submits see these blocks written: queue order is execution order.
        if (this.prefixCache) this.kvBlocks.registerPrefix(p.s.id, p.s.promptIds, p.s.cached);
        if (p.s.cached === p.s.promptIds.length) done.push(p.s);
      }
      pending = pending.filter((s) => s.cached < s.promptIds.length);
    }
    const out = new Map<string, TokenBatch>();
    if (done.length === 0) return out;
    // The first tokens (and logprobs) of the sequences whose prompts completed sit at their slots.
    const slots = done.map((s) => s.slot);
    const [tok, lp] = await this.#readback.readWords([
      { buf: this.#lastToken, slots },
      { buf: this.#historyLogprobs, slots },
    ]);
    const lpf = new Float32Array(lp.buffer);
    const withTop = done.filter((s) => s.topLogprobs > 0);
    let top: Uint32Array | null = null;
    if (withTop.length) {
      const end = this.#sampler.slotTopOffset(Math.max(...withTop.map((s) => s.slot)) + 1);
      top = new Uint32Array(await this.#readback.read(this.#sampler.topLogprobs, end * 4));
    }
    done.forEach((s, i) => {
      s.generated = 1;
      const batch: TokenBatch = { ids: [tok[i]], logprobs: [lpf[i]] };
      if (top && s.topLogprobs > 0) {
        batch.top = [readTopPairs(top, this.#sampler.slotTopOffset(s.slot), s.topLogprobs)];
      }
      out.set(s.id, batch);
    });
    return out;
  }

  /** One prefill batch: the forward pass over its prompt chunks, then sampling for the completed prompts. */
  #encodePrefill(enc: GPUCommandEncoder, parts: { s: EngineSequence; from: number; n: number }[]): void {
    const dev = this.gpu.device;
    const batch = prefillLayout(
      parts.map(({ s, from, n }) => ({ slot: s.slot, promptIds: s.promptIds, from, n })),
    );
    dev.queue.writeBuffer(this.#prefillTokens, 0, batch.tokens);
    dev.queue.writeBuffer(this.#meta, 0, batch.meta);
    const pass = enc.beginComputePass({ label: "prefill" });
    encodeForward(pass, this.#model, this.#forwardBatch(batch.layout, this.#prefillTokens, this.#logits));
    parts.forEach(({ s, n }, i) => {
      this.#sampler.markPrompt(pass, {
        slot: s.slot,
        sampling: s.request.sampling,
        tokens: this.#prefillTokens,
        tokensOffset: batch.partOffsets[i],
        n,
      });
    });
    const rows: SampleRow[] = batch.completes.map((i) => {
      const s = parts[i].s;
      return {
        slot: s.slot,
        sampling: s.request.sampling,
        topLogprobs: s.topLogprobs,
        counter: s.counterBase,
        outIndex: s.slot,
        masked: s.constrained,
      };
    });
    if (rows.length) {
      this.#sampler.writeSteps([rows]);
      this.#sampler.encode(pass, {
        rows,
        step: 0,
        logits: this.#logits,
        tokens: this.#lastToken,
        logprobs: this.#historyLogprobs,
        topInto: "slot",
      });
    }
    pass.end();
  }

  /**
   * Runs `steps` decode steps for the given sequences (each must have finished prefill) and reads
   * every sampled id back at the end, in one map.
   */
  decodeRound(ids: string[], steps: number): Promise<RoundResult> {
    const r = this.prepareRound(ids, steps);
    this.submitRound(r);
    return this.collectRound(r);
  }

  /**
   * Records a decode round without submitting it, so it can be queued the moment the round before it ends
   * (collectRound's `next`). The sequences advance now: a later round continues where this one ends, and
   * tokens past a stop that the host finds only later are dropped by the caller.
   */
  prepareRound(ids: string[], steps: number): PendingRound {
    // Constrained sequences need a fresh mask before each token: they go last and take step 0 only (U rows
    // run every step), so the others keep their multi-step rounds.
    const seqs = ids.map((id) => this.#seqs.get(id)).sort((a, b) =>
      Number(a.constrained) - Number(b.constrained)
    );
    const S = seqs.length;
    const U = seqs.filter((s) => !s.constrained).length;
    if (U === 0) steps = Math.min(steps, 1);
    if (S === 0 || steps <= 0) {
      return { seqs: [], steps: 0, cmd: null, rb: null, bytes: 0, topBytes: 0, nTop: 0 };
    }
    if (steps > this.maxRoundSteps) {
      throw new EngineError(`Round of ${steps} steps exceeds ${this.maxRoundSteps}`);
    }
    const dev = this.gpu.device;
    for (const s of seqs) {
      if (s.cached < s.promptIds.length || s.generated === 0) {
        throw new EngineError(`Sequence "${s.id}" has not finished prefill`);
      }
      const end = s.promptIds.length + s.generated - 1 + steps;
      if (end > this.maxContext + this.maxRoundSteps) {
        throw new EngineError(`Sequence "${s.id}" would pass the context limit`);
      }
    }
    // The Runner grows (and preempts) before calling; direct callers get the blocks taken here.
    const full = this.grow(ids, steps);
    if (full.length) {
      throw new EngineError(
        `KV cache is full: no blocks left for ${steps} more steps of ${
          full.map((id) => `"${id}"`).join(", ")
        }`,
      );
    }
    // The input of step st is the token generated last: position prompt + generated - 1 + st.
    const round = decodeLayout(
      seqs.map((s) => ({ slot: s.slot, pos: s.promptIds.length + s.generated - 1 })),
      steps,
      S - U,
    );
    dev.queue.writeBuffer(this.#meta, 0, round.meta);
    const stepRows: SampleRow[][] = round.steps.map((_, st) =>
      seqs.slice(0, st === 0 ? S : U).map((s, j) => ({
        slot: s.slot,
        sampling: s.request.sampling,
        topLogprobs: s.topLogprobs,
        counter: s.counterBase + s.generated + st,
        outIndex: (st + 1) * S + j,
        inputIndex: st * S + j,
        masked: s.constrained,
      }))
    );
    this.#sampler.writeSteps(stepRows);

    const enc = dev.createCommandEncoder({ label: "decode" });
    const clock = this.#clock?.begin();
    const pass = enc.beginComputePass({ label: "decode", timestampWrites: clock?.timestampWrites });
    const slots = u32Range(this.#meta, 0, S);
    gatherU32(this.kernels, pass, { src: this.#lastToken, idx: slots, dst: this.#history, count: S });
    // A step is the same dispatches whenever its shape repeats: capture it once, replay it after. Attention's
    // work split depends on the context, so steps are cached per 256-position bucket of it.
    const penalized = stepRows[0].some(processesLogits);
    const nTopRound = Math.max(0, ...seqs.map((s) => s.topLogprobs));
    const bucket = Math.min(
      Math.ceil(round.steps[0].maxContext / 256) * 256,
      this.maxContext + this.maxRoundSteps,
    );
    round.steps.forEach((layout, st) => {
      const key = `${S}|${U}|${st}|${bucket}|${penalized ? 1 : 0}|${nTopRound}`;
      let list = this.#stepCache.get(key);
      if (list) {
        this.#stepCache.delete(key); // most recently used last
      } else {
        list = this.kernels.capture((p) => {
          encodeForward(
            p,
            this.#model,
            this.#forwardBatch({ ...layout, maxContext: bucket }, this.#history, this.#logits),
          );
          this.#sampler.encode(p, {
            rows: stepRows[st],
            step: st,
            logits: this.#logits,
            inputs: this.#history,
            tokens: this.#history,
            logprobs: this.#historyLogprobs,
            topInto: "step",
            stride: S,
          });
        });
        if (this.#stepCache.size >= STEP_CACHE_SIZE) {
          this.#stepCache.delete(this.#stepCache.keys().next().value!);
        }
      }
      this.#stepCache.set(key, list);
      this.kernels.replay(pass, list);
    });
    if (U > 0) {
      scatterU32(this.kernels, pass, {
        src: this.#history,
        srcOffset: steps * S,
        idx: slots,
        dst: this.#lastToken,
        count: U,
      });
    }
    if (round.singleStepSlots) {
      // The single-step rows' tokens are in history row 1.
      const { offset, words } = round.singleStepSlots;
      scatterU32(this.kernels, pass, {
        src: this.#history,
        srcOffset: S + U,
        idx: u32Range(this.#meta, offset, words),
        dst: this.#lastToken,
        count: words,
      });
    }
    pass.end();
    // Alternatives per row in the round's top-logprob region: the most any sequence asked for.
    const nTop = Math.max(0, ...seqs.map((s) => s.topLogprobs));
    const bytes = steps * S * 4;
    const topBytes = steps * S * nTop * 2 * 4;
    const total = 2 * bytes + topBytes;
    const rb = this.#readback.take(total + (clock ? ROUND_CLOCK_BYTES : 0));
    enc.copyBufferToBuffer(this.#history, S * 4, rb, 0, bytes);
    enc.copyBufferToBuffer(this.#historyLogprobs, S * 4, rb, bytes, bytes);
    if (topBytes) enc.copyBufferToBuffer(this.#sampler.topLogprobs, 0, rb, 2 * bytes, topBytes);
    if (clock) this.#clock!.finish(enc, clock.slot, rb, total);
    for (const s of seqs) s.generated += s.constrained ? 1 : steps;
    return { seqs, steps, cmd: enc.finish(), rb, bytes, topBytes, nTop, clockSlot: clock?.slot };
  }

  /** The captured decode steps, least recently used first (bench/step_profile.ts times them one by one). */
  capturedSteps(): CapturedDispatch[][] {
    return [...this.#stepCache.values()];
  }

  /** Queues a prepared round. */
  submitRound(r: PendingRound): void {
    if (!r.cmd) return;
    r.submittedAt = performance.now();
    this.gpu.device.queue.submit([r.cmd]);
    r.cmd = null;
  }

  /**
   * Waits for a submitted round and reads its tokens. With `next` (prepared, not submitted), submits it as
   * soon as the queue is idle: Deno's mapAsync blocks its thread until then and resolves only ~10 ms later
   * (shared/device/README.md), so submitting inside that gap keeps the GPU busy while this round's tokens
   * are read and the round after `next` is recorded.
   */
  async collectRound(r: PendingRound, next?: PendingRound): Promise<RoundResult> {
    if (!r.rb) {
      if (next) this.submitRound(next);
      return { tokens: new Map(), steps: 0, gpuMs: 0 };
    }
    const { seqs, steps, bytes, topBytes, nTop } = r;
    const S = seqs.length;
    const total = 2 * bytes + topBytes;
    const timed = r.clockSlot !== undefined;
    const { data, mappedAt } = await this.#readback.collect(
      r.rb,
      total + (timed ? ROUND_CLOCK_BYTES : 0),
      next ? () => this.submitRound(next) : undefined,
    );
    const gpuMs = mappedAt - (r.submittedAt ?? mappedAt);
    const ids32 = new Uint32Array(data, 0, steps * S);
    const lps = new Float32Array(data, bytes, steps * S);
    const tokens = new Map<string, TokenBatch>();
    const top = topBytes ? new Uint32Array(data, 2 * bytes, steps * S * nTop * 2) : null;
    seqs.forEach((s, j) => {
      const out: TokenBatch = { ids: [], logprobs: [] };
      if (top && s.topLogprobs > 0) out.top = [];
      const taken = s.constrained ? 1 : steps;
      for (let st = 0; st < taken; st++) {
        out.ids.push(ids32[st * S + j]);
        out.logprobs.push(lps[st * S + j]);
        if (out.top) out.top.push(readTopPairs(top!, (st * S + j) * nTop * 2, s.topLogprobs));
      }
      tokens.set(s.id, out);
    });
    return { tokens, steps, gpuMs, gpuSpan: timed ? RoundClock.read(data, total) : undefined };
  }

  /** Logits of every position of `ids` (a fresh sequence), for perplexity and golden tests. */
  async promptLogits(ids: number[], opts: { lastOnly?: boolean } = {}): Promise<Float32Array> {
    const id = `__logits_${crypto.randomUUID()}`;
    this.addSequence({ request: { id, promptIds: ids, maxTokens: 0, sampling: GREEDY }, prefixCache: false });
    try {
      const s = this.#seqs.get(id);
      const V = this.cfg.vocabSize;
      const lastOnly = opts.lastOnly ?? false;
      const out = new Float32Array((lastOnly ? 1 : ids.length) * V);
      const dev = this.gpu.device;
      const logitsAll = dev.createBuffer({
        size: Math.min(this.maxBatchTokens, ids.length) * V * 4,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
      });
      try {
        while (s.cached < ids.length) {
          const from = s.cached;
          const n = Math.min(this.maxBatchTokens, ids.length - from);
          const chunk = promptLogitsLayout({ slot: s.slot, ids, from, n, lastOnly });
          dev.queue.writeBuffer(this.#prefillTokens, 0, chunk.tokens);
          dev.queue.writeBuffer(this.#meta, 0, chunk.meta);
          const enc = dev.createCommandEncoder();
          const pass = enc.beginComputePass();
          encodeForward(pass, this.#model, this.#forwardBatch(chunk.layout, this.#prefillTokens, logitsAll));
          pass.end();
          dev.queue.submit([enc.finish()]);
          s.cached += n;
          if (chunk.rows > 0) {
            const got = new Float32Array(await this.#readback.read(logitsAll, chunk.rows * V * 4));
            out.set(got, lastOnly ? 0 : from * V);
          }
        }
      } finally {
        logitsAll.destroy();
      }
      return out;
    } finally {
      this.removeSequence(id);
    }
  }

  #forwardBatch(layout: BatchLayout, tokens: GPUBuffer, logits: GPUBuffer) {
    const buffers: BatchBuffers = {
      meta: this.#meta,
      tokens,
      blockTable: this.#blockTable,
      logits,
      ropeMaxPos: this.#ropeMaxPos,
    };
    return forwardBatch(layout, buffers);
  }

  destroy(): void {
    destroyWeights(this.weights);
    for (const b of [...this.#model.kv.k, ...this.#model.kv.v]) b.destroy();
    this.#clock?.destroy();
    this.gpu.device.destroy();
  }
}

/** Captured decode steps kept (least recently used dropped first). */
const STEP_CACHE_SIZE = 512;

function createRopeTable(dev: GPUDevice, c: ModelConfig, maxPos: number): GPUBuffer {
  const table = buildRopeTable({
    headDim: c.headDim,
    theta: c.ropeTheta,
    maxPos,
    scaling: c.ropeScaling ?? undefined,
  });
  const buf = dev.createBuffer({
    label: "rope",
    size: table.byteLength,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  dev.queue.writeBuffer(buf, 0, table as Float32Array<ArrayBuffer>);
  return buf;
}
