// Linear layers as the forward pass sees them: y (+)= W x over a batch of rows. Quantized weights plug
// in by swapping the layer (gpt-fast's quantize.py does the same), never by branching in forward.ts.
import {
  type BufferArg,
  hadamard,
  type Kernels,
  matmulF16,
  type QtipCode,
  qtipMatmul,
} from "../kernels/mod.ts";

/** Scratch activations shared by every QTIP layer: (maxTokens, maxFeatures) f32 each. */
export interface LinearScratch {
  a: GPUBuffer;
  b: GPUBuffer;
  /** Second-pass buffer of Hadamard transforms too long for workgroup memory. */
  had: GPUBuffer;
}

export interface LinearEncodeOptions {
  x: BufferArg; // f32 (rows, inDim)
  out: BufferArg; // f32 (rows, outDim)
  rows: number;
  /** out += W x instead of out = W x (fuses the residual add). */
  accumulate?: boolean;
}

export interface Linear {
  readonly name: string;
  readonly inDim: number;
  readonly outDim: number;
  /** Bytes of weight memory the layer reads per pass. */
  readonly weightBytes: number;
  encode(kernels: Kernels, pass: GPUComputePassEncoder, o: LinearEncodeOptions): void;
  destroy(): void;
}

/** Rows [rowStart, rowStart + rows) of a 2-D f16 tensor in one GPU buffer. A tensor larger than one
 * storage binding (Llama 3.1 405B's 4.2 GB embedding) is held as several parts. */
export interface RowPart {
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
}

/** Dense fp16 weight, Hugging Face layout (outDim, inDim), in one or more row parts. */
export class F16Linear implements Linear {
  readonly weightBytes: number;

  constructor(
    readonly name: string,
    readonly inDim: number,
    readonly outDim: number,
    readonly parts: readonly RowPart[], // f16 rows of (outDim, inDim)
  ) {
    this.weightBytes = inDim * outDim * 2;
  }

  encode(kernels: Kernels, pass: GPUComputePassEncoder, o: LinearEncodeOptions): void {
    for (const part of this.parts) {
      matmulF16(kernels, pass, {
        x: o.x,
        w: part.buffer,
        out: o.out,
        M: o.rows,
        N: part.rows,
        K: this.inDim,
        accumulate: o.accumulate ?? false,
        outOffset: part.rowStart,
        outStride: this.outDim,
      });
    }
  }

  destroy(): void {
    for (const part of this.parts) part.buffer.destroy();
  }
}

export interface QtipWeights {
  trellis: GPUBuffer; // u32, the kernel's layout (kernels/qtip/qtip_layout.ts)
  lut: GPUBuffer; // f32 (2^tlutBits, 2) for HYB; a 16-byte dummy otherwise
  su: GPUBuffer; // f16 (inDim)
  sv: GPUBuffer; // f32 (outDim)
  code: QtipCode;
  bits: 2 | 3 | 4;
  /** Pairs in the swizzled checkpoints' m16n8k16 order (the layout's GPU_LAYOUT_MMA flag). */
  mma: boolean;
  /** 0: plain; 1: input-side Hadamard per chunk of inDim / tpRank; 2: output side per outDim / tpRank. */
  rcp: number;
  tpRank: number;
}

/**
 * QTIP linear (docs/QTIP_FORMAT.md, "The linear layer"): y = SV ⊙ H_m (hatW (H_n^T (SU ⊙ x))), with hatW
 * decoded from the trellis inside the matmul kernel. Three dispatches: input transform, fused
 * dequantize-matmul, output transform (which also applies SV and the optional residual add).
 */
export class QtipLinear implements Linear {
  readonly weightBytes: number;

  constructor(
    readonly name: string,
    readonly inDim: number,
    readonly outDim: number,
    readonly w: QtipWeights,
    readonly scratch: LinearScratch,
  ) {
    this.weightBytes = (inDim * outDim * w.bits) / 8 + inDim * 2 + outDim * 4;
  }

  encode(kernels: Kernels, pass: GPUComputePassEncoder, o: LinearEncodeOptions): void {
    const { a, b, had } = this.scratch;
    hadamard(kernels, pass, {
      x: o.x,
      out: a,
      rows: o.rows,
      n: this.inDim,
      transpose: true,
      pre: this.w.su,
      chunk: this.w.rcp === 1 ? this.inDim / this.w.tpRank : undefined,
      scratch: had,
    });
    qtipMatmul(kernels, pass, {
      x: a,
      trellis: this.w.trellis,
      lut: this.w.lut,
      out: b,
      M: o.rows,
      m: this.outDim,
      n: this.inDim,
      code: this.w.code,
      K: this.w.bits,
      mma: this.w.mma,
    });
    hadamard(kernels, pass, {
      x: b,
      out: o.out,
      rows: o.rows,
      n: this.outDim,
      transpose: false,
      post: this.w.sv,
      accumulate: o.accumulate ?? false,
      chunk: this.w.rcp === 2 ? this.outDim / this.w.tpRank : undefined,
      scratch: had,
    });
  }

  destroy(): void {
    for (const buf of [this.w.trellis, this.w.lut, this.w.su, this.w.sv]) buf.destroy();
  }
}
