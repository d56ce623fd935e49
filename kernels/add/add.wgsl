// Elementwise add: out[outOffset + i] = a[aOffset + i] + b[bOffset + i] for i < n, all f32.
// Bindings: a f32 (aOffset + n); b f32 (bOffset + n); out f32 (outOffset + n), must not alias a or b
//           (use add_in_place.wgsl for that); params.
// Dispatch: one thread per element, ceil(n / WG) workgroups folded into (x, y) by grid2d.
// Reference: add_ref.ts `addRef`.

override WG: u32 = 256u;

struct Params {
  n: u32,
  aOffset: u32,
  bOffset: u32,
  outOffset: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i < params.n) {
    out[params.outOffset + i] = a[params.aOffset + i] + b[params.bOffset + i];
  }
}
