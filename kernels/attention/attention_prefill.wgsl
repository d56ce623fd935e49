// Causal paged attention for query tiles (prefill chunks), FlashAttention-2 style (Dao 2023, alg. 1).
// For token t of sequence row s at position pos and query head h of kv group g = h / group:
//   out[t, h] = sum_{p <= pos} softmax_p(scale * q[t, h] . K[s, p, g]) V[s, p, g]
// with K/V read from the paged cache (the batch's own tokens are written there first by kv_write).
// Query tiles: token t starts a tile when t = 0, or its sequence differs from token t - 1's, or its
// position is not token t - 1's plus one, or pos % BQ == 0; the tile holds t and the following tokens
// that continue it, at most BQ. So a tile never mixes sequences and any batch order works.
// Dispatch: (x, y) = (T, nKvHeads * headChunks): workgroup (t, g * headChunks + c) exits unless t starts
// a tile, else attends R = BQ * HG rows (tile tokens x the c-th chunk of HG heads of group g) to
// positions [0, last pos + 1) in steps of BK keys staged in workgroup memory. Invocation (tx, ty) of the
// TX x TY workgroup owns rows ty + j * TY (j < NR), and keys tx + k * TX for the scores and pairs of
// output columns tx + k * TX for the output.
// Bindings: q f32 (T, qStride) from qOffset, head h at columns [h * HEAD_DIM, (h + 1) * HEAD_DIM);
//           kCache, vCache f16 pairs as u32 (numBlocks, nKvHeads, blockSize, HEAD_DIM / 2);
//           tokenSeq u32 (T); tokenPos u32 (T); blockTable u32 (numSeqRows, maxBlocksPerSeq);
//           out f32 (T, outStride) from outOffset, head h at h * HEAD_DIM; params.
// Reference: attention_ref.ts `attentionRef`.

override TX: u32 = 16u;
override TY: u32 = 8u;
override HEAD_DIM: u32 = 128u;
// Query heads per workgroup (one kv group's, or a chunk of them), tokens per tile, rows R >= BQ * HG.
override HG: u32 = 1u;
override BQ: u32 = 32u;
override R: u32 = 32u;
// Keys per step, a multiple of TX.
override BK: u32 = 16u;
override HD2: u32 = HEAD_DIM / 2u;
override QS: u32 = HD2 + 1u; // padded row strides against bank conflicts
override KS: u32 = HD2 + 1u;
override PS: u32 = BK + 1u;
override NR: u32 = R / TY; // rows per invocation (<= MAX_NR)
override NK: u32 = BK / TX; // keys per invocation (<= MAX_NK)
override NC: u32 = (HD2 + TX - 1u) / TX; // output pairs per row per invocation (NR * NC <= MAX_ACC)

const MAX_NR: u32 = 8u;
const MAX_NK: u32 = 2u;
const MAX_NC: u32 = 8u;
const MAX_ACC: u32 = 16u;
const NEG: f32 = -1e30;

