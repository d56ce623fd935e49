// The transforms of a long vector spread over many workgroups, each making a few consecutive output blocks
// of p (transform_lib.wgsl: the mix reads its inputs straight from global memory, several threads to an
// element, then an FWHT). A power-of-two factor beyond p mixes too (H_Q, signs from bit parity), so a
// transform of 4096 is 64 workgroups, not one. Two jobs:
//   gated (the MLP's middle): with gate = y[t, 0..n) and up = y[t, n..2n) of the stacked gate/up output,
//     h[t] = silu(sv_g * scale * H(gate)) * (sv_u * scale * H(up)) * su_d     (each factor optional:
//     a plain MLP gets h = silu(gate) * up)
//   input: out[t] = scale * H^T(x[t] * pre)   (the input side of a QTIP linear, e.g. o_proj's or down's)
// Bindings: x f32 (T, xStride) from xOffset, side f32 (side vectors); had u32; out f32 (T, outStride) from
//   outOffset; params. Reference: transform_ref.ts `blockTransformRef`.
// Two plans share these bindings, Params and helpers:
// - the decode plan (block_decode.ts generates its entry point `decode`, with the helpers dec* below):
//   grid (blocks / J, T), J = 1 or 2 output blocks of PB a workgroup, every mix term loaded up front;
// - `main` (a CPU adapter's plan, the plain MLP's elementwise silu * up, legacy "block", and calls the decode
//   plan cannot take): grid (T, ceil(blocks / OUT_BLOCKS)), each output element's mix shared by SPLIT threads
//   in a loop of four terms a trip, then an FWHT in workgroup memory.
// Many rows take block_rows.wgsl's entry points instead (appended to this module; same bindings and Params).

override WG: u32 = 256u;
override SM: u32 = 2048u; // main: >= SPLIT * OUT_BLOCKS * p, twice that when gated; decode: its partials
override OUT_BLOCKS: u32 = 1u;
override SPLIT: u32 = 1u; // threads that share one element's mix
// The decode plan's shape (block_decode.ts): blocks of PB, LANES threads to a block row (each holding PB /
// LANES elements LANES apart), KQ = K Q blocks mixed per group with Q = 2^QS, TRIPS runs of terms a thread,
// SG the subgroup size (subgroup variants), PRE: the input job multiplies x by `pre` before the transform.
override PB: u32 = 64u;
override LANES: u32 = 32u;
override KQ: u32 = 1u;
override QS: u32 = 0u;
override TRIPS: u32 = 1u;
override SG: u32 = 32u;
override PRE: bool = false;

const F_GATED: u32 = 1u;
const F_HAD: u32 = 2u;
const F_SV: u32 = 4u; // gated: sv of gate at svOff, of up at svOff + n
const F_SU: u32 = 8u; // gated: su_d after the product; input: pre before the transform, at suOff

