// Host side of the logits processors that run right before sampling: repetition, frequency and presence
// penalties over per-slot token counts, then logit_bias. Three entry points of one module:
// `penaltiesMarkPrompt` (once per prompt), `penaltiesCount` (each step, the token being fed in) and
// `penaltiesApply` (each step, on the logits; one dispatch: dense penalties, a constrained row's token mask
// and bias in one workgroup per row).
import source from "./penalties.wgsl" with { type: "text" };
import { type BufferArg, grid2d, KernelError, type Kernels, ParamWriter } from "../core.ts";

export const PENALTIES_SOURCE = source;

/** inputIndex of a row that has no new token to count this step. */
export const PENALTY_NO_INPUT = 0xffffffff;
/** maskOffset of a row without a token mask. */
export const PENALTY_NO_MASK = 0xffffffff;
/** Bit 31 of a counts entry: the token occurs in the prompt. Bits 0..30 count generated copies. */
export const PENALTY_PROMPT_BIT = 0x80000000;

/**
 * One logits row's settings. Packed by `packPenaltyRows` as the WGSL `PenaltyRow` struct, 32 bytes per row:
 *
 * | byte | field      | type | meaning                                                             |
 * | ---- | ---------- | ---- | ------------------------------------------------------------------- |
 * | 0    | presence   | f32  | OpenAI presence_penalty; 0 = off                                    |
 * | 4    | frequency  | f32  | OpenAI frequency_penalty; 0 = off                                   |
 * | 8    | repetition | f32  | vLLM repetition_penalty (> 0); 1 = off                              |
 * | 12   | biasCount  | u32  | logit_bias pairs of this row                                        |
 * | 16   | biasOffset | u32  | index (in pairs) of the row's first pair in the bias buffer         |
 * | 20   | slot       | u32  | the row of `counts` holding this sequence's token counts            |
 * | 24   | inputIndex | u32  | inputTokens[inputIndex] is the token just generated; PENALTY_NO_INPUT = none |
 * | 28   | maskOffset | u32  | word of the row's token mask (bit v & 31 of word v >> 5 = v allowed); PENALTY_NO_MASK = none |
 */
export interface PenaltyRow {
  presence: number;
  frequency: number;
  repetition: number;
  biasCount: number;
  biasOffset: number;
  slot: number;
  inputIndex: number;
  /** Default PENALTY_NO_MASK. */
  maskOffset?: number;
}

export const PENALTY_ROW_BYTES = 32;

/** One logit_bias entry: logits[id] += value. Packed by `packLogitBias`, 8 bytes: id u32, value f32. */
export interface LogitBiasEntry {
  id: number;
  value: number;
}

export const LOGIT_BIAS_BYTES = 8;

function u32Field(name: string, v: number, i: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new KernelError(`Cannot pack penalty row ${i}: ${name} ${v} is not an integer in [0, 2^32)`);
  }
  return v;
}

function finiteField(name: string, v: number, i: number): number {
  if (!Number.isFinite(v)) throw new KernelError(`Cannot pack penalty row ${i}: ${name} ${v} is not finite`);
  return v;
}

/** Packs rows as an array of WGSL `PenaltyRow` (see `PenaltyRow` for the layout). */
export function packPenaltyRows(rows: readonly PenaltyRow[]): ArrayBuffer {
  const buf = new ArrayBuffer(rows.length * PENALTY_ROW_BYTES);
  const v = new DataView(buf);
  rows.forEach((r, i) => {
    const o = i * PENALTY_ROW_BYTES;
    if (!(r.repetition > 0) || !Number.isFinite(r.repetition)) {
      throw new KernelError(
        `Cannot pack penalty row ${i}: repetition ${r.repetition} must be finite and > 0`,
      );
    }
    v.setFloat32(o, finiteField("presence", r.presence, i), true);
    v.setFloat32(o + 4, finiteField("frequency", r.frequency, i), true);
    v.setFloat32(o + 8, r.repetition, true);
    v.setUint32(o + 12, u32Field("biasCount", r.biasCount, i), true);
    v.setUint32(o + 16, u32Field("biasOffset", r.biasOffset, i), true);
    v.setUint32(o + 20, u32Field("slot", r.slot, i), true);
    v.setUint32(o + 24, u32Field("inputIndex", r.inputIndex, i), true);
    v.setUint32(o + 28, u32Field("maskOffset", r.maskOffset ?? PENALTY_NO_MASK, i), true);
  });
  return buf;
}

