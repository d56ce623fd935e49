// Split-K paged attention for few query tokens per sequence (flash-decoding: split the keys, then
// combine partial softmaxes). For token t of sequence row s at position pos and query head h of kv
// group g = h / group:  out[t, h] = sum_{p <= pos} softmax_p(scale * q[t, h] . K[s, p, g]) V[s, p, g].
// Entry `split`: workgroup (x, y, z) = (partition j, g * headChunks + chunk, t) attends to positions
//   [j * partSize, min((j + 1) * partSize, pos + 1)) for the HG query heads of its chunk and writes
//   per-head (max, sum) and the unnormalised output to the scratch; attention_reduce.wgsl combines.
// Entry `direct`: the same with one partition covering [0, pos]; writes normalised rows to out.
// Bindings: q f32 (T, qStride) from qOffset, head h at columns [h * HEAD_DIM, (h + 1) * HEAD_DIM);
//           kCache, vCache f16 pairs as u32 (numBlocks, nKvHeads, blockSize, HEAD_DIM / 2);
//           tokenSeq u32 (T); tokenPos u32 (T); blockTable u32 (numSeqRows, maxBlocksPerSeq);
//           dst f32: `direct` -> out (T, outStride) from outOffset, head h at h * HEAD_DIM;
//                    `split` -> scratch: stats (T, nHeads, nParts, 2) = (max, sum), then
//                               partial outputs (T, nHeads, nParts, HEAD_DIM); params.
// Within a workgroup, per tile of TILE positions: stage K and V (f16 pairs) in workgroup memory, score
// (HG * TILE dot products, each split over CH invocations), exponentiate against the tile max, and
// fold into per-invocation accumulators with the online-softmax rescale (FlashAttention-2, sec. 3.1).
// Reference: attention_ref.ts `attentionRef`.

override WG: u32 = 128u;
override HEAD_DIM: u32 = 128u;
// Query heads per workgroup (all, or a chunk, of one kv group's heads), so K/V are read once for them.
override HG: u32 = 1u;
// Positions staged per step.
override TILE: u32 = 16u;
// Invocations per dot product.
override CH: u32 = 1u;
override HD2: u32 = HEAD_DIM / 2u;
// Row stride of the staged K tile, padded so the CH invocations of neighbouring rows hit distinct banks.
override KS: u32 = HD2 + CH;
// Output pairs per invocation: ceil(HG * HD2 / WG) <= MAX_ACC (checked by the host).
override NACC: u32 = (HG * HD2 + WG - 1u) / WG;

const MAX_ACC: u32 = 8u;
const NEG: f32 = -1e30;

