// Host side of QTIP's randomized Hadamard transform (both sides of every QTIP linear layer):
//   out = post * (H^(T) (pre * x)) * scale  [+ out],  H = (had_K kron H_{chunk/K}) / sqrt(chunk) per chunk.
//
// Design: a chunk (the transform size; n unless the checkpoint splits it per tensor-parallel shard) that
// fits in workgroup memory as f32 takes ONE dispatch, one workgroup per (row, chunk): load pre * x, FWHT
// each of the K blocks in workgroup memory, mix the blocks with had_K and store with post/scale/accumulate.
// A longer chunk (p = chunk / K beyond the tile) takes TWO dispatches through `scratch` (rows, n): first
// an FWHT over contiguous segments of p2 <= tile elements (with pre), then tiles of (K * p / p2) rows by C
// columns, strided p2 apart, that finish the butterflies across segments and do the had_K mix. This works
// because H_p = H_{p/p2} kron H_{p2} for Sylvester matrices, so the two factors act on separate index bits.
//
// had_K tables: uploaded once per (device, K) on first use and kept in a module-level cache; each holds
// had_K then had_K^T as sign bits (bit i of row j set when entry [j][i] is -1), ceil(K / 32) words a row.
import source from "./hadamard.wgsl" with { type: "text" };
import { type BufferArg, grid2d, KernelError, type Kernels, ParamWriter } from "../core.ts";
import { hadamardFactor, hadKMatrix } from "./had_tables.ts";

export const HADAMARD_SOURCE = source;

const WG = 256;
/** Tiles of a second pass aim at this many f32 slots (8 KiB): enough columns to coalesce, small enough
 * to keep several workgroups per SM. */
const PASS2_TARGET = 2048;
/** Workgroup arrays are sized in steps of this many f32, so few pipeline variants exist. */
const TILE_STEP = 512;

export interface HadamardOptions {
  x: BufferArg; // f32 (rows, xStride), must not alias `out`
  out: BufferArg; // f32 (rows, outStride)
  rows: number;
  n: number; // row length
  /** Use had_K^T, i.e. H^T (QTIP's input side, matmul_hadUt_cuda). Default false (output side). */
  transpose?: boolean;
  /** Transform size; each of n / chunk consecutive chunks is transformed alone (QTIP rcp). Default n. */
  chunk?: number;
  pre?: BufferArg; // f16 (n) as u32 pairs, multiplies x before the transform (SU)
  post?: BufferArg; // f32 (n), multiplies the result (SV)
  scale?: number; // multiplies the result; default 1
  accumulate?: boolean; // out += result instead of out = result
  /** f32 (rows, n), needed when hadamardScratchBytes() > 0 (chunks too long for workgroup memory). */
  scratch?: BufferArg;
  xStride?: number; // default n
  xOffset?: number; // elements; default 0
  outStride?: number; // default n
  outOffset?: number;
  preOffset?: number; // elements of pre; default 0
  postOffset?: number;
  /** Caps a workgroup tile at this many f32 (tests use it to force two passes); default the device's. */
  tileLimit?: number;
}

/** How a transform of `chunk` elements is split into dispatches. */
export interface HadamardPlan {
  passes: 1 | 2;
  K: number;
  pow2: number; // chunk / K
  /** Segment length of the first pass (two passes only). */
  p2: number;
  /** Columns per second-pass tile (two passes only). */
  cols: number;
}

function log2(v: number): number {
  return 31 - Math.clz32(v);
}

function deviceTileLimit(k: Kernels): number {
  return Math.floor(k.device.limits.maxComputeWorkgroupStorageSize / 4);
}

