// Host side of top logprobs (OpenAI's `top_logprobs`): logits rows in, the k most likely tokens of each
// row and their raw logprobs out, best first. One workgroup per row; see top_logprobs.wgsl.
import source from "./top_logprobs.wgsl" with { type: "text" };
import { type BufferArg, grid2d, KernelError, type Kernels, ParamWriter } from "../core.ts";

export const TOP_LOGPROBS_SOURCE = source;

/** The largest k `topLogprobs` accepts (OpenAI's limit for `top_logprobs`). */
export const TOP_LOGPROBS_MAX = 20;

/** Id written for entries past the vocabulary (k > vocab); their logprob is -Infinity. */
export const TOP_LOGPROBS_NO_TOKEN = 0xffffffff;

export interface TopLogprobsOptions {
  logits: BufferArg; // f32 (rows, logitsStride) from logitsOffset
  logitsStride?: number; // elements, default vocab
  logitsOffset?: number; // elements, default 0
  rows: number;
  vocab: number;
  k: number; // 1..TOP_LOGPROBS_MAX
  // Per row r: k pairs (id u32, logprob f32 bitcast to u32) at u32 index outOffset + (r * k + i) * 2
  // (+0 id, +1 logprob), best first; ties go to the lower id.
  out: BufferArg;
  outOffset?: number; // u32 elements, default 0
}

const WG = 256;

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min || v > 0xffffffff) {
    throw new KernelError(`Cannot run topLogprobs: expected ${name} to be an integer >= ${min}, got ${v}`);
  }
}

/** Bytes a binding can reach: its size, or the rest of the buffer after its offset. */
function bindingBytes(b: BufferArg): number {
  if (b instanceof GPUBuffer) return b.size;
  return b.size ?? b.buffer.size - (b.offset ?? 0);
}

/** Records one dispatch writing the top `k` (id, logprob) pairs of each of `rows` logits rows. */
export function topLogprobs(k: Kernels, pass: GPUComputePassEncoder, o: TopLogprobsOptions): void {
  checkCount("rows", o.rows, 0);
  checkCount("vocab", o.vocab, 1);
  if (!Number.isInteger(o.k) || o.k < 1 || o.k > TOP_LOGPROBS_MAX) {
    throw new KernelError(`Cannot run topLogprobs: expected k in 1..${TOP_LOGPROBS_MAX}, got ${o.k}`);
  }
  const stride = o.logitsStride ?? o.vocab;
  checkCount("logitsStride", stride, 1);
  if (stride < o.vocab) {
    throw new KernelError(
      `Cannot run topLogprobs: expected logitsStride >= vocab ${o.vocab}, got ${stride}`,
    );
  }
  const logitsOffset = o.logitsOffset ?? 0;
  const outOffset = o.outOffset ?? 0;
  checkCount("logitsOffset", logitsOffset, 0);
  checkCount("outOffset", outOffset, 0);
  if (o.rows === 0) return;
  const logitsNeed = (logitsOffset + (o.rows - 1) * stride + o.vocab) * 4;
  if (logitsNeed > bindingBytes(o.logits)) {
    throw new KernelError(
      `Cannot run topLogprobs: logits must hold ${logitsNeed} bytes for ${o.rows} rows of stride ` +
        `${stride} from offset ${logitsOffset}, but the binding has ${bindingBytes(o.logits)}`,
    );
  }
  const outNeed = (outOffset + o.rows * o.k * 2) * 4;
  if (outNeed > bindingBytes(o.out)) {
    throw new KernelError(
      `Cannot run topLogprobs: out must hold ${outNeed} bytes for ${o.rows} rows of k ${o.k} pairs ` +
        `from offset ${outOffset}, but the binding has ${bindingBytes(o.out)}`,
    );
  }
  const p = k.pipeline("top_logprobs", source, { WG });
  const params = new ParamWriter()
    .u32(o.rows).u32(o.vocab).u32(stride).u32(logitsOffset)
    .u32(o.k).u32(outOffset).u32(0).u32(0);
  const [x, y] = grid2d(k, o.rows);
  k.dispatch(pass, p, [o.logits, o.out, k.params(params)], x, y);
}

/** Splits `topLogprobs` output (read back as u32) into ids and logprobs per row. */
export function unpackTopLogprobs(
  data: Uint32Array,
  rows: number,
  k: number,
  offset = 0,
): { ids: number[]; logprobs: number[] }[] {
  const f = new Float32Array(data.buffer, data.byteOffset, data.length);
  const out: { ids: number[]; logprobs: number[] }[] = [];
  for (let r = 0; r < rows; r++) {
    const ids: number[] = [];
    const logprobs: number[] = [];
    for (let i = 0; i < k; i++) {
      const at = offset + (r * k + i) * 2;
      ids.push(data[at]);
      logprobs.push(f[at + 1]);
    }
    out.push({ ids, logprobs });
  }
  return out;
}
