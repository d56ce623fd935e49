// The transformer, top to bottom, for one flat batch of tokens from any mix of sequences
// (llama2.c's forward(), batched): embedding -> nLayers x (attention block, MLP block) -> final
// norm on the rows that need logits -> lm_head. Every step is one kernel call on the GPU; the
// batch's metadata (token ids, positions, block tables) already lives in GPU buffers.
import {
  attention,
  type BufferArg,
  embedding,
  gatherRows,
  type Kernels,
  kvWrite,
  rmsnorm,
  rope,
  siluMul,
} from "../kernels/mod.ts";
import type { ModelConfig } from "./model_config.ts";
import type { ModelWeights } from "./weights.ts";

/** Activation buffers, sized once for the largest batch (maxTokens rows). */
export interface Activations {
  maxTokens: number;
  x: GPUBuffer; // f32 (maxTokens, dim): the residual stream
  xb: GPUBuffer; // f32 (maxTokens, dim): normed input of a block
  q: GPUBuffer; // f32 (maxTokens, nHeads * headDim)
  k: GPUBuffer; // f32 (maxTokens, nKvHeads * headDim)
  v: GPUBuffer; // f32 (maxTokens, nKvHeads * headDim)
  att: GPUBuffer; // f32 (maxTokens, nHeads * headDim)
  gate: GPUBuffer; // f32 (maxTokens, hiddenDim)
  up: GPUBuffer; // f32 (maxTokens, hiddenDim)
  mlp: GPUBuffer; // f32 (maxTokens, hiddenDim): silu(gate) * up
  last: GPUBuffer; // f32 (maxLogitRows, dim): rows that need logits
  lastNormed: GPUBuffer; // f32 (maxLogitRows, dim)
  attnScratch: GPUBuffer; // split-K partials of the decode attention kernel
}

/** The paged KV cache: per layer, K and V blocks (numBlocks, nKvHeads, blockSize, headDim) f16. */
export interface KvCacheBuffers {
  k: GPUBuffer[];
  v: GPUBuffer[];
  numBlocks: number;
  blockSize: number;
  maxBlocksPerSeq: number;
}

/** One forward pass over `nTokens` rows; all buffers are device-resident. */
export interface ForwardBatch {
  nTokens: number;
  tokens: BufferArg; // u32 token ids, read from tokensOffset
  tokensOffset: number;
  tokenSeq: BufferArg; // u32 (nTokens): block-table row of each token
  tokenPos: BufferArg; // u32 (nTokens): absolute position of each token
  blockTable: BufferArg; // u32 (rows, maxBlocksPerSeq)
  /** Largest number of tokens any one sequence has in this batch (1 for pure decode). */
  maxQueryTokens: number;
  /** Longest context any sequence in the batch attends to (after this batch). */
  maxContext: number;
  /** Which rows get logits: null = all rows in order (decode: one row per sequence). */
  logitRows: { idx: BufferArg; count: number } | null;
  logits: BufferArg; // f32 (logitRowCount, vocabSize)
  /** Rows of the RoPE table (positions past it use its last row). */
  ropeMaxPos: number;
}

/** What every forward pass runs on: the model and the engine's device-resident buffers. */
export interface ForwardModel {
  kernels: Kernels;
  cfg: ModelConfig;
  weights: ModelWeights;
  act: Activations;
  kv: KvCacheBuffers;
  rope: BufferArg; // f32 (ropeMaxPos, headDim / 2, 2): cos, sin per position
}

export function encodeForward(pass: GPUComputePassEncoder, model: ForwardModel, b: ForwardBatch): void {
  const { kernels, cfg, weights: w, act, kv, rope: ropeTable } = model;
  const T = b.nTokens;
  const { dim, nHeads, nKvHeads, headDim, hiddenDim } = cfg;
  w.embed.forEach((part, i) =>
    embedding(kernels, pass, {
      tokens: b.tokens,
      tokensOffset: b.tokensOffset,
      table: part.buffer,
      out: act.x,
      T,
      dim,
      vocab: part.rows,
      idBase: part.rowStart,
      // The first part zeroes rows it does not hold (ids past the vocabulary stay zero); later ones keep them.
      keepOutside: i > 0,
    })
  );
  for (let l = 0; l < cfg.nLayers; l++) {
    const L = w.layers[l];
    // Attention block: x += Wo attention(rope(Wq xb), rope(Wk xb), Wv xb), xb = rmsnorm(x).
    rmsnorm(kernels, pass, { x: act.x, weight: L.attnNorm, out: act.xb, rows: T, dim, eps: cfg.normEps });
    L.q.encode(kernels, pass, { x: act.xb, out: act.q, rows: T });
    L.k.encode(kernels, pass, { x: act.xb, out: act.k, rows: T });
    L.v.encode(kernels, pass, { x: act.xb, out: act.v, rows: T });
    rope(kernels, pass, {
      q: act.q,
      k: act.k,
      positions: b.tokenPos,
      cosSin: ropeTable,
      T,
      nHeads,
      nKvHeads,
      headDim,
      maxPos: b.ropeMaxPos,
    });
    kvWrite(kernels, pass, {
      k: act.k,
      v: act.v,
      kCache: kv.k[l],
      vCache: kv.v[l],
      tokenSeq: b.tokenSeq,
      tokenPos: b.tokenPos,
      blockTable: b.blockTable,
      T,
      nKvHeads,
      headDim,
      blockSize: kv.blockSize,
      maxBlocksPerSeq: kv.maxBlocksPerSeq,
    });
    attention(kernels, pass, {
      q: act.q,
      kCache: kv.k[l],
      vCache: kv.v[l],
      tokenSeq: b.tokenSeq,
      tokenPos: b.tokenPos,
      blockTable: b.blockTable,
      out: act.att,
      scratch: act.attnScratch,
      T,
      nHeads,
      nKvHeads,
      headDim,
      blockSize: kv.blockSize,
      maxBlocksPerSeq: kv.maxBlocksPerSeq,
      maxQueryTokens: b.maxQueryTokens,
      maxContext: b.maxContext,
    });
    L.o.encode(kernels, pass, { x: act.att, out: act.x, rows: T, accumulate: true });
    // MLP block: x += Wd (silu(Wg xb) * Wu xb), xb = rmsnorm(x).
    rmsnorm(kernels, pass, { x: act.x, weight: L.ffnNorm, out: act.xb, rows: T, dim, eps: cfg.normEps });
    L.gate.encode(kernels, pass, { x: act.xb, out: act.gate, rows: T });
    L.up.encode(kernels, pass, { x: act.xb, out: act.up, rows: T });
    siluMul(kernels, pass, { gate: act.gate, up: act.up, out: act.mlp, T, n: hiddenDim });
    L.down.encode(kernels, pass, { x: act.mlp, out: act.x, rows: T, accumulate: true });
  }
  let rows = T;
  let src = act.x;
  if (b.logitRows) {
    rows = b.logitRows.count;
    gatherRows(kernels, pass, {
      src: act.x,
      idx: b.logitRows.idx,
      dst: act.last,
      count: rows,
      width: dim,
      rowStride: dim,
    });
    src = act.last;
  }
  rmsnorm(kernels, pass, { x: src, weight: w.finalNorm, out: act.lastNormed, rows, dim, eps: cfg.normEps });
  w.lmHead.encode(kernels, pass, { x: act.lastNormed, out: b.logits, rows });
}
