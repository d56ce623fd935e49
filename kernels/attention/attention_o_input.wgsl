// The split decode attention's combine step fused with the input transform of o_proj (QTIP), one token per
// workgroup. With the partials (m_j, l_j, o_j) of attention_decode.wgsl `split` for token t, head h and the
// partitions j that hold positions <= tokenPos[t] (M = max_j m_j, w_j = exp(m_j - M)):
//   att[h] = sum_j w_j o_j / sum_j w_j l_j                         (attention_reduce.wgsl's math)
//   out[t] = scale * H^T(att * su)                                  (block_transform.wgsl's input job)
// where att is the token's row of nHeads * HEAD_DIM = N and H^T is transform_lib.wgsl's HadSpec transform
// on the input side: per group of K blocks of P_LEN, block j = FWHT_P_LEN(sum_a had_K^T[j][a] block a).
//
// This file is a template: o_input.ts `oInputSource(plan)` replaces each block name in double braces with
// constants and straight-line statements, so every per-thread value is a named scalar or vec4 (no indexed
// per-thread arrays, which a GPU keeps in local memory) and every loop over global memory has a bound
// known when the module is built.
//
// Work split: thread lid holds V vec4 registers of the row, a{s} = elements 4 q .. 4 q + 3 with
// q = lid + s * WG (HEAD_DIM is a multiple of 4, so a vec4 lies in one head). The thread's head statistics
// are read by every thread of the head: the threads of a warp read the same words (one transaction), so the
// combine needs no reduction across threads and no barrier. M comes first: the maxima of the first PARTS
// partitions are loaded straight-line (a token that uses fewer repeats its last one), later ones by a
// loop. Then the weighted sums, in partition order, GROUP partitions a trip: each trip issues all its loads
// before its arithmetic, and partitions past the token's last repeat it with weight 0.
// The transform: K > 1 first mixes the K blocks through workgroup memory (two barriers); then the FWHT's
// levels of bits 0-1 (inside a vec4) and of the slot bits run in registers, those of the lane bits by
// subgroup shuffles (a subgroup is SG consecutive invocations, as on NVIDIA and lavapipe), and the rest
// in radix-2^r passes (r <= 5) over workgroup memory with a barrier before each; the last pass writes out.
// Bindings: scratch f32: stats (T, nHeads, nParts, 2) then partial outputs (T, nHeads, nParts, HEAD_DIM)
//           (attention_decode.wgsl `split`); tokenPos u32 (T); side f32 (SU at suOff, when SU is used);
//           had u32 sign bits (transform_lib.wgsl, when K > 1); out f32 (T, outStride) from outOffset;
//           params. Bindings are numbered in that order, skipping the absent ones.
// Dispatch: T workgroups of WG.
// Reference: attention_ref.ts `attentionRef`, then transform_ref.ts `blockTransformRef` (input job).

{{CONSTS}}

struct Params {
  T: u32,
  nParts: u32,
  partSize: u32,
  suOff: u32,
  outStride: u32,
  outOffset: u32,
  hadRows: u32, // word of row 0 of had_K^T in `had`
  scale: f32,
}

{{BINDINGS}}

// The row in workgroup memory, with one padding word per 32 when PAD (the FWHT passes read columns).
var<workgroup> sm: array<f32, SM>;

fn at(i: u32) -> u32 {
  return select(i, i + (i >> 5u), PAD);
}

// Four consecutive words of the scratch.
fn scratch4(i: u32) -> vec4<f32> {
  return vec4<f32>(scratch[i], scratch[i + 1u], scratch[i + 2u], scratch[i + 3u]);
}

fn store4(e: u32, v: vec4<f32>) {
  sm[at(e)] = v.x;
  sm[at(e + 1u)] = v.y;
  sm[at(e + 2u)] = v.z;
  sm[at(e + 3u)] = v.w;
}

// H_4 on the components: the FWHT levels of element bits 0 and 1 (only bit 0 when P_LEN is 2).
fn fwht4(a: vec4<f32>) -> vec4<f32> {
  let b = vec4<f32>(a.x + a.y, a.x - a.y, a.z + a.w, a.z - a.w);
  if (P_LEN < 4u) {
    return b;
  }
  return vec4<f32>(b.x + b.z, b.y + b.w, b.x - b.z, b.y - b.w);
}

{{FNS}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x;
  let used = min(params.nParts, tokenPos[t] / params.partSize + 1u);
  let last = used - 1u;
  let outBase = 2u * params.T * N_HEADS * params.nParts;
  let dst = params.outOffset + t * params.outStride;
{{BODY}}
}
