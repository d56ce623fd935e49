// Host side of paged attention: kvWrite puts each token's K/V rows into the paged f16 cache, then
// attention() runs either the split-K decode kernel (+ reduce) or the causal prefill kernel over it.
// Layouts are described on the options below.
import kvWriteSource from "./kv_write.wgsl" with { type: "text" };
import decodeSource from "./attention_decode.wgsl" with { type: "text" };
import reduceSource from "./attention_reduce.wgsl" with { type: "text" };
import prefillSource from "./attention_prefill.wgsl" with { type: "text" };
import { type BufferArg, grid2d, KernelError, type Kernels, ParamWriter } from "../core.ts";

export const ATTENTION_SOURCES = {
  kv_write: kvWriteSource,
  attention_decode: decodeSource,
  attention_reduce: reduceSource,
  attention_prefill: prefillSource,
} as const;

/** Positions per split-K partition of the decode kernel. */
export const DECODE_PARTITION_SIZE = 256;
/** attention() uses the decode kernel when no sequence has more query tokens than this. */
export const DECODE_MAX_QUERY_TOKENS = 4;

/** The paged cache of one layer and the batch's metadata. */
export interface PagedKvOptions {
  kCache: BufferArg; // f16 pairs as u32 (numBlocks, nKvHeads, blockSize, headDim / 2)
  vCache: BufferArg; // same layout as kCache
  tokenSeq: BufferArg; // u32 (T): row of each token's sequence in blockTable
  tokenPos: BufferArg; // u32 (T): absolute position of each token
  blockTable: BufferArg; // u32 (numSeqRows, maxBlocksPerSeq): physical block ids
  T: number;
  nKvHeads: number;
  headDim: number; // even, <= 256
  blockSize: number;
  maxBlocksPerSeq: number;
}

export interface KvWriteOptions extends PagedKvOptions {
  k: BufferArg; // f32 (T, kStride) from kOffset: kv head g at columns [g * headDim, (g + 1) * headDim)
  v: BufferArg; // f32 (T, vStride) from vOffset, same head layout
  kStride?: number; // default nKvHeads * headDim
  kOffset?: number; // elements; default 0
  vStride?: number;
  vOffset?: number;
}

export interface AttentionOptions extends PagedKvOptions {
  q: BufferArg; // f32 (T, qStride) from qOffset: head h at columns [h * headDim, (h + 1) * headDim)
  out: BufferArg; // f32 (T, outStride) from outOffset, same head layout
  nHeads: number; // a multiple of nKvHeads; head h reads kv head h / (nHeads / nKvHeads)
  qStride?: number; // default nHeads * headDim
  qOffset?: number;
  outStride?: number; // default nHeads * headDim
  outOffset?: number;
  scale?: number; // default 1 / sqrt(headDim)
  /** Workgroup memory to plan tiles for; defaults to the device limit (tests lower it). */
  maxWorkgroupStorage?: number;
}

export interface AttentionDecodeOptions extends AttentionOptions {
  maxContext: number; // >= max(tokenPos) + 1
  /** f32 split-K partials, attentionScratchBytes() bytes; unused when maxContext <= partitionSize. */
  scratch?: BufferArg;
  partitionSize?: number; // default decodePartitionSize(T x kv heads x head chunks, maxContext)
}

export interface AttentionChoiceOptions extends AttentionDecodeOptions {
  maxQueryTokens: number; // most tokens any one sequence has in this batch
}

export interface ScratchSizeOptions {
  T: number;
  nHeads: number;
  headDim: number;
  maxContext: number;
  partitionSize?: number;
}

/** Workgroups the decode kernel aims at: with fewer, a batch-1 step leaves most of a large GPU idle. */
export const DECODE_TARGET_WORKGROUPS = 512;
/** The shortest partition decodePartitionSize() picks (H100, 7B heads, one sequence at 640 positions:
 * 64-position partitions 15.3 us, 32-position 17.9 us; bench/attention_bench.ts). */
