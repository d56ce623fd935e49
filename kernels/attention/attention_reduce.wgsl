// Combines the split-K partials of attention_decode.wgsl `split`: for token t and head h with partials
// (m_j, l_j, o_j) over the partitions j that hold positions <= tokenPos[t]:
//   out[t, h] = sum_j exp(m_j - M) o_j / sum_j exp(m_j - M) l_j,  M = max_j m_j.
// Bindings: scratch f32: stats (T, nHeads, nParts, 2) then partial outputs (T, nHeads, nParts, headDim);
//           tokenPos u32 (T); out f32 (T, outStride) from outOffset, head h at h * headDim; params.
// Dispatch: one workgroup per (head, token) = (x, y); invocations stride over headDim.
// Reference: attention_ref.ts `attentionRef` (together with the decode kernel).

override WG: u32 = 64u;

struct Params {
  T: u32,
  nHeads: u32,
  headDim: u32,
  partSize: u32,
  nParts: u32,
  outStride: u32,
  outOffset: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<storage, read> scratch: array<f32>;
@group(0) @binding(1) var<storage, read> tokenPos: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let h = wg.x;
  let t = wg.y;
  let used = min(params.nParts, tokenPos[t] / params.partSize + 1u);
  let row0 = (t * params.nHeads + h) * params.nParts;
  var m = scratch[2u * row0];
  for (var j = 1u; j < used; j++) {
    m = max(m, scratch[2u * (row0 + j)]);
  }
  var l = 0.0;
  for (var j = 0u; j < used; j++) {
    l += scratch[2u * (row0 + j) + 1u] * exp(scratch[2u * (row0 + j)] - m);
  }
  let outBase = 2u * params.T * params.nHeads * params.nParts;
  let dstBase = params.outOffset + t * params.outStride + h * params.headDim;
  for (var d = lid; d < params.headDim; d += WG) {
    var s = 0.0;
    for (var j = 0u; j < used; j++) {
      s += scratch[outBase + (row0 + j) * params.headDim + d] * exp(scratch[2u * (row0 + j)] - m);
    }
    out[dstBase + d] = s / l;
  }
}
