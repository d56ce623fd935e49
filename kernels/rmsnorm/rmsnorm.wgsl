// RMSNorm: out[r, i] = x[r, i] / sqrt(mean_j(x[r, j]^2) + eps) * weight[i]
// Bindings: x f32 (rows, xStride) read from xOffset; weight f16 pairs as u32 (dim / 2);
//           out f32 (rows, outStride) written at outOffset; params.
// Dispatch: one workgroup per row (x = rows). Reference: rmsnorm_ref.ts `rmsnormRef`.

override WG: u32 = 256u;

struct Params {
  rows: u32,
  dim: u32,
  xStride: u32,
  outStride: u32,
  xOffset: u32,
  outOffset: u32,
  eps: f32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> partial: array<f32, WG>;

fn weightAt(i: u32) -> f32 {
  let pair = unpack2x16float(weight[i >> 1u]);
  return select(pair.x, pair.y, (i & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x;
  let xBase = params.xOffset + row * params.xStride;
  var sum = 0.0;
  for (var i = lid; i < params.dim; i += WG) {
    let v = x[xBase + i];
    sum += v * v;
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      partial[lid] += partial[lid + s];
    }
    workgroupBarrier();
  }
  let inv = inverseSqrt(partial[0] / f32(params.dim) + params.eps);
  let outBase = params.outOffset + row * params.outStride;
  for (var i = lid; i < params.dim; i += WG) {
    out[outBase + i] = x[xBase + i] * inv * weightAt(i);
  }
}
