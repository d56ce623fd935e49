// Streaming read: every thread XORs the vec4<u32> words of a grid-stride walk over `src`; the result is
// written only when it equals a sentinel, so the loads cannot be optimized away and almost nothing is stored.
// The machine's practical read bandwidth for bench/kernels_bench.ts (the ceiling a matvec can reach).
// Bindings: src vec4<u32> (count); out u32 (workgroups), written on a sentinel match only; params.
// Dispatch: any number of workgroups of WG threads (x only); the walk covers all of src.
// Reference: none needed (bytes read = 16 * count by construction).

override WG: u32 = 256u;

struct Params {
  count: u32, // vec4<u32> words in src
  sentinel: u32,
}

@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let stride = nwg.x * WG;
  var acc = vec4<u32>(0u);
  for (var i = gid.x; i < params.count; i += stride) {
    acc ^= src[i];
  }
  let r = acc.x ^ acc.y ^ acc.z ^ acc.w;
  if (r == params.sentinel) {
    out[wid.x] = r;
  }
}
