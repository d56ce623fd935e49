// Host side of the SwiGLU gate of the feed-forward block: silu(gate) * up, f32 in and out.
import source from "./silu_mul.wgsl" with { type: "text" };
import { type BufferArg, grid2d, type Kernels, ParamWriter } from "../core.ts";

export const SILU_MUL_SOURCE = source;

const WG = 256;

export interface SiluMulOptions {
  gate: BufferArg; // f32 (T, gateStride)
  up: BufferArg; // f32 (T, upStride); may be the same buffer as gate
  out: BufferArg; // f32 (T, outStride); must not alias gate or up
  T: number;
  /** Columns per row (hiddenDim). */
  n: number;
  gateStride?: number; // elements; default n
  gateOffset?: number; // elements; default 0
  upStride?: number;
  upOffset?: number;
  outStride?: number;
  outOffset?: number;
}

/** out[t, i] = silu(gate[t, i]) * up[t, i]. */
export function siluMul(k: Kernels, pass: GPUComputePassEncoder, o: SiluMulOptions): void {
  const p = k.pipeline("silu_mul", source, { WG });
  // Params layout (bytes): 0 T, 4 n, 8 gateStride, 12 gateOffset, 16 upStride, 20 upOffset,
  // 24 outStride, 28 outOffset.
  const params = new ParamWriter()
    .u32(o.T).u32(o.n)
    .u32(o.gateStride ?? o.n).u32(o.gateOffset ?? 0)
    .u32(o.upStride ?? o.n).u32(o.upOffset ?? 0)
    .u32(o.outStride ?? o.n).u32(o.outOffset ?? 0);
  const [x, y] = grid2d(k, Math.ceil((o.T * o.n) / WG));
  k.dispatch(pass, p, [o.gate, o.up, o.out, k.params(params)], x, y);
}
