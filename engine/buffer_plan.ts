// How much GPU memory the engine takes, buffer by buffer: a pure function from the model's dimensions and
// the engine's limits to sizes, so the sizing is tested without a GPU (buffer_plan_test.ts) and
// Engine.load only allocates what the plan says. Sizes are bytes unless a name says words (u32).
import {
  attentionScratchBytes,
  DECODE_MAX_QUERY_TOKENS,
  LOGIT_BIAS_BYTES,
  PENALTY_ROW_BYTES,
  SAMPLING_ROW_BYTES,
  TOP_LOGPROBS_MAX,
} from "../kernels/mod.ts";
import { EngineError } from "./errors.ts";
import type { ModelConfig } from "./model_config.ts";
import { MAX_LOGIT_BIAS } from "./types.ts";

/** Positions per KV cache block. */
export const KV_BLOCK_SIZE = 16;

/** The default KV cache never takes more than this over all layers (WebGPU cannot report free memory). */
const DEFAULT_KV_CACHE_BYTES = 16 * 2 ** 30;

export type ModelDims = Pick<
  ModelConfig,
  "dim" | "hiddenDim" | "nLayers" | "nHeads" | "nKvHeads" | "headDim" | "vocabSize"
>;

export interface PlanLimits {
  /** Longest prompt + completion per sequence. */
  maxContext: number;
  /** Sequences decoded together at most: the slots of the block table and of every per-slot buffer. */
  maxSeqs: number;
  /** Tokens per prefill forward pass at most: the rows of the activation buffers. */
  maxBatchTokens: number;
  /** Decode steps per round at most. */
  maxRoundSteps: number;
  /** KV cache size in tokens over all sequences (default: every slot at full context, within the caps). */
  kvTokens?: number;
  /** The device's maxStorageBufferBindingSize: one layer's K (or V) cache is one binding. */
  maxBindingBytes: number;
}

/** Bytes of each activation buffer of forward.ts (`Activations`). */
export interface ActivationBytes {
  /** Each of the two residual-stream buffers. */
  x: number;
  /** A stack's inputs: up to three parts (q, k, v) of dim, or one of qDim or hiddenDim. */
  xin: number;
  /** A stack's outputs side by side: the widest of q|k|v, dim and gate|up. */
  y: number;
  q: number;
  att: number;
  h: number;
  lastNormed: number;
  attnScratch: number;
}

export interface BufferPlan {
  kvTokens: number;
  blockSize: number;
  numBlocks: number;
  /** Block-table row length: a round may run maxRoundSteps past a sequence's end, and those steps need slots. */
  maxBlocksPerSeq: number;
  /** One layer's K (or V) cache: (numBlocks, nKvHeads, blockSize, headDim) f16. */
  kvLayerBytes: number;
  /** Positions the RoPE table covers (maxContext + maxRoundSteps, for the same overshoot). */
  ropeMaxPos: number;
  activations: ActivationBytes;
  /** u32 (maxSeqs, maxBlocksPerSeq). */
  blockTableBytes: number;
  /** u32 (maxSeqs): the latest sampled id of each slot. */
  lastTokenBytes: number;
  /** u32 ids and f32 logprobs, each (maxRoundSteps + 1, maxSeqs): row s + 1 holds what decode step s sampled. */
  historyBytes: number;
  /** Batch metadata (batch.ts): the larger of a round's [slots | positions per step | single-step slots]
   * and a prefill's [slot per token | position per token | logit rows], segments 256-byte aligned. */
  metaWords: number;
  /** u32 (maxBatchTokens): the prompt tokens of one prefill batch. */
  prefillTokensBytes: number;
  /** f32 (maxSeqs, vocabSize): one logits row per sampled sequence. */
  logitsBytes: number;
  sampler: SamplerBytes;
}

/** The sampler's per-slot state (sampler.ts). */
export interface SamplerBytes {
  /** RowParams of one step's rows, rounded to whole 256-byte segments so each step binds at an offset. */
  paramsBytesPerStep: number;
  /** One step per decode step of a round, plus one for prefill. */
  paramsBytes: number;
  /** u32 (maxSeqs, vocabSize): generated-token counts, bit 31 = in the prompt. */
  countsBytes: number;
  /** PenaltyRow ((maxRoundSteps + 1) * maxSeqs). */
  penaltyRowsBytes: number;
  /** (id, value) pairs, MAX_LOGIT_BIAS per slot. */
  logitBiasBytes: number;
  /** (id, logprob) pairs: TOP_LOGPROBS_MAX per row of each decode step, then per slot for prefill. */
  topLogprobsBytes: number;
  /** u32 (maxSeqs, ceil(vocabSize / 32)): each constrained slot's token mask for its next token. */
  tokenMaskBytes: number;
  /** Word where the per-slot prefill region of the top-logprobs buffer starts. */
  prefillTopBaseWords: number;
}

