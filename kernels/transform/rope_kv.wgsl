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
// Thread tid holds the rotated pairs e = k * WG + tid, k < PAIRS (a constant of the source, filled in by
// transform.ts, so the per-thread arrays are registers): the token's position and cache slot, then every
// pair's y, SV and RoPE factors are read at the start, together.

override WG: u32 = 256u;
override SM: u32 = 4096u;
const PAIRS: u32 = {{PAIRS}}u;

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
  let pos = tokenPos[t];
  let seq = tokenSeq[t];
  var m = params.kvDim;
  var col = params.qDim + (g - 1u) * params.kvDim;
  var spec = params.hkv;
  if (g == 0u) {
    m = params.qDim;
    col = 0u;
    spec = params.hq;
  }
  let hd = params.headDim;
  let half = hd / 2u;
  let pairs = m / 2u;
  let useSv = (params.flags & F_SV) != 0u;
  let ropeRow = min(pos, params.ropeMaxPos - 1u) * half;
  let yBase = params.yOffset + t * params.yStride + col;
  let svBase = params.svOff + col;
  // Pair e = (head e / half, i = e % half) rotates elements a = head * hd + i and a + half.
  var x0: array<f32, PAIRS>;
  var x1: array<f32, PAIRS>;
  var s0: array<f32, PAIRS>;
  var s1: array<f32, PAIRS>;
  var rc: array<f32, PAIRS>;
  var rs: array<f32, PAIRS>;
  for (var k = 0u; k < PAIRS; k++) {
    let e = min(k * WG + tid, pairs - 1u);
    let i = e % half;
    let a = (e / half) * hd + i;
    x0[k] = y[yBase + a];
    x1[k] = y[yBase + a + half];
    s0[k] = side[select(0u, svBase + a, useSv)];
    s1[k] = side[select(0u, svBase + a + half, useSv)];
    rc[k] = rope[2u * (ropeRow + i)];
    rs[k] = rope[2u * (ropeRow + i) + 1u];
  }
  let blk = blockTable[seq * params.maxBlocksPerSeq + pos / params.blockSize];
  var scale = 1.0;
  if ((params.flags & F_HAD) != 0u) {
    for (var k = 0u; k < PAIRS; k++) {
      let e = k * WG + tid;
      if (e < pairs) {
        let a = (e / half) * hd + e % half;
        sm[a] = x0[k];
        sm[a + half] = x1[k];
      }
    }
    workgroupBarrier();
    let at = transformSm(0u, m, spec, tid);
    scale = spec.scale;
    for (var k = 0u; k < PAIRS; k++) {
      let e = k * WG + tid;
      if (e < pairs) {
        let a = (e / half) * hd + e % half;
        x0[k] = sm[at + a];
        x1[k] = sm[at + a + half];
      }
    }
    // Every thread has read the transform's result before sm is written again below.
    workgroupBarrier();
  }
  // z (with RoPE for q and k): q goes out; k and v go to sm[0..m) for the cache's pair order.
  let qBase = params.qOffset + t * params.qStride;
  for (var k = 0u; k < PAIRS; k++) {
    let e = k * WG + tid;
    if (e < pairs) {
      let a = (e / half) * hd + e % half;
      var v0 = x0[k] * scale;
      var v1 = x1[k] * scale;
      if (useSv) {
        v0 *= s0[k];
        v1 *= s1[k];
      }
      if (g < 2u) {
        let r0 = v0 * rc[k] - v1 * rs[k];
        let r1 = v1 * rc[k] + v0 * rs[k];
        v0 = r0;
        v1 = r1;
      }
      if (g == 0u) {
        qOut[qBase + a] = v0;
        qOut[qBase + a + half] = v1;
      } else {
        sm[a] = v0;
        sm[a + half] = v1;
      }
    }
  }
  if (g == 0u) {
    return;
  }
  workgroupBarrier();
  let slot = pos % params.blockSize;
  for (var k = 0u; k < PAIRS; k++) {
    let e = k * WG + tid;
    if (e < pairs) {
      let head = e / half;
      let d = e % half;
      let dst = ((blk * params.nKvHeads + head) * params.blockSize + slot) * half + d;
      let v = pack2x16float(vec2<f32>(sm[2u * e], sm[2u * e + 1u]));
      if (g == 1u) {
        kCache[dst] = v;
      } else {
        vCache[dst] = v;
      }
    }
  }
}
