// Host side of the fused QTIP dequantize-matmul: picks the matvec entry point for decode batches (M <= 8)
// and the tiled matmul for prefill, and binds the GPU-layout trellis made by qtip_layout.ts.
import source from "./qtip.wgsl" with { type: "text" };
import { type BufferArg, KernelError, type Kernels, ParamWriter } from "../core.ts";
import type { QtipCode } from "./qtip_ref.ts";

export const QTIP_SOURCE = source;
/** Largest M served by the matvec entry point; larger batches use the tiled matmul. */
export const QTIP_MATVEC_MAX_TOKENS = 8;

const CODES: Record<QtipCode, number> = { hyb: 0, "1mad": 1, "3inst": 2 };
const MATVEC_WG = 256;
const MATVEC_XS = 4096; // f32 words of the matvec x stage (qtip.wgsl XS)
const MATMUL_BO = 64;
const MATMUL_BT = 64;

export interface QtipMatmulOptions {
  x: BufferArg; // f32 (M, xStride) read from xOffset
  trellis: BufferArg; // u32 GPU layout of hatW (m, n): toGpuLayout
  lut?: BufferArg; // f32 (2^tlutBits, 2): the HYB tlut; unused (may be omitted) for 1MAD/3INST
  out: BufferArg; // f32 (M, outStride) written from outOffset
  M: number; // tokens
  m: number; // out features, a multiple of 16
  n: number; // in features, a multiple of 16
  code: QtipCode;
  K: 2 | 3 | 4;
  tlutBits?: number; // HYB LUT index bits, default 9 (at most 10)
  accumulate?: boolean; // out += result instead of out = result
  xOffset?: number;
  outOffset?: number;
  xStride?: number; // default n
  outStride?: number; // default m
}

const dummyLuts = new WeakMap<Kernels, GPUBuffer>();

function dummyLut(k: Kernels): GPUBuffer {
  let b = dummyLuts.get(k);
  if (!b) {
    b = k.device.createBuffer({ label: "qtip-dummy-lut", size: 16, usage: GPUBufferUsage.STORAGE });
    dummyLuts.set(k, b);
  }
  return b;
}

/** out[t, o] (+)= sum_i hatW[o, i] * x[t, i] for t < M, decoding hatW from the trellis on the fly. */
export function qtipMatmul(k: Kernels, pass: GPUComputePassEncoder, o: QtipMatmulOptions): void {
  const tlutBits = o.tlutBits ?? 9;
  if (![2, 3, 4].includes(o.K)) throw new KernelError(`qtipMatmul needs K of 2, 3 or 4, got ${o.K}`);
  if (o.m % 16 !== 0 || o.n % 16 !== 0 || o.m <= 0 || o.n <= 0) {
    throw new KernelError(`qtipMatmul needs m and n positive multiples of 16, got ${o.m}x${o.n}`);
  }
  if (!(o.code in CODES)) throw new KernelError(`qtipMatmul got an unknown code "${o.code}"`);
  if (o.code === "hyb" && !(tlutBits >= 1 && tlutBits <= 10 && o.lut)) {
    throw new KernelError(`qtipMatmul HYB needs a lut and tlutBits in 1..10, got tlutBits=${tlutBits}`);
  }
  if (o.M <= 0) return;
  const constants = {
    CODE: CODES[o.code],
    K: o.K,
    TLUT_BITS: o.code === "hyb" ? tlutBits : 0,
    LUT_SIZE: o.code === "hyb" ? 1 << tlutBits : 1,
  };
  const params = new ParamWriter()
    .u32(o.M).u32(o.m).u32(o.n).u32(o.xStride ?? o.n)
    .u32(o.outStride ?? o.m).u32(o.xOffset ?? 0).u32(o.outOffset ?? 0).u32(o.accumulate ? 1 : 0);
  const args = [o.x, o.trellis, o.lut ?? dummyLut(k), o.out, k.params(params)];
  if (o.M <= QTIP_MATVEC_MAX_TOKENS) {
    // Stage as many tiles of x as fit (a multiple of the WG/8 tile slots), but no more than a tile-row has.
    const slots = MATVEC_WG / 8;
    const fit = Math.floor(MATVEC_XS / (16 * o.M) / slots) * slots;
    const need = Math.ceil(o.n / 16 / slots) * slots;
    const p = k.pipeline("qtip", source, {
      ...constants,
      TOKENS: o.M,
      WG: MATVEC_WG,
      CHUNK_TILES: Math.max(slots, Math.min(fit, need)),
    }, "matvec");
    k.dispatch(pass, p, args, o.m / 16);
  } else {
    const p = k.pipeline("qtip", source, constants, "matmul");
    k.dispatch(pass, p, args, Math.ceil(o.m / MATMUL_BO), Math.ceil(o.M / MATMUL_BT));
  }
}
