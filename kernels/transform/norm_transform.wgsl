// One residual-stream step of a transformer layer, fused: finish the previous linear, normalize, and prepare
// the inputs of the next linears. For output row t (source row r = t, or idx[t] when gathering) and part g:
//   1. v = xIn[r] + post(y[r])          post(y) = sv * scale_f * H_f(y) (QTIP output side), or y;  or v = xIn[r]
//      when there is no previous linear to finish; part 0 writes v to xOut[r] (the new residual).
//   2. z = v / sqrt(mean(v^2) + eps) * gamma     (when normalizing; else z = v)
//   3. out[g][t] = scale_i * H_i^T(z * su_g)    (QTIP input side of part g), or z * su_g, or z.
// QTIP: y = diag(SV) H_m hatW H_n^T diag(SU) x, so the matvec between two such steps sees exactly the
// H_n^T(SU x) this writes, and the next step finishes with H_m and SV (qtip-format.md, "The linear layer").
// Bindings: xIn f32 (rows, xStride) from xInOffset; y f32 (rows, yStride) from yOffset; post f32 (the previous
//   linear's side vectors: sv); side f32 (this step's: gamma, su_g at su + g * dim); had u32 sign bits (transform_lib.wgsl); rowMeta u32 (row
//   indices from idxOffset); xOut f32 (rows, xStride) from xOutOffset; out f32, part g row t at outOffset +
//   g * outPartStride + t * outStride; params.
// Dispatch: (rows, parts) workgroups. Workgroup memory: the row, plus as much again when a transform mixes
// (K > 1). Reference: transform_ref.ts `normTransformRef`.
// Thread tid holds elements k * WG + tid, k < PER (a constant of the source, filled in by transform.ts, so
// the per-thread arrays are unrolled into registers): every global read of a row (y, the residual, SV, the
// norm weight, SU) is issued at the start, together, instead of one latency-bound loop per operand.

override WG: u32 = 256u;
override SM: u32 = 4096u;
const PER: u32 = {{PER}}u;

const F_FINISH: u32 = 1u; // add post(y) to the residual
const F_FINISH_HAD: u32 = 2u; // post includes the output-side transform
const F_SV: u32 = 4u; // post includes sv
const F_NORM: u32 = 8u;
const F_SU: u32 = 16u;
const F_IN_HAD: u32 = 32u;
const F_WRITE_X: u32 = 64u; // part 0 writes the residual
const F_GATHER: u32 = 128u; // source rows from rowMeta

struct Params {
  dim: u32,
  eps: f32,
  flags: u32,
  idxOffset: u32,
  xStride: u32,
  xInOffset: u32,
  xOutOffset: u32,
  yStride: u32,
  yOffset: u32,
  outStride: u32,
  outOffset: u32,
  outPartStride: u32,
  svOff: u32,
  gammaOff: u32,
  suOff: u32,
  _pad: u32,
  fin: HadSpec,
  inp: HadSpec,
}

@group(0) @binding(0) var<storage, read> xIn: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> post: array<f32>;
@group(0) @binding(3) var<storage, read> side: array<f32>;
@group(0) @binding(4) var<storage, read> had: array<u32>;
@group(0) @binding(5) var<storage, read> rowMeta: array<u32>;
@group(0) @binding(6) var<storage, read_write> xOut: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

var<workgroup> sm: array<f32, SM>;
var<workgroup> red: array<f32, WG>;
var<workgroup> red32: array<f32, 32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.x;
  let g = wid.y;
  let f = params.flags;
  let n = params.dim;
  var r = t;
  if ((f & F_GATHER) != 0u) {
    r = rowMeta[params.idxOffset + t];
  }
  let finish = (f & F_FINISH) != 0u;
  let useSv = (f & F_SV) != 0u;
  let useNorm = (f & F_NORM) != 0u;
  let useSu = (f & F_SU) != 0u;
  let xBase = params.xInOffset + r * params.xStride;
  let yBase = params.yOffset + r * params.yStride;
  let suBase = params.suOff + g * n;
  // Every operand of this thread's elements, read at once (a switched-off operand reads slot 0 of its
  // binding, a small placeholder buffer, and is not used).
  var v: array<f32, PER>;
  var yv: array<f32, PER>;
  var sv: array<f32, PER>;
  var gm: array<f32, PER>;
  var su: array<f32, PER>;
  for (var k = 0u; k < PER; k++) {
    let i = min(k * WG + tid, n - 1u);
    v[k] = xIn[xBase + i];
    yv[k] = y[select(0u, yBase + i, finish)];
    sv[k] = post[select(0u, params.svOff + i, useSv)];
    gm[k] = side[select(0u, params.gammaOff + i, useNorm)];
    su[k] = side[select(0u, suBase + i, useSu)];
  }
  // 1. The residual.
  if (finish) {
    var scale = 1.0;
    if ((f & F_FINISH_HAD) != 0u) {
      for (var k = 0u; k < PER; k++) {
        let i = k * WG + tid;
        if (i < n) {
          sm[i] = yv[k];
        }
      }
      workgroupBarrier();
      let at = transformSm(0u, n, params.fin, tid);
      scale = params.fin.scale;
      for (var k = 0u; k < PER; k++) {
        let i = k * WG + tid;
        if (i < n) {
          yv[k] = sm[at + i];
        }
      }
    }
    for (var k = 0u; k < PER; k++) {
      var p = yv[k] * scale;
      if (useSv) {
        p *= sv[k];
      }
      v[k] += p;
    }
  }
  if ((f & F_WRITE_X) != 0u && g == 0u) {
    let oBase = params.xOutOffset + r * params.xStride;
    for (var k = 0u; k < PER; k++) {
      let i = k * WG + tid;
      if (i < n) {
        xOut[oBase + i] = v[k];
      }
    }
  }
  // 2. RMSNorm: the thread's squares, then the workgroup's (32 partial sums of strided threads, then
  // every thread adds the 32 in the same order, so all see the same total).
  if (useNorm) {
    var sum = 0.0;
    for (var k = 0u; k < PER; k++) {
      if (k * WG + tid < n) {
        sum += v[k] * v[k];
      }
    }
    red[tid] = sum;
    workgroupBarrier();
    if (tid < 32u) {
      var s = 0.0;
      for (var j = tid; j < WG; j += 32u) {
        s += red[j];
      }
      red32[tid] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var j = 0u; j < 32u; j++) {
      total += red32[j];
    }
    let inv = inverseSqrt(total / f32(n) + params.eps);
    for (var k = 0u; k < PER; k++) {
      v[k] = v[k] * inv * gm[k];
    }
  }
  // 3. The input of part g.
  if (useSu) {
    for (var k = 0u; k < PER; k++) {
      v[k] *= su[k];
    }
  }
  let oBase = params.outOffset + g * params.outPartStride + t * params.outStride;
  if ((f & F_IN_HAD) != 0u) {
    // The finish's transform may still be reading sm.
    workgroupBarrier();
    for (var k = 0u; k < PER; k++) {
      let i = k * WG + tid;
      if (i < n) {
        sm[i] = v[k];
      }
    }
    workgroupBarrier();
    let at = transformSm(0u, n, params.inp, tid);
    let scale = params.inp.scale;
    for (var k = 0u; k < PER; k++) {
      let i = k * WG + tid;
      if (i < n) {
        out[oBase + i] = sm[at + i] * scale;
      }
    }
  } else {
    for (var k = 0u; k < PER; k++) {
      let i = k * WG + tid;
      if (i < n) {
        out[oBase + i] = v[k];
      }
    }
  }
}
