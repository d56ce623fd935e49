// Combines the split-K partials of attention_decode.wgsl `split`: for token t and head h with partials
// (m_j, l_j, o_j) over the partitions j that hold positions <= tokenPos[t]:
//   out[t, h] = sum_j exp(m_j - M) o_j / sum_j exp(m_j - M) l_j,  M = max_j m_j.
// Bindings: scratch f32: stats (T, nHeads, nParts, 2) then partial outputs (T, nHeads, nParts, headDim);
//           tokenPos u32 (T); out f32 (T, outStride) from outOffset, head h at h * headDim; params.
// Dispatch: one workgroup per (head, token) = (x, y); invocations stride over the partitions for the
// stats (a tree in workgroup memory combines them), then over headDim.
// Reference: attention_ref.ts `attentionRef` (together with the decode kernel).

override WG: u32 = 128u; // a power of two

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

var<workgroup> tree: array<f32, WG>;

// The max (max = true) or the sum of v over the workgroup; every invocation calls it.
fn combine(v: f32, lid: u32, max_: bool) -> f32 {
  tree[lid] = v;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) {
      tree[lid] = select(tree[lid] + tree[lid + h], max(tree[lid], tree[lid + h]), max_);
    }
    workgroupBarrier();
  }
  let r = tree[0];
  workgroupBarrier();
  return r;
}

// Weights exp(m_j - M) of the partitions, for up to WG of them (more are computed where used).
var<workgroup> wts: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let h = wg.x;
  let t = wg.y;
  let used = min(params.nParts, tokenPos[t] / params.partSize + 1u);
  let row0 = (t * params.nHeads + h) * params.nParts;
  // The partitions' stats in parallel, each read once (a thread keeps the first pair it reads), then one
  // pass over the partial outputs with no dependent loads.
  var m0 = -1e30;
  var l0 = 0.0;
  if (lid < used) {
    m0 = scratch[2u * (row0 + lid)];
    l0 = scratch[2u * (row0 + lid) + 1u];
  }
  var m = m0;
  for (var j = lid + WG; j < used; j += WG) {
    m = max(m, scratch[2u * (row0 + j)]);
  }
  m = combine(m, lid, true);
  var l = 0.0;
  if (lid < used) {
    let w = exp(m0 - m);
    wts[lid] = w;
    l = l0 * w;
  }
  for (var j = lid + WG; j < used; j += WG) {
    l += scratch[2u * (row0 + j) + 1u] * exp(scratch[2u * (row0 + j)] - m);
  }
  // combine() ends with a barrier, so wts is complete after it.
  l = combine(l, lid, false);
  let outBase = 2u * params.T * params.nHeads * params.nParts;
  let dstBase = params.outOffset + t * params.outStride + h * params.headDim;
  let inWts = min(used, WG);
  for (var d = lid; d < params.headDim; d += WG) {
    // Four partitions per trip, their loads issued together.
    var s = 0.0;
    var j = 0u;
    for (; j + 4u <= inWts; j += 4u) {
      let o = outBase + (row0 + j) * params.headDim + d;
      let a0 = scratch[o];
      let a1 = scratch[o + params.headDim];
      let a2 = scratch[o + 2u * params.headDim];
      let a3 = scratch[o + 3u * params.headDim];
      s += a0 * wts[j] + a1 * wts[j + 1u];
      s += a2 * wts[j + 2u] + a3 * wts[j + 3u];
    }
    for (; j < inWts; j++) {
      s += scratch[outBase + (row0 + j) * params.headDim + d] * wts[j];
    }
    for (; j < used; j++) {
      s += scratch[outBase + (row0 + j) * params.headDim + d] * exp(scratch[2u * (row0 + j)] - m);
    }
    out[dstBase + d] = s / l;
  }
}
