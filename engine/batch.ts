// The batch builder: lays out the metadata of one forward pass (which block-table row and position each
// token has, which rows get logits) as u32 words for the engine's meta buffer, for the three kinds of pass
// the engine runs: a prefill batch of prompt chunks, the steps of a decode round, and a prompt-logits
// chunk. Pure host code except `forwardBatch`, which binds a layout to the engine's buffers.
// (vLLM's v1 InputBatch plays this part; forward.ts reads the result.)
import type { BufferArg } from "../kernels/mod.ts";
import { seg } from "./buffer_plan.ts";
import type { ForwardBatch } from "./forward.ts";

/** A run of u32 words in the meta buffer. */
export interface MetaRange {
  offset: number;
  words: number;
}

/** One forward pass as laid out in the meta buffer; `forwardBatch` binds it. */
export interface BatchLayout {
  nTokens: number;
  /** Word of the first input token id in the tokens buffer. */
  tokensOffset: number;
  /** u32 (nTokens): block-table row of each token. */
  tokenSeq: MetaRange;
  /** u32 (nTokens): absolute position of each token. */
  tokenPos: MetaRange;
  /** Largest number of tokens any one sequence has in this pass (1 for decode). */
  maxQueryTokens: number;
  /** Longest context any sequence attends to after this pass. */
  maxContext: number;
  /** u32 (count): the token rows that get logits; null: every row, in order. */
  logitRows: MetaRange | null;
}

/** Prompt tokens [from, from + n) of the sequence in block-table row `slot`. */
export interface PrefillPart {
  slot: number;
  promptIds: readonly number[];
  from: number;
  n: number;
}

export interface PrefillLayout {
  /** u32 (nTokens): the token ids, for the prefill tokens buffer. */
  tokens: Uint32Array<ArrayBuffer>;
  /** Meta words from word 0: [slot per token | position per token | logit rows], segments 256-byte aligned. */
  meta: Uint32Array<ArrayBuffer>;
  layout: BatchLayout;
  /** Token index where each part starts. */
  partOffsets: number[];
  /** The parts (indices) whose prompt this batch completes, in logits-row order: they get sampled. */
  completes: number[];
}

export function prefillLayout(parts: readonly PrefillPart[]): PrefillLayout {
  const T = parts.reduce((a, p) => a + p.n, 0);
  const tokens = new Uint32Array(T);
  const seqOf = new Uint32Array(T);
  const pos = new Uint32Array(T);
  const lastRows: number[] = [];
  const completes: number[] = [];
  const partOffsets: number[] = [];
  let t = 0;
  let maxQueryTokens = 0;
  let maxContext = 0;
  parts.forEach((p, i) => {
    partOffsets.push(t);
    for (let j = 0; j < p.n; j++) {
      tokens[t] = p.promptIds[p.from + j];
      seqOf[t] = p.slot;
      pos[t] = p.from + j;
      t++;
    }
    maxQueryTokens = Math.max(maxQueryTokens, p.n);
    maxContext = Math.max(maxContext, p.from + p.n);
    if (p.from + p.n === p.promptIds.length) {
      completes.push(i);
      lastRows.push(t - 1);
    }
  });
  const count = Math.max(1, lastRows.length);
  const meta = new Uint32Array(2 * seg(T) + count);
  meta.set(seqOf, 0);
  meta.set(pos, seg(T));
  meta.set(lastRows, 2 * seg(T));
  return {
    tokens,
    meta,
    layout: {
      nTokens: T,
      tokensOffset: 0,
      tokenSeq: { offset: 0, words: T },
      tokenPos: { offset: seg(T), words: T },
      maxQueryTokens,
      maxContext,
      logitRows: { offset: 2 * seg(T), words: count },
    },
    partOffsets,
    completes,
  };
}

/** A sequence in a decode round: its block-table row and the position of the token step 0 reads. */
export interface DecodeRow {
  slot: number;
  pos: number;
}

export interface DecodeLayout {
  /** Meta words from word 0: [slots (S) | positions of step 0 (S) | of step 1 | ... | slots of the
   * single-step rows], segments 256-byte aligned. */
  meta: Uint32Array<ArrayBuffer>;
  /** One pass per step: step s reads history row s and its logits row j is sequence j's. */
  steps: BatchLayout[];
  /** u32 (singleStep): the slots of the last `singleStep` rows, which run step 0 only; null when none. */
  singleStepSlots: MetaRange | null;
}

