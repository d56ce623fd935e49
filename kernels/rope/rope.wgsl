// Rotary embedding in place, Hugging Face "rotate_half" layout: for i < half = headDim / 2,
// (x[i], x[i + half]) <- (x[i] * cos - x[i + half] * sin, x[i + half] * cos + x[i] * sin),
// cos, sin = cosSin[pos, i] with pos = positions[posOffset + t].
// Bindings: positions u32 (posOffset + T); cosSin f32 (maxPos, half, 2) as (cos, sin) pairs;
//           x f32 read_write holding two tensors of rows: A = heads [0, nHeadsA) at
//           offsetA + t * strideA + h * headDim, B = heads [nHeadsA, nHeadsTotal) at
//           offsetB + t * strideB + (h - nHeadsA) * headDim (q and k of a fused QKV row, or one tensor
//           with nHeadsTotal = nHeadsA); params. Positions >= maxPos are clamped to maxPos - 1.
// Dispatch: one thread per rotated pair, ceil(T * nHeadsTotal * half / WG) workgroups folded into (x, y)
//           by grid2d.
// Reference: rope_ref.ts `ropeRef`.

override WG: u32 = 256u;

struct Params {
  T: u32,
  half: u32,
  nHeadsA: u32,
  nHeadsTotal: u32,
  strideA: u32,
  offsetA: u32,
  strideB: u32,
  offsetB: u32,
  posOffset: u32,
  maxPos: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> positions: array<u32>;
@group(0) @binding(1) var<storage, read> cosSin: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wg.y * nwg.x + wg.x) * WG + lid;
  if (idx >= params.T * params.nHeadsTotal * params.half) {
    return;
  }
  let i = idx % params.half;
  let row = idx / params.half;
  let h = row % params.nHeadsTotal;
  let t = row / params.nHeadsTotal;
  let headDim = 2u * params.half;
  var base: u32;
  if (h < params.nHeadsA) {
    base = params.offsetA + t * params.strideA + h * headDim;
  } else {
    base = params.offsetB + t * params.strideB + (h - params.nHeadsA) * headDim;
  }
  let pos = min(positions[params.posOffset + t], params.maxPos - 1u);
  let cs = 2u * (pos * params.half + i);
  let c = cosSin[cs];
  let s = cosSin[cs + 1u];
  let x0 = x[base + i];
  let x1 = x[base + i + params.half];
  x[base + i] = x0 * c - x1 * s;
  x[base + i + params.half] = x1 * c + x0 * s;
}
