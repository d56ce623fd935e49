// The transforms of a long vector spread over several workgroups, each making OUT_BLOCKS consecutive output
// blocks of p (transform_lib.wgsl: the mix reads its K inputs straight from global memory, then an FWHT in
// workgroup memory). Two jobs:
//   gated (the MLP's middle): with gate = y[t, 0..n) and up = y[t, n..2n) of the stacked gate/up output,
//     h[t] = silu(sv_g * scale * H(gate)) * (sv_u * scale * H(up)) * su_d     (each factor optional:
//     a plain MLP gets h = silu(gate) * up)
//   input: out[t] = scale * H^T(x[t] * pre)   (the input side of a QTIP linear, e.g. o_proj's or down's)
// Bindings: x f32 (T, xStride) from xOffset, side f32 (side vectors); had u32; out f32 (T, outStride) from
//   outOffset; params.
// Dispatch: (T, ceil(blocks / OUT_BLOCKS)) workgroups, blocks = n / p. Reference: transform_ref.ts.

override WG: u32 = 256u;
override SM: u32 = 2048u; // >= 2 * OUT_BLOCKS * p (gated) or OUT_BLOCKS * p (input)
override OUT_BLOCKS: u32 = 1u;

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

// Element e (< OUT_BLOCKS p) of the mix for output block b0 + e / p of the vector x[base..base + n),
// times pre when asked: sum_a had'[j][a] * (x * pre)[(g K + a) p + r].
fn mixAt(base: u32, preOff: u32, usePre: bool, b: u32, r: u32) -> f32 {
  let s = params.h;
  let j = b % s.K;
  let first = (b - j) * s.p + r;
  let row = s.rows + j * s.words;
  var acc = 0.0;
  for (var w = 0u; w < s.words; w++) {
    let bits = had[row + w];
    let end = min(32u, s.K - 32u * w);
    for (var k = 0u; k < end; k++) {
      let i = first + (32u * w + k) * s.p;
      var v = x[base + i];
      if (usePre) {
        v *= side[preOff + i];
      }
      acc += select(v, -v, ((bits >> k) & 1u) != 0u);
    }
  }
  return acc;
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
  for (var e = tid; e < len; e += WG) {
    let b = b0 + e / p;
    let r = e % p;
    if (gated) {
      sm[e] = mixAt(xBase, 0u, false, b, r);
      sm[len + e] = mixAt(xBase + n, 0u, false, b, r);
    } else {
      sm[e] = mixAt(xBase, params.suOff, (f & F_SU) != 0u, b, r);
    }
  }
  workgroupBarrier();
  fwht(0u, p, select(nb, 2u * nb, gated), tid);
  let scale = params.h.scale;
  for (var e = tid; e < len; e += WG) {
    let i = e0 + e;
    if (gated) {
      var gv = sm[e] * scale;
      var uv = sm[len + e] * scale;
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
