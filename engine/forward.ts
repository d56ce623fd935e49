// The transformer, top to bottom, for one flat batch of tokens from any mix of sequences
// (llama2.c's forward(), batched): embedding -> nLayers x (attention block, MLP block) -> final
// norm on the rows that need logits -> lm_head. The batch's metadata (token ids, positions, block
// tables) already lives in GPU buffers.
//
// Each linear stack (q/k/v, o, gate/up, down: engine/linear.ts) is one matmul; the steps between them are
// fused kernels (kernels/transform) that also apply what a QTIP stack needs around its matmul: the input
// transform H^T(SU x) before it, the output transform SV H(y) after it, both switched off for fp16 stacks.
// So a QTIP layer is 11 dispatches:
//   norm+in  qkv  rope/kv  attention  o in  o  finish+norm+in  gate/up  mlp middle  down in  down
// (at decode `o in` also combines the split attention's partials: kernels/attention/o_input.ts; an fp16
// layer has no `o in` and `down in`, but at decode a combine step when attention splits its context),
// and the residual add of a block happens in the next block's first step ("finish"), which reads the
// residual stream from one buffer and writes it to the other.
import {
  attention,
  blockTransform,
  type BufferArg,
  embedding,
  type Kernels,
  normTransform,
  ropeKv,
} from "../kernels/mod.ts";
import type { ModelConfig } from "./model_config.ts";
import type { LinearStack } from "./linear.ts";
import type { LayerWeights, ModelWeights } from "./weights.ts";

