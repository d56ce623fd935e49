// Finishes the fused q/k/v linear of an attention block and files its results: for token t and part g
// (0 = q, 1 = k, 2 = v) of the stacked output row y[t] = [q | k | v] (widths qDim, kvDim, kvDim):
//   z = sv_g * scale * H_g(y_g)    (QTIP output side; or z = y_g for a plain linear)
//   q: RoPE(z) -> qOut[t];  k: RoPE(z) -> kCache;  v: z -> vCache,
// RoPE in Hugging Face's rotate_half layout per head (pairs i, i + headDim / 2; cos, sin = rope[pos, i]),
// and K/V as f16 in the paged cache (block blockTable[seq, pos / blockSize], slot pos % blockSize), as
// kernels/rope and kernels/attention/kv_write do separately.
// Bindings: y f32 (T, yStride) from yOffset, side f32 (sv of q | k | v from svOff); had u32; rope f32 (maxPos,
//   headDim / 2, 2); tokenSeq, tokenPos u32 (T); blockTable u32;
//   qOut f32 (T, qStride) from qOffset; kCache, vCache u32 (numBlocks, nKvHeads, blockSize, headDim / 2).
// Dispatch: (T, 3) workgroups. Reference: transform_ref.ts `ropeKvRef`.

override WG: u32 = 256u;
override SM: u32 = 4096u;

const F_HAD: u32 = 1u;
const F_SV: u32 = 2u;

struct Params {
  qDim: u32,
  kvDim: u32,
  headDim: u32,
  flags: u32,
  yStride: u32,
  yOffset: u32,
  svOff: u32,
  qStride: u32,
  qOffset: u32,
  _pad0: u32,
  _pad1: u32,
  ropeMaxPos: u32,
  blockSize: u32,
  maxBlocksPerSeq: u32,
  nKvHeads: u32,
  _pad: u32,
  hq: HadSpec,
  hkv: HadSpec,
}

@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> side: array<f32>;
@group(0) @binding(2) var<storage, read> had: array<u32>;
@group(0) @binding(3) var<storage, read> rope: array<f32>;
@group(0) @binding(4) var<storage, read> tokenSeq: array<u32>;
@group(0) @binding(5) var<storage, read> tokenPos: array<u32>;
@group(0) @binding(6) var<storage, read> blockTable: array<u32>;
@group(0) @binding(7) var<storage, read_write> qOut: array<f32>;
@group(0) @binding(8) var<storage, read_write> kCache: array<u32>;
@group(0) @binding(9) var<storage, read_write> vCache: array<u32>;
@group(0) @binding(10) var<uniform> params: Params;

var<workgroup> sm: array<f32, SM>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.x;
  let g = wid.y;
  var m = params.kvDim;
  var col = params.qDim + (g - 1u) * params.kvDim;
  var spec = params.hkv;
  if (g == 0u) {
    m = params.qDim;
    col = 0u;
    spec = params.hq;
  }
  let yBase = params.yOffset + t * params.yStride + col;
  for (var i = tid; i < m; i += WG) {
    sm[i] = y[yBase + i];
  }
  workgroupBarrier();
  var at = 0u;
  var scale = 1.0;
  if ((params.flags & F_HAD) != 0u) {
    at = transformSm(0u, m, spec, tid);
    scale = spec.scale;
  }
  let pos = tokenPos[t];
  let hd = params.headDim;
  let half = hd / 2u;
  let ropeRow = min(pos, params.ropeMaxPos - 1u) * half;
  // z (with RoPE for q and k) into sm[at'..): rotated pairs are read and written by the same thread.
  for (var e = tid; e < m / 2u; e += WG) {
    let h = e / half;
    let i = e % half;
    let a = h * hd + i;
    var x0 = sm[at + a] * scale;
    var x1 = sm[at + a + half] * scale;
    if ((params.flags & F_SV) != 0u) {
      x0 *= side[params.svOff + col + a];
      x1 *= side[params.svOff + col + a + half];
    }
    if (g < 2u) {
      let c = rope[2u * (ropeRow + i)];
      let s = rope[2u * (ropeRow + i) + 1u];
      let r0 = x0 * c - x1 * s;
      let r1 = x1 * c + x0 * s;
      x0 = r0;
      x1 = r1;
    }
    if (g == 0u) {
      let qBase = params.qOffset + t * params.qStride;
      qOut[qBase + a] = x0;
      qOut[qBase + a + half] = x1;
    } else {
      sm[at + a] = x0;
      sm[at + a + half] = x1;
    }
  }
  if (g == 0u) {
    return;
  }
  workgroupBarrier();
  let seq = tokenSeq[t];
  let blk = blockTable[seq * params.maxBlocksPerSeq + pos / params.blockSize];
  let slot = pos % params.blockSize;
  for (var e = tid; e < m / 2u; e += WG) {
    let head = e / half;
    let d = e % half;
    let dst = ((blk * params.nKvHeads + head) * params.blockSize + slot) * half + d;
    let v = pack2x16float(vec2<f32>(sm[at + 2u * e], sm[at + 2u * e + 1u]));
    if (g == 1u) {
      kCache[dst] = v;
    } else {
      vCache[dst] = v;
    }
  }
}
