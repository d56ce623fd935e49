// fp16-weight linear layer: out[t, o] (+)= sum_i x[t, i] * W[o, i] (Hugging Face nn.Linear layout),
// f32 activations and accumulation.
// Bindings: x f32 (M, xStride) from xOffset, read as vec4 (xStride, xOffset multiples of 4);
//           W f16 (N, K) row-major read as vec4<u32> = 8 halves (K multiple of 8; wOffset in units of
//           8 halves); out f32 (M, outStride) at outOffset, += when params.accumulate != 0; params.
// Entry `matvec` (small M = TOKENS, 1..8): a workgroup of TEAMS x TPR threads owns TEAMS * R output
//   rows; each team of TPR lanes walks K in coalesced vec4<u32> steps (UNROLL a trip) for R rows at once,
//   applying each weight to all TOKENS tokens; partial sums meet in workgroup memory. ceil(N / (TEAMS * R))
//   workgroups folded into (x, y) by grid2d.
// Entry `tiled` (prefill): 64 x 64 output tiles, K in steps of 32 through workgroup memory, 16 x 16
//   threads with 4 x 4 outputs each; ceil(N / 64) * ceil(M / 64) workgroups folded by grid2d.
// Reference: matmul_f16_ref.ts `matmulF16Ref`.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  xStride: u32,
  xOffset: u32,
  wOffset: u32,
  outStride: u32,
  outOffset: u32,
  accumulate: u32,
  tilesN: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

fn store(t: u32, o: u32, v: f32) {
  let i = params.outOffset + t * params.outStride + o;
  if (params.accumulate != 0u) {
    out[i] = out[i] + v;
  } else {
    out[i] = v;
  }
}

// ---- matvec ----

override TOKENS: u32 = 1u; // M of this dispatch, at most MAX_TOKENS
override TPR: u32 = 32u; // lanes per team, all on the same rows, striding along K
override TEAMS: u32 = 4u;
// K steps a team takes a trip, 1 or 2: with 2, both steps' weight loads go out before either's arithmetic
// (twice the bytes in flight); each lane still sums its steps in the same order, so the result is the same.
override UNROLL: u32 = 1u;
const MAX_TOKENS = 8u;
const R = 4u; // rows per team: each x load is reused for R weight rows

// Partial sums, lane-major: red[lane * (VALS + 1) + v], v = (team * R + r) * TOKENS + t. The +1 pad
// keeps both the writes (fixed v) and the final reads (fixed lane) free of bank conflicts.
var<workgroup> red: array<f32, TPR * (TEAMS * R * TOKENS + 1u)>;

@compute @workgroup_size(TPR * TEAMS)
fn matvec(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let vals = TEAMS * R * TOKENS;
  let lane = lid % TPR;
  let team = lid / TPR;
  let row0 = (wg.y * nwg.x + wg.x) * TEAMS * R + team * R;
  let kv = params.K / 8u;
  let last = params.N - 1u;
  // Rows past N re-read row N - 1 (no branch in the loop) and are dropped at the store.
  var wRow: array<u32, R>;
  for (var r = 0u; r < R; r++) {
    wRow[r] = params.wOffset + min(row0 + r, last) * kv;
  }
  var acc: array<f32, R * MAX_TOKENS>;
  for (var j0 = lane; j0 < kv; j0 += TPR * UNROLL) {
    // The trip's weights first; a step past the row's end loads the last step again and is skipped below.
    var qs: array<vec4<u32>, 2u * R>;
    for (var u = 0u; u < UNROLL; u++) {
      let j = min(j0 + u * TPR, kv - 1u);
      for (var r = 0u; r < R; r++) {
        qs[u * R + r] = w[wRow[r] + j];
      }
    }
    for (var u = 0u; u < UNROLL; u++) {
      let j = j0 + u * TPR;
      if (j < kv) {
        var lo: array<vec4<f32>, R>;
        var hi: array<vec4<f32>, R>;
        for (var r = 0u; r < R; r++) {
          let q = qs[u * R + r];
          lo[r] = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
          hi[r] = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
        }
        for (var t = 0u; t < TOKENS; t++) {
          let xb = (params.xOffset + t * params.xStride) / 4u + 2u * j;
          let x0 = x[xb];
          let x1 = x[xb + 1u];
          for (var r = 0u; r < R; r++) {
            acc[r * MAX_TOKENS + t] += dot(lo[r], x0) + dot(hi[r], x1);
          }
        }
      }
    }
  }
  for (var r = 0u; r < R; r++) {
    for (var t = 0u; t < TOKENS; t++) {
      red[lane * (vals + 1u) + (team * R + r) * TOKENS + t] = acc[r * MAX_TOKENS + t];
    }
  }
  workgroupBarrier();
  for (var v = lid; v < vals; v += TPR * TEAMS) {
    var s = 0.0;
    for (var l = 0u; l < TPR; l++) {
      s += red[l * (vals + 1u) + v];
    }
    let o = (wg.y * nwg.x + wg.x) * TEAMS * R + v / TOKENS;
    if (o < params.N) {
      store(v % TOKENS, o, s);
    }
  }
}

// ---- tiled ----

const BM = 64u;
const BN = 64u;
const BK = 32u;
const PAD = BM + 1u; // row length of the k-major tiles; the +1 spreads the transposing writes over banks

var<workgroup> xs: array<f32, BK * PAD>; // xs[k * PAD + m]
var<workgroup> ws: array<f32, BK * PAD>; // ws[k * PAD + n]

@compute @workgroup_size(256)
fn tiled(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let tile = wg.y * nwg.x + wg.x;
  let tilesM = (params.M + BM - 1u) / BM;
  if (tile >= params.tilesN * tilesM) {
    return;
  }
  let n0 = (tile % params.tilesN) * BN;
  let m0 = (tile / params.tilesN) * BM;
  let tx = lid % 16u;
  let ty = lid / 16u;
  let kv = params.K / 8u;
  // Loader roles: W rows n0 + lid / 4, 8 halves at (lid % 4) * 8; x rows m0 + i / 8, 4 floats at
  // (i % 8) * 4 for i = lid and lid + 256.
  let wn = lid / 4u;
  let wc = lid % 4u;
  let wRow = params.wOffset + min(n0 + wn, params.N - 1u) * kv;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < params.K; k0 += BK) {
    let kw = k0 / 8u + wc;
    var wlo = vec4<f32>(0.0);
    var whi = vec4<f32>(0.0);
    if (kw < kv && n0 + wn < params.N) {
      let q = w[wRow + kw];
      wlo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
      whi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    }
    for (var e = 0u; e < 4u; e++) {
      ws[(wc * 8u + e) * PAD + wn] = wlo[e];
      ws[(wc * 8u + 4u + e) * PAD + wn] = whi[e];
    }
    for (var s = 0u; s < 2u; s++) {
      let i = lid + s * 256u;
      let xm = i / 8u;
      let xc = i % 8u;
      var v = vec4<f32>(0.0);
      if (k0 + xc * 4u < params.K && m0 + xm < params.M) {
        v = x[(params.xOffset + (m0 + xm) * params.xStride + k0) / 4u + xc];
      }
      for (var e = 0u; e < 4u; e++) {
        xs[(xc * 4u + e) * PAD + xm] = v[e];
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<f32, 4>;
      var b: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        a[i] = xs[kk * PAD + ty + 16u * i];
        b[i] = ws[kk * PAD + tx + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + ty + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + tx + 16u * j;
      if (m < params.M && n < params.N) {
        store(m, n, acc[i * 4u + j]);
      }
    }
  }
}
