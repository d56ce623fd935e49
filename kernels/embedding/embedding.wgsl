// Embedding lookup: out[t, i] = f32(table[tokens[tokensOffset + t] - idBase, i]); ids outside
// [idBase, idBase + vocab) give zeros, or leave their row untouched when keepOutside is set (a table
// split over several buffers is looked up with one dispatch per part).
// Bindings: tokens u32 (tokensOffset + T); table f16 (vocab, dim) read as u32 pairs (vocab * dim / 2,
//           any dim: element e lives in word e / 2, low half first); out f32 (T, outStride) written at
//           outOffset; params.
// Dispatch: one thread per output element, ceil(T * dim / WG) workgroups folded into (x, y) by grid2d.
// Reference: embedding_ref.ts `embeddingRef`.

override WG: u32 = 256u;

struct Params {
  T: u32,
  dim: u32,
  vocab: u32,
  tokensOffset: u32,
  outStride: u32,
  outOffset: u32,
  idBase: u32,
  keepOutside: u32,
}

@group(0) @binding(0) var<storage, read> tokens: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wg.y * nwg.x + wg.x) * WG + lid;
  if (idx >= params.T * params.dim) {
    return;
  }
  let t = idx / params.dim;
  let i = idx % params.dim;
  let id = tokens[params.tokensOffset + t];
  let inside = id >= params.idBase && id - params.idBase < params.vocab;
  if (!inside && params.keepOutside != 0u) {
    return;
  }
  var v = 0.0;
  if (inside) {
    let e = (id - params.idBase) * params.dim + i;
    let pair = unpack2x16float(table[e >> 1u]);
    v = select(pair.x, pair.y, (e & 1u) == 1u);
  }
  out[params.outOffset + t * params.outStride + i] = v;
}
