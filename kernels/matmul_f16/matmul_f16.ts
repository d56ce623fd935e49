// Host side of the fp16-weight linear layer (every projection and lm_head): a streaming matvec for
// decode batches of up to 8 tokens, a tiled matmul for prefill.
import source from "./matmul_f16.wgsl" with { type: "text" };
import { type BufferArg, grid2d, KernelError, type Kernels, ParamWriter } from "../core.ts";

export const MATMUL_F16_SOURCE = source;

/** Most tokens one matvec dispatch serves. */
export const MATVEC_MAX_TOKENS = 8;
/** Largest M served by repeated matvecs (8 tokens each); larger M goes to the tiled path. */
export const MATVEC_CHUNKED_MAX_TOKENS = 64;

// Matvec geometry; must agree with the override defaults' meaning in matmul_f16.wgsl.
const ROWS_PER_TEAM = 4; // `R` in the shader

/**
 * Lanes per row (TPR) and teams of a matvec workgroup. Up to 16384 rows a GPU takes 64 lanes x 2 teams:
 * twice the threads for the same rows, where 32 x 4 left the GPU short of loads in flight (H100, call 22:
 * 4096 x 4096 31.2 against 43.8 us, 4096 x 14336 90.0 against 147.0, 6144 x 4096 40.5 against 52.2);
 * longer matrices (gate/up, lm_head) fill it either way and keep 32 x 4 (128256 x 4096: 491.8 against 537.1
 * us at 64 x 2). A CPU adapter keeps 32 x 4; legacy "f16-teams" too, for measuring.
 */
function matvecShape(k: Kernels, N: number, K: number): { TPR: number; TEAMS: number; UNROLL: number } {
  const wide = !k.features.cpuAdapter && !k.features.legacy.has("f16-teams") && N <= 16384 && K >= 512;
  // Two K steps a trip on GPUs: call 22 put lm_head (fp16, 8B: 1 GB a token) at 59-67 % of streaming read
  // and 4096 x 4096 at 33 %, short of loads in flight; not yet measured on the H100 (legacy "f16-unroll"
  // keeps one step). A CPU adapter keeps one.
  const UNROLL = k.features.cpuAdapter || k.features.legacy.has("f16-unroll") ? 1 : 2;
  return wide ? { TPR: 64, TEAMS: 2, UNROLL } : { TPR: 32, TEAMS: 4, UNROLL };
}
const TILE = 64; // BM = BN in the shader

export interface MatmulF16Options {
  x: BufferArg; // f32 (M, xStride) from xOffset
  w: BufferArg; // f16 (N, K) row-major, bound as u32 pairs
  out: BufferArg; // f32 (M, outStride) from outOffset; not the same buffer as x
  M: number;
  N: number;
  /** Input features; must be a multiple of 8. */
  K: number;
  /** out += x W^T instead of out = x W^T (fuses a residual add). */
  accumulate?: boolean;
  xStride?: number; // elements, multiple of 4; default K
  xOffset?: number; // elements, multiple of 4; default 0
  /** First weight element, a multiple of 8; default 0. */
  wOffset?: number;
  outStride?: number; // elements; default N
  outOffset?: number; // elements; default 0
}

/** out[t, o] (+)= sum_i x[t, i] * W[o, i] for t < M, o < N. */
export function matmulF16(k: Kernels, pass: GPUComputePassEncoder, o: MatmulF16Options): void {
  const xStride = o.xStride ?? o.K, xOffset = o.xOffset ?? 0, wOffset = o.wOffset ?? 0;
  if (o.K % 8 !== 0 || xStride % 4 !== 0 || xOffset % 4 !== 0 || wOffset % 8 !== 0) {
    throw new KernelError(
      `Unsupported matmulF16 layout: expected K and wOffset multiples of 8, xStride and xOffset multiples ` +
        `of 4, got K=${o.K} wOffset=${wOffset} xStride=${xStride} xOffset=${xOffset}`,
    );
  }
  if (o.M === 0 || o.N === 0) return;
  const tilesN = Math.ceil(o.N / TILE);
  // Params layout (bytes): 0 M, 4 N, 8 K, 12 xStride, 16 xOffset, 20 wOffset (units of 8 halves),
  // 24 outStride, 28 outOffset, 32 accumulate, 36 tilesN, 40..48 pad.
  const outStride = o.outStride ?? o.N, outOffset = o.outOffset ?? 0;
  // Params of the rows [t0, t0 + m) of x and out.
  const params = (t0: number, m: number) =>
    k.params(
      new ParamWriter()
        .u32(m).u32(o.N).u32(o.K).u32(xStride).u32(xOffset + t0 * xStride).u32(wOffset / 8)
        .u32(outStride).u32(outOffset + t0 * outStride).u32(o.accumulate ? 1 : 0).u32(tilesN).u32(0).u32(0),
    );
  const chunked = k.features.cpuAdapter ? MATVEC_MAX_TOKENS : MATVEC_CHUNKED_MAX_TOKENS;
  if (o.M <= chunked) {
    // Up to 8 tokens per matvec; beyond that one matvec per 8 tokens, each reading W again: at decode
    // batch sizes that is far faster than the tiled path, which has too few tiles to fill the GPU.
    const { TPR, TEAMS, UNROLL } = matvecShape(k, o.N, o.K);
    const [gx, gy] = grid2d(k, Math.ceil(o.N / (TEAMS * ROWS_PER_TEAM)));
    for (let t0 = 0; t0 < o.M; t0 += MATVEC_MAX_TOKENS) {
      const m = Math.min(MATVEC_MAX_TOKENS, o.M - t0);
      const p = k.pipeline("matmul_f16", source, { TOKENS: m, TPR, TEAMS, UNROLL }, "matvec");
      k.dispatch(pass, p, [o.x, o.w, o.out, params(t0, m)], gx, gy);
    }
  } else {
    const p = k.pipeline("matmul_f16", source, {}, "tiled");
    const [gx, gy] = grid2d(k, tilesN * Math.ceil(o.M / TILE));
    k.dispatch(pass, p, [o.x, o.w, o.out, params(0, o.M)], gx, gy);
  }
}
