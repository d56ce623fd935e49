// SwiGLU gate: out[t, i] = silu(gate[t, i]) * up[t, i], silu(x) = x / (1 + exp(-x)), all f32.
// Bindings: gate f32 (T, gateStride) read from gateOffset; up f32 (T, upStride) read from upOffset
//           (gate and up may be the same buffer, e.g. column ranges of a fused gate_up projection);
//           out f32 (T, outStride) written at outOffset; params.
// Dispatch: one thread per output element, ceil(T * n / WG) workgroups folded into (x, y) by grid2d.
// Reference: silu_mul_ref.ts `siluMulRef`.

override WG: u32 = 256u;

struct Params {
  T: u32,
  n: u32,
  gateStride: u32,
  gateOffset: u32,
  upStride: u32,
  upOffset: u32,
  outStride: u32,
  outOffset: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

// exp is only taken of -|x|, so it never overflows: for x = -100 this gives -100 * 3.7e-44 / 1 = -0.
fn silu(x: f32) -> f32 {
  let e = exp(-abs(x));
  return select(x * e / (1.0 + e), x / (1.0 + e), x >= 0.0);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wg.y * nwg.x + wg.x) * WG + lid;
  if (idx >= params.T * params.n) {
    return;
  }
  let t = idx / params.n;
  let i = idx % params.n;
  let g = gate[params.gateOffset + t * params.gateStride + i];
  let u = up[params.upOffset + t * params.upStride + i];
  out[params.outOffset + t * params.outStride + i] = silu(g) * u;
}