/** The dispatch plan for transforms of size `chunk` with tiles of at most `tileLimit` f32. */
export function hadamardPlan(chunk: number, tileLimit: number): HadamardPlan {
  const { K, pow2 } = hadamardFactor(chunk);
  if (K !== 1 && K % 4 !== 0) {
    throw new KernelError(`Cannot mix a Hadamard factor of order ${K}: expected 1 or a multiple of 4`);
  }
  if (chunk <= tileLimit) return { passes: 1, K, pow2, p2: pow2, cols: 1 };
  const p2 = Math.min(pow2, 1 << log2(tileLimit));
  const tileRows = K * (pow2 / p2);
  if (tileRows > tileLimit) {
    throw new KernelError(
      `Cannot fit a Hadamard transform of ${chunk} in tiles of ${tileLimit} f32: needs ${tileRows} rows per tile`,
    );
  }
  const cols = Math.min(p2, 1 << log2(Math.max(1, Math.floor(Math.min(tileLimit, PASS2_TARGET) / tileRows))));
  return { passes: 2, K, pow2, p2, cols };
}

/** Bytes of `scratch` that hadamard() needs for these options: 0 when one dispatch suffices. */
export function hadamardScratchBytes(
  k: Kernels,
  o: { rows: number; n: number; chunk?: number; tileLimit?: number },
): number {
  const plan = hadamardPlan(o.chunk ?? o.n, o.tileLimit ?? deviceTileLimit(k));
  return plan.passes === 1 ? 0 : o.rows * o.n * 4;
}

interface DeviceResources {
  dummy: GPUBuffer;
  had: Map<number, GPUBuffer>;
}

const resources = new WeakMap<GPUDevice, DeviceResources>();

function deviceResources(device: GPUDevice): DeviceResources {
  let r = resources.get(device);
  if (!r) {
    const dummy = device.createBuffer({ label: "hadamard-unused", size: 16, usage: GPUBufferUsage.STORAGE });
    r = { dummy, had: new Map() };
    resources.set(device, r);
  }
  return r;
}

/** had_K then had_K^T as sign bits, ceil(K / 32) u32 words per row. */
export function hadSignBits(K: number): Uint32Array {
  const h = hadKMatrix(K);
  const words = Math.ceil(K / 32);
  const bits = new Uint32Array(2 * K * words);
  for (let j = 0; j < K; j++) {
    for (let i = 0; i < K; i++) {
      if (h[j * K + i] < 0) bits[j * words + (i >> 5)] |= 1 << (i & 31);
      if (h[i * K + j] < 0) bits[(K + j) * words + (i >> 5)] |= 1 << (i & 31);
    }
  }
  return bits;
}

function hadBuffer(device: GPUDevice, K: number): GPUBuffer {
  const r = deviceResources(device);
  let buf = r.had.get(K);
  if (!buf) {
    const bits = hadSignBits(K);
    buf = device.createBuffer({
      label: `hadamard-had${K}`,
      size: Math.max(16, Math.ceil(bits.byteLength / 16) * 16),
      usage: GPUBufferUsage.STORAGE,
      mappedAtCreation: true,
    });
    new Uint32Array(buf.getMappedRange(), 0, bits.length).set(bits);
    buf.unmap();
    r.had.set(K, buf);
  }
  return buf;
}

interface Pass {
  x: BufferArg;
  pre: BufferArg;
  post: BufferArg;
  out: BufferArg;
  rows: number;
  chunk: number;
  chunksPerRow: number;
  tilesPerChunk: number;
  K: number;
  p1: number;
  cols: number;
  rStride: number;
  xStride: number;
  xOffset: number;
  outStride: number;
  outOffset: number;
  preOffset: number;
  postOffset: number;
  transpose: boolean;
  mult: number;
  flags: number;
  tile: number;
}

