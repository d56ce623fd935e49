// In-place add for residual streams: acc[accOffset + i] += x[xOffset + i] for i < n, all f32.
// Bindings: x f32 (xOffset + n); acc f32 (accOffset + n) read_write, bound once; params.
// Dispatch: one thread per element, ceil(n / WG) workgroups folded into (x, y) by grid2d.
// Reference: add_ref.ts `addRef` (with out = a = acc).

override WG: u32 = 256u;

struct Params {
  n: u32,
  xOffset: u32,
  accOffset: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> acc: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i < params.n) {
    let j = params.accOffset + i;
    acc[j] = acc[j] + x[params.xOffset + i];
  }
}
