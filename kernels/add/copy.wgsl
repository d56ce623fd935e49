// Buffer copy: dst[dstOffset + i] = src[srcOffset + i] for i < n, 32-bit words (f32 or anything else).
// A shader copy streams at full bandwidth where copyBufferToBuffer does not (shared/device/README.md).
// Bindings: src u32 words, dst u32 words read_write, params.
// Dispatch: one thread per word, ceil(n / WG) workgroups folded into (x, y) by grid2d.
// Reference: add_ref.ts `copyRef`.

override WG: u32 = 256u;

struct Params {
  n: u32,
  srcOffset: u32,
  dstOffset: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i < params.n) {
    dst[params.dstOffset + i] = src[params.srcOffset + i];
  }
}