export const DECODE_MIN_PARTITION = 64;

/**
 * Positions per partition for `workgroupsPerPart` workgroups per partition (T x kv heads x head chunks):
 * DECODE_PARTITION_SIZE, halved (down to DECODE_MIN_PARTITION) while the context splits into too few
 * partitions to reach DECODE_TARGET_WORKGROUPS.
 */
export function decodePartitionSize(workgroupsPerPart: number, maxContext: number): number {
  const want = Math.ceil(DECODE_TARGET_WORKGROUPS / Math.max(1, workgroupsPerPart));
  let size = DECODE_PARTITION_SIZE;
  while (size > DECODE_MIN_PARTITION && Math.ceil(maxContext / size) < want) size /= 2;
  return size;
}

/**
 * Bytes of scratch attentionDecode() needs for up to T tokens: T * nHeads * nParts * (headDim + 2) f32,
 * 0 if one part. Without a partitionSize, the most that any batch of 1..T tokens can take.
 */
export function attentionScratchBytes(o: ScratchSizeOptions): number {
  let most = 0;
  for (let t = o.partitionSize ? o.T : 1; t <= o.T; t++) {
    // At least t workgroups per partition (one kv head, one chunk), so at most this many partitions.
    const nParts = Math.ceil(o.maxContext / (o.partitionSize ?? decodePartitionSize(t, o.maxContext)));
    if (nParts > 1) most = Math.max(most, t * o.nHeads * nParts * (o.headDim + 2) * 4);
  }
  return most;
}

/** Writes K and V rows of each token into its cache slot, rounded to f16. */
export function kvWrite(k: Kernels, pass: GPUComputePassEncoder, o: KvWriteOptions): void {
  checkHeadDim(o.headDim);
  const wg = 64;
  const p = k.pipeline("kv_write", kvWriteSource, { WG: wg });
  const kvDim = o.nKvHeads * o.headDim;
  const params = new ParamWriter()
    .u32(o.T).u32(o.nKvHeads).u32(o.headDim).u32(o.blockSize).u32(o.maxBlocksPerSeq)
    .u32(o.kStride ?? kvDim).u32(o.kOffset ?? 0).u32(o.vStride ?? kvDim).u32(o.vOffset ?? 0)
    .u32(0).u32(0).u32(0);
  const [x, y] = grid2d(k, Math.ceil((o.T * kvDim) / 2 / wg));
  k.dispatch(
    pass,
    p,
    [o.k, o.v, o.tokenSeq, o.tokenPos, o.blockTable, o.kCache, o.vCache, k.params(params)],
    x,
    y,
  );
}

/** Picks the decode kernel for batches of few tokens per sequence, else the prefill kernel. */
export function attention(k: Kernels, pass: GPUComputePassEncoder, o: AttentionChoiceOptions): void {
  if (o.maxQueryTokens <= DECODE_MAX_QUERY_TOKENS) attentionDecode(k, pass, o);
  else attentionPrefill(k, pass, o);
}

/** Plan of the decode kernel (its override constants) and the query-head chunks per kv head. */
export interface DecodePlan {
  WG: number;
  HEAD_DIM: number;
  HG: number;
  CHUNK: number;
  headChunks: number;
}

/** Workgroup memory of the decode kernel under `p` (attention_decode.wgsl's arrays). */
export function decodeSmemBytes(p: Omit<DecodePlan, "headChunks">): number {
  const hd2 = p.HEAD_DIM / 2;
  const groups = Math.floor(p.WG / hd2);
  return 4 *
    (p.HG * p.HEAD_DIM + p.HG * p.CHUNK + p.CHUNK + 2 * p.HG + groups * p.HG * hd2 * 2 + groups * p.HG);
}