struct Params {
  n: u32,
  flags: u32,
  xStride: u32,
  xOffset: u32,
  outStride: u32,
  outOffset: u32,
  svOff: u32,
  suOff: u32,
  h: HadSpec,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> side: array<f32>;
@group(0) @binding(2) var<storage, read> had: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> sm: array<f32, SM>;

fn silu(v: f32) -> f32 {
  let e = exp(-abs(v));
  return select(v * e / (1.0 + e), v / (1.0 + e), v >= 0.0);
}

// Part `part` (of SPLIT) of the mix for element r of output block b: the sum over inputs a in this part's
// share of [0, K Q) of sign(b, a) * (x * pre)[(g K Q + a) p + r], where the block's transform is
// had_K kron H_Q kron H_p (Q = 1 when only had_K mixes; K = 1 for a power of two split as H_Q kron H_p,
// exact because Sylvester matrices factor over index bits). sign = had'[j / Q][a / Q] * (-1)^|j & a mod Q|.
// Q is a power of two (log2 in the spec's second pad), so no division runs per term: a runtime division is
// some twenty instructions on a GPU, and the mix is the kernel's inner loop. With `two`, the same mix of a
// second vector at base2 (the up half of the gated job) runs in the same loop, so its loads share the trips.
fn mixPart(base: u32, base2: u32, two: bool, preOff: u32, usePre: bool, b: u32, r: u32, part: u32) -> vec2<f32> {
  let s = params.h;
  let qShift = s._pad1;
  let qMask = (1u << qShift) - 1u;
  let kq = s.K << qShift;
  let j = b % kq;
  let first = (b - j) * s.p + r;
  let row = s.rows + (j >> qShift) * s.words;
  let jq = j & qMask;
  let per = (kq + SPLIT - 1u) / SPLIT;
  let a0 = part * per;
  let a1 = min(kq, a0 + per);
  // Four terms per trip, their loads issued before any is summed; a last trip's missing terms are zeros.
  var acc = vec2<f32>(0.0);
  for (var a = a0; a < a1; a += 4u) {
    let t0 = mixTerm(base, base2, two, preOff, usePre, first, row, jq, qShift, a, a1);
    let t1 = mixTerm(base, base2, two, preOff, usePre, first, row, jq, qShift, a + 1u, a1);
    let t2 = mixTerm(base, base2, two, preOff, usePre, first, row, jq, qShift, a + 2u, a1);
    let t3 = mixTerm(base, base2, two, preOff, usePre, first, row, jq, qShift, a + 3u, a1);
    acc += t0 + t1;
    acc += t2 + t3;
  }
  return acc;
}

// Term a of a mix (zero when a >= a1): sign(j, a) times the input(s) at first + a p.
fn mixTerm(
  base: u32,
  base2: u32,
  two: bool,
  preOff: u32,
  usePre: bool,
  first: u32,
  row: u32,
  jq: u32,
  qShift: u32,
  a: u32,
  a1: u32,
) -> vec2<f32> {
  let inside = a < a1;
  let au = select(0u, a, inside);
  let i = first + au * params.h.p;
  var v = vec2<f32>(x[base + i], 0.0);
  if (two) {
    v.y = x[base2 + i];
  }
  if (usePre) {
    v.x *= side[preOff + i];
  }
  var neg = countOneBits(jq & au) & 1u;
  if (params.h.K > 1u) {
    let ak = au >> qShift;
    neg ^= (had[row + (ak >> 5u)] >> (ak & 31u)) & 1u;
  }
  return select(vec2<f32>(0.0), select(v, -v, neg != 0u), inside);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.x;
  let f = params.flags;
  let n = params.n;
  let p = params.h.p;
  let b0 = wid.y * OUT_BLOCKS;
  let blocks = n / p;
  let nb = min(OUT_BLOCKS, blocks - b0);
  let len = nb * p;
  let e0 = b0 * p; // first element of this workgroup's output
  let xBase = params.xOffset + t * params.xStride;
  let oBase = params.outOffset + t * params.outStride;
  let gated = (f & F_GATED) != 0u;
  let useHad = (f & F_HAD) != 0u;
  if (!useHad) {
    // Elementwise: the plain MLP's silu(gate) * up (an input job without a transform is not dispatched).
    for (var e = tid; e < len; e += WG) {
      let i = e0 + e;
      var v = silu(x[xBase + i]) * x[xBase + n + i];
      if ((f & F_SU) != 0u) {
        v *= side[params.suOff + i];
      }
      out[oBase + i] = v;
    }
    return;
  }
  // SPLIT threads share each element's mix; their partial sums meet in workgroup memory.
  let lenMax = OUT_BLOCKS * p;
  for (var w = tid; w < lenMax * SPLIT; w += WG) {
    let e = w % lenMax;
    let part = w / lenMax;
    if (e < len) {
      let b = b0 + e / p;
      let r = e % p;
      if (gated) {
        let gu = mixPart(xBase, xBase + n, true, 0u, false, b, r, part);
        sm[part * lenMax + e] = gu.x;
        sm[SPLIT * lenMax + part * lenMax + e] = gu.y;
      } else {
        sm[part * lenMax + e] = mixPart(xBase, 0u, false, params.suOff, (f & F_SU) != 0u, b, r, part).x;
      }
    }
  }
  workgroupBarrier();
  // Thread e alone reads column e of the partials, so it may overwrite that column's first slot (the up
  // half's partials start at U = SPLIT * lenMax).
  let U = SPLIT * lenMax;
  if (SPLIT > 1u) {
    for (var e = tid; e < len; e += WG) {
      var g = 0.0;
      var u = 0.0;
      for (var part = 0u; part < SPLIT; part++) {
        g += sm[part * lenMax + e];
        if (gated) {
          u += sm[U + part * lenMax + e];
        }
      }
      sm[e] = g;
      if (gated) {
        sm[U + e] = u;
      }
    }
    workgroupBarrier();
  }
  fwht(0u, p, nb, tid);
  if (gated) {
    fwht(U, p, nb, tid);
  }
  let scale = params.h.scale;
  for (var e = tid; e < len; e += WG) {
    let i = e0 + e;
    if (gated) {
      var gv = sm[e] * scale;
      var uv = sm[U + e] * scale;
      if ((f & F_SV) != 0u) {
        gv *= side[params.svOff + i];
        uv *= side[params.svOff + n + i];
      }
      var v = silu(gv) * uv;
      if ((f & F_SU) != 0u) {
        v *= side[params.suOff + i];
      }
      out[oBase + i] = v;
    } else {
      out[oBase + i] = sm[e] * scale;
    }
  }
}

// Sign bits of the terms aBase .. aBase + u - 1 of output block j's mix (bit i set: term aBase + i negated),
// for aBase a multiple of u and u dividing 32: sign(j, a) = had'[j / Q][a / Q] * (-1)^|j & a mod Q| as in
// mixTerm, for u terms at once. The had' bits of the u terms lie in one word (u / Q columns, or one when
// Q >= u); the parity of jq & (aBase + i) is that of jq & aBase times row jq of H_32 in bits i (aBase + i =
// aBase | i), the row the xor of one fixed pattern per set bit of jq.
fn decSigns(j: u32, aBase: u32, u: u32) -> u32 {
  var m = 0u;
  if ((KQ >> QS) > 1u) {
    let ak = aBase >> QS;
    let w = had[params.h.rows + (j >> QS) * params.h.words + (ak >> 5u)] >> (ak & 31u);
    if (QS == 0u) {
      m = w;
    } else if ((1u << QS) >= u) {
      m = 0u - (w & 1u);
    } else {
      // Column b of had' covers terms b Q .. b Q + Q - 1 (Q < u <= 32 here; the min keeps the shift in range
      // where pipeline creation folds this for a larger Q).
      let ones = (1u << min(1u << QS, 16u)) - 1u;
      for (var b = 0u; b < (u >> QS); b++) {
        m |= (0u - ((w >> b) & 1u)) & (ones << (b << QS));
      }
    }
  }
  if (QS > 0u) {
    let jq = j & ((1u << QS) - 1u);
    var h = select(0u, 0xaaaaaaaau, (jq & 1u) != 0u);
    h ^= select(0u, 0xccccccccu, (jq & 2u) != 0u);
    h ^= select(0u, 0xf0f0f0f0u, (jq & 4u) != 0u);
    h ^= select(0u, 0xff00ff00u, (jq & 8u) != 0u);
    h ^= select(0u, 0xffff0000u, (jq & 16u) != 0u);
    if ((countOneBits(jq & aBase) & 1u) != 0u) {
      h = ~h;
    }
    m ^= h;
  }
  return m;
}

// +1.0 or -1.0 from bit i of the sign bits m (set: -1.0).
fn decSign(m: u32, i: u32) -> f32 {
  return bitcast<f32>(((m >> i) << 31u) | 0x3f800000u);
}

// The gated job's side factors of element e: (sv_g, sv_u, su_d), 1.0 where absent. Loaded at the start, so
// their latency hides behind the mix's.
fn decSides(e: u32) -> vec3<f32> {
  var s = vec3<f32>(1.0);
  if ((params.flags & F_SV) != 0u) {
    s.x = side[params.svOff + e];
    s.y = side[params.svOff + params.n + e];
  }
  if ((params.flags & F_SU) != 0u) {
    s.z = side[params.suOff + e];
  }
  return s;
}

// The gated job's output from the transformed (unscaled) gate and up sums and decSides' factors.
fn decGated(g: f32, u: f32, s: vec3<f32>) -> f32 {
  let scale = params.h.scale;
  return silu(g * scale * s.x) * (u * scale * s.y) * s.z;
}