struct Params {
  T: u32,
  nHeads: u32,
  nKvHeads: u32,
  group: u32,
  headChunks: u32,
  blockSize: u32,
  maxBlocksPerSeq: u32,
  qStride: u32,
  qOffset: u32,
  outStride: u32,
  outOffset: u32,
  scale: f32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kCache: array<u32>;
@group(0) @binding(2) var<storage, read> vCache: array<u32>;
@group(0) @binding(3) var<storage, read> tokenSeq: array<u32>;
@group(0) @binding(4) var<storage, read> tokenPos: array<u32>;
@group(0) @binding(5) var<storage, read> blockTable: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

var<workgroup> qs: array<vec2<f32>, R * QS>; // scaled query pairs (R, QS)
var<workgroup> kt: array<u32, BK * KS>; // K tile (BK, KS)
var<workgroup> vt: array<u32, BK * HD2>; // V tile (BK, HD2)
var<workgroup> ps: array<f32, R * PS>; // scores (R, PS), NEG where masked
var<workgroup> pe: array<f32, R * PS>; // exp(score - running max)

// Whether token t continues token t - 1's tile.
fn continues(t: u32) -> bool {
  let pos = tokenPos[t];
  return tokenSeq[t] == tokenSeq[t - 1u] && pos == tokenPos[t - 1u] + 1u && pos % BQ != 0u;
}

@compute @workgroup_size(TX, TY)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) li: vec3<u32>) {
  let t0 = wg.x;
  if (t0 > 0u && continues(t0)) {
    return;
  }
  var nq = 1u;
  while (nq < BQ && t0 + nq < params.T && continues(t0 + nq)) {
    nq++;
  }
  let kEnd = tokenPos[t0 + nq - 1u] + 1u;
  let tableRow = tokenSeq[t0] * params.maxBlocksPerSeq;
  let g = wg.y / params.headChunks;
  let headBase = g * params.group + (wg.y % params.headChunks) * HG;
  let nh = min(HG, (g + 1u) * params.group - headBase);
  let tx = li.x;
  let ty = li.y;
  let lid = ty * TX + tx;

  // Row r is tile token r / HG, head headBase + r % HG; rows past the tile repeat its last valid row.
  for (var i = lid; i < R * HD2; i += TX * TY) {
    let r = i / HD2;
    let d = i % HD2;
    let tok = t0 + min(r / HG, nq - 1u);
    let h = headBase + min(r % HG, nh - 1u);
    let j = params.qOffset + tok * params.qStride + h * HEAD_DIM + 2u * d;
    qs[r * QS + d] = vec2<f32>(q[j], q[j + 1u]) * params.scale;
  }
  var rowPos: array<u32, MAX_NR>;
  var m: array<f32, MAX_NR>;
  var l: array<f32, MAX_NR>;
  var acc: array<vec2<f32>, MAX_ACC>;
  for (var j = 0u; j < NR; j++) {
    rowPos[j] = tokenPos[t0 + min((ty + j * TY) / HG, nq - 1u)];
    m[j] = NEG;
    l[j] = 0.0;
  }
  for (var a = 0u; a < NR * NC; a++) {
    acc[a] = vec2<f32>(0.0);
  }

  for (var ks = 0u; ks < kEnd; ks += BK) {
    let n = min(BK, kEnd - ks);
    for (var i = lid; i < BK * HD2; i += TX * TY) {
      let c = i / HD2;
      let d = i % HD2;
      var kw = 0u;
      var vw = 0u;
      if (c < n) {
        let pos = ks + c;
        let blk = blockTable[tableRow + pos / params.blockSize];
        let j = ((blk * params.nKvHeads + g) * params.blockSize + pos % params.blockSize) * HD2 + d;
        kw = kCache[j];
        vw = vCache[j];
      }
      kt[c * KS + d] = kw;
      vt[i] = vw;
    }
    workgroupBarrier();

    // Scores for (rows ty + j * TY) x (keys tx + k * TX).
    var s: array<f32, MAX_ACC>;
    for (var a = 0u; a < NR * NK; a++) {
      s[a] = 0.0;
    }
    for (var d = 0u; d < HD2; d++) {
      var kv: array<vec2<f32>, MAX_NK>;
      for (var k = 0u; k < NK; k++) {
        kv[k] = unpack2x16float(kt[(tx + k * TX) * KS + d]);
      }
      for (var j = 0u; j < NR; j++) {
        let qv = qs[(ty + j * TY) * QS + d];
        for (var k = 0u; k < NK; k++) {
          s[j * NK + k] += dot(qv, kv[k]);
        }
      }
    }
    for (var j = 0u; j < NR; j++) {
      for (var k = 0u; k < NK; k++) {
        let c = tx + k * TX;
        ps[(ty + j * TY) * PS + c] = select(NEG, s[j * NK + k], ks + c <= rowPos[j]);
      }
    }
    workgroupBarrier();

    // Online softmax: each invocation tracks the running max of its rows itself.
    var alpha: array<f32, MAX_NR>;
    for (var j = 0u; j < NR; j++) {
      let r = ty + j * TY;
      var mx = m[j];
      for (var c = 0u; c < BK; c++) {
        mx = max(mx, ps[r * PS + c]);
      }
      alpha[j] = exp(m[j] - mx);
      m[j] = mx;
      for (var k = 0u; k < NK; k++) {
        let c = tx + k * TX;
        pe[r * PS + c] = exp(ps[r * PS + c] - mx);
      }
    }
    workgroupBarrier();

    for (var j = 0u; j < NR; j++) {
      l[j] *= alpha[j];
      for (var k = 0u; k < NC; k++) {
        acc[j * NC + k] *= alpha[j];
      }
    }
    for (var c = 0u; c < n; c++) {
      var vv: array<vec2<f32>, MAX_NC>;
      for (var k = 0u; k < NC; k++) {
        vv[k] = unpack2x16float(vt[c * HD2 + min(tx + k * TX, HD2 - 1u)]);
      }
      for (var j = 0u; j < NR; j++) {
        let p = pe[(ty + j * TY) * PS + c];
        l[j] += p;
        for (var k = 0u; k < NC; k++) {
          acc[j * NC + k] += p * vv[k];
        }
      }
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < NR; j++) {
    let r = ty + j * TY;
    let qi = r / HG;
    let h = r % HG;
    if (qi < nq && h < nh) {
      let base = params.outOffset + (t0 + qi) * params.outStride + (headBase + h) * HEAD_DIM;
      for (var k = 0u; k < NC; k++) {
        let d = tx + k * TX;
        if (d < HD2) {
          let y = acc[j * NC + k] / l[j];
          out[base + 2u * d] = y.x;
          out[base + 2u * d + 1u] = y.y;
        }
      }
    }
  }
}