/** Packs logit_bias pairs as an array of WGSL `BiasPair` (id u32, value f32). Ids >= vocab are skipped on the GPU. */
export function packLogitBias(pairs: readonly LogitBiasEntry[]): ArrayBuffer {
  const buf = new ArrayBuffer(pairs.length * LOGIT_BIAS_BYTES);
  const v = new DataView(buf);
  pairs.forEach((p, i) => {
    if (!Number.isInteger(p.id) || p.id < 0 || p.id > 0xffffffff) {
      throw new KernelError(`Cannot pack logit bias ${i}: id ${p.id} is not an integer in [0, 2^32)`);
    }
    if (!Number.isFinite(p.value)) {
      throw new KernelError(`Cannot pack logit bias ${i}: value ${p.value} for id ${p.id} is not finite`);
    }
    v.setUint32(i * LOGIT_BIAS_BYTES, p.id, true);
    v.setFloat32(i * LOGIT_BIAS_BYTES + 4, p.value, true);
  });
  return buf;
}

function checkVocab(what: string, vocab: number): void {
  if (!Number.isInteger(vocab) || vocab < 1) {
    throw new KernelError(`Cannot ${what}: expected an integer vocab >= 1, got ${vocab}`);
  }
}

export interface PenaltiesCountOptions {
  counts: BufferArg; // u32 (numSlots, vocab)
  rows: BufferArg; // PenaltyRow (rowsOffset + nRows)
  rowsOffset?: number; // rows
  inputTokens: BufferArg; // u32, read at each row's inputIndex
  nRows: number;
  vocab: number;
}

/** Records one dispatch: counts[slot * vocab + inputTokens[inputIndex]] += 1 for every row with a new token. */
export function penaltiesCount(k: Kernels, pass: GPUComputePassEncoder, o: PenaltiesCountOptions): void {
  checkVocab("count penalty tokens", o.vocab);
  const p = k.pipeline("penalties", source, {}, "penalties_count");
  const params = new ParamWriter().u32(o.nRows).u32(o.vocab).u32(o.rowsOffset ?? 0).u32(0);
  k.dispatch(pass, p, [o.rows, o.inputTokens, o.counts, k.params(params)], Math.ceil(o.nRows / 64));
}

export interface PenaltiesMarkPromptOptions {
  counts: BufferArg; // u32 (numSlots, vocab)
  tokens: BufferArg; // u32 prompt token ids
  tokensOffset?: number; // elements
  n: number; // prompt tokens to mark
  slot: number;
  vocab: number;
}

/** Records one dispatch setting the prompt bit of counts[slot * vocab + t] for each of the n prompt tokens. */
export function penaltiesMarkPrompt(
  k: Kernels,
  pass: GPUComputePassEncoder,
  o: PenaltiesMarkPromptOptions,
): void {
  checkVocab("mark prompt tokens", o.vocab);
  if (!Number.isInteger(o.slot) || o.slot < 0) {
    throw new KernelError(`Cannot mark prompt tokens: expected a slot >= 0, got ${o.slot}`);
  }
  const p = k.pipeline("penalties", source, {}, "penalties_mark_prompt");
  const [x, y] = grid2d(k, Math.ceil(o.n / 256));
  const params = new ParamWriter()
    .u32(o.n).u32(o.vocab).u32(o.tokensOffset ?? 0).u32(o.slot)
    .u32(x).u32(0).u32(0).u32(0);
  k.dispatch(pass, p, [o.tokens, o.counts, k.params(params)], x, y);
}

export interface PenaltiesApplyOptions {
  logits: BufferArg; // f32 (nRows, logitsStride) from logitsOffset, modified in place
  logitsStride?: number; // elements; default vocab
  logitsOffset?: number; // elements
  rows: BufferArg; // PenaltyRow (rowsOffset + nRows)
  rowsOffset?: number; // rows
  nRows: number;
  counts: BufferArg; // u32 (numSlots, vocab)
  bias: BufferArg; // BiasPair, addressed by each row's biasOffset / biasCount (any non-empty buffer when unused)
  /** u32 token masks, ceil(vocab / 32) words from each row's maskOffset; omitted when no row has one. */
  mask?: BufferArg;
  vocab: number;
}

const WG = 256;

/**
 * Records one dispatch applying repetition, frequency and presence penalties, a constrained row's token
 * mask (-Infinity where its bit is clear) and then logit_bias to each logits row in place (one workgroup
 * per row).
 */
export function penaltiesApply(k: Kernels, pass: GPUComputePassEncoder, o: PenaltiesApplyOptions): void {
  checkVocab("apply penalties", o.vocab);
  const stride = o.logitsStride ?? o.vocab;
  if (stride < o.vocab) {
    throw new KernelError(`Cannot apply penalties: logitsStride ${stride} is smaller than vocab ${o.vocab}`);
  }
  const p = k.pipeline("penalties", source, { WG }, "penalties_apply");
  const params = new ParamWriter()
    .u32(o.nRows).u32(o.vocab).u32(stride).u32(o.logitsOffset ?? 0)
    .u32(o.rowsOffset ?? 0).u32(0).u32(0).u32(0);
  // Without masks nothing reads the mask binding: the bias buffer stands in.
  k.dispatch(pass, p, [o.rows, o.counts, o.bias, o.mask ?? o.bias, o.logits, k.params(params)], o.nRows);
}