function encodePass(k: Kernels, pass: GPUComputePassEncoder, s: Pass, deviceTile: number): void {
  const tile = Math.min(deviceTile, Math.ceil(s.tile / TILE_STEP) * TILE_STEP);
  const p = k.pipeline("hadamard", source, { WG, TILE: tile });
  const words = Math.ceil(s.K / 32);
  const units = s.rows * s.chunksPerRow * s.tilesPerChunk;
  // Params: 18 x 4-byte fields in WGSL struct order (units at 0 ... flags at 68).
  const params = new ParamWriter()
    .u32(units).u32(s.tilesPerChunk).u32(s.chunksPerRow).u32(s.chunk)
    .u32(s.K).u32(log2(s.p1)).u32(log2(s.cols)).u32(s.rStride)
    .u32(s.xStride).u32(s.xOffset).u32(s.outStride).u32(s.outOffset)
    .u32(s.preOffset).u32(s.postOffset).u32(s.transpose ? s.K * words : 0).u32(words)
    .f32(s.mult).u32(s.flags);
  const had = hadBuffer(k.device, s.K);
  const [gx, gy] = grid2d(k, units);
  k.dispatch(pass, p, [s.x, s.pre, s.post, had, s.out, k.params(params)], gx, gy);
}

/** Records the transform: one dispatch when a chunk fits in workgroup memory, else two (see above). */
export function hadamard(k: Kernels, pass: GPUComputePassEncoder, o: HadamardOptions): void {
  const n = o.n;
  const chunk = o.chunk ?? n;
  if (!Number.isInteger(chunk) || chunk <= 0 || n % chunk !== 0) {
    throw new KernelError(
      `Cannot split Hadamard rows of ${n} into chunks of ${chunk}: expected a divisor of n`,
    );
  }
  const deviceTile = deviceTileLimit(k);
  const plan = hadamardPlan(chunk, Math.min(o.tileLimit ?? deviceTile, deviceTile));
  const r = deviceResources(k.device);
  const flags = (o.pre ? 1 : 0) | (o.post ? 2 : 0) | (o.accumulate ? 4 : 0);
  const mult = (o.scale ?? 1) / Math.sqrt(chunk);
  const common = {
    rows: o.rows,
    pre: o.pre ?? r.dummy,
    post: o.post ?? r.dummy,
    preOffset: o.preOffset ?? 0,
    postOffset: o.postOffset ?? 0,
    transpose: o.transpose ?? false,
  };
  const x = { x: o.x, xStride: o.xStride ?? n, xOffset: o.xOffset ?? 0 };
  const out = { out: o.out, outStride: o.outStride ?? n, outOffset: o.outOffset ?? 0 };
  if (plan.passes === 1) {
    encodePass(k, pass, {
      ...common,
      ...x,
      ...out,
      chunk,
      chunksPerRow: n / chunk,
      tilesPerChunk: 1,
      K: plan.K,
      p1: plan.pow2,
      cols: 1,
      rStride: 1,
      mult,
      flags,
      tile: chunk,
    }, deviceTile);
    return;
  }
  if (!o.scratch) {
    throw new KernelError(
      `Cannot transform chunks of ${chunk} in one pass: pass a scratch buffer of ${o.rows * n * 4} bytes`,
    );
  }
  const { K, pow2, p2, cols } = plan;
  // Pass 1: FWHT of every contiguous segment of p2 (K = 1), pre applied, unnormalized, into scratch.
  encodePass(k, pass, {
    ...common,
    ...x,
    out: o.scratch,
    outStride: n,
    outOffset: 0,
    chunk: p2,
    chunksPerRow: n / p2,
    tilesPerChunk: 1,
    K: 1,
    p1: p2,
    cols: 1,
    rStride: 1,
    mult: 1,
    flags: flags & 1,
    tile: p2,
  }, deviceTile);
  // Pass 2: butterflies across segments and the had_K mix, on (K * pow2 / p2, cols) tiles.
  encodePass(k, pass, {
    ...common,
    ...out,
    x: o.scratch,
    xStride: n,
    xOffset: 0,
    chunk,
    chunksPerRow: n / chunk,
    tilesPerChunk: p2 / cols,
    K,
    p1: pow2 / p2,
    cols,
    rStride: p2,
    mult,
    flags: flags & 6,
    tile: K * (pow2 / p2) * cols,
  }, deviceTile);
}
