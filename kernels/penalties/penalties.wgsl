// Logits processing before sampling (OpenAI / vLLM penalties and logit_bias).
//   penalties_count: counts[slot_r * V + t_r] += 1 for each row r with a new token t_r = inputTokens[inputIndex_r].
//   penalties_mark_prompt: counts[slot * V + tokens[tokensOffset + i]] |= PROMPT_BIT for i < n.
//   penalties_apply: for each row r and token v of its logits row, with e = counts[slot_r * V + v],
//     c = e & COUNT_MASK, seen = c > 0, inPrompt = e & PROMPT_BIT:
//       repetition (vLLM / HF): if (seen || inPrompt) && rep != 1: l = l > 0 ? l / rep : l * rep
//       frequency, presence (OpenAI): if seen: l = l - (frequency * c + presence)
//       token mask (constrained decoding): if maskOffset != NO_MASK and bit (v & 31) of
//         mask[maskOffset + (v >> 5)] is clear: l = -Infinity
//     then, for each (id, value) of the row's logit_bias pairs in order: l[id] += value (ids >= V skipped).
// Counts layout: u32 (numSlots, V); bits 0..30 = times generated, bit 31 = occurs in the prompt.
// Bindings (each entry point numbers its own from 0; the Params uniform is last):
//   count: rows PenaltyRow, inputTokens u32, counts atomic u32, countParams.
//   mark_prompt: tokens u32, counts atomic u32, markParams.
//   apply: rows PenaltyRow, counts u32, bias BiasPair, mask u32 (a row's ceil(V / 32) words from its
//     maskOffset), logits f32 (rw), applyParams.
// Dispatch: count one thread per row (x = ceil(nRows / 64)); mark_prompt one thread per token
//   (grid2d of ceil(n / 256)); apply one workgroup of WG threads per row (x = nRows).
// Reference: penalties_ref.ts. Entries that no rule touches are never written, so neutral rows stay
// bit-identical, and -Infinity stays -Infinity (it is only ever multiplied by rep > 0 or shifted).

override WG: u32 = 256u;

const COUNT_MASK: u32 = 0x7fffffffu;
const PROMPT_BIT: u32 = 0x80000000u;
const NO_TOKEN: u32 = 0xffffffffu;
const NO_MASK: u32 = 0xffffffffu;
const NEG_INF_BITS: u32 = 0xff800000u;

// 32 bytes; packed by penalties.ts `packPenaltyRows`.
struct PenaltyRow {
  presence: f32, // 0 = off
  frequency: f32, // 0 = off
  repetition: f32, // 1 = off; > 0
  biasCount: u32, // logit_bias pairs of this row
  biasOffset: u32, // index of its first pair in `bias`
  slot: u32, // row of `counts` (the sequence slot)
  inputIndex: u32, // inputTokens[inputIndex] is the token just generated; NO_TOKEN = none
  maskOffset: u32, // word of the row's token mask in `mask`; NO_MASK = unconstrained
}

// 8 bytes; packed by penalties.ts `packLogitBias`.
struct BiasPair {
  id: u32,
  value: f32,
}

struct CountParams {
  nRows: u32,
  vocab: u32,
  rowsOffset: u32,
  _pad0: u32,
}

struct MarkParams {
  n: u32,
  vocab: u32,
  tokensOffset: u32,
  slot: u32,
  groupsX: u32, // workgroups along x (the grid may wrap onto y)
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

struct ApplyParams {
  nRows: u32,
  vocab: u32,
  logitsStride: u32,
  logitsOffset: u32,
  rowsOffset: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

// penalties_count
@group(0) @binding(0) var<storage, read> countRows: array<PenaltyRow>;
@group(0) @binding(1) var<storage, read> inputTokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> countCounts: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> countParams: CountParams;

// penalties_mark_prompt
@group(0) @binding(0) var<storage, read> promptTokens: array<u32>;
@group(0) @binding(1) var<storage, read_write> markCounts: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> markParams: MarkParams;

// penalties_apply
@group(0) @binding(0) var<storage, read> applyRows: array<PenaltyRow>;
@group(0) @binding(1) var<storage, read> applyCounts: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<BiasPair>;
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read_write> logits: array<f32>;
@group(0) @binding(5) var<uniform> applyParams: ApplyParams;

@compute @workgroup_size(64)
fn penalties_count(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= countParams.nRows) {
    return;
  }
  let row = countRows[countParams.rowsOffset + r];
  if (row.inputIndex == NO_TOKEN) {
    return;
  }
  let t = inputTokens[row.inputIndex];
  if (t >= countParams.vocab) {
    return; // NO_TOKEN or out of range: nothing to count
  }
  // Atomic so rows sharing a slot (several new tokens of one sequence) still count each one.
  atomicAdd(&countCounts[row.slot * countParams.vocab + t], 1u);
}

@compute @workgroup_size(256)
fn penalties_mark_prompt(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.y * markParams.groupsX + wg.x) * 256u + lid;
  if (i >= markParams.n) {
    return;
  }
  let t = promptTokens[markParams.tokensOffset + i];
  if (t >= markParams.vocab) {
    return;
  }
  atomicOr(&markCounts[markParams.slot * markParams.vocab + t], PROMPT_BIT);
}

@compute @workgroup_size(WG)
fn penalties_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wg.x;
  let row = applyRows[applyParams.rowsOffset + r];
  let vocab = applyParams.vocab;
  let base = applyParams.logitsOffset + r * applyParams.logitsStride;
  let countBase = row.slot * vocab;
  let rep = row.repetition;
  let penalized = rep != 1.0 || row.frequency != 0.0 || row.presence != 0.0;
  let masked = row.maskOffset != NO_MASK;
  if (penalized || masked) {
    for (var v = lid; v < vocab; v += WG) {
      if (masked && ((mask[row.maskOffset + (v >> 5u)] >> (v & 31u)) & 1u) == 0u) {
        logits[base + v] = bitcast<f32>(NEG_INF_BITS);
        continue;
      }
      let e = select(0u, applyCounts[countBase + v], penalized);
      if (e == 0u) {
        continue;
      }
      let c = e & COUNT_MASK;
      var x = logits[base + v];
      if (rep != 1.0) {
        x = select(x * rep, x / rep, x > 0.0);
      }
      if (c != 0u) {
        x = x - (row.frequency * f32(c) + row.presence);
      }
      logits[base + v] = x;
    }
  }
  // The dense writes above land before thread 0 adds the bias: one thread walks the pairs in order,
  // so repeated ids add up exactly as the reference does.
  storageBarrier();
  if (lid == 0u) {
    for (var i = 0u; i < row.biasCount; i++) {
      let p = bias[row.biasOffset + i];
      if (p.id < vocab) {
        logits[base + p.id] += p.value;
      }
    }
  }
}
