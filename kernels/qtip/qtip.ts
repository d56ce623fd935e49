// Host side of the fused QTIP dequantize-matmul: the generated matvec (qtip_mv.ts) for decode batches
// (M <= 16) and the tiled matmul (qtip.wgsl) for prefill, both reading the GPU-layout trellis of
// qtip_layout.ts. Stacked linears (q/k/v, gate/up) with one input row per part run as one dispatch.
import source from "./qtip.wgsl" with { type: "text" };
import reduceSource from "./qtip_reduce.wgsl" with { type: "text" };
import { type BufferArg, grid2d, KernelError, type Kernels, ParamWriter } from "../core.ts";
import type { QtipCode } from "./qtip_ref.ts";
import { QTIP_MV_MAX_TOKENS, qtipMvKey, qtipMvSource, type QtipMvVariant } from "./qtip_mv.ts";

export const QTIP_SOURCE = source;
/** Largest M served by the matvec; larger batches use the tiled matmul. */
export const QTIP_MATVEC_MAX_TOKENS = QTIP_MV_MAX_TOKENS;

const CODES: Record<QtipCode, number> = { hyb: 0, "1mad": 1, "3inst": 2 };
/** The tiled matmul's rows and tokens per block (a workgroup takes one or two blocks of each). */
const MATMUL_BLOCK = 64;
/** Workgroups that fill a 132-SM GPU twice over (two 256-invocation matmul workgroups an SM). */
const MATMUL_FILL = 264;
/** Workgroup memory the matvec may use, at most (bytes): fits lavapipe and leaves room on larger GPUs. */
const MV_SMEM_BYTES = 32768;

export type QtipTune = Partial<Pick<QtipMvVariant, "wg" | "repShift" | "unroll" | "subgroups" | "rows">> & {
  /** The tiled matmul's block (64 rb rows x 64 tb tokens, 1 or 2 each) and how many runs its columns
   * split into (summed by a second dispatch); default from the grid (qtipTile). */
  tile?: QtipTile;
};