/** Chooses the decode kernel's workgroup and chunk so its workgroup memory fits in `budget` bytes. */
export function planDecode(headDim: number, group: number, budget: number): DecodePlan {
  const hd2 = headDim / 2;
  // At most 8 query heads per workgroup; fewer (more chunks) when their queries and partials do not fit.
  for (let headChunks = Math.ceil(group / 8); headChunks <= group; headChunks++) {
    const hg = Math.ceil(group / headChunks);
    // Phase C needs at least one whole group of HEAD_DIM / 2 invocations.
    for (const wg of [256, 128, 64].filter((w) => w >= hd2)) {
      for (const chunk of [64, 32, 16]) {
        const plan = { WG: wg, HEAD_DIM: headDim, HG: hg, CHUNK: chunk };
        if (decodeSmemBytes(plan) <= budget) return { ...plan, headChunks };
      }
    }
  }
  throw new KernelError(
    `Cannot plan decode attention for headDim ${headDim}, group ${group}: needs more than ${budget} bytes of workgroup memory`,
  );
}

/** Split-K attention ("flash-decoding") for any batch; efficient when each sequence has few tokens. */
export function attentionDecode(k: Kernels, pass: GPUComputePassEncoder, o: AttentionDecodeOptions): void {
  const group = checkHeads(o);
  if (o.T === 0) return;
  const plan = planDecode(
    o.headDim,
    group,
    o.maxWorkgroupStorage ?? k.device.limits.maxComputeWorkgroupStorageSize,
  );
  // A CPU adapter gains nothing from more workgroups: it keeps the long partitions.
  const partSize = o.partitionSize ??
    (k.features.cpuAdapter
      ? DECODE_PARTITION_SIZE
      : decodePartitionSize(o.T * o.nKvHeads * plan.headChunks, o.maxContext));
  const nParts = Math.ceil(o.maxContext / partSize);
  if (!(nParts >= 1)) throw new KernelError(`Decode attention needs maxContext >= 1, got ${o.maxContext}`);
  const qkDim = o.nHeads * o.headDim;
  const outStride = o.outStride ?? qkDim;
  const outOffset = o.outOffset ?? 0;
  const params = new ParamWriter()
    .u32(o.T).u32(o.nHeads).u32(o.nKvHeads).u32(group).u32(plan.headChunks).u32(o.blockSize)
    .u32(o.maxBlocksPerSeq).u32(partSize).u32(nParts).u32(o.qStride ?? qkDim).u32(o.qOffset ?? 0)
    .u32(outStride).u32(outOffset).f32(o.scale ?? 1 / Math.sqrt(o.headDim)).u32(0).u32(0);
  const { headChunks: _, ...planConstants } = plan;
  // On a GPU a chunk no longer than the partition (a 32-position partition in a 64-position chunk leaves half
  // of phase A idle), and phase A's invocations per position all of the workgroup's; a CPU adapter keeps one
  // invocation per position and the planned chunk.
  const cpu = k.features.cpuAdapter;
  let chunk = plan.CHUNK;
  while (!cpu && chunk > 16 && chunk > partSize) chunk /= 2;
  const constants = { ...planConstants, CHUNK: chunk, TPP: cpu ? 1 : Math.max(1, plan.WG / chunk) };
  const inputs = [o.q, o.kCache, o.vCache, o.tokenSeq, o.tokenPos, o.blockTable];
  const groups = o.nKvHeads * plan.headChunks;
  if (nParts === 1) {
    const p = k.pipeline("attention_decode", decodeSource, constants, "direct");
    k.dispatch(pass, p, [...inputs, o.out, k.params(params)], 1, groups, o.T);
    return;
  }
  const need = attentionScratchBytes({ ...o, partitionSize: partSize });
  if (!o.scratch || bindingSize(o.scratch) < need) {
    throw new KernelError(
      `Decode attention scratch too small: need ${need} bytes for T ${o.T}, maxContext ${o.maxContext}, got ${
        o.scratch ? bindingSize(o.scratch) : "none"
      }`,
    );
  }
  const split = k.pipeline("attention_decode", decodeSource, constants, "split");
  k.dispatch(pass, split, [...inputs, o.scratch, k.params(params)], nParts, groups, o.T);
  const reduce = k.pipeline("attention_reduce", reduceSource, { WG: 128 });
  const rp = new ParamWriter()
    .u32(o.T).u32(o.nHeads).u32(o.headDim).u32(partSize).u32(nParts).u32(outStride).u32(outOffset).u32(0);
  k.dispatch(pass, reduce, [o.scratch, o.tokenPos, o.out, k.params(rp)], o.nHeads, o.T);
}

