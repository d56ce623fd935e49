// Linear layers as the forward pass sees them. Linears that read the same input run as one stack (q/k/v,
// gate/up; o and down are stacks of one): the stack's matmul writes the parts side by side in one output row,
// y = [W_0 x_0 | W_1 x_1 | ...]. Quantized weights plug in by swapping the stack (gpt-fast's quantize.py does
// the same), never by branching in forward.ts: a QTIP stack says which Hadamard transforms its inputs and
// outputs need, and the fused steps around it (kernels/transform) apply them.
import {
  type BufferArg,
  type HadSpec,
  type Kernels,
  matmulF16,
  type QtipCode,
  qtipMatmul,
} from "../kernels/mod.ts";

/** Rows [rowStart, rowStart + rows) of a 2-D f16 tensor in one GPU buffer. A tensor larger than one
 * storage binding (Llama 3.1 405B's 4.2 GB embedding) is held as several parts. */
export interface RowPart {
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
}

export interface StackEncodeOptions {
  /** f32 inputs: part g, row t at g * partStride + t * inDim (partStride 0: one input for every part). */
  x: BufferArg;
  partStride: number;
  out: BufferArg; // f32 (rows, outDim): the parts' outputs side by side
  rows: number;
}

export interface LinearStack {
  readonly name: string;
  readonly inDim: number;
  readonly outDims: readonly number[];
  /** Sum of outDims: the width of an output row. */
  readonly outDim: number;
  /** Bytes of weight memory one pass reads. */
  readonly weightBytes: number;
  /** Each part reads its own input (QTIP: H^T(SU_g x) differs per part) or all read one (fp16). */
  readonly separateInputs: boolean;
  /** The input-side transform every part's input needs (QTIP), or null. */
  readonly inHad: HadSpec | null;
  /** The output-side transform of each part (QTIP), or null. */
  readonly outHad: readonly HadSpec[] | null;
  encode(kernels: Kernels, pass: GPUComputePassEncoder, o: StackEncodeOptions): void;
  destroy(): void;
}

/** Dense fp16 weights, Hugging Face layout (outDim, inDim) per part, each in one or more row parts. */
export class F16Stack implements LinearStack {
  readonly outDim: number;
  readonly weightBytes: number;
  readonly separateInputs = false;
  readonly inHad = null;
  readonly outHad = null;

  constructor(
    readonly name: string,
    readonly inDim: number,
    readonly outDims: readonly number[],
    readonly parts: readonly (readonly RowPart[])[],
  ) {
    this.outDim = outDims.reduce((a, b) => a + b, 0);
    this.weightBytes = inDim * this.outDim * 2;
  }

  encode(kernels: Kernels, pass: GPUComputePassEncoder, o: StackEncodeOptions): void {
    let col = 0;
    this.parts.forEach((rowParts, g) => {
      for (const part of rowParts) {
        matmulF16(kernels, pass, {
          x: o.x,
          w: part.buffer,
          out: o.out,
          M: o.rows,
          N: part.rows,
          K: this.inDim,
          outOffset: col + part.rowStart,
          outStride: this.outDim,
        });
      }
      col += this.outDims[g];
    });
  }

  destroy(): void {
    for (const rowParts of this.parts) for (const part of rowParts) part.buffer.destroy();
  }
}

/** Consecutive parts of one bitrate: their trellises stacked along m, their LUTs side by side. */
export interface QtipSegment {
  firstPart: number;
  parts: number;
  bits: 2 | 3 | 4;
  /** Pairs in the swizzled checkpoints' m16n8k16 order (the layout's GPU_LAYOUT_MMA flag). */
  mma: boolean;
  /** u32 GPU layout of the parts' hatW stacked along m (kernels/qtip/qtip_layout.ts). */
  trellis: GPUBuffer;
  /** f32 (parts, 2^tlutBits, 2): each part's HYB tlut; a 16-byte dummy for 1MAD/3INST. */
  lut: GPUBuffer;
}

export interface QtipStackWeights {
  code: QtipCode;
  tlutBits: number;
  /** Usually one; a v_proj at its own bitrate makes q/k/v two. */
  segments: QtipSegment[];
}

/**
 * QTIP linears (docs/QTIP_FORMAT.md, "The linear layer"): y_g = SV_g * H_m (hatW_g (H_n^T (SU_g * x))). This stack runs the middle,
 * hatW decoded from the trellis inside the matmul (one dispatch per segment); the transforms, SU and SV
 * belong to the fused steps before and after it (inHad, outHad, and the layer's side vectors).
 */
export class QtipStack implements LinearStack {
  readonly outDim: number;
  readonly weightBytes: number;
  readonly separateInputs = true;

  constructor(
    readonly name: string,
    readonly inDim: number,
    readonly outDims: readonly number[],
    readonly w: QtipStackWeights,
    readonly inHad: HadSpec,
    readonly outHad: readonly HadSpec[],
  ) {
    this.outDim = outDims.reduce((a, b) => a + b, 0);
    let trellisBits = 0;
    for (const s of w.segments) {
      for (let g = s.firstPart; g < s.firstPart + s.parts; g++) trellisBits += inDim * outDims[g] * s.bits;
    }
    // Trellis bits, plus SU (f16) and SV (f32) per part.
    this.weightBytes = trellisBits / 8 + outDims.length * inDim * 2 + this.outDim * 4;
  }

  encode(kernels: Kernels, pass: GPUComputePassEncoder, o: StackEncodeOptions): void {
    for (const s of this.w.segments) {
      let col = 0;
      for (let g = 0; g < s.firstPart; g++) col += this.outDims[g];
      const starts: number[] = [];
      let m = 0;
      for (let g = s.firstPart; g < s.firstPart + s.parts; g++) {
        if (g > s.firstPart) starts.push(m);
        m += this.outDims[g];
      }
      qtipMatmul(kernels, pass, {
        x: o.x,
        xOffset: s.firstPart * o.partStride,
        trellis: s.trellis,
        lut: s.lut,
        out: o.out,
        outOffset: col,
        outStride: this.outDim,
        M: o.rows,
        m,
        n: this.inDim,
        code: this.w.code,
        K: s.bits,
        mma: s.mma,
        tlutBits: this.w.tlutBits,
        parts: starts.length
          ? { starts, partStride: o.partStride, lutStride: 1 << this.w.tlutBits }
          : undefined,
      });
    }
  }

  destroy(): void {
    for (const s of this.w.segments) {
      s.trellis.destroy();
      s.lut.destroy();
    }
  }
}
