// Host side of the indexed copies: token ids between per-slot state and step rows, and f32 rows.
import source from "./gather.wgsl" with { type: "text" };
import { type BufferArg, type Kernels, ParamWriter } from "../core.ts";

export const GATHER_SOURCE = source;

export interface IndexedCopyOptions {
  src: BufferArg;
  idx: BufferArg; // u32 (count)
  dst: BufferArg;
  count: number;
  srcOffset?: number; // elements
  dstOffset?: number; // elements
}

function params(count: number, srcOffset: number, dstOffset: number, width: number, rowStride: number) {
  return new ParamWriter().u32(count).u32(srcOffset).u32(dstOffset).u32(width).u32(rowStride).u32(0).u32(0)
    .u32(0);
}

/** dst[dstOffset + i] = src[srcOffset + idx[i]] over u32 (or raw f32 bits). */
export function gatherU32(k: Kernels, pass: GPUComputePassEncoder, o: IndexedCopyOptions): void {
  const p = k.pipeline("gather", source, {}, "gather_u32");
  const w = params(o.count, o.srcOffset ?? 0, o.dstOffset ?? 0, 0, 0);
  k.dispatch(pass, p, [o.src, o.idx, o.dst, k.params(w)], Math.ceil(o.count / 64));
}

/** dst[dstOffset + idx[i]] = src[srcOffset + i] over u32. */
export function scatterU32(k: Kernels, pass: GPUComputePassEncoder, o: IndexedCopyOptions): void {
  const p = k.pipeline("gather", source, {}, "scatter_u32");
  const w = params(o.count, o.srcOffset ?? 0, o.dstOffset ?? 0, 0, 0);
  k.dispatch(pass, p, [o.src, o.idx, o.dst, k.params(w)], Math.ceil(o.count / 64));
}

/** out[r, :width] = x[idx[r] * rowStride + srcOffset ..] for f32 rows. */
export function gatherRows(
  k: Kernels,
  pass: GPUComputePassEncoder,
  o: IndexedCopyOptions & { width: number; rowStride: number },
): void {
  const p = k.pipeline("gather", source, {}, "gather_rows");
  const w = params(o.count, o.srcOffset ?? 0, o.dstOffset ?? 0, o.width, o.rowStride);
  k.dispatch(pass, p, [o.src, o.idx, o.dst, k.params(w)], o.count);
}
