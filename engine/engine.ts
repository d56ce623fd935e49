// The engine: owns the device, the weights, the paged KV cache and the activation buffers, and runs
// sequences through prefill and pipelined decode rounds.
//
// Design note (shared/device/README.md): Deno's mapAsync blocks the JS thread until the whole queue is
// idle and then sleeps ~10 ms, so a loop that reads each token back caps decode far below the GPU's
// speed. A decode round therefore encodes N steps at once: step s reads its input ids from row s of a
// device-side history buffer, samples on the GPU, and writes row s + 1; only after all N steps does the
// host copy the history back in one map. A stop found inside a round (EOS, max tokens, a stop string
// found by the server) discards the overshoot: the KV blocks those extra steps wrote stay allocated to
// the sequence until it is freed, and the tokens are never reported.
import { type Gpu, openGpu } from "./gpu.ts";
import { type Checkpoint, openCheckpoint } from "./checkpoint.ts";
import type { ModelConfig } from "./model_config.ts";
import { destroyWeights, loadWeights, type ModelWeights } from "./weights.ts";
import { type Activations, encodeForward, type KvCacheBuffers } from "./forward.ts";
import { KvBlockAllocator } from "./kv_cache.ts";
import { EngineError } from "./errors.ts";
import { LoadProgress } from "./progress.ts";
import { contextOverflow, MAX_LOGIT_BIAS, type SamplingParams } from "./types.ts";
import {
  attentionScratchBytes,
  buildRopeTable,
  DECODE_MAX_QUERY_TOKENS,
  gatherU32,
  type Kernels,
  LOGIT_BIAS_BYTES,
  packLogitBias,
  packPenaltyRows,
  packSamplingParams,
  penaltiesApply,
  penaltiesCount,
  penaltiesMarkPrompt,
  PENALTY_NO_INPUT,
  PENALTY_ROW_BYTES,
  type PenaltyRow,
  sample,
  scatterU32,
  TOP_LOGPROBS_MAX,
  topLogprobs,
} from "../kernels/mod.ts";

export { EngineError };

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
}

/** One running sequence as the engine sees it. */
export interface EngineSequence {
  id: string;
  slot: number; // row in the block table
  promptIds: number[];
  /** Tokens whose K/V are in the cache. */
  cached: number;
  /** Prompt tokens whose K/V came from the prefix cache. */
  cachedPrompt: number;
  /** Generated token count (including ones already reported). */
  generated: number;
  /** Tokens generated before a preemption (0 for a fresh sequence): added to the sampling counter. */
  counterBase: number;
  sampling: SamplingParams;
  logprobs: boolean;
  /** Top alternatives to report per token (0: none). */
  topLogprobs: number;
  /** Sampling uses penalties or logit_bias: the step records the logits-processing dispatches. */
  penalized: boolean;
}

/** Tokens of one sequence from a prefill or a round: ids, their logprobs, and the top alternatives per
 * token ([id, logprob] best first) when the sequence asked for them. */
export interface TokenBatch {
  ids: number[];
  logprobs: number[];
  top?: [number, number][][];
}

export interface RoundResult {
  /** Per sequence id, the ids produced this round in order, and their logprobs when asked. */
  tokens: Map<string, TokenBatch>;
  steps: number;
  gpuMs: number;
}

export class Engine {
  readonly gpu: Gpu;
  readonly k: Kernels;
  readonly cfg: ModelConfig;
  readonly weights: ModelWeights;
  readonly maxContext: number;
  readonly maxSeqs: number;
  readonly maxBatchTokens: number;
  readonly maxRoundSteps: number;
  readonly prefixCache: boolean;
  readonly kvBlocks: KvBlockAllocator;
  readonly ckpt: Checkpoint;
  #act: Activations;
  #kv: KvCacheBuffers;
  #rope: GPUBuffer;
  #ropeMaxPos: number;
  #blockTable: GPUBuffer; // u32 (maxSeqs, maxBlocksPerSeq)
  #lastToken: GPUBuffer; // u32 (maxSeqs): the latest sampled id of each slot
  #history: GPUBuffer; // u32 (maxRoundSteps + 1, maxSeqs): ids per decode step
  #historyLogprobs: GPUBuffer; // f32 (maxRoundSteps + 1, maxSeqs)
  #meta: GPUBuffer; // u32 scratch for per-step metadata (positions, slots, indices)
  #metaWords: number;
  #prefillTokens: GPUBuffer; // u32 (maxBatchTokens)
  #logits: GPUBuffer; // f32 (maxSeqs, vocab)
  #samplingParams: GPUBuffer;
  #counts: GPUBuffer; // u32 (maxSeqs, vocab): generated-token counts, bit 31 = in the prompt
  #penaltyRows: GPUBuffer; // PenaltyRow ((maxRoundSteps + 1) * maxSeqs)
  #logitBias: GPUBuffer; // (id, value) pairs, MAX_LOGIT_BIAS per slot
  /** Top-logprob pairs: per decode step (maxRoundSteps of maxSeqs rows of K pairs), then a region per slot
   * for the first token sampled at prefill. */
  #topOut: GPUBuffer;
  #samplingBytesPerStep: number;
  #readback: GPUBuffer[] = [];
  #free: number[];
  #seqs = new Map<string, EngineSequence>();

