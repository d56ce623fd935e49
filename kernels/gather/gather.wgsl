// Indexed copies for the decode pipeline.
//   gather_u32: dst[dstOffset + i] = src[srcOffset + idx[i]]          (token ids: per-slot state -> step row)
//   scatter_u32: dst[dstOffset + idx[i]] = src[srcOffset + i]         (token ids: step row -> per-slot state)
//   gather_rows: out[r, :] = x[idx[r] * rowStride + colOffset .. + width] (f32 rows: last positions -> logits input)
// Bindings: src (u32 or f32), idx u32 (count), dst (u32 or f32), params.
// Dispatch: gather_u32/scatter_u32 one thread per index (x = ceil(count / 64));
//           gather_rows one workgroup per row (x = count). Reference: gather_ref.ts.

struct Params {
  count: u32,
  srcOffset: u32,
  dstOffset: u32,
  width: u32,
  rowStride: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn gather_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i < params.count) {
    dst[params.dstOffset + i] = src[params.srcOffset + idx[i]];
  }
}

@compute @workgroup_size(64)
fn scatter_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i < params.count) {
    dst[params.dstOffset + idx[i]] = src[params.srcOffset + i];
  }
}

// f32 rows move as raw bits: a copy needs no arithmetic.
@compute @workgroup_size(64)
fn gather_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wg.x;
  let srcRow = params.srcOffset + idx[r] * params.rowStride;
  let dstRow = params.dstOffset + r * params.width;
  for (var c = lid; c < params.width; c += 64u) {
    dst[dstRow + c] = src[srcRow + c];
  }
}
