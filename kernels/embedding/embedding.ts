// Host side of the embedding lookup: token ids in, f32 rows out; the first step of the forward pass.
import source from "./embedding.wgsl" with { type: "text" };
import { type BufferArg, grid2d, type Kernels, ParamWriter } from "../core.ts";

export const EMBEDDING_SOURCE = source;

const WG = 256;

export interface EmbeddingOptions {
  tokens: BufferArg; // u32 (tokensOffset + T)
  table: BufferArg; // f16 (vocab, dim) bound as u32 pairs
  out: BufferArg; // f32 (T, outStride)
  T: number;
  dim: number;
  vocab: number;
  /** First id to read from `tokens`, in elements. */
  tokensOffset?: number;
  /** Id of the table's first row (a part of a table split over buffers); default 0. */
  idBase?: number;
  /** Leave rows of ids outside this part untouched instead of zeroing them. */
  keepOutside?: boolean;
  /** Row stride of `out` in elements; defaults to dim. */
  outStride?: number;
  /** First element of `out` written, in elements. */
  outOffset?: number;
}

/** out[t, :] = table[tokens[t], :] as f32. Ids outside [0, vocab) write a row of zeros. */
export function embedding(k: Kernels, pass: GPUComputePassEncoder, o: EmbeddingOptions): void {
  const p = k.pipeline("embedding", source, { WG });
  // Params layout (bytes): 0 T, 4 dim, 8 vocab, 12 tokensOffset, 16 outStride, 20 outOffset, 24 idBase,
  // 28 keepOutside.
  const params = new ParamWriter()
    .u32(o.T).u32(o.dim).u32(o.vocab).u32(o.tokensOffset ?? 0)
    .u32(o.outStride ?? o.dim).u32(o.outOffset ?? 0).u32(o.idBase ?? 0).u32(o.keepOutside ? 1 : 0);
  const [x, y] = grid2d(k, Math.ceil((o.T * o.dim) / WG));
  k.dispatch(pass, p, [o.tokens, o.table, o.out, k.params(params)], x, y);
}