  private constructor(init: {
    gpu: Gpu;
    ckpt: Checkpoint;
    weights: ModelWeights;
    maxContext: number;
    maxSeqs: number;
    maxBatchTokens: number;
    maxRoundSteps: number;
    kvTokens: number;
    prefixCache: boolean;
  }) {
    this.gpu = init.gpu;
    this.k = init.gpu.kernels;
    this.ckpt = init.ckpt;
    this.cfg = init.ckpt.config;
    this.weights = init.weights;
    this.maxContext = init.maxContext;
    this.maxSeqs = init.maxSeqs;
    this.maxBatchTokens = init.maxBatchTokens;
    this.maxRoundSteps = init.maxRoundSteps;
    this.prefixCache = init.prefixCache;
    const c = this.cfg;
    const dev = this.gpu.device;
    const buf = (label: string, bytes: number, extra = 0) =>
      dev.createBuffer({
        label,
        size: Math.max(16, Math.ceil(bytes / 16) * 16),
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | extra,
      });
    const T = this.maxBatchTokens;
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    const blockSize = 16;
    // Overshoot: a round may run maxRoundSteps past a sequence's end, and those steps need KV slots.
    const maxBlocksPerSeq = Math.ceil((this.maxContext + this.maxRoundSteps) / blockSize);
    const numBlocks = Math.max(maxBlocksPerSeq, Math.ceil(init.kvTokens / blockSize));
    this.kvBlocks = new KvBlockAllocator(numBlocks, blockSize);
    const blockBytes = c.nKvHeads * blockSize * c.headDim * 2;
    this.#kv = {
      k: Array.from({ length: c.nLayers }, (_, l) => buf(`kcache.${l}`, numBlocks * blockBytes)),
      v: Array.from({ length: c.nLayers }, (_, l) => buf(`vcache.${l}`, numBlocks * blockBytes)),
      numBlocks,
      blockSize,
      maxBlocksPerSeq,
    };
    this.#act = {
      maxTokens: T,
      x: buf("x", T * c.dim * 4),
      xb: buf("xb", T * c.dim * 4),
      q: buf("q", T * qDim * 4),
      k: buf("k", T * kvDim * 4),
      v: buf("v", T * kvDim * 4),
      att: buf("att", T * qDim * 4),
      gate: buf("gate", T * c.hiddenDim * 4),
      up: buf("up", T * c.hiddenDim * 4),
      mlp: buf("mlp", T * c.hiddenDim * 4),
      last: buf("last", Math.max(T, this.maxSeqs) * c.dim * 4),
      lastNormed: buf("lastNormed", Math.max(T, this.maxSeqs) * c.dim * 4),
      attnScratch: buf(
        "attnScratch",
        attentionScratchBytes({
          // Only the split-K decode kernel uses scratch, and only for batches where no sequence has more
          // than DECODE_MAX_QUERY_TOKENS tokens: at most that many per slot.
          T: Math.min(T, DECODE_MAX_QUERY_TOKENS * Math.max(this.maxSeqs, 1)),
          nHeads: c.nHeads,
          headDim: c.headDim,
          maxContext: this.maxContext + this.maxRoundSteps,
        }),
      ),
    };
    this.#ropeMaxPos = this.maxContext + this.maxRoundSteps;
    this.#rope = createRopeTable(dev, c, this.#ropeMaxPos);
    this.#blockTable = buf("blockTable", this.maxSeqs * maxBlocksPerSeq * 4);
    this.#lastToken = buf("lastToken", this.maxSeqs * 4);
    const hist = (this.maxRoundSteps + 1) * this.maxSeqs;
    this.#history = buf("history", hist * 4);
    this.#historyLogprobs = buf("historyLogprobs", hist * 4);
    // Per step: positions (maxSeqs) + slots (maxSeqs); plus prefill metadata (3 * maxBatchTokens).
    // Segments start on 256-byte boundaries (minStorageBufferOffsetAlignment).
    this.#metaWords = Math.max(
      (this.maxRoundSteps + 1) * seg(this.maxSeqs),
      2 * seg(T) + seg(Math.max(T, this.maxSeqs)),
    );
    this.#meta = buf("meta", this.#metaWords * 4);
    this.#prefillTokens = buf("prefillTokens", T * 4);
    this.#logits = buf("logits", Math.max(this.maxSeqs, 1) * c.vocabSize * 4);
    this.#samplingBytesPerStep = seg(
      packSamplingParams(
        Array.from({ length: this.maxSeqs }, () => ({ ...GREEDY, counter: 0, outIndex: 0 })),
      ).byteLength / 4,
    ) * 4;
    this.#samplingParams = buf("samplingParams", (this.maxRoundSteps + 1) * this.#samplingBytesPerStep);
    this.#counts = buf("penaltyCounts", this.maxSeqs * c.vocabSize * 4);
    this.#penaltyRows = buf("penaltyRows", (this.maxRoundSteps + 1) * this.maxSeqs * PENALTY_ROW_BYTES);
    this.#logitBias = buf("logitBias", this.maxSeqs * MAX_LOGIT_BIAS * LOGIT_BIAS_BYTES);
    this.#topOut = buf("topLogprobs", (this.maxRoundSteps + 1) * this.maxSeqs * TOP_LOGPROBS_MAX * 2 * 4);
    this.#free = Array.from({ length: this.maxSeqs }, (_, i) => this.maxSeqs - 1 - i);
  }

  /** Opens the GPU, reads the checkpoint and uploads it. */
  static async load(opts: EngineOptions): Promise<Engine> {
    const ckpt = await openCheckpoint(opts.modelDir);
    const cfg = ckpt.config;
    const gpu = opts.gpu ?? await openGpu();
    const maxContext = Math.min(opts.maxContext ?? 4096, cfg.maxPositionEmbeddings);
    const maxSeqs = opts.maxSeqs ?? 64;
    const maxBatchTokens = opts.maxBatchTokens ?? 512;
    const maxRoundSteps = opts.maxRoundSteps ?? 32;
    const hidden = Math.max(cfg.hiddenDim, cfg.dim, cfg.nHeads * cfg.headDim);
    const dev = gpu.device;
    const scratchBytes = maxBatchTokens * hidden * 4;
    const scratch = {
      a: dev.createBuffer({ label: "linA", size: scratchBytes, usage: GPUBufferUsage.STORAGE }),
      b: dev.createBuffer({ label: "linB", size: scratchBytes, usage: GPUBufferUsage.STORAGE }),
      had: dev.createBuffer({ label: "hadScratch", size: scratchBytes, usage: GPUBufferUsage.STORAGE }),
    };
    const progress = opts.progress === false
      ? undefined
      : new LoadProgress(ckpt.totalBytes, "loading weights");
    const weights = await loadWeights(ckpt, dev, scratch, progress, { maxPartBytes: opts.maxPartBytes });
    progress?.done();
    // Default KV cache: room for every slot at full context, but at most 16 GiB and at most what one
    // storage binding holds per layer (WebGPU cannot report free memory; --kv-cache-tokens overrides).
    const layerBytesPerToken = cfg.nKvHeads * cfg.headDim * 2;
    const kvTokens = opts.kvTokens ?? Math.min(
      maxSeqs * maxContext,
      Math.floor(dev.limits.maxStorageBufferBindingSize / layerBytesPerToken),
      Math.floor(16 * 2 ** 30 / (2 * cfg.nLayers * layerBytesPerToken)),
    );
    if (kvTokens * layerBytesPerToken > dev.limits.maxStorageBufferBindingSize) {
      throw new EngineError(
        `A KV cache of ${kvTokens} tokens needs ${
          kvTokens * layerBytesPerToken
        } bytes per layer; the device binds at ` +
          `most ${dev.limits.maxStorageBufferBindingSize} (lower --kv-cache-tokens)`,
      );
    }
    dev.pushErrorScope("out-of-memory");
    const engine = new Engine({
      gpu,
      ckpt,
      weights,
      maxContext,
      maxSeqs,
      maxBatchTokens,
      maxRoundSteps,
      kvTokens,
      prefixCache: opts.prefixCache ?? true,
    });
    const oom = await dev.popErrorScope();
    if (oom) {
      engine.destroy();
      throw new EngineError(
        `The GPU ran out of memory allocating the KV cache (${kvTokens} tokens) and activation buffers after ` +
          `the weights: lower --kv-cache-tokens, --max-running or --max-context (${oom.message})`,
      );
    }
    return engine;
  }

  get sequences(): ReadonlyMap<string, EngineSequence> {
    return this.#seqs;
  }

  /**
   * Whether a new sequence with `promptTokens` prompt tokens can start now: a free slot, and KV blocks for
   * its prompt and a first round, plus a block of headroom per running sequence so that admitting it does
   * not force a preemption at once. Blocks for later tokens are taken as the sequence grows (`grow`).
   */
  canAdmit(promptTokens: number): boolean {
    const need = this.kvBlocks.blocksFor(promptTokens + this.maxRoundSteps) + this.#seqs.size;
    return this.#free.length > 0 && need <= this.kvBlocks.freeBlocks;
  }

  /**
   * Takes the KV blocks that `steps` more decode steps of each sequence need. Returns the ids that could
   * not grow because the cache is full (the caller preempts someone and tries again); the others grew.
   */
  grow(ids: readonly string[], steps: number): string[] {
    const failed: string[] = [];
    for (const id of ids) {
      const s = this.#get(id);
      const before = this.kvBlocks.table(id).length;
      // Step st writes position prompt + generated - 1 + st.
      const need = s.promptIds.length + s.generated - 1 + steps;
      if (this.kvBlocks.blocksFor(need) - before > this.kvBlocks.freeBlocks) {
        failed.push(id);
        continue;
      }
      this.kvBlocks.ensureCapacity(id, need);
      if (this.kvBlocks.table(id).length !== before) this.#writeBlockTable(id, s.slot);
    }
    return failed;
  }

  /**
   * Registers a sequence and takes KV blocks for its prompt and a first round (`grow` takes the rest).
   * `resume` restarts a preempted sequence whose prompt now ends with the `generated` tokens it had
   * produced: its sampling counter and penalty counts continue from there, so a seed still reproduces.
   */
  addSequence(
    id: string,
    promptIds: number[],
    maxNew: number,
    sampling: SamplingParams,
    logprobs = false,
    usePrefixCache = this.prefixCache,
    topLogprobs = 0,
    resume?: { generated: readonly number[] },
  ): void {
    if (!(Number.isInteger(topLogprobs) && topLogprobs >= 0 && topLogprobs <= TOP_LOGPROBS_MAX)) {
      throw new EngineError(`top logprobs must be an integer in 0..${TOP_LOGPROBS_MAX}, got ${topLogprobs}`);
    }
    if (this.#seqs.has(id)) throw new EngineError(`Sequence "${id}" already exists`);
    if (promptIds.length === 0) throw new EngineError(`Sequence "${id}" has an empty prompt`);
    const overflow = contextOverflow({
      promptTokens: promptIds.length,
      maxTokens: maxNew,
      maxContext: this.maxContext,
    });
    if (overflow !== null) throw new EngineError(overflow);
    const slot = this.#free.pop();
    if (slot === undefined) throw new EngineError(`No free sequence slot for "${id}" (max ${this.maxSeqs})`);
    let cached = 0;
    try {
      if (usePrefixCache) cached = this.kvBlocks.matchPrefix(id, promptIds);
      this.kvBlocks.ensureCapacity(id, promptIds.length + this.maxRoundSteps);
    } catch (e) {
      this.kvBlocks.free(id);
      this.#free.push(slot);
      throw e;
    }
    this.#writeBlockTable(id, slot);
    const penalized = isPenalized(sampling);
    if (penalized) this.#preparePenalties(slot, sampling, resume?.generated ?? []);
    this.#seqs.set(id, {
      id,
      slot,
      promptIds,
      cached,
      cachedPrompt: cached,
      generated: 0,
      counterBase: resume?.generated.length ?? 0,
      sampling,
      logprobs,
      topLogprobs,
      penalized,
    });
  }

  /** Clears the slot's token counts and uploads its logit_bias. */
  #preparePenalties(slot: number, sampling: SamplingParams, generated: readonly number[]): void {
    const bias = sampling.logitBias ?? [];
    const V = this.cfg.vocabSize;
    const dev = this.gpu.device;
    if (bias.length) {
      const packed = packLogitBias(bias.map(([id, value]) => ({ id, value })));
      dev.queue.writeBuffer(this.#logitBias, slot * MAX_LOGIT_BIAS * LOGIT_BIAS_BYTES, packed);
    }
    if (generated.length) {
      // A resumed sequence: the counts of what it generated before it was preempted.
      const row = new Uint32Array(V);
      for (const t of generated) if (t < V) row[t]++;
      dev.queue.writeBuffer(this.#counts, slot * V * 4, row);
      return;
    }
    const enc = dev.createCommandEncoder({ label: "penalties-reset" });
    enc.clearBuffer(this.#counts, slot * V * 4, V * 4);
    dev.queue.submit([enc.finish()]);
  }

  /** u32 index in #topOut where the per-slot prefill region starts. */
  #prefillTopBase(): number {
    return this.maxRoundSteps * this.maxSeqs * TOP_LOGPROBS_MAX * 2;
  }

  #penaltyRow(s: EngineSequence, inputIndex: number): PenaltyRow {
    return {
      presence: s.sampling.presencePenalty ?? 0,
      frequency: s.sampling.frequencyPenalty ?? 0,
      repetition: s.sampling.repetitionPenalty ?? 1,
      biasCount: s.sampling.logitBias?.length ?? 0,
      biasOffset: s.slot * MAX_LOGIT_BIAS,
      slot: s.slot,
      inputIndex,
    };
  }

  /** Frees a sequence's slot and KV blocks. */
  removeSequence(id: string): void {
    const s = this.#seqs.get(id);
    if (!s) return;
    this.#seqs.delete(id);
    this.kvBlocks.free(id);
    this.#free.push(s.slot);
  }

  #writeBlockTable(id: string, slot: number): void {
    const table = this.kvBlocks.table(id);
    if (table.length > this.#kv.maxBlocksPerSeq) {
      throw new EngineError(
        `Sequence "${id}" holds ${table.length} KV blocks; a block table row has ${this.#kv.maxBlocksPerSeq}`,
      );
    }
    const row = new Uint32Array(this.#kv.maxBlocksPerSeq);
    row.set(table.slice(0, row.length));
    this.gpu.device.queue.writeBuffer(this.#blockTable, slot * row.byteLength, row);
  }

  /**
   * Runs the prompts of `ids` (sequences with uncached prompt tokens) in batches of at most
   * maxBatchTokens (at most `maxBatches` of them, so a long prompt can be spread over several calls
   * with decode rounds in between), and samples the first new token of each sequence whose prompt
   * completed. Returns those tokens.
   */
  async prefill(
    ids: string[],
    maxBatches = Infinity,
  ): Promise<Map<string, TokenBatch>> {
    const done: EngineSequence[] = [];
    let pending = ids.map((id) => this.#get(id)).filter((s) => s.cached < s.promptIds.length);
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
      this.#encodePrefillBatch(enc, parts);
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
    // Read the sampled first tokens (and their logprobs) of the sequences whose prompts completed.
    const slots = done.map((s) => s.slot);
    const [tok, lp] = await this.#readWords([
      { buf: this.#lastToken, slots },
      { buf: this.#historyLogprobs, slots },
    ]);
    const lpf = new Float32Array(lp.buffer);
    const withTop = done.filter((s) => s.topLogprobs > 0);
    let top: Uint32Array | null = null;
    if (withTop.length) {
      const base = this.#prefillTopBase();
      const end = base + (Math.max(...withTop.map((s) => s.slot)) + 1) * TOP_LOGPROBS_MAX * 2;
      top = new Uint32Array(await this.#read(this.#topOut, end * 4));
    }
    done.forEach((s, i) => {
      s.generated = 1;
      const batch: TokenBatch = { ids: [tok[i]], logprobs: [lpf[i]] };
      if (top && s.topLogprobs > 0) {
        batch.top = [readPairs(top, this.#prefillTopBase() + s.slot * TOP_LOGPROBS_MAX * 2, s.topLogprobs)];
      }
      out.set(s.id, batch);
    });
    return out;
  }

  #encodePrefillBatch(enc: GPUCommandEncoder, parts: { s: EngineSequence; from: number; n: number }[]): void {
    const dev = this.gpu.device;
    const T = parts.reduce((a, p) => a + p.n, 0);
    const tokens = new Uint32Array(T);
    const seqOf = new Uint32Array(T);
    const pos = new Uint32Array(T);
    const lastRows: number[] = [];
    const sampled: { s: EngineSequence; i: number }[] = [];
    const marks: { slot: number; from: number; n: number }[] = [];
    let t = 0;
    let maxQuery = 0;
    let maxCtx = 0;
    for (const p of parts) {
      if (p.s.penalized && (p.s.sampling.repetitionPenalty ?? 1) !== 1) {
        marks.push({ slot: p.s.slot, from: t, n: p.n });
      }
      for (let i = 0; i < p.n; i++) {
        tokens[t] = p.s.promptIds[p.from + i];
        seqOf[t] = p.s.slot;
        pos[t] = p.from + i;
        t++;
      }
      maxQuery = Math.max(maxQuery, p.n);
      maxCtx = Math.max(maxCtx, p.from + p.n);
      if (p.from + p.n === p.s.promptIds.length) {
        sampled.push({ s: p.s, i: lastRows.length });
        lastRows.push(t - 1);
      }
    }
    // meta layout: [seqOf (T) | pos (T) | lastRows], each segment 256-byte aligned
    dev.queue.writeBuffer(this.#prefillTokens, 0, tokens);
    const meta = new Uint32Array(2 * seg(T) + Math.max(1, lastRows.length));
    meta.set(seqOf, 0);
    meta.set(pos, seg(T));
    meta.set(lastRows, 2 * seg(T));
    dev.queue.writeBuffer(this.#meta, 0, meta);
    const metaView = (offsetWords: number, words: number) => u32Range(this.#meta, offsetWords, words);
    const pass = enc.beginComputePass({ label: "prefill" });
    const nLogits = Math.max(1, lastRows.length);
    encodeForward(this.k, pass, this.cfg, this.weights, this.#act, this.#kv, this.#rope, {
      nTokens: T,
      tokens: this.#prefillTokens,
      tokensOffset: 0,
      tokenSeq: metaView(0, T),
      tokenPos: metaView(seg(T), T),
      blockTable: this.#blockTable,
      maxQueryTokens: maxQuery,
      maxContext: maxCtx,
      logitRows: { idx: metaView(2 * seg(T), nLogits), count: nLogits },
      logits: this.#logits,
      ropeMaxPos: this.#ropeMaxPos,
    });
    for (const m of marks) {
      penaltiesMarkPrompt(this.k, pass, {
        counts: this.#counts,
        tokens: this.#prefillTokens,
        tokensOffset: m.from,
        n: m.n,
        slot: m.slot,
        vocab: this.cfg.vocabSize,
      });
    }
    if (sampled.some(({ s }) => s.penalized)) {
      dev.queue.writeBuffer(
        this.#penaltyRows,
        0,
        packPenaltyRows(sampled.map(({ s }) => this.#penaltyRow(s, PENALTY_NO_INPUT))),
      );
      penaltiesApply(this.k, pass, {
        logits: this.#logits,
        rows: this.#penaltyRows,
        nRows: sampled.length,
        counts: this.#counts,
        bias: this.#logitBias,
        vocab: this.cfg.vocabSize,
      });
    }
    sampled.forEach(({ s }, i) => {
      if (s.topLogprobs === 0) return;
      topLogprobs(this.k, pass, {
        logits: this.#logits,
        logitsOffset: i * this.cfg.vocabSize,
        rows: 1,
        vocab: this.cfg.vocabSize,
        k: s.topLogprobs,
        out: this.#topOut,
        outOffset: this.#prefillTopBase() + s.slot * TOP_LOGPROBS_MAX * 2,
      });
    });
    if (sampled.length) {
      const params = packSamplingParams(sampled.map(({ s }) => ({
        ...s.sampling,
        counter: s.counterBase,
        outIndex: s.slot,
      })));
      dev.queue.writeBuffer(this.#samplingParams, 0, params);
      sample(this.k, pass, {
        logits: this.#logits,
        logitsStride: this.cfg.vocabSize,
        params: this.#samplingParams,
        rows: sampled.length,
        vocab: this.cfg.vocabSize,
        tokens: this.#lastToken,
        // Prefill logprobs land in history row 0 at the sequence's batch index.
        logprobs: this.#historyLogprobs,
      });
    }
    pass.end();
  }

  /**
   * Runs `steps` decode steps for the given sequences (each must have finished prefill) and reads
   * every sampled id back at the end, in one map.
   */
  async decodeRound(ids: string[], steps: number): Promise<RoundResult> {
    const seqs = ids.map((id) => this.#get(id));
    const S = seqs.length;
    if (S === 0 || steps <= 0) return { tokens: new Map(), steps: 0, gpuMs: 0 };
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
    // meta layout: [slots (S) | pos for step 0 (S) | pos for step 1 (S) | ...], segments 256-byte aligned
    const SA = seg(S);
    const meta = new Uint32Array(SA * (steps + 1));
    seqs.forEach((s, j) => (meta[j] = s.slot));
    for (let st = 0; st < steps; st++) {
      seqs.forEach((s, j) => {
        // The input of step st is the token generated last: position prompt + generated - 1 + st.
        meta[SA * (st + 1) + j] = s.promptIds.length + s.generated - 1 + st;
      });
    }
    dev.queue.writeBuffer(this.#meta, 0, meta);
    const stepBytes = this.#samplingBytesPerStep;
    const params = new Uint8Array(steps * stepBytes);
    for (let st = 0; st < steps; st++) {
      const p = packSamplingParams(seqs.map((s, j) => ({
        ...s.sampling,
        counter: s.counterBase + s.generated + st,
        outIndex: (st + 1) * S + j,
      })));
      params.set(new Uint8Array(p), st * stepBytes);
    }
    dev.queue.writeBuffer(this.#samplingParams, 0, params);
    const penalized = seqs.some((s) => s.penalized);
    const K = Math.max(0, ...seqs.map((s) => s.topLogprobs));
    if (penalized) {
      // Step st feeds history row st, the token sampled last: counting it as it goes in counts every
      // generated token exactly once.
      const rows: PenaltyRow[] = [];
      for (let st = 0; st < steps; st++) seqs.forEach((s, j) => rows.push(this.#penaltyRow(s, st * S + j)));
      dev.queue.writeBuffer(this.#penaltyRows, 0, packPenaltyRows(rows));
    }

    const enc = dev.createCommandEncoder({ label: "decode" });
    const pass = enc.beginComputePass({ label: "decode" });
    const slots = u32Range(this.#meta, 0, S);
    gatherU32(this.k, pass, { src: this.#lastToken, idx: slots, dst: this.#history, count: S });
    let maxCtx = 0;
    for (const s of seqs) maxCtx = Math.max(maxCtx, s.promptIds.length + s.generated - 1 + steps);
    for (let st = 0; st < steps; st++) {
      encodeForward(this.k, pass, this.cfg, this.weights, this.#act, this.#kv, this.#rope, {
        nTokens: S,
        tokens: this.#history,
        tokensOffset: st * S,
        tokenSeq: slots,
        tokenPos: u32Range(this.#meta, SA * (st + 1), S),
        blockTable: this.#blockTable,
        maxQueryTokens: 1,
        maxContext: maxCtx,
        logitRows: null,
        logits: this.#logits,
        ropeMaxPos: this.#ropeMaxPos,
      });
      if (penalized) {
        const v = this.cfg.vocabSize;
        penaltiesCount(this.k, pass, {
          counts: this.#counts,
          rows: this.#penaltyRows,
          rowsOffset: st * S,
          inputTokens: this.#history,
          nRows: S,
          vocab: v,
        });
        penaltiesApply(this.k, pass, {
          logits: this.#logits,
          rows: this.#penaltyRows,
          rowsOffset: st * S,
          nRows: S,
          counts: this.#counts,
          bias: this.#logitBias,
          vocab: v,
        });
      }
      if (K > 0) {
        topLogprobs(this.k, pass, {
          logits: this.#logits,
          rows: S,
          vocab: this.cfg.vocabSize,
          k: K,
          out: this.#topOut,
          outOffset: st * S * K * 2,
        });
      }
      sample(this.k, pass, {
        logits: this.#logits,
        logitsStride: this.cfg.vocabSize,
        params: { buffer: this.#samplingParams, offset: st * stepBytes, size: stepBytes },
        rows: S,
        vocab: this.cfg.vocabSize,
        tokens: this.#history,
        logprobs: this.#historyLogprobs,
      });
    }
    scatterU32(this.k, pass, {
      src: this.#history,
      srcOffset: steps * S,
      idx: slots,
      dst: this.#lastToken,
      count: S,
    });
    pass.end();
    const bytes = steps * S * 4;
    const topBytes = steps * S * K * 2 * 4;
    const total = 2 * bytes + topBytes;
    const rb = this.#readbackBuffer(total);
    enc.copyBufferToBuffer(this.#history, S * 4, rb, 0, bytes);
    enc.copyBufferToBuffer(this.#historyLogprobs, S * 4, rb, bytes, bytes);
    if (topBytes) enc.copyBufferToBuffer(this.#topOut, 0, rb, 2 * bytes, topBytes);
    const t0 = performance.now();
    dev.queue.submit([enc.finish()]);
    await rb.mapAsync(GPUMapMode.READ, 0, total);
    const gpuMs = performance.now() - t0;
    const data = rb.getMappedRange(0, total).slice(0);
    rb.unmap();
    this.#readback.push(rb);
    const ids32 = new Uint32Array(data, 0, steps * S);
    const lps = new Float32Array(data, bytes, steps * S);
    const tokens = new Map<string, TokenBatch>();
    const top = topBytes ? new Uint32Array(data, 2 * bytes, steps * S * K * 2) : null;
    seqs.forEach((s, j) => {
      const out: TokenBatch = { ids: [], logprobs: [] };
      if (top && s.topLogprobs > 0) out.top = [];
      for (let st = 0; st < steps; st++) {
        out.ids.push(ids32[st * S + j]);
        out.logprobs.push(lps[st * S + j]);
        if (out.top) out.top.push(readPairs(top!, (st * S + j) * K * 2, s.topLogprobs));
      }
      s.generated += steps;
      tokens.set(s.id, out);
    });
    return { tokens, steps, gpuMs };
  }

  /** Logits of every position of `ids` (a fresh sequence), for perplexity and golden tests. */
  async promptLogits(ids: number[], opts: { lastOnly?: boolean } = {}): Promise<Float32Array> {
    const id = `__logits_${crypto.randomUUID()}`;
    this.addSequence(id, ids, 0, GREEDY, false, false);
    try {
      const s = this.#get(id);
      const V = this.cfg.vocabSize;
      const rows = opts.lastOnly ? 1 : ids.length;
      const out = new Float32Array(rows * V);
      const dev = this.gpu.device;
      const logitsAll = dev.createBuffer({
        size: Math.min(this.maxBatchTokens, ids.length) * V * 4,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
      });
      try {
        while (s.cached < ids.length) {
          const n = Math.min(this.maxBatchTokens, ids.length - s.cached);
          const from = s.cached;
          const need = opts.lastOnly ? (from + n === ids.length ? 1 : 0) : n;
          const na = seg(n);
          const meta = new Uint32Array(2 * na + Math.max(1, need));
          meta.fill(s.slot, 0, n);
          for (let i = 0; i < n; i++) meta[na + i] = from + i;
          for (let i = 0; i < need; i++) meta[2 * na + i] = opts.lastOnly ? n - 1 : i;
          dev.queue.writeBuffer(this.#prefillTokens, 0, Uint32Array.from(ids.slice(from, from + n)));
          dev.queue.writeBuffer(this.#meta, 0, meta);
          const view = (o: number, w: number) => u32Range(this.#meta, o, w);
          const enc = dev.createCommandEncoder();
          const pass = enc.beginComputePass();
          encodeForward(this.k, pass, this.cfg, this.weights, this.#act, this.#kv, this.#rope, {
            nTokens: n,
            tokens: this.#prefillTokens,
            tokensOffset: 0,
            tokenSeq: view(0, n),
            tokenPos: view(na, n),
            blockTable: this.#blockTable,
            maxQueryTokens: n,
            maxContext: from + n,
            logitRows: { idx: view(2 * na, Math.max(1, need)), count: Math.max(1, need) },
            logits: logitsAll,
            ropeMaxPos: this.#ropeMaxPos,
          });
          pass.end();
          dev.queue.submit([enc.finish()]);
          s.cached += n;
          if (need > 0) {
            const got = new Float32Array(await this.#read(logitsAll, need * V * 4));
            out.set(got, opts.lastOnly ? 0 : from * V);
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

  #get(id: string): EngineSequence {
    const s = this.#seqs.get(id);
    if (!s) throw new EngineError(`Unknown sequence "${id}"`);
    return s;
  }

  #readbackBuffer(bytes: number): GPUBuffer {
    const i = this.#readback.findIndex((b) => b.size >= bytes);
    if (i >= 0) return this.#readback.splice(i, 1)[0];
    return this.gpu.device.createBuffer({
      size: Math.max(256, 2 ** Math.ceil(Math.log2(bytes))),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  async #read(buf: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    const rb = this.#readbackBuffer(bytes);
    const enc = this.gpu.device.createCommandEncoder();
    enc.copyBufferToBuffer(buf, 0, rb, 0, bytes);
    this.gpu.device.queue.submit([enc.finish()]);
    await rb.mapAsync(GPUMapMode.READ, 0, bytes);
    const out = rb.getMappedRange(0, bytes).slice(0);
    rb.unmap();
    this.#readback.push(rb);
    return out;
  }

  /** Reads u32 words at the given indices of several buffers with one map. */
  async #readWords(reqs: { buf: GPUBuffer; slots: number[] }[]): Promise<Uint32Array[]> {
    const out: Uint32Array[] = [];
    for (const r of reqs) {
      const max = Math.max(...r.slots) + 1;
      const words = new Uint32Array(await this.#read(r.buf, max * 4));
      out.push(Uint32Array.from(r.slots, (i) => words[i]));
    }
    return out;
  }

  destroy(): void {
    destroyWeights(this.weights);
    for (const b of [...this.#kv.k, ...this.#kv.v]) b.destroy();
    this.gpu.device.destroy();
  }
}

/** `words` u32 words of `buffer` from word `offsetWords` (at least one word), as a binding. */
function u32Range(buffer: GPUBuffer, offsetWords: number, words: number): GPUBufferBinding {
  return { buffer, offset: offsetWords * 4, size: Math.max(4, words * 4) };
}

/** u32 words rounded up to a whole number of 256-byte segments. */
function seg(words: number): number {
  return Math.ceil(words / 64) * 64;
}

/** `n` (id, logprob) pairs stored as u32 words from `at`, dropping padding past the vocabulary. */
function readPairs(words: Uint32Array, at: number, n: number): [number, number][] {
  const f = new Float32Array(words.buffer, words.byteOffset, words.length);
  const out: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const id = words[at + 2 * i];
    if (id !== 0xffffffff) out.push([id, f[at + 2 * i + 1]]);
  }
  return out;
}

function isPenalized(s: SamplingParams): boolean {
  return !!(s.presencePenalty || s.frequencyPenalty || (s.repetitionPenalty ?? 1) !== 1 ||
    s.logitBias?.length);
}

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };

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