struct Params {
  T: u32,
  nHeads: u32,
  nKvHeads: u32,
  group: u32,
  headChunks: u32,
  blockSize: u32,
  maxBlocksPerSeq: u32,
  partSize: u32,
  nParts: u32,
  qStride: u32,
  qOffset: u32,
  outStride: u32,
  outOffset: u32,
  scale: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kCache: array<u32>;
@group(0) @binding(2) var<storage, read> vCache: array<u32>;
@group(0) @binding(3) var<storage, read> tokenSeq: array<u32>;
@group(0) @binding(4) var<storage, read> tokenPos: array<u32>;
@group(0) @binding(5) var<storage, read> blockTable: array<u32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

var<workgroup> qs: array<vec2<f32>, HG * HD2>; // scaled query pairs (HG, HD2)
var<workgroup> kt: array<u32, TILE * KS>; // K tile (TILE, KS)
var<workgroup> vt: array<u32, TILE * HD2>; // V tile (TILE, HD2)
var<workgroup> dots: array<f32, HG * TILE * CH>; // partial dot products (HG, TILE, CH)
var<workgroup> sc: array<f32, HG * TILE>; // scores (HG, TILE), NEG where masked
var<workgroup> pr: array<f32, HG * TILE>; // exp(score - tile max)

// Output pair a of this invocation is o = lid + a * WG: head o / HD2, pair o % HD2.
var<private> acc: array<vec2<f32>, MAX_ACC>;
var<private> mAcc: array<f32, MAX_ACC>;
var<private> lAcc: array<f32, MAX_ACC>;

fn tileMax(h: u32, n: u32) -> f32 {
  var m = NEG;
  for (var r = 0u; r < n; r++) {
    m = max(m, sc[h * TILE + r]);
  }
  return m;
}

// Attends token t's query heads [headBase, headBase + nh) of kv head g over positions [p0, p1).
fn attend(t: u32, g: u32, headBase: u32, nh: u32, p0: u32, p1: u32, lid: u32) {
  let tableRow = tokenSeq[t] * params.maxBlocksPerSeq;
  let qBase = params.qOffset + t * params.qStride;
  for (var i = lid; i < HG * HD2; i += WG) {
    let h = min(i / HD2, nh - 1u);
    let j = qBase + (headBase + h) * HEAD_DIM + 2u * (i % HD2);
    qs[i] = vec2<f32>(q[j], q[j + 1u]) * params.scale;
  }
  for (var a = 0u; a < NACC; a++) {
    acc[a] = vec2<f32>(0.0);
    mAcc[a] = NEG;
    lAcc[a] = 0.0;
  }
  for (var p = p0; p < p1; p += TILE) {
    let n = min(TILE, p1 - p);
    for (var i = lid; i < TILE * HD2; i += WG) {
      let r = i / HD2;
      let d = i % HD2;
      var kw = 0u;
      var vw = 0u;
      if (r < n) {
        let pos = p + r;
        let blk = blockTable[tableRow + pos / params.blockSize];
        let j = ((blk * params.nKvHeads + g) * params.blockSize + pos % params.blockSize) * HD2 + d;
        kw = kCache[j];
        vw = vCache[j];
      }
      kt[r * KS + d] = kw;
      vt[i] = vw;
    }
    workgroupBarrier();
    for (var i = lid; i < HG * TILE * CH; i += WG) {
      let c = i % CH;
      let r = (i / CH) % TILE;
      let h = i / (CH * TILE);
      var s = 0.0;
      for (var d = c; d < HD2; d += CH) {
        s += dot(qs[h * HD2 + d], unpack2x16float(kt[r * KS + d]));
      }
      if (CH == 1u) {
        sc[i] = select(NEG, s, r < n);
      } else {
        dots[i] = s;
      }
    }
    workgroupBarrier();
    if (CH > 1u) {
      for (var i = lid; i < HG * TILE; i += WG) {
        var s = 0.0;
        for (var c = 0u; c < CH; c++) {
          s += dots[i * CH + c];
        }
        sc[i] = select(NEG, s, i % TILE < n);
      }
      workgroupBarrier();
    }
    for (var i = lid; i < HG * TILE; i += WG) {
      pr[i] = exp(sc[i] - tileMax(i / TILE, n));
    }
    workgroupBarrier();
    for (var a = 0u; a < NACC; a++) {
      let o = lid + a * WG;
      if (o < HG * HD2) {
        let h = o / HD2;
        let d = o % HD2;
        let tm = tileMax(h, n);
        let mNew = max(mAcc[a], tm);
        var s = vec2<f32>(0.0);
        var l = 0.0;
        for (var r = 0u; r < n; r++) {
          let w = pr[h * TILE + r];
          s += w * unpack2x16float(vt[r * HD2 + d]);
          l += w;
        }
        let alpha = exp(mAcc[a] - mNew);
        let beta = exp(tm - mNew);
        acc[a] = acc[a] * alpha + s * beta;
        lAcc[a] = lAcc[a] * alpha + l * beta;
        mAcc[a] = mNew;
      }
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.z;
  let g = wg.y / params.headChunks;
  let headBase = g * params.group + (wg.y % params.headChunks) * HG;
  let nh = min(HG, (g + 1u) * params.group - headBase);
  attend(t, g, headBase, nh, 0u, tokenPos[t] + 1u, lid);
  for (var a = 0u; a < NACC; a++) {
    let o = lid + a * WG;
    if (o < nh * HD2) {
      let j = params.outOffset + t * params.outStride + (headBase + o / HD2) * HEAD_DIM + 2u * (o % HD2);
      let y = acc[a] / lAcc[a];
      dst[j] = y.x;
      dst[j + 1u] = y.y;
    }
  }
}

@compute @workgroup_size(WG)
fn split(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.z;
  let p0 = wg.x * params.partSize;
  let ctx = tokenPos[t] + 1u;
  if (p0 >= ctx) {
    return;
  }
  let g = wg.y / params.headChunks;
  let headBase = g * params.group + (wg.y % params.headChunks) * HG;
  let nh = min(HG, (g + 1u) * params.group - headBase);
  attend(t, g, headBase, nh, p0, min(ctx, p0 + params.partSize), lid);
  let outBase = 2u * params.T * params.nHeads * params.nParts;
  for (var a = 0u; a < NACC; a++) {
    let o = lid + a * WG;
    if (o < nh * HD2) {
      let d = o % HD2;
      let row = (t * params.nHeads + headBase + o / HD2) * params.nParts + wg.x;
      if (d == 0u) {
        dst[2u * row] = mAcc[a];
        dst[2u * row + 1u] = lAcc[a];
      }
      let j = outBase + row * HEAD_DIM + 2u * d;
      dst[j] = acc[a].x;
      dst[j + 1u] = acc[a].y;
    }
  }
}