/**
 * A round of `steps` steps. The last `singleStep` rows (constrained sequences, which need a new token mask
 * before each token) run only step 0: later steps have the first S - singleStep rows, at the same history
 * columns, so history row s + 1 keeps sequence j's token at column j.
 */
export function decodeLayout(rows: readonly DecodeRow[], steps: number, singleStep = 0): DecodeLayout {
  const S = rows.length;
  const U = S - singleStep;
  const SA = seg(S);
  const meta = new Uint32Array(SA * (steps + 1) + (singleStep > 0 ? singleStep : 0));
  rows.forEach((r, j) => (meta[j] = r.slot));
  for (let st = 0; st < steps; st++) rows.forEach((r, j) => (meta[SA * (st + 1) + j] = r.pos + st));
  rows.slice(U).forEach((r, i) => (meta[SA * (steps + 1) + i] = r.slot));
  const maxContext = Math.max(0, ...rows.map((r) => r.pos + steps));
  return {
    meta,
    steps: Array.from({ length: steps }, (_, st) => ({
      nTokens: st === 0 ? S : U,
      tokensOffset: st * S,
      tokenSeq: { offset: 0, words: st === 0 ? S : U },
      tokenPos: { offset: SA * (st + 1), words: st === 0 ? S : U },
      maxQueryTokens: 1,
      maxContext,
      logitRows: null,
    })),
    singleStepSlots: singleStep > 0 ? { offset: SA * (steps + 1), words: singleStep } : null,
  };
}

export interface PromptLogitsLayout {
  tokens: Uint32Array<ArrayBuffer>;
  meta: Uint32Array<ArrayBuffer>;
  layout: BatchLayout;
  /** Logits rows this chunk yields (0 for a chunk before the last when only the last position is wanted). */
  rows: number;
}

/** Chunk [from, from + n) of `ids` (block-table row `slot`), with logits for every position or the last. */
export function promptLogitsLayout(
  o: { slot: number; ids: readonly number[]; from: number; n: number; lastOnly: boolean },
): PromptLogitsLayout {
  const { n, from } = o;
  const na = seg(n);
  const rows = o.lastOnly ? (from + n === o.ids.length ? 1 : 0) : n;
  const count = Math.max(1, rows);
  const meta = new Uint32Array(2 * na + count);
  meta.fill(o.slot, 0, n);
  for (let i = 0; i < n; i++) meta[na + i] = from + i;
  for (let i = 0; i < rows; i++) meta[2 * na + i] = o.lastOnly ? n - 1 : i;
  return {
    tokens: Uint32Array.from(o.ids.slice(from, from + n)),
    meta,
    layout: {
      nTokens: n,
      tokensOffset: 0,
      tokenSeq: { offset: 0, words: n },
      tokenPos: { offset: na, words: n },
      maxQueryTokens: n,
      maxContext: from + n,
      logitRows: { offset: 2 * na, words: count },
    },
    rows,
  };
}

/** `words` u32 words of `buffer` from word `offsetWords` (at least one word), as a binding. */
export function u32Range(buffer: GPUBuffer, offsetWords: number, words: number): GPUBufferBinding {
  return { buffer, offset: offsetWords * 4, size: Math.max(4, words * 4) };
}

/** The buffers a layout is bound to. */
export interface BatchBuffers {
  meta: GPUBuffer;
  /** u32 token ids, read from the layout's tokensOffset. */
  tokens: GPUBuffer;
  blockTable: GPUBuffer;
  logits: BufferArg;
  ropeMaxPos: number;
}

export function forwardBatch(l: BatchLayout, b: BatchBuffers): ForwardBatch {
  const range = (r: MetaRange) => u32Range(b.meta, r.offset, r.words);
  return {
    nTokens: l.nTokens,
    tokens: b.tokens,
    tokensOffset: l.tokensOffset,
    tokenSeq: range(l.tokenSeq),
    tokenPos: range(l.tokenPos),
    blockTable: b.blockTable,
    maxQueryTokens: l.maxQueryTokens,
    maxContext: l.maxContext,
    logitRows: l.logitRows && { idx: range(l.logitRows), count: l.logitRows.words },
    logits: b.logits,
    ropeMaxPos: b.ropeMaxPos,
  };
}
