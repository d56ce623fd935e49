// Host side of paged attention: kvWrite puts each token's K/V rows into the paged f16 cache, then
// attention() runs either the split-K decode kernel (its register plan: decode.ts; + reduce, or + the reduce
// fused with o_proj's input transform: o_input.ts) or the causal prefill kernel over it. Layouts are
// described on the options below.
import kvWriteSource from "./kv_write.wgsl" with { type: "text" };
import legacyDecodeSource from "./attention_decode_legacy.wgsl" with { type: "text" };
import reduceSource from "./attention_reduce.wgsl" with { type: "text" };
import prefillTemplate from "./attention_prefill.wgsl" with { type: "text" };
import { type BufferArg, grid2d, KernelError, type Kernels, ParamWriter } from "../core.ts";
import { type OInputOptions, oInputSource, planOInput, reduceOInput } from "./o_input.ts";
import {
  DECODE_ROUND,
  decodeRegKernelName,
  type DecodeRegPlan,
  decodeSource,
  planDecodeRegs,
} from "./decode.ts";

export type { OInputOptions } from "./o_input.ts";
export type { DecodeRegPlan } from "./decode.ts";
export { decodeRegKernelName, decodeRegSmemBytes, decodeSource, planDecodeRegs } from "./decode.ts";

export const ATTENTION_SOURCES = {
  kv_write: kvWriteSource,
  // Generated per plan; this is Llama 2 7B's heads (128 dims, no GQA) without subgroups.
  attention_decode: decodeSource({ HEAD_DIM: 128, HG: 1, L: 16, VPT: 1, NP: 4, WG: 256, SG: 0 }),
  attention_decode_legacy: legacyDecodeSource,
  attention_reduce: reduceSource,
  // Generated per plan; this is the plan of a Llama-sized head (128 dims, no GQA) on a 48 KiB budget.
  attention_prefill: prefillSource({
    TX: 16,
    TY: 8,
    RM: 4,
    KN: 2,
    HEAD_DIM: 128,
    HG: 1,
    BQ: 32,
    R: 32,
    BK: 32,
  }),
  // Generated per plan; this is Llama 2 7B's (32 heads of 128, 16 partitions), without subgroups.
  attention_o_input: oInputSource({
    N: 4096,
    HEAD_DIM: 128,
    K: 1,
    P_LEN: 4096,
    WORDS: 1,
    WG: 1024,
    V: 1,
    PARTS: 16,
    GROUP: 4,
    SG: 0,
    SU: true,
    PAD: true,
  }),
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
  /** f32 split-K partials, attentionScratchBytes() bytes; unused when maxContext <= partitionSize, unless
   * the fused oInput kernel runs. */
  scratch?: BufferArg;
  partitionSize?: number; // default decodePartitionSize(T x kv heads x head chunks, maxContext)
  /** Replaces planDecodeRegs()'s choice (tests); ignored where the legacy kernel runs. */
  decodePlan?: DecodeRegPlan;
  /**
   * Write o_proj's input scale * H^T(SU * att) to oInput.out instead of the attention output to `out`, with
   * the split-K combine and the transform in one kernel (attention_o_input.wgsl); then the call returns true.
   * When it returns false (prefill, or a row the fused kernel does not serve) it wrote `out` as usual.
   */
  oInput?: OInputOptions;
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

/**
 * Workgroups the decode kernel aims at: with fewer, a batch-1 step leaves most of a large GPU idle. The
 * register plan (decode.ts) keeps it: at an estimated ~70 registers a thread (7B's heads) an H100 SM holds
 * about three workgroups of 256, so 512 is about one wave of 132 SMs, each workgroup with its round's loads
 * in flight at once (not yet measured against other targets).
 */
export const DECODE_TARGET_WORKGROUPS = 512;
/**
 * The shortest partition decodePartitionSize() picks: one round of the register plan (DECODE_ROUND: a
 * partition is one pass of loads), and the legacy plan's best (H100, 7B heads, one sequence at 640
 * positions: 64-position partitions 15.3 us, 32-position 17.9 us; bench/attention_bench.ts).
 */
export const DECODE_MIN_PARTITION = DECODE_ROUND;

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
 * Bytes of scratch attentionDecode() needs for up to T tokens: T * nHeads * nParts * (headDim + 2) f32 (one
 * part too: with oInput the decode kernel always writes partials). Without a partitionSize, the most that
 * any batch of 1..T tokens can take.
 */
export function attentionScratchBytes(o: ScratchSizeOptions): number {
  let most = 0;
  for (let t = o.partitionSize ? o.T : 1; t <= o.T; t++) {
    // At least t workgroups per partition (one kv head, one chunk), so at most this many partitions.
    const nParts = Math.ceil(o.maxContext / (o.partitionSize ?? decodePartitionSize(t, o.maxContext)));
    most = Math.max(most, t * o.nHeads * nParts * (o.headDim + 2) * 4);
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

/**
 * Picks the decode kernel for batches of few tokens per sequence, else the prefill kernel. True when it
 * wrote o.oInput.out instead of o.out (attentionDecode).
 */
export function attention(k: Kernels, pass: GPUComputePassEncoder, o: AttentionChoiceOptions): boolean {
  if (o.maxQueryTokens <= DECODE_MAX_QUERY_TOKENS) return attentionDecode(k, pass, o);
  attentionPrefill(k, pass, o);
  return false;
}

/** Plan of the legacy decode kernel (its override constants) and the query-head chunks per kv head. */
export interface DecodePlan {
  WG: number;
  HEAD_DIM: number;
  HG: number;
  CHUNK: number;
  headChunks: number;
}

/** Workgroup memory of the legacy decode kernel under `p` (attention_decode_legacy.wgsl's arrays). */
export function decodeSmemBytes(p: Omit<DecodePlan, "headChunks">): number {
  const hd2 = p.HEAD_DIM / 2;
  const groups = Math.floor(p.WG / hd2);
  return 4 *
    (p.HG * p.HEAD_DIM + p.HG * p.CHUNK + p.CHUNK + 2 * p.HG + groups * p.HG * hd2 * 2 + groups * p.HG);
}

/** Chooses the legacy decode kernel's workgroup and chunk so its workgroup memory fits in `budget` bytes. */
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

/**
 * Split-K attention ("flash-decoding") for any batch; efficient when each sequence has few tokens. With
 * oInput, when planOInput() serves the row, the partials go to the fused combine + o_proj input transform
 * (also for a context of one partition: `split` and the fused kernel are as many dispatches as `direct` and
 * blockTransform, and the same attention output, w = exp(m - m) = 1) and the call returns true; else it
 * writes `out` and returns false, as it does on a CPU adapter or under KernelFeatures.legacy "attn-o".
 * The kernel is the register plan (decode.ts) where planDecodeRegs() serves the heads, else, and under
 * KernelFeatures.legacy "attn-decode", attention_decode_legacy.wgsl.
 */
export function attentionDecode(k: Kernels, pass: GPUComputePassEncoder, o: AttentionDecodeOptions): boolean {
  const group = checkHeads(o);
  if (o.T === 0) return false;
  const kernel = decodeKernel(k, o.headDim, group, o.maxWorkgroupStorage, o.decodePlan);
  // A CPU adapter gains nothing from more workgroups: it keeps the long partitions.
  const partSize = o.partitionSize ??
    (k.features.cpuAdapter
      ? DECODE_PARTITION_SIZE
      : decodePartitionSize(o.T * o.nKvHeads * kernel.headChunks, o.maxContext));
  const nParts = Math.ceil(o.maxContext / partSize);
  if (!(nParts >= 1)) throw new KernelError(`Decode attention needs maxContext >= 1, got ${o.maxContext}`);
  const qkDim = o.nHeads * o.headDim;
  const outStride = o.outStride ?? qkDim;
  const outOffset = o.outOffset ?? 0;
  const params = new ParamWriter()
    .u32(o.T).u32(o.nHeads).u32(o.nKvHeads).u32(group).u32(kernel.headChunks).u32(o.blockSize)
    .u32(o.maxBlocksPerSeq).u32(partSize).u32(nParts).u32(o.qStride ?? qkDim).u32(o.qOffset ?? 0)
    .u32(outStride).u32(outOffset).f32(o.scale ?? 1 / Math.sqrt(o.headDim)).u32(0).u32(0);
  const inputs = [o.q, o.kCache, o.vCache, o.tokenSeq, o.tokenPos, o.blockTable];
  const groups = o.nKvHeads * kernel.headChunks;
  // A CPU adapter keeps the reduce and blockTransform: there the fused kernel's one workgroup per token keeps
  // one core per token busy (lavapipe, 32 heads of 128 at 1000 positions, split kernel included: 191 ms for
  // 4 tokens against 129; 28.8 against 32.6 ms for one token).
  const oInput = k.features.legacy.has("attn-o") || k.features.cpuAdapter ? undefined : o.oInput;
  const fused = oInput ? planOInput(k, { ...o, nParts, spec: oInput.spec, su: oInput.su }) : null;
  if (nParts === 1 && !fused) {
    k.dispatch(
      pass,
      kernel.pipeline("direct", partSize),
      [...inputs, o.out, k.params(params)],
      1,
      groups,
      o.T,
    );
    return false;
  }
  const need = attentionScratchBytes({ ...o, partitionSize: partSize });
  if (!o.scratch || bindingSize(o.scratch) < need) {
    throw new KernelError(
      `Decode attention scratch too small: need ${need} bytes for T ${o.T}, maxContext ${o.maxContext}, got ${
        o.scratch ? bindingSize(o.scratch) : "none"
      }`,
    );
  }
  const split = kernel.pipeline("split", partSize);
  k.dispatch(pass, split, [...inputs, o.scratch, k.params(params)], nParts, groups, o.T);
  if (fused && oInput) {
    reduceOInput(k, pass, {
      scratch: o.scratch,
      tokenPos: o.tokenPos,
      T: o.T,
      nParts,
      partSize,
      plan: fused,
      oInput,
    });
    return true;
  }
  const reduce = k.pipeline("attention_reduce", reduceSource, { WG: 128 });
  const rp = new ParamWriter()
    .u32(o.T).u32(o.nHeads).u32(o.headDim).u32(partSize).u32(nParts).u32(outStride).u32(outOffset).u32(0);
  k.dispatch(pass, reduce, [o.scratch, o.tokenPos, o.out, k.params(rp)], o.nHeads, o.T);
  return false;
}

/** The decode kernel for these heads: its query-head chunks and its pipeline for an entry and partition. */
interface DecodeKernel {
  headChunks: number;
  pipeline(entry: "split" | "direct", partSize: number): GPUComputePipeline;
}

/**
 * The register plan where planDecodeRegs() serves the heads, except under KernelFeatures.legacy "attn-decode"
 * and, on a CPU adapter, without subgroups. Lavapipe, 32 heads of 128, 1000 positions, split + reduce at
 * 256-position partitions: legacy 44 ms for one token, 157 for four; register plan with subgroups (8 lanes)
 * 23 and 44; without 43 and 133, and slower than legacy with GQA 4 (37 against 36, 112 against 93).
 */
function decodeKernel(
  k: Kernels,
  headDim: number,
  group: number,
  storage?: number,
  forced?: DecodeRegPlan,
): DecodeKernel {
  const budget = storage ?? k.device.limits.maxComputeWorkgroupStorageSize;
  const f = k.features;
  if (forced && (forced.HEAD_DIM !== headDim || forced.HG * forced.headChunks < group)) {
    throw new KernelError(
      `Decode plan ${JSON.stringify(forced)} does not cover ${group} heads of ${headDim}`,
    );
  }
  let regs = f.legacy.has("attn-decode")
    ? null
    : forced ?? planDecodeRegs(headDim, group, budget, f.subgroups ? f.subgroupSize : 0);
  if (regs && f.cpuAdapter && regs.SG === 0 && !forced) regs = null;
  if (regs) {
    const { headChunks, ...shape } = regs;
    return {
      headChunks,
      pipeline: (entry) => k.pipeline(decodeRegKernelName(shape), () => decodeSource(shape), {}, entry),
    };
  }
  const { headChunks, ...plan } = planDecode(headDim, group, budget);
  return {
    headChunks,
    pipeline(entry, partSize) {
      // On a GPU a chunk no longer than the partition (a 32-position partition in a 64-position chunk leaves
      // half of phase A idle), and phase A's invocations per position all of the workgroup's; a CPU adapter
      // keeps one invocation per position and the planned chunk.
      const cpu = f.cpuAdapter;
      let chunk = plan.CHUNK;
      while (!cpu && chunk > 16 && chunk > partSize) chunk /= 2;
      const constants = { ...plan, CHUNK: chunk, TPP: cpu ? 1 : Math.max(1, plan.WG / chunk) };
      return k.pipeline("attention_decode_legacy", legacyDecodeSource, constants, entry);
    },
  };
}

/**
 * Tile plan of the prefill kernel (attention_prefill.wgsl, generated by prefillSource()): a TX x TY
 * workgroup of R = RM * TY query rows (tokens x HG heads of one kv group; BQ tokens) against keys in
 * steps of BK = KN * TX, and the query-head chunks per kv head.
 */
export interface PrefillPlan {
  TX: number;
  TY: number;
  RM: number; // rows per invocation
  KN: number; // keys per invocation and step
  HEAD_DIM: number;
  HG: number;
  BQ: number;
  R: number;
  BK: number;
  headChunks: number;
}

/** Derived sizes of a prefill plan: strides of its workgroup arrays (in 4-half words) and the cache reads. */
function prefillShape(p: Omit<PrefillPlan, "headChunks">) {
  const hd2 = p.HEAD_DIM / 2; // u32 words per cache row
  const qs = Math.ceil(p.HEAD_DIM / 4); // 4-column words per query or key row
  const ks = qs % 2 === 0 ? qs + 1 : qs; // odd: the TX rows a warp reads at once hit distinct banks
  const ncv = Math.ceil(p.HEAD_DIM / (4 * p.TX)); // output vec4s per row per invocation
  const vs = ncv * p.TX;
  const lw = p.HEAD_DIM % 8 === 0 ? 4 : p.HEAD_DIM % 4 === 0 ? 2 : 1; // u32 per cache read
  const cpr = hd2 / lw;
  const nt = p.TX * p.TY;
  const ke = Math.ceil((p.BK * cpr) / nt); // cache reads per invocation per tile (of K, and of V)
  return { hd2, qs, ks, ncv, vs, lw, cpr, nt, ke };
}

/** Workgroup memory of the prefill kernel under `p` (attention_prefill.wgsl's arrays). */
export function prefillSmemBytes(p: Omit<PrefillPlan, "headChunks">): number {
  const s = prefillShape(p);
  return 16 * p.R * s.qs + 8 * p.BK * s.ks + 16 * p.BK * s.vs + 4 * p.R * p.TX + 4 * p.R * p.BK + 8;
}

/** Candidate shapes (TX, TY, RM, KN), fastest first. */
export const PREFILL_SHAPES: readonly (readonly [number, number, number, number])[] = [
  [16, 16, 4, 2],
  [16, 8, 4, 2],
  [16, 8, 4, 1],
  [16, 8, 2, 2],
  [16, 8, 2, 1],
  [16, 8, 1, 1],
  [8, 8, 1, 1],
];
/** Most f32 registers an invocation's output accumulators and prefetched K/V words may take. */
const PREFILL_MAX_REGS = 64;

/** The prefill plan of shape (TX, TY, RM, KN) for `group` query heads per kv head. */
export function prefillPlanOf(
  shape: readonly [number, number, number, number],
  headDim: number,
  group: number,
): PrefillPlan {
  const [tx, ty, rm, kn] = shape;
  const r = rm * ty;
  const headChunks = Math.ceil(group / Math.min(group, r));
  const hg = Math.ceil(group / headChunks);
  return {
    TX: tx,
    TY: ty,
    RM: rm,
    KN: kn,
    HEAD_DIM: headDim,
    HG: hg,
    BQ: Math.floor(r / hg),
    R: r,
    BK: kn * tx,
    headChunks,
  };
}

/** Chooses the prefill kernel's tiles: the first candidate shape that fits registers and `budget`. */
export function planPrefill(headDim: number, group: number, budget: number): PrefillPlan {
  const last = PREFILL_SHAPES[PREFILL_SHAPES.length - 1];
  for (const shape of PREFILL_SHAPES) {
    const plan = prefillPlanOf(shape, headDim, group);
    const s = prefillShape(plan);
    // The smallest shape is the fallback, whatever its registers.
    if (shape !== last && plan.RM * s.ncv * 4 + 2 * s.ke * s.lw > PREFILL_MAX_REGS) continue;
    if (prefillSmemBytes(plan) <= budget) return plan;
  }
  throw new KernelError(
    `Cannot plan prefill attention for headDim ${headDim}: needs more than ${budget} bytes of workgroup memory`,
  );
}

/** Pipeline name of a prefill plan's kernel (bench/step_profile.ts reports kernels by it). */
export function prefillKernelName(p: Omit<PrefillPlan, "headChunks">): string {
  return `attention_prefill_d${p.HEAD_DIM}_r${p.R}x${p.BK}_t${p.TX}x${p.TY}_g${p.HG}`;
}

/** attention_prefill.wgsl with the plan's constants and its unrolled per-invocation statements. */
export function prefillSource(p: Omit<PrefillPlan, "headChunks">): string {
  const s = prefillShape(p);
  const unit = s.lw === 4 ? "vec4<u32>" : s.lw === 2 ? "vec2<u32>" : "u32";
  const zero = `${unit}(0u)`;
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const rows = range(p.RM), keys = range(p.KN), cols = range(s.ncv), units = range(s.ke);
  const each = <T>(xs: T[], f: (x: T) => string) => xs.map(f).join("\n");
  const ind = (n: number, text: string) =>
    text.split("\n").map((l) => (l ? " ".repeat(n) + l : l)).join("\n");
  const guardStore = s.ke * s.nt > p.BK * s.cpr; // the last round of units runs past the tile
  const store = (arr: "kt" | "vt", base: string, w: string) => {
    const row = `${arr}[${base} + c * ${arr === "kt" ? "KS" : "VS"}`;
    return s.lw === 4
      ? `${row} + 2u * u] = ${w}.xy;\n${row} + 2u * u + 1u] = ${w}.zw;`
      : s.lw === 2
      ? `${row} + u] = ${w};`
      : `${row} + u / 2u][u % 2u] = ${w};`;
  };
  const stageFns = `// Stores unit i (key i / CPR, unit i % CPR) of a K or V tile.
fn storeK(i: u32, w: UNIT) {
  let c = i / CPR;
  let u = i % CPR;
${ind(2, store("kt", "0u", "w"))}
}

fn storeV(base: u32, i: u32, w: UNIT) {
  let c = i / CPR;
  let u = i % CPR;
${ind(2, store("vt", "base", "w"))}
}`;
  // Loads unit e of the tile of n keys from position `from` into pk{e}, pv{e} (zero past n).
  const fetch = (from: string, n: string) =>
    each(units, (e) =>
      `var pk${e} = ${zero};
var pv${e} = ${zero};
{
  let i = lid + ${e}u * NT;
  let c = i / CPR;
  if (c < ${n}) {
    let j = cacheIndex(tableRow, g, ${from} + c, i % CPR);
    pk${e} = kCache[j];
    pv${e} = vCache[j];
  }
}`);
  const storeUnits = (vbase: string) =>
    each(units, (e) => {
      const body = `storeK(lid + ${e}u * NT, pk${e});\nstoreV(${vbase}, lid + ${e}u * NT, pv${e});`;
      return guardStore && (e + 1) * s.nt > p.BK * s.cpr
        ? `if (lid + ${e}u * NT < BK * CPR) {\n${ind(2, body)}\n}`
        : body;
    });
  const consts = `const TX: u32 = ${p.TX}u;
const TY: u32 = ${p.TY}u;
const NT: u32 = ${s.nt}u;
const HEAD_DIM: u32 = ${p.HEAD_DIM}u;
const HG: u32 = ${p.HG}u; // query heads per workgroup (one kv group's, or a chunk of them)
const BQ: u32 = ${p.BQ}u; // tokens per block
const R: u32 = ${p.R}u; // rows per tile, >= BQ * HG
const BK: u32 = ${p.BK}u; // keys per step
const QS: u32 = ${s.qs}u; // qs row stride, 4-column words per row
const KS: u32 = ${s.ks}u; // kt row stride (odd)
const VS: u32 = ${s.vs}u; // vt row stride, 4 * VS >= HEAD_DIM
const CPR: u32 = ${s.cpr}u; // cache reads per row
alias UNIT = ${unit}; // one cache read, LW = ${s.lw} u32`;
  const needZero = s.qs * 2 > s.hd2 || s.vs * 2 > s.hd2;
  const zeroFill = needZero
    ? ind(
      2,
      `// Columns past HEAD_DIM stay zero in every tile.
for (var i = lid; i < BK * KS; i += NT) {
  kt[i] = vec2<u32>(0u);
}
for (var i = lid; i < 2u * BK * VS; i += NT) {
  vt[i] = vec2<u32>(0u);
}
workgroupBarrier();`,
    )
    : "";
  const qLoad = p.HEAD_DIM % 4 === 0
    ? `qs[i] = vec4<f32>(q[j], q[j + 1u], q[j + 2u], q[j + 3u]) * params.scale;`
    : `var v = vec4<f32>(q[j], q[j + 1u], 0.0, 0.0);
if (d + 2u < HEAD_DIM) {
  v.z = q[j + 2u];
  v.w = q[j + 3u];
}
qs[i] = v * params.scale;`;
  const rowInit = each(rows, (i) =>
    `let r${i} = ty + ${i}u * TY;
let pos${i} = tokenPos[t0 + min(r${i} / HG, nq - 1u)];
var m${i} = NEG;
var l${i} = 0.0;
${each(cols, (j) => `var a${i}_${j} = vec4<f32>(0.0);`)}`);
  const firstTile = `{
${ind(2, fetch("0u", "min(BK, kEnd)"))}
${ind(2, storeUnits("0u"))}
}`;
  const sk = (i: number, k: number) => `s${i}_${k}`;
  const scores = `${each(rows, (i) => each(keys, (k) => `var ${sk(i, k)} = 0.0;`))}
for (var d = 0u; d < QS; d++) {
${
    ind(
      2,
      each(rows, (i) => `let q${i} = qs[r${i} * QS + d];`) + "\n" +
        each(keys, (k) => `let kk${k} = unpack4(kt[(tx + ${k}u * TX) * KS + d]);`) + "\n" +
        each(rows, (i) =>
          each(keys, (k) =>
            ["x", "y", "z", "w"].map((c) =>
              `${sk(i, k)} = fma(q${i}.${c}, kk${k}.${c}, ${sk(i, k)});`
            )
              .join("\n"))),
    )
  }
}
${
    each(rows, (i) =>
      each(keys, (k) =>
        `${sk(i, k)} = select(NEG, ${sk(i, k)}, k0 + tx + ${k}u * TX <= pos${i});`) +
      `\npm[r${i} * TX + tx] = ${
        keys.reduce((acc, k) => (acc ? `max(${acc}, ${sk(i, k)})` : sk(i, k)), "")
      };`)
  }`;
  const softmax = each(rows, (i) =>
    `{
  var mx = m${i};
  for (var x = 0u; x < TX; x++) {
    mx = max(mx, pm[r${i} * TX + x]);
  }
  let al = exp(m${i} - mx);
  m${i} = mx;
${
      ind(
        2,
        each(keys, (k) =>
          `let p${k} = exp(${sk(i, k)} - mx);
pe[r${i} * (BK / 4u) + (tx + ${k}u * TX) / 4u][tx % 4u] = p${k};`),
      )
    }
  l${i} = l${i} * al + ${keys.map((k) => `p${k}`).join(" + ")};
${ind(2, each(cols, (j) => `a${i}_${j} *= al;`))}
}`);
  const pv = `for (var c = 0u; c < BK; c += 4u) {
${ind(2, each(rows, (i) => `let p${i} = pe[r${i} * (BK / 4u) + c / 4u];`))}
${
    ind(
      2,
      ["x", "y", "z", "w"].map((comp, cc) =>
        each(cols, (j) => `let v${cc}_${j} = unpack4(vt[vb + (c + ${cc}u) * VS + tx + ${j}u * TX]);`) + "\n" +
        each(rows, (i) =>
          each(cols, (j) => `a${i}_${j} = fma(vec4<f32>(p${i}.${comp}), v${cc}_${j}, a${i}_${j});`))
      ).join("\n"),
    )
  }
}`;
  const colGuard = s.ncv * 4 * p.TX > p.HEAD_DIM;
  const epilogue = `${each(rows, (i) => `pm[r${i} * TX + tx] = l${i};`)}
workgroupBarrier();
${
    each(rows, (i) =>
      `if (r${i} / HG < nq && r${i} % HG < nh) {
  var l = 0.0;
  for (var x = 0u; x < TX; x++) {
    l += pm[r${i} * TX + x];
  }
  let base = params.outOffset + (t0 + r${i} / HG) * params.outStride + (headBase + r${i} % HG) * HEAD_DIM;
${
        ind(
          2,
          each(cols, (j) =>
            `{
  let y = a${i}_${j} / l;
  let col = 4u * (tx + ${j}u * TX);
${
              ind(
                2,
                range(4).map((e) => {
                  const w = `out[base + col + ${e}u] = y.${"xyzw"[e]};`;
                  return colGuard ? `if (col + ${e}u < HEAD_DIM) {\n  ${w}\n}` : w;
                }).join("\n"),
              )
            }
}`),
        )
      }
}`)
  }`;
  const blocks: Record<string, string> = {
    CONSTS: consts,
    STAGE_FNS: stageFns,
    ZERO_FILL: zeroFill,
    Q_LOAD: ind(6, qLoad),
    ROW_INIT: ind(4, rowInit),
    FIRST_TILE: ind(4, firstTile),
    PREFETCH: ind(6, fetch("k0 + BK", "nNext")),
    SCORES: ind(6, scores),
    STORE_NEXT: ind(6, storeUnits("(BK * VS) - vb")),
    SOFTMAX: ind(6, softmax),
    PV: ind(6, pv),
    EPILOGUE: ind(4, epilogue),
  };
  return prefillTemplate.replace(/\{\{([A-Z_]+)\}\}/g, (_, name: string) => {
    if (!(name in blocks)) throw new KernelError(`attention_prefill.wgsl: unknown block ${name}`);
    return blocks[name];
  });
}

/**
 * Causal attention of query tiles (runs of consecutive positions of one sequence) over the cache;
 * `prefillPlan` (tests) replaces planPrefill's choice.
 */
export function attentionPrefill(
  k: Kernels,
  pass: GPUComputePassEncoder,
  o: AttentionOptions & { prefillPlan?: PrefillPlan },
): void {
  const group = checkHeads(o);
  if (o.T === 0) return;
  const plan = o.prefillPlan ?? planPrefill(
    o.headDim,
    group,
    o.maxWorkgroupStorage ?? k.device.limits.maxComputeWorkgroupStorageSize,
  );
  const qkDim = o.nHeads * o.headDim;
  const params = new ParamWriter()
    .u32(o.T).u32(o.nHeads).u32(o.nKvHeads).u32(group).u32(plan.headChunks).u32(o.blockSize)
    .u32(o.maxBlocksPerSeq).u32(o.qStride ?? qkDim).u32(o.qOffset ?? 0).u32(o.outStride ?? qkDim)
    .u32(o.outOffset ?? 0).f32(o.scale ?? 1 / Math.sqrt(o.headDim));
  const p = k.pipeline(prefillKernelName(plan), () => prefillSource(plan));
  k.dispatch(
    pass,
    p,
    [o.q, o.kCache, o.vCache, o.tokenSeq, o.tokenPos, o.blockTable, o.out, k.params(params)],
    o.nKvHeads * plan.headChunks,
    Math.ceil(o.T / plan.BQ),
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