/** u32 words rounded up to whole 256-byte segments (minStorageBufferOffsetAlignment). */
export function seg(words: number): number {
  return Math.ceil(words / 64) * 64;
}

/**
 * Every buffer size the engine needs. The default KV cache holds every slot at full context, but at most
 * what one storage binding holds per layer and at most 16 GiB over all layers (--kv-cache-tokens
 * overrides); an explicit size past the binding limit is an error.
 */
export function planBuffers(cfg: ModelDims, limits: PlanLimits): BufferPlan {
  const { maxContext, maxSeqs, maxRoundSteps } = limits;
  const T = limits.maxBatchTokens;
  const kvBytesPerToken = cfg.nKvHeads * cfg.headDim * 2; // one layer's K (or V), f16
  const kvTokens = limits.kvTokens ?? Math.min(
    maxSeqs * maxContext,
    Math.floor(limits.maxBindingBytes / kvBytesPerToken),
    Math.floor(DEFAULT_KV_CACHE_BYTES / (2 * cfg.nLayers * kvBytesPerToken)),
  );
  if (kvTokens * kvBytesPerToken > limits.maxBindingBytes) {
    throw new EngineError(
      `A KV cache of ${kvTokens} tokens needs ${kvTokens * kvBytesPerToken} bytes per layer; the device ` +
        `binds at most ${limits.maxBindingBytes} (lower --kv-cache-tokens)`,
    );
  }
  const blockSize = KV_BLOCK_SIZE;
  const maxBlocksPerSeq = Math.ceil((maxContext + maxRoundSteps) / blockSize);
  const numBlocks = Math.max(maxBlocksPerSeq, Math.ceil(kvTokens / blockSize));
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  const logitRows = Math.max(T, maxSeqs);
  const steps = maxRoundSteps + 1;
  const paramsBytesPerStep = seg((maxSeqs * SAMPLING_ROW_BYTES) / 4) * 4;
  // The activations of a full prefill pass, one row a token.
  const perToken = {
    x: T * cfg.dim * 4,
    xin: T * Math.max(3 * cfg.dim, qDim, cfg.hiddenDim) * 4,
    y: T * Math.max(qDim + 2 * kvDim, cfg.dim, 2 * cfg.hiddenDim) * 4,
    q: T * qDim * 4,
    att: T * qDim * 4,
    h: T * cfg.hiddenDim * 4,
  };
  const widest = Math.max(...Object.values(perToken));
  if (widest > limits.maxBindingBytes) {
    throw new EngineError(
      `A prefill pass of ${T} tokens needs ${widest} bytes for its widest activation buffer; the device ` +
        `binds at most ${limits.maxBindingBytes} (lower --max-batch-tokens)`,
    );
  }
  return {
    kvTokens,
    blockSize,
    numBlocks,
    maxBlocksPerSeq,
    kvLayerBytes: numBlocks * blockSize * kvBytesPerToken,
    ropeMaxPos: maxContext + maxRoundSteps,
    activations: {
      ...perToken,
      lastNormed: logitRows * cfg.dim * 4,
      attnScratch: attentionScratchBytes({
        // Only the split-K decode kernel uses scratch, and only for batches where no sequence has more
        // than DECODE_MAX_QUERY_TOKENS tokens: at most that many per slot.
        T: Math.min(T, DECODE_MAX_QUERY_TOKENS * Math.max(maxSeqs, 1)),
        nHeads: cfg.nHeads,
        headDim: cfg.headDim,
        maxContext: maxContext + maxRoundSteps,
      }),
    },
    blockTableBytes: maxSeqs * maxBlocksPerSeq * 4,
    lastTokenBytes: maxSeqs * 4,
    historyBytes: steps * maxSeqs * 4,
    metaWords: Math.max((steps + 1) * seg(maxSeqs), 2 * seg(T) + seg(logitRows)),
    prefillTokensBytes: T * 4,
    logitsBytes: Math.max(maxSeqs, 1) * cfg.vocabSize * 4,
    sampler: {
      paramsBytesPerStep,
      paramsBytes: steps * paramsBytesPerStep,
      countsBytes: maxSeqs * cfg.vocabSize * 4,
      penaltyRowsBytes: steps * maxSeqs * PENALTY_ROW_BYTES,
      logitBiasBytes: maxSeqs * MAX_LOGIT_BIAS * LOGIT_BIAS_BYTES,
      topLogprobsBytes: steps * maxSeqs * TOP_LOGPROBS_MAX * 2 * 4,
      prefillTopBaseWords: maxRoundSteps * maxSeqs * TOP_LOGPROBS_MAX * 2,
      tokenMaskBytes: Math.max(maxSeqs, 1) * Math.ceil(cfg.vocabSize / 32) * 4,
    },
  };
}
