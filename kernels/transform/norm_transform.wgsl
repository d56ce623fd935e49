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

override WG: u32 = 256u;
override SM: u32 = 4096u;

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
  let xBase = params.xInOffset + r * params.xStride;
  // 1. The residual.
  if ((f & F_FINISH) != 0u) {
    let yBase = params.yOffset + r * params.yStride;
    for (var i = tid; i < n; i += WG) {
      sm[i] = y[yBase + i];
    }
    workgroupBarrier();
    var at = 0u;
    var scale = 1.0;
    if ((f & F_FINISH_HAD) != 0u) {
      at = transformSm(0u, n, params.fin, tid);
      scale = params.fin.scale;
    }
    for (var i = tid; i < n; i += WG) {
      var p = sm[at + i] * scale;
      if ((f & F_SV) != 0u) {
        p *= post[params.svOff + i];
      }
      sm[i] = xIn[xBase + i] + p;
    }
  } else {
    for (var i = tid; i < n; i += WG) {
      sm[i] = xIn[xBase + i];
    }
  }
  workgroupBarrier();
  if ((f & F_WRITE_X) != 0u && g == 0u) {
    let oBase = params.xOutOffset + r * params.xStride;
    for (var i = tid; i < n; i += WG) {
      xOut[oBase + i] = sm[i];
    }
  }
  // 2. RMSNorm (the same sum and expression as kernels/rmsnorm).
  if ((f & F_NORM) != 0u) {
    var sum = 0.0;
    for (var i = tid; i < n; i += WG) {
      let v = sm[i];
      sum += v * v;
    }
    red[tid] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (tid < s) {
        red[tid] += red[tid + s];
      }
      workgroupBarrier();
    }
    let inv = inverseSqrt(red[0] / f32(n) + params.eps);
    for (var i = tid; i < n; i += WG) {
      sm[i] = sm[i] * inv * side[params.gammaOff + i];
    }
  }
  // 3. The input of part g.
  if ((f & F_SU) != 0u) {
    let su = params.suOff + g * n;
    for (var i = tid; i < n; i += WG) {
      sm[i] *= side[su + i];
    }
  }
  workgroupBarrier();
  var at = 0u;
  var scale = 1.0;
  if ((f & F_IN_HAD) != 0u) {
    at = transformSm(0u, n, params.inp, tid);
    scale = params.inp.scale;
  }
  let oBase = params.outOffset + g * params.outPartStride + t * params.outStride;
  for (var i = tid; i < n; i += WG) {
    out[oBase + i] = sm[at + i] * scale;
  }
}
