// Paged KV write: kCache[blk, g, slot, :] = f16(k[t, g, :]) and the same for v, where for token t of
// sequence row s = tokenSeq[t] at position p = tokenPos[t]: blk = blockTable[s, p / blockSize],
// slot = p % blockSize.
// Bindings: k f32 (T, kStride) read from kOffset, g-th head at columns [g * headDim, (g + 1) * headDim);
//           v f32 (T, vStride) from vOffset, same head layout; tokenSeq u32 (T); tokenPos u32 (T);
//           blockTable u32 (numSeqRows, maxBlocksPerSeq); kCache, vCache f16 pairs as u32
//           (numBlocks, nKvHeads, blockSize, headDim / 2); params.
// Dispatch: one invocation per (token, kv head, pair of halves), WG per workgroup, workgroups laid out
// over (x, y) by grid2d; each invocation writes one u32 of K and one of V, so no two race.
// Reference: attention_ref.ts `kvWriteRef`.

override WG: u32 = 64u;

struct Params {
  T: u32,
  nKvHeads: u32,
  headDim: u32,
  blockSize: u32,
  maxBlocksPerSeq: u32,
  kStride: u32,
  kOffset: u32,
  vStride: u32,
  vOffset: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> k: array<f32>;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> tokenSeq: array<u32>;
@group(0) @binding(3) var<storage, read> tokenPos: array<u32>;
@group(0) @binding(4) var<storage, read> blockTable: array<u32>;
@group(0) @binding(5) var<storage, read_write> kCache: array<u32>;
@group(0) @binding(6) var<storage, read_write> vCache: array<u32>;
@group(0) @binding(7) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let half = params.headDim / 2u;
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i >= params.T * params.nKvHeads * half) {
    return;
  }
  let d = i % half;
  let g = (i / half) % params.nKvHeads;
  let t = i / (half * params.nKvHeads);
  let pos = tokenPos[t];
  let blk = blockTable[tokenSeq[t] * params.maxBlocksPerSeq + pos / params.blockSize];
  let dst = ((blk * params.nKvHeads + g) * params.blockSize + pos % params.blockSize) * half + d;
  let col = g * params.headDim + 2u * d;
  let ks = params.kOffset + t * params.kStride + col;
  let vs = params.vOffset + t * params.vStride + col;
  kCache[dst] = pack2x16float(vec2<f32>(k[ks], k[ks + 1u]));
  vCache[dst] = pack2x16float(vec2<f32>(v[vs], v[vs + 1u]));
}