/** Tile plan of the prefill kernel (its override constants) and the query-head chunks per kv head. */
export interface PrefillPlan {
  TX: number;
  TY: number;
  HEAD_DIM: number;
  HG: number;
  BQ: number;
  R: number;
  BK: number;
  headChunks: number;
}

/** Chooses the prefill kernel's tiles: the most query rows, then keys, that fit registers and `budget`. */
export function planPrefill(headDim: number, group: number, budget: number): PrefillPlan {
  const tx = 16, ty = 8;
  const hd2 = headDim / 2;
  const nc = Math.ceil(hd2 / tx);
  for (const r of [64, 32, 16, 8]) {
    const nr = r / ty;
    if (nr * nc > 16) continue;
    for (const bk of [32, 16]) {
      const bytes = 4 * (2 * r * (hd2 + 1) + bk * (hd2 + 1) + bk * hd2 + 2 * r * (bk + 1));
      if (bytes > budget) continue;
      const headChunks = Math.ceil(group / Math.min(group, r));
      const hg = Math.ceil(group / headChunks);
      return { TX: tx, TY: ty, HEAD_DIM: headDim, HG: hg, BQ: Math.floor(r / hg), R: r, BK: bk, headChunks };
    }
  }
  throw new KernelError(
    `Cannot plan prefill attention for headDim ${headDim}: needs more than ${budget} bytes of workgroup memory`,
  );
}

/** Causal attention of query tiles (runs of consecutive positions of one sequence) over the cache. */
export function attentionPrefill(k: Kernels, pass: GPUComputePassEncoder, o: AttentionOptions): void {
  const group = checkHeads(o);
  if (o.T === 0) return;
  const plan = planPrefill(
    o.headDim,
    group,
    o.maxWorkgroupStorage ?? k.device.limits.maxComputeWorkgroupStorageSize,
  );
  const qkDim = o.nHeads * o.headDim;
  const params = new ParamWriter()
    .u32(o.T).u32(o.nHeads).u32(o.nKvHeads).u32(group).u32(plan.headChunks).u32(o.blockSize)
    .u32(o.maxBlocksPerSeq).u32(o.qStride ?? qkDim).u32(o.qOffset ?? 0).u32(o.outStride ?? qkDim)
    .u32(o.outOffset ?? 0).f32(o.scale ?? 1 / Math.sqrt(o.headDim));
  const { headChunks: _, ...constants } = plan;
  const p = k.pipeline("attention_prefill", prefillSource, constants);
  k.dispatch(
    pass,
    p,
    [o.q, o.kCache, o.vCache, o.tokenSeq, o.tokenPos, o.blockTable, o.out, k.params(params)],
    o.T,
    o.nKvHeads * plan.headChunks,
  );
}

function checkHeadDim(headDim: number): void {
  if (!(headDim >= 2 && headDim <= 256 && headDim % 2 === 0)) {
    throw new KernelError(`Attention needs an even headDim in [2, 256], got ${headDim}`);
  }
}

function checkHeads(o: AttentionOptions): number {
  checkHeadDim(o.headDim);
  if (!(o.nKvHeads >= 1 && o.nHeads % o.nKvHeads === 0)) {
    throw new KernelError(`Attention needs nHeads a multiple of nKvHeads, got ${o.nHeads} and ${o.nKvHeads}`);
  }
  return o.nHeads / o.nKvHeads;
}

function bindingSize(b: BufferArg): number {
  return b instanceof GPUBuffer ? b.size : (b.size ?? b.buffer.size - (b.offset ?? 0));
}
