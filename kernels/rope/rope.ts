// Rotary position embedding: the host-built cos/sin table (matching Hugging Face transformers' f32
// arithmetic, llama3 frequency scaling included) and the in-place rotation of q and k after the QKV
// projection.
import source from "./rope.wgsl" with { type: "text" };
import { type BufferArg, grid2d, KernelError, type Kernels, ParamWriter } from "../core.ts";

export const ROPE_SOURCE = source;

const WG = 256;
const f32 = Math.fround;

/** config.json's rope_scaling; `type` is its rope_type (or legacy `type`). */
export interface RopeScaling {
  type: string;
  factor?: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
}

export interface RopeTableOptions {
  headDim: number;
  /** rope_theta, e.g. 10000 (Llama 2) or 500000 (Llama 3.1). */
  theta: number;
  /** Rows of the table; positions at or past it are clamped by the kernel. */
  maxPos: number;
  /** Absent or null: rope_type "default". */
  scaling?: RopeScaling | null;
}

const SUPPORTED_ROPE_TYPES = ["default", "llama3"];

/**
 * Inverse frequencies (headDim / 2) exactly as transformers computes them in float32:
 * `_compute_default_rope_parameters` then, for "llama3", `_compute_llama3_parameters`
 * (src/transformers/modeling_rope_utils.py). Each torch op on a float32 tensor rounds to f32, and
 * Python scalars meeting a float32 tensor are cast to float32 first, hence a Math.fround per op.
 */
export function ropeInvFreq(o: Omit<RopeTableOptions, "maxPos">): Float32Array {
  const type = o.scaling?.type ?? "default";
  if (!SUPPORTED_ROPE_TYPES.includes(type)) {
    throw new KernelError(
      `Unsupported rope_type "${type}": expected one of ${
        SUPPORTED_ROPE_TYPES.map((t) => `"${t}"`).join(", ")
      }`,
    );
  }
  if (!(o.headDim > 0 && o.headDim % 2 === 0)) {
    throw new KernelError(`Invalid RoPE headDim: expected a positive even number, got ${o.headDim}`);
  }
  const half = o.headDim / 2;
  const inv = new Float32Array(half);
  const base = f32(o.theta);
  for (let i = 0; i < half; i++) {
    // 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    const exponent = f32((2 * i) / o.headDim);
    inv[i] = f32(1 / f32(Math.pow(base, exponent)));
  }
  if (type === "llama3") applyLlama3(inv, o.scaling!);
  return inv;
}

function applyLlama3(inv: Float32Array, s: RopeScaling): void {
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: old } = s;
  if (
    factor === undefined || lowFreqFactor === undefined || highFreqFactor === undefined || old === undefined
  ) {
    throw new KernelError(
      `Incomplete llama3 rope_scaling: expected factor, lowFreqFactor, highFreqFactor and ` +
        `originalMaxPositionEmbeddings, got ${JSON.stringify(s)}`,
    );
  }
  const lowFreqWavelen = f32(old / lowFreqFactor); // Python floats, cast to f32 by the comparison
  const highFreqWavelen = f32(old / highFreqFactor);
  const twoPi = f32(2 * Math.PI);
  const fac = f32(factor), low = f32(lowFreqFactor), span = f32(highFreqFactor - lowFreqFactor);
  for (let i = 0; i < inv.length; i++) {
    const wavelen = f32(twoPi / inv[i]);
    // torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    const scaled = wavelen > lowFreqWavelen ? f32(inv[i] / fac) : inv[i];
    const medium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    if (medium) {
      // smooth = (old / wavelen - low) / (high - low);  (1 - smooth) * inv / factor + smooth * inv
      const smooth = f32(f32(f32(f32(old) / wavelen) - low) / span);
      inv[i] = f32(f32(f32(f32(1 - smooth) * scaled) / fac) + f32(smooth * scaled));
    } else {
      inv[i] = scaled;
    }
  }
}

/**
 * The (maxPos, headDim / 2, 2) f32 table of (cos, sin) the kernel reads. Matches transformers'
 * LlamaRotaryEmbedding.forward: freqs = float(pos) * inv_freq in f32, then cos and sin rounded to f32
 * (attention_scaling is 1 for both supported types).
 */
export function buildRopeTable(o: RopeTableOptions): Float32Array {
  const inv = ropeInvFreq(o);
  const half = inv.length;
  const table = new Float32Array(o.maxPos * half * 2);
  for (let pos = 0; pos < o.maxPos; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = f32(f32(pos) * inv[i]);
      table[(pos * half + i) * 2] = f32(Math.cos(angle));
      table[(pos * half + i) * 2 + 1] = f32(Math.sin(angle));
    }
  }
  return table;
}

export interface RopeOptions {
  /** f32 (T, qStride), heads at qOffset + t * qStride + h * headDim. */
  q: BufferArg;
  /** f32 (T, kStride); may be the very same buffer object as q (fused QKV: one dispatch). */
  k: BufferArg;
  positions: BufferArg; // u32 (positionsOffset + T)
  cosSin: BufferArg; // f32 (maxPos, headDim / 2, 2) from buildRopeTable
  T: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  maxPos: number;
  qStride?: number; // elements; default nHeads * headDim
  qOffset?: number; // elements; default 0
  kStride?: number; // default nKvHeads * headDim
  kOffset?: number;
  positionsOffset?: number;
}

/** Rotates q and k in place. Positions past maxPos - 1 use row maxPos - 1 of the table. */
export function rope(k: Kernels, pass: GPUComputePassEncoder, o: RopeOptions): void {
  const qStride = o.qStride ?? o.nHeads * o.headDim;
  const kStride = o.kStride ?? o.nKvHeads * o.headDim;
  const qOffset = o.qOffset ?? 0, kOffset = o.kOffset ?? 0;
  if (o.q === o.k) {
    encode(k, pass, o, o.q, [o.nHeads, o.nHeads + o.nKvHeads, qStride, qOffset, kStride, kOffset]);
  } else {
    // Two writable bindings of one buffer in one dispatch are not allowed, so separate tensors take
    // a dispatch each.
    encode(k, pass, o, o.q, [o.nHeads, o.nHeads, qStride, qOffset, 0, 0]);
    encode(k, pass, o, o.k, [o.nKvHeads, o.nKvHeads, kStride, kOffset, 0, 0]);
  }
}

function encode(
  k: Kernels,
  pass: GPUComputePassEncoder,
  o: RopeOptions,
  x: BufferArg,
  heads: [number, number, number, number, number, number],
): void {
  if (o.headDim % 2 !== 0) {
    throw new KernelError(`Invalid RoPE headDim: expected an even number, got ${o.headDim}`);
  }
  const half = o.headDim / 2;
  const [nHeadsA, nHeadsTotal, strideA, offsetA, strideB, offsetB] = heads;
  const p = k.pipeline("rope", source, { WG });
  // Params layout (bytes): 0 T, 4 half, 8 nHeadsA, 12 nHeadsTotal, 16 strideA, 20 offsetA, 24 strideB,
  // 28 offsetB, 32 posOffset, 36 maxPos, 40..48 pad.
  const params = new ParamWriter()
    .u32(o.T).u32(half).u32(nHeadsA).u32(nHeadsTotal)
    .u32(strideA).u32(offsetA).u32(strideB).u32(offsetB)
    .u32(o.positionsOffset ?? 0).u32(o.maxPos).u32(0).u32(0);
  const [gx, gy] = grid2d(k, Math.ceil((o.T * nHeadsTotal * half) / WG));
  k.dispatch(pass, p, [o.positions, o.cosSin, x, k.params(params)], gx, gy);
}
