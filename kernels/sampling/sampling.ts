// Host side of GPU sampling: logits rows in, one token id (and its raw logprob) per row out, so decode
// never reads logits back. One workgroup per row; the per-row settings live in a storage buffer.
import source from "./sampling.wgsl" with { type: "text" };
import { type BufferArg, KernelError, type Kernels, ParamWriter } from "../core.ts";

export const SAMPLING_SOURCE = source;

/**
 * One row's settings. Packed by `packSamplingParams` as the WGSL `RowParams` struct, 32 bytes per row:
 *
 * | byte | field       | type | meaning                                                        |
 * | ---- | ----------- | ---- | -------------------------------------------------------------- |
 * | 0    | temperature | f32  | 0 = greedy argmax                                              |
 * | 4    | topK        | u32  | 0 = off (values >= vocab are off too)                          |
 * | 8    | topP        | f32  | 1 = off                                                        |
 * | 12   | minP        | f32  | 0 = off                                                        |
 * | 16   | seedLo      | u32  | low word of the seed taken mod 2^64 (two's complement)         |
 * | 20   | seedHi      | u32  | high word                                                      |
 * | 24   | counter     | u32  | sampling step of the sequence (tokens generated so far)        |
 * | 28   | outIndex    | u32  | tokens[outIndex] (and logprobs[outIndex]) receive the result   |
 *
 * Penalties and logit_bias are applied to the logits before this kernel runs (kernels/penalties/).
 */
export interface SamplingRow {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  /** Any integer; reduced mod 2^64 into two u32 words. */
  seed: number | bigint;
  counter: number;
  outIndex: number;
}

export const SAMPLING_ROW_BYTES = 32;

/** The seed reduced mod 2^64 as [low word, high word]. */
export function seedWords(seed: number | bigint): [number, number] {
  if (typeof seed === "number" && !Number.isSafeInteger(seed)) {
    throw new KernelError(`Cannot use sampling seed ${seed}: expected a safe integer or a bigint`);
  }
  const s = BigInt.asUintN(64, BigInt(seed));
  return [Number(s & 0xffffffffn), Number(s >> 32n)];
}

/** Packs rows as an array of WGSL `RowParams` (see `SamplingRow` for the layout). */
export function packSamplingParams(rows: readonly SamplingRow[]): ArrayBuffer {
  const buf = new ArrayBuffer(rows.length * SAMPLING_ROW_BYTES);
  const v = new DataView(buf);
  rows.forEach((r, i) => {
    const o = i * SAMPLING_ROW_BYTES;
    const [seedLo, seedHi] = seedWords(r.seed);
    v.setFloat32(o, r.temperature, true);
    v.setUint32(o + 4, Math.min(Math.max(0, Math.floor(r.topK)), 0xffffffff), true);
    v.setFloat32(o + 8, r.topP, true);
    v.setFloat32(o + 12, r.minP, true);
    v.setUint32(o + 16, seedLo, true);
    v.setUint32(o + 20, seedHi, true);
    v.setUint32(o + 24, r.counter >>> 0, true);
    v.setUint32(o + 28, r.outIndex >>> 0, true);
  });
  return buf;
}

export interface SampleOptions {
  logits: BufferArg; // f32 (rows, logitsStride), row r from logitsOffset + r * logitsStride
  logitsStride?: number; // elements; default vocab
  logitsOffset?: number; // elements
  params: BufferArg; // RowParams (paramsOffset + rows), 32 bytes each
  paramsOffset?: number; // rows; lets one buffer hold several steps without offset alignment
  rows: number;
  vocab: number;
  tokens: BufferArg; // u32, written at each row's outIndex
  logprobs?: BufferArg; // f32, written at each row's outIndex when given
}

/**
 * Threads per row: 1024 on a GPU, where the row's passes are a latency chain of load trips (a greedy row's
 * one pass over 32,000 logits is 31 trips at 256 threads, about 8 at 1024); 256 on a CPU adapter, where
 * more invocations only cost.
 */
function threads(k: Kernels): number {
  return k.features.cpuAdapter ? 256 : Math.min(1024, k.device.limits.maxComputeInvocationsPerWorkgroup);
}
const spareLogprobs = new WeakMap<GPUDevice, GPUBuffer>();

/** Records one dispatch that samples `rows` rows of logits into `tokens` (and `logprobs`). */
export function sample(k: Kernels, pass: GPUComputePassEncoder, o: SampleOptions): void {
  if (!(o.vocab >= 1)) throw new KernelError(`Cannot sample: expected vocab >= 1, got ${o.vocab}`);
  const stride = o.logitsStride ?? o.vocab;
  if (stride < o.vocab) {
    throw new KernelError(`Cannot sample: logitsStride ${stride} is smaller than vocab ${o.vocab}`);
  }
  // Legacy "sampling": 256 threads everywhere, for measuring.
  const WG = k.features.legacy.has("sampling") ? 256 : threads(k);
  const p = k.pipeline("sampling", source, { WG });
  let logprobs = o.logprobs;
  if (!logprobs) {
    // The binding must exist; rows skip the logprob work when wantLogprobs is 0.
    logprobs = spareLogprobs.get(k.device);
    if (!logprobs) {
      logprobs = k.device.createBuffer({
        label: "sampling-no-logprobs",
        size: 16,
        usage: GPUBufferUsage.STORAGE,
      });
      spareLogprobs.set(k.device, logprobs);
    }
  }
  const params = new ParamWriter()
    .u32(o.rows).u32(o.vocab).u32(stride).u32(o.logitsOffset ?? 0)
    .u32(o.paramsOffset ?? 0).u32(o.logprobs ? 1 : 0).u32(0).u32(0);
  k.dispatch(pass, p, [o.logits, o.params, o.tokens, logprobs, k.params(params)], o.rows);
}
