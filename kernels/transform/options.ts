// The options of the transform encoders (transform.ts, and vector.ts's register plans of two of them), in a
// module of their own so that both can import them without importing each other.
import type { BufferArg } from "../core.ts";

/** What an encoder reads of a HadTable (transform.ts): the buffer of every had_K's sign bits. */
export interface HadSigns {
  readonly buffer: GPUBuffer;
}

/** One transform as the kernels read it (HadSpec in transform_lib.wgsl). */
export interface HadSpec {
  K: number;
  p: number;
  groups: number;
  /** Word offset of row 0 of had_K (or had_K^T) in the table. */
  rows: number;
  words: number;
  scale: number;
}

export interface NormTransformOptions {
  xIn: BufferArg; // f32 (rows, xStride): the residual stream
  xOut: BufferArg; // f32 (rows, xStride): the new residual (another buffer than xIn)
  vec: BufferArg; // f32 side vectors
  had: HadSigns; // a HadTable
  out: BufferArg; // f32: part g, row t at outOffset + g * outPartStride + t * outStride
  rows: number; // output rows
  parts: number;
  dim: number;
  eps: number;
  xStride?: number; // default dim
  xInOffset?: number;
  xOutOffset?: number;
  outStride?: number; // default dim
  outOffset?: number;
  outPartStride?: number; // default rows * outStride
  /** Finish the previous linear: add post(y) to the residual (and write it to xOut from part 0). */
  finish?: {
    y: BufferArg; // f32 (rows, yStride) from yOffset
    yStride?: number;
    yOffset?: number;
    vec?: BufferArg; // the side vectors holding SV (default: vec)
    sv?: number; // offset of SV in finish.vec
    had?: HadSpec | null; // output-side transform of dim
  };
  /** Write the residual to xOut (default: when finishing). */
  writeX?: boolean;
  norm?: { gamma: number }; // offset of the norm weight in vec
  su?: number; // offset of part 0's SU in vec (part g at + g * dim)
  inHad?: HadSpec | null; // input-side transform of dim
  /** Source rows from meta[idxOffset + t] (the logit rows of a prefill); residual not written. */
  gather?: { meta: BufferArg; idxOffset?: number };
}

export interface RopeKvOptions {
  y: BufferArg; // f32 (T, yStride) from yOffset: [q | k | v]
  vec: BufferArg;
  had: HadSigns; // a HadTable
  rope: BufferArg; // f32 (ropeMaxPos, headDim / 2, 2): buildRopeTable
  tokenSeq: BufferArg; // u32 (T): block-table row of each token
  tokenPos: BufferArg; // u32 (T): position of each token
  blockTable: BufferArg;
  qOut: BufferArg; // f32 (T, qStride) from qOffset
  kCache: BufferArg;
  vCache: BufferArg;
  T: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  blockSize: number;
  maxBlocksPerSeq: number;
  ropeMaxPos: number;
  yStride?: number; // default (nHeads + 2 nKvHeads) headDim
  yOffset?: number;
  qStride?: number; // default nHeads * headDim
  qOffset?: number;
  sv?: number; // offset of [SV_q | SV_k | SV_v] in vec
  hq?: HadSpec | null; // output-side transforms (QTIP); none for a plain model
  hkv?: HadSpec | null;
}
