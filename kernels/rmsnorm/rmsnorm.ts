// Host side of RMSNorm: one workgroup per row, f32 in and out, f16 weight.
import source from "./rmsnorm.wgsl" with { type: "text" };
import { type BufferArg, type Kernels, ParamWriter } from "../core.ts";

export const RMSNORM_SOURCE = source;

export interface RmsnormOptions {
  x: BufferArg; // f32 (rows, xStride)
  weight: BufferArg; // f16 (dim)
  out: BufferArg; // f32 (rows, outStride)
  rows: number;
  dim: number;
  eps: number;
  xStride?: number;
  outStride?: number;
  xOffset?: number;
  outOffset?: number;
}

export function rmsnorm(k: Kernels, pass: GPUComputePassEncoder, o: RmsnormOptions): void {
  const p = k.pipeline("rmsnorm", source, { WG: 256 });
  const params = new ParamWriter()
    .u32(o.rows).u32(o.dim).u32(o.xStride ?? o.dim).u32(o.outStride ?? o.dim)
    .u32(o.xOffset ?? 0).u32(o.outOffset ?? 0).f32(o.eps).u32(0);
  k.dispatch(pass, p, [o.x, o.weight, o.out, k.params(params)], o.rows);
}