export interface QtipMatmulOptions {
  x: BufferArg; // f32 (M, xStride) read from xOffset
  trellis: BufferArg; // u32 GPU layout of hatW (m, n): toGpuLayout (or fuseGpuLayouts for stacked parts)
  lut?: BufferArg; // f32 (2^tlutBits, 2): the HYB tlut; unused (may be omitted) for 1MAD/3INST
  out: BufferArg; // f32 (M, outStride) written from outOffset
  M: number; // tokens
  m: number; // out features (all parts), a multiple of 16
  n: number; // in features, a multiple of 16
  code: QtipCode;
  K: 2 | 3 | 4;
  /** The layout's pair order (its header flag GPU_LAYOUT_MMA): true for swizzled checkpoints. */
  mma: boolean;
  tlutBits?: number; // HYB LUT index bits, default 9 (at most 10)
  accumulate?: boolean; // out += result instead of out = result
  xOffset?: number;
  outOffset?: number;
  xStride?: number; // default n
  outStride?: number; // default m
  /**
   * Stacked linears: rows from starts[i] on (multiples of 16, increasing, at most two) read the x of part
   * i + 1, which begins partStride elements after the previous part's, and its LUT, lutStride (2^tlutBits,
   * the default) entries after the previous one's. Default: one part.
   */
  parts?: { starts: number[]; partStride: number; lutStride?: number };
  /** Matvec tuning (benchmarks sweep these); defaults from the shape. */
  tune?: QtipTune;
  /** "tiled": the tiled matmul whatever M; "matvec": the matvec whatever M, in 16-token dispatches when
   * x is vec4-aligned (tests and benchmarks); default ("auto"): the matvec below QTIP_TILED_MIN_TOKENS
   * tokens (in 16-token dispatches; up to 16 on a CPU adapter), the tiled matmul from there. */
  path?: "auto" | "tiled" | "matvec";
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

/**
 * Smallest batch the tiled matmul takes on a GPU (half that for tall matrices, m >= 2n); from 17 tokens to
 * there, 16-token matvec dispatches. On the H100 (call 16) the matvec was faster at 32-64 tokens everywhere
 * and at 128 for 4096 x 4096 and 4096 x 11008; the tiled matmul faster at 128 for 11008 and 22016 x 4096 and
 * at 512 and beyond everywhere (up to 1.9x).
 */
export const QTIP_TILED_MIN_TOKENS = 256;

function tiledFrom(m: number, n: number): number {
  return m >= 2 * n ? QTIP_TILED_MIN_TOKENS / 2 : QTIP_TILED_MIN_TOKENS;
}

/** Whether the matvec takes this call: a decode-sized batch and vec4-aligned rows of x. */
export function qtipUsesMatvec(
  o: Pick<QtipMatmulOptions, "M" | "n" | "xStride" | "xOffset" | "parts">,
): boolean {
  const stride = o.xStride ?? o.n, off = o.xOffset ?? 0, ps = o.parts?.partStride ?? 0;
  return o.M <= QTIP_MV_MAX_TOKENS && stride % 4 === 0 && off % 4 === 0 && ps % 4 === 0;
}

/**
 * The matvec variant for a call: the workgroup grows while the GPU has room for more threads (about 2048
 * per SM on a 132-SM GPU) and the tile-row has tiles for the slots; the HYB LUT gets defaultCopies() copies
 * (none for the computed codes); without subgroups the reduction's workgroup memory caps the workgroup.
 */
export function qtipMvVariant(k: Kernels, o: QtipMatmulOptions): QtipMvVariant {
  const rows = o.tune?.rows ?? 1;
  const groups = o.m / 16 / rows, tilesPerRow = o.n / 16; // workgroups, tiles a tile-row
  if (!Number.isInteger(groups) || (o.parts?.starts ?? []).some((s) => (s / 16) % rows !== 0)) {
    throw new KernelError(
      `qtip matvec: ${rows} tile-rows a workgroup need m (${o.m}) and every part start ` +
        `(${o.parts?.starts ?? []}) to be multiples of ${16 * rows}`,
    );
  }
  const budget = Math.min(MV_SMEM_BYTES, k.device.limits.maxComputeWorkgroupStorageSize) / 4;
  const tlutBits = o.tlutBits ?? 9;
  const sgSize = k.features.subgroupSize;
  const subgroups = k.features.subgroups && sgSize >= 8 && sgSize <= 128 && (o.tune?.subgroups ?? true);
  const maxWg = Math.min(
    k.device.limits.maxComputeInvocationsPerWorkgroup,
    k.device.limits.maxComputeWorkgroupSizeX,
  );
  let wg = o.tune?.wg;
  if (wg === undefined) {
    wg = 256;
    while (wg < 1024 && groups * wg < 132 * 1536 && wg / 8 < tilesPerRow / 4) wg *= 2;
    while (wg > 64 && wg / 8 > tilesPerRow) wg /= 2;
    while (wg > 64 && wg > maxWg) wg /= 2;
  } else if (wg > maxWg) {
    throw new KernelError(`qtip matvec: a workgroup of ${wg} exceeds the device's ${maxWg} invocations`);
  }
  // Reduction words: 2 * M per thread (the tile-rows reduce one after the other).
  const red = (w: number) => 2 * o.M * w;
  while (wg > 64 && red(wg) > budget) wg /= 2;
  if (red(wg) > budget) {
    throw new KernelError(`qtip matvec: no workgroup fits ${budget * 4} bytes at M=${o.M}`);
  }
  const maxRep = Math.max(0, Math.floor(Math.log2(budget / (1 << tlutBits))));
  const tall = o.m >= 2 * o.n;
  return {
    code: o.code,
    K: o.K,
    mma: o.mma,
    tokens: o.M,
    wg,
    // LUT copies: one LUT read a pair, at random entries, puts a warp's 32 reads in ~3.5 banks' worth of
    // conflicts with one copy and ~2 with 16 (lane l reads copy l % 16). The H100 sweeps of calls 9-14 found
    // more copies slower (4: 0-13 %, 16: 1.5-2.4x), but their fill stored every entry's copies in the same
    // order on every lane: a 16-way conflict on each store at 16 copies. The fill now rotates the copies
    // (conflict-free), and 16 copies (defaultCopies) are the default on GPUs until the H100 has measured both
    // (`TRELLIS_LEGACY_KERNELS=mv-copies` keeps one copy); a CPU adapter has no banks, so one copy there.
    // One tile per trip for square and wide matrices, two for tall ones (more tile-rows than the GPU holds
    // at once), from the same sweeps.
    repShift: o.code === "hyb" ? Math.min(o.tune?.repShift ?? defaultCopies(k, tlutBits), maxRep) : 0,
    tlutBits,
    subgroups,
    subgroupSize: subgroups ? sgSize : 0,
    unroll: o.tune?.unroll ?? (tall ? 2 : 1),
    rows,
  };
}

/**
 * log2 of the default HYB LUT copies (see qtipMvVariant): 16, or fewer where they would take more than two
 * thirds of the device's workgroup memory (16 x 2 KiB fit the H100's 48 KiB; a 32 KiB GPU gets 8 and keeps
 * room for a second workgroup).
 */
export function defaultCopies(k: Kernels, tlutBits = 9): number {
  if (k.features.cpuAdapter || k.features.legacy.has("mv-copies")) return 0;
  const room = (k.device.limits.maxComputeWorkgroupStorageSize * 2) / 3 / (4 << tlutBits);
  return Math.max(0, Math.min(4, Math.floor(Math.log2(room))));
}

export interface QtipTile {
  rb: 1 | 2;
  tb: 1 | 2;
  splits?: number;
  /** Columns per step: 16 (default) or 32 (twice the workgroup memory). */
  bk?: 16 | 32;
  /** Double-buffered steps (one barrier a step, twice the workgroup memory; only where two copies fit):
   * off by default until the H100 shows it faster (bench kernels --tile-sweep runs both). */
  db?: boolean;
}

/** Fewest columns a split of the tiled matmul's reduction takes. */
const MATMUL_MIN_SPAN = 512;

/**
 * The tiled matmul's block for M tokens of m rows (n columns): the largest (most FMAs per workgroup-memory
 * load) whose grid gives about two workgroups to every SM, except that a block of 128 tokens is passed over
 * when its last wave would be mostly empty (the H100, calls 16-18: at 512 tokens 11008 x 4096 ran 344
 * 128 x 128 blocks at 16.6 TFLOP/s and 688 128 x 64 ones at 18.3; at 128 tokens 22016 x 4096 ran 172
 * 128 x 128 blocks slower than 344 128 x 64 ones, 1369 against 1274 us); two token blocks only beyond 64
 * tokens; the smallest block's columns split into up to 4 runs while its grid is below the fill.
 */
export function qtipTile(M: number, m: number, n: number): QtipTile {
  const groups = (t: QtipTile) => Math.ceil(m / (MATMUL_BLOCK * t.rb)) * Math.ceil(M / (MATMUL_BLOCK * t.tb));
  const tiles: QtipTile[] = [{ rb: 2, tb: 2 }, { rb: 2, tb: 1 }, { rb: 1, tb: 2 }];
  for (const t of tiles) {
    if (t.tb === 2 && M <= MATMUL_BLOCK) continue;
    const g = groups(t);
    if (g < MATMUL_FILL - 8) continue;
    if (t.tb === 2 && (Math.ceil(g / MATMUL_FILL) * MATMUL_FILL) / g > 1.4) continue;
    return t;
  }
  const t: QtipTile = { rb: 1, tb: 1 };
  let splits = 1;
  while (splits < 4 && groups(t) * splits * 2 <= MATMUL_FILL && n / (splits * 2) >= MATMUL_MIN_SPAN) {
    splits *= 2;
  }
  return splits > 1 ? { ...t, splits } : t;
}

const partials = new WeakMap<Kernels, GPUBuffer>();

/** The split outputs' buffer, grown as needed; a replaced one is left alive for steps that captured it. */
function partialBuffer(k: Kernels, bytes: number): GPUBuffer {
  let b = partials.get(k);
  if (!b || b.size < bytes) {
    b = k.device.createBuffer({
      label: "qtip-partials",
      size: Math.max(bytes, 2 * (b?.size ?? 0)),
      usage: GPUBufferUsage.STORAGE,
    });
    partials.set(k, b);
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
  const starts = o.parts?.starts ?? [];
  if (starts.length > 2 || starts.some((s, i) => s % 16 !== 0 || s <= (starts[i - 1] ?? 0) || s >= o.m)) {
    throw new KernelError(
      `qtipMatmul parts must start at increasing multiples of 16 inside 0..${o.m}, at most two, got ${starts}`,
    );
  }
  if (o.M <= 0) return;
  const lut = o.lut ?? dummyLut(k);
  if (
    qtipUsesMatvec({ ...o, M: Math.min(o.M, QTIP_MV_MAX_TOKENS) }) && o.M > QTIP_MV_MAX_TOKENS &&
    (o.path === "matvec" || (o.path !== "tiled" && !k.features.cpuAdapter && o.M < tiledFrom(o.m, o.n)))
  ) {
    // A few tokens beyond the matvec's 16 run as 16-token matvecs, each decoding the weights again.
    const xStride = o.xStride ?? o.n, outStride = o.outStride ?? o.m;
    for (let t0 = 0; t0 < o.M; t0 += QTIP_MV_MAX_TOKENS) {
      qtipMatmul(k, pass, {
        ...o,
        M: Math.min(QTIP_MV_MAX_TOKENS, o.M - t0),
        xOffset: (o.xOffset ?? 0) + t0 * xStride,
        outOffset: (o.outOffset ?? 0) + t0 * outStride,
      });
    }
    return;
  }
  if (qtipUsesMatvec(o) && o.path !== "tiled") {
    const variant = qtipMvVariant(k, o);
    const p = k.pipeline(qtipMvKey(variant), () => qtipMvSource(variant), {}, "main");
    const tileRows = o.m / 16;
    const params = new ParamWriter()
      .u32(tileRows).u32(o.n / 16).u32((o.xStride ?? o.n) / 4).u32((o.xOffset ?? 0) / 4)
      .u32(o.outStride ?? o.m).u32(o.outOffset ?? 0).u32(o.accumulate ? 1 : 0)
      .u32((starts[0] ?? o.m) / 16).u32((starts[1] ?? o.m) / 16).u32((o.parts?.partStride ?? 0) / 4)
      .u32(o.parts?.lutStride ?? 1 << tlutBits).u32(0);
    const [gx, gy] = grid2d(k, tileRows / (variant.rows ?? 1));
    k.dispatch(pass, p, [o.x, o.trellis, lut, o.out, k.params(params)], gx, gy);
    return;
  }
  // The tiled matmul, in blocks of 64 rb rows x 64 tb tokens: stacked parts in one dispatch when each
  // starts at a block boundary (Llama's do), else one dispatch a part.
  const { rb, tb, splits = 1, bk = 16, db } = o.tune?.tile ?? qtipTile(o.M, o.m, o.n);
  // Workgroup memory of one copy of the step's weights and x, and of the LUT.
  const stepBytes = bk * MATMUL_BLOCK * (rb + tb) * 4, lutBytes = o.code === "hyb" ? 8 << tlutBits : 8;
  const double = (db ?? false) && 2 * stepBytes + lutBytes <= k.device.limits.maxComputeWorkgroupStorageSize;
  const constants = {
    CODE: CODES[o.code],
    K: o.K,
    TLUT_BITS: o.code === "hyb" ? tlutBits : 0,
    LUT_SIZE: o.code === "hyb" ? 1 << tlutBits : 1,
    RB: rb,
    TB: tb,
    BKS: bk / 16,
    DB: double ? 1 : 0,
  };
  const p = k.pipeline("qtip", source, constants, "matmul");
  const block = MATMUL_BLOCK * rb;
  const together = starts.every((s) => s % block === 0);
  const bounds = together ? [0, o.m] : [0, ...starts, o.m];
  const xStride = o.xStride ?? o.n, partStride = o.parts?.partStride ?? 0;
  const lutStride = o.parts?.lutStride ?? 1 << tlutBits;
  const none = 0xffffffff;
  const kSpan = Math.ceil(o.n / bk / splits) * bk;
  for (let g = 0; g + 1 < bounds.length; g++) {
    const m = bounds[g + 1] - bounds[g];
    const xOffset = (o.xOffset ?? 0) + (together ? 0 : g * partStride);
    const aligned = xStride % 4 === 0 && xOffset % 4 === 0 && partStride % 4 === 0 ? 1 : 0;
    const outOffset = (o.outOffset ?? 0) + bounds[g];
    const split = splits > 1 ? partialBuffer(k, splits * o.M * m * 4) : null;
    const params = new ParamWriter()
      .u32(o.M).u32(m).u32(o.n).u32(xStride)
      .u32(split ? m : o.outStride ?? o.m).u32(xOffset)
      .u32(split ? 0 : outOffset).u32(!split && o.accumulate ? 1 : 0)
      .u32(bounds[g] / 16).u32(together ? 0 : g * lutStride).u32(aligned)
      .u32(together && starts[0] ? starts[0] / 16 : none).u32(together && starts[1] ? starts[1] / 16 : none)
      .u32(partStride).u32(lutStride).u32(kSpan).u32(split ? o.M * m : 0).u32(0).u32(0).u32(0);
    const args = [o.x, o.trellis, lut, split ?? o.out, k.params(params), o.x];
    const gx = Math.ceil(m / block), gy = Math.ceil(o.M / (MATMUL_BLOCK * tb));
    k.dispatch(pass, p, args, gx, gy, Math.ceil(o.n / kSpan));
    if (split) {
      const reduce = k.pipeline("qtip_reduce", reduceSource);
      const rp = new ParamWriter()
        .u32(o.M).u32(m).u32(Math.ceil(o.n / kSpan)).u32(o.outStride ?? o.m)
        .u32(outOffset).u32(o.accumulate ? 1 : 0).u32(0).u32(0);
      k.dispatch(pass, reduce, [split, o.out, k.params(rp)], Math.ceil(m / 256), o.M);
    }
  }
}
