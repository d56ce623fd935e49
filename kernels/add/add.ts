// Host side of the elementwise kernels of the residual stream: add, add in place, and a shader copy
// (copyBufferToBuffer streams at about a quarter of the bandwidth on the target GPU).
import addSource from "./add.wgsl" with { type: "text" };
import addInPlaceSource from "./add_in_place.wgsl" with { type: "text" };
import copySource from "./copy.wgsl" with { type: "text" };
import { type BufferArg, grid2d, type Kernels, ParamWriter } from "../core.ts";

export const ADD_SOURCE = addSource;
export const ADD_IN_PLACE_SOURCE = addInPlaceSource;
export const COPY_SOURCE = copySource;

const WG = 256;

export interface AddOptions {
  a: BufferArg; // f32 (aOffset + n)
  b: BufferArg; // f32 (bOffset + n)
  out: BufferArg; // f32 (outOffset + n); a different buffer from a and b (else use addInPlace)
  n: number;
  aOffset?: number; // elements
  bOffset?: number;
  outOffset?: number;
}

/** out[i] = a[i] + b[i]. */
export function add(k: Kernels, pass: GPUComputePassEncoder, o: AddOptions): void {
  const p = k.pipeline("add", addSource, { WG });
  // Params layout (bytes): 0 n, 4 aOffset, 8 bOffset, 12 outOffset.
  const params = new ParamWriter().u32(o.n).u32(o.aOffset ?? 0).u32(o.bOffset ?? 0).u32(o.outOffset ?? 0);
  const [x, y] = grid2d(k, Math.ceil(o.n / WG));
  k.dispatch(pass, p, [o.a, o.b, o.out, k.params(params)], x, y);
}

export interface AddInPlaceOptions {
  acc: BufferArg; // f32 (accOffset + n), read and written
  x: BufferArg; // f32 (xOffset + n); a different buffer from acc
  n: number;
  accOffset?: number; // elements
  xOffset?: number;
}

/** acc[i] += x[i] (residual add). */
export function addInPlace(k: Kernels, pass: GPUComputePassEncoder, o: AddInPlaceOptions): void {
  const p = k.pipeline("add_in_place", addInPlaceSource, { WG });
  // Params layout (bytes): 0 n, 4 xOffset, 8 accOffset, 12 pad.
  const params = new ParamWriter().u32(o.n).u32(o.xOffset ?? 0).u32(o.accOffset ?? 0).u32(0);
  const [x, y] = grid2d(k, Math.ceil(o.n / WG));
  k.dispatch(pass, p, [o.x, o.acc, k.params(params)], x, y);
}

export interface CopyOptions {
  src: BufferArg; // 32-bit words (srcOffset + n)
  dst: BufferArg; // 32-bit words (dstOffset + n); a different buffer from src
  /** Number of 32-bit words (f32 elements) to copy. */
  n: number;
  srcOffset?: number; // words
  dstOffset?: number;
}

/** dst[dstOffset + i] = src[srcOffset + i] for i < n, as raw 32-bit words. */
export function copy(k: Kernels, pass: GPUComputePassEncoder, o: CopyOptions): void {
  const p = k.pipeline("copy", copySource, { WG });
  // Params layout (bytes): 0 n, 4 srcOffset, 8 dstOffset, 12 pad.
  const params = new ParamWriter().u32(o.n).u32(o.srcOffset ?? 0).u32(o.dstOffset ?? 0).u32(0);
  const [x, y] = grid2d(k, Math.ceil(o.n / WG));
  k.dispatch(pass, p, [o.src, o.dst, k.params(params)], x, y);
}
