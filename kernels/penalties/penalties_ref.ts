// Plain reference for penalties.wgsl, on host arrays. This file is the specification both follow.
//
// counts: u32 (numSlots, V). Bits 0..30 of counts[s * V + v] = how many times slot s generated token v;
// bit 31 = v occurs in slot s's prompt.
//  - count: for each row r with inputIndex != PENALTY_NO_INPUT and t = inputTokens[inputIndex] < V,
//    counts[slot_r * V + t] += 1.
//  - mark prompt: counts[slot * V + t] |= bit 31 for each prompt token t < V (duplicates harmless).
//  - apply, for each row r and v < V, with e = counts[slot_r * V + v], c = e & 0x7fffffff, seen = c > 0:
//      1. repetition (vLLM / HF, prompt or generated): if e != 0 and rep != 1:
//         l = l > 0 ? l / rep : l * rep
//      2. frequency and presence (OpenAI, generated only): if seen: l = l - (frequency * c + presence)
//      2b. token mask, when the row has a maskOffset: l = -Infinity if bit (v & 31) of
//          mask[maskOffset + (v >> 5)] is clear
//      3. logit_bias, after every dense change: for each pair (id, value) of the row in order, id < V:
//         l[id] = l[id] + value (repeated ids add up).
//    Every operation rounds to f32. An entry no rule touches keeps its exact bits, so a row with
//    presence = frequency = 0, repetition = 1 and no bias is unchanged, and -Infinity stays -Infinity.
//    The GPU may contract frequency * c + presence into one fma and divide within a few ulp, so
//    penalised entries agree within a few ulp; untouched and bias-only entries agree exactly.
import { type LogitBiasEntry, PENALTY_NO_INPUT, PENALTY_NO_MASK, type PenaltyRow } from "./penalties.ts";

const f = Math.fround;
const COUNT_MASK = 0x7fffffff;
const PROMPT_BIT = 0x80000000;

/** counts after counting each row's new token (returns a new array). */
export function penaltiesCountRef(
  counts: Uint32Array,
  rows: readonly PenaltyRow[],
  inputTokens: Uint32Array,
  vocab: number,
): Uint32Array {
  const out = counts.slice();
  for (const r of rows) {
    if (r.inputIndex === PENALTY_NO_INPUT) continue;
    const t = inputTokens[r.inputIndex];
    if (t >= vocab) continue;
    out[r.slot * vocab + t] = (out[r.slot * vocab + t] + 1) >>> 0;
  }
  return out;
}

/** counts with the prompt bit set for each of `tokens` in `slot` (returns a new array). */
export function penaltiesMarkPromptRef(
  counts: Uint32Array,
  tokens: ArrayLike<number>,
  slot: number,
  vocab: number,
): Uint32Array {
  const out = counts.slice();
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t >= vocab) continue;
    out[slot * vocab + t] = (out[slot * vocab + t] | PROMPT_BIT) >>> 0;
  }
  return out;
}

export interface PenaltiesApplyRefOptions {
  logits: Float32Array; // (nRows, logitsStride) from logitsOffset
  logitsStride?: number;
  logitsOffset?: number;
  rows: readonly PenaltyRow[];
  counts: Uint32Array;
  bias: readonly LogitBiasEntry[];
  /** Token masks, addressed by each row's maskOffset. */
  mask?: Uint32Array;
  vocab: number;
}

/** The logits after penalties, token masks and bias (a modified copy of the whole `logits` array). */
export function penaltiesApplyRef(o: PenaltiesApplyRefOptions): Float32Array {
  const out = o.logits.slice();
  const vocab = o.vocab;
  const stride = o.logitsStride ?? vocab;
  const offset = o.logitsOffset ?? 0;
  o.rows.forEach((row, r) => {
    const base = offset + r * stride;
    const rep = f(row.repetition);
    const frequency = f(row.frequency);
    const presence = f(row.presence);
    if (rep !== 1 || frequency !== 0 || presence !== 0) {
      for (let v = 0; v < vocab; v++) {
        const e = o.counts[row.slot * vocab + v];
        if (e === 0) continue;
        const c = e & COUNT_MASK;
        let x = out[base + v];
        if (rep !== 1) x = x > 0 ? f(x / rep) : f(x * rep);
        if (c !== 0) x = f(x - f(f(frequency * f(c)) + presence));
        out[base + v] = x;
      }
    }
    const maskOffset = row.maskOffset ?? PENALTY_NO_MASK;
    if (maskOffset !== PENALTY_NO_MASK) {
      for (let v = 0; v < vocab; v++) {
        if (((o.mask![maskOffset + (v >>> 5)] >>> (v & 31)) & 1) === 0) out[base + v] = -Infinity;
      }
    }
    for (let i = 0; i < row.biasCount; i++) {
      const p = o.bias[row.biasOffset + i];
      if (p.id < vocab) out[base + p.id] = f(out[base + p.id] + f(p.value));
    }
  });
  return out;
}
