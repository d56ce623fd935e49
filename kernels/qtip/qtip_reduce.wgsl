// The sum of the tiled QTIP matmul's split outputs (qtip.wgsl with z > 1):
//   out[outOffset + t outStride + r] (+)= sum_{z < splits} partial[z M m + t m + r]   for t < M, r < m.
// Bindings: partial f32 (splits, M, m); out f32; params. Dispatch (ceil(m / 256), M).

struct Params {
  M: u32,
  m: u32,
  splits: u32,
  outStride: u32,
  outOffset: u32,
  accumulate: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let r = wid.x * 256u + tid;
  let t = wid.y;
  if (r >= params.m) {
    return;
  }
  let plane = params.M * params.m;
  var sum = 0.0;
  for (var z = 0u; z < params.splits; z++) {
    sum += partial[z * plane + t * params.m + r];
  }
  let o = params.outOffset + t * params.outStride + r;
  if (params.accumulate != 0u) {
    sum += out[o];
  }
  out[o] = sum;
}