/** Activation buffers, sized once for the largest batch (maxTokens rows). */
export interface Activations {
  maxTokens: number;
  x: [GPUBuffer, GPUBuffer]; // f32 (maxTokens, dim): the residual stream, written alternately
  xin: GPUBuffer; // f32: a stack's inputs, part g row t at g * maxTokens * inDim + t * inDim
  y: GPUBuffer; // f32 (maxTokens, widest stack output): a stack's outputs side by side
  q: GPUBuffer; // f32 (maxTokens, nHeads * headDim)
  att: GPUBuffer; // f32 (maxTokens, nHeads * headDim)
  h: GPUBuffer; // f32 (maxTokens, hiddenDim): the MLP's silu(gate) * up
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

/** Where a stack's inputs go: parts T * inDim apart when each reads its own, else one shared input. */
function partStride(s: LinearStack, T: number): number {
  return s.separateInputs ? T * s.inDim : 0;
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
  const eps = cfg.normEps;
  const had = w.had;
  w.embed.forEach((part, i) =>
    embedding(kernels, pass, {
      tokens: b.tokens,
      tokensOffset: b.tokensOffset,
      table: part.buffer,
      out: act.x[0],
      T,
      dim,
      vocab: part.rows,
      idBase: part.rowStart,
      // The first part zeroes rows it does not hold (ids past the vocabulary stay zero); later ones keep them.
      keepOutside: i > 0,
    })
  );
  // The residual stream lives in act.x[cur]; a step that finishes a linear writes it to the other buffer.
  let cur = 0;
  let prev: LayerWeights | null = null;
  for (let l = 0; l < w.layers.length; l++) {
    const L = w.layers[l];
    // Attention block. (1) x += SV_down H(y) of the previous layer; xin_g = H^T(SU_g rmsnorm(x)), g = q, k, v.
    normTransform(kernels, pass, {
      xIn: act.x[cur],
      xOut: act.x[1 - cur],
      vec: L.side,
      had,
      out: act.xin,
      rows: T,
      parts: L.qkv.separateInputs ? 3 : 1,
      dim,
      eps,
      outPartStride: partStride(L.qkv, T),
      finish: prev ? { y: act.y, vec: prev.side, sv: prev.at.svD, had: prev.down.outHad?.[0] } : undefined,
      norm: { gamma: L.at.attnGamma },
      su: L.at.suQkv,
      inHad: L.qkv.inHad,
    });
    if (prev) cur = 1 - cur;
    // (2) y = [Wq xin_q | Wk xin_k | Wv xin_v]
    L.qkv.encode(kernels, pass, { x: act.xin, partStride: partStride(L.qkv, T), out: act.y, rows: T });
    // (3) q = rope(SV_q H(y_q)); the cache gets rope(SV_k H(y_k)) and SV_v H(y_v) at each token's position.
    ropeKv(kernels, pass, {
      y: act.y,
      vec: L.side,
      had,
      rope: ropeTable,
      tokenSeq: b.tokenSeq,
      tokenPos: b.tokenPos,
      blockTable: b.blockTable,
      qOut: act.q,
      kCache: kv.k[l],
      vCache: kv.v[l],
      T,
      nHeads,
      nKvHeads,
      headDim,
      blockSize: kv.blockSize,
      maxBlocksPerSeq: kv.maxBlocksPerSeq,
      ropeMaxPos: b.ropeMaxPos,
      sv: L.at.svQkv,
      hq: L.qkv.outHad?.[0],
      hkv: L.qkv.outHad?.[1],
    });
    // (4) att = softmax(q k^T / sqrt(headDim)) v over each sequence's cache; at decode, for a QTIP o_proj,
    // it also does (5)'s input transform (xin = H^T(SU_o att), not att) and returns true.
    const oInDone = attention(kernels, pass, {
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
      oInput: L.o.inHad ? { vec: L.side, had, spec: L.o.inHad, su: L.at.suO, out: act.xin } : undefined,
    });
    // (5) y = Wo H^T(SU_o att)  (fp16: y = Wo att)
    if (L.o.inHad && !oInDone) {
      blockTransform(kernels, pass, {
        x: act.att,
        vec: L.side,
        had,
        out: act.xin,
        T,
        n: L.o.inDim,
        gated: false,
        spec: L.o.inHad,
        su: L.at.suO,
      });
    }
    L.o.encode(kernels, pass, { x: L.o.inHad ? act.xin : act.att, partStride: 0, out: act.y, rows: T });
    // MLP block. (6) x += SV_o H(y); xin_g = H^T(SU_g rmsnorm(x)), g = gate, up.
    normTransform(kernels, pass, {
      xIn: act.x[cur],
      xOut: act.x[1 - cur],
      vec: L.side,
      had,
      out: act.xin,
      rows: T,
      parts: L.gateUp.separateInputs ? 2 : 1,
      dim,
      eps,
      outPartStride: partStride(L.gateUp, T),
      finish: { y: act.y, sv: L.at.svO, had: L.o.outHad?.[0] },
      norm: { gamma: L.at.ffnGamma },
      su: L.at.suGu,
      inHad: L.gateUp.inHad,
    });
    cur = 1 - cur;
    // (7) y = [Wg xin_g | Wu xin_u]; (8) h = silu(SV_g H(y_g)) * SV_u H(y_u) * SU_down.
    L.gateUp.encode(kernels, pass, { x: act.xin, partStride: partStride(L.gateUp, T), out: act.y, rows: T });
    blockTransform(kernels, pass, {
      x: act.y,
      vec: L.side,
      had,
      out: act.h,
      T,
      n: hiddenDim,
      gated: true,
      spec: L.gateUp.outHad?.[0],
      sv: L.at.svGu,
      su: L.at.suD,
    });
    // (9) y = Wd H^T(h)  (fp16: y = Wd h); the next layer's first step adds SV_d H(y) to x.
    let downIn: GPUBuffer = act.h;
    if (L.down.inHad) {
      blockTransform(kernels, pass, {
        x: act.h,
        vec: L.side,
        had,
        out: act.xin,
        T,
        n: hiddenDim,
        gated: false,
        spec: L.down.inHad,
      });
      downIn = act.xin;
    }
    L.down.encode(kernels, pass, { x: downIn, partStride: 0, out: act.y, rows: T });
    prev = L;
  }
  // The last residual add and the final norm, on the rows that need logits only; then lm_head.
  const rows = b.logitRows?.count ?? T;
  normTransform(kernels, pass, {
    xIn: act.x[cur],
    xOut: act.x[1 - cur],
    vec: w.finalNorm,
    had,
    out: act.lastNormed,
    rows,
    parts: 1,
    dim,
    eps,
    finish: prev ? { y: act.y, vec: prev.side, sv: prev.at.svD, had: prev.down.outHad?.[0] } : undefined,
    writeX: false,
    norm: { gamma: 0 },
    gather: b.logitRows ? { meta: b.logitRows.idx } : undefined,
  });
  w.lmHead.encode(kernels, pass, { x: act.lastNormed, partStride: 0, out: b.logits, rows });
}
