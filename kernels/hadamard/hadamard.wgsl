// QTIP randomized Hadamard transform, one tile at a time:
//   out[r, c*chunk + i] = post[c*chunk + i] * mult * sum_j (had' kron H_p)[i, j] * pre[c*chunk + j] * x[r, c*chunk + j]
//   (+ out[r, c*chunk + i] when accumulating), had' = had_K or had_K^T, p = chunk / K.
// A tile is a (K * P1, C) slab of one chunk: tile row t, column c is chunk element t * rStride + c0 + c. The
// kernel runs an unnormalized FWHT of length P1 down each column within each of the K row blocks, then mixes
// the K blocks with had'. One pass: P1 = p, C = 1, rStride = 1 (the whole chunk). Rows too long for workgroup
// memory take two dispatches of this shader (hadamard.ts): FWHT over contiguous segments of length p2 (K = 1),
// then tiles of (K * p / p2, C) with rStride = p2 for the remaining stages and the had' mix.
// Bindings: x f32 (rows, xStride) from xOffset; pre f16 pairs as u32 (n / 2) from preOffset, used when
//           flags & 1; post f32 (n) from postOffset, used when flags & 2; had u32 sign bits, one row of had'
//           per hadWords words from hadOffset, bit i of row j set when had'[j][i] = -1; out f32 (rows,
//           outStride) at outOffset, read back first when flags & 4; params.
// Dispatch: one workgroup per tile, units = rows * chunksPerRow * tilesPerChunk, split over (x, y).
// Reference: hadamard_ref.ts `hadamardRef`.

override WG: u32 = 256u;
// f32 slots of workgroup memory; at least K * P1 * C.
override TILE: u32 = 4096u;

struct Params {
  units: u32, // rows * chunksPerRow * tilesPerChunk
  tilesPerChunk: u32,
  chunksPerRow: u32,
  chunk: u32, // elements per chunk
  K: u32, // had' order: 1, or a multiple of 4
  p1Shift: u32, // log2 P1: FWHT length down a tile column
  cShift: u32, // log2 C: tile columns
  rStride: u32, // chunk elements between consecutive tile rows
  xStride: u32,
  xOffset: u32,
  outStride: u32,
  outOffset: u32,
  preOffset: u32,
  postOffset: u32,
  hadOffset: u32,
  hadWords: u32, // u32 words per row of had'
  mult: f32, // scale / sqrt(chunk), or 1 for a first pass
  flags: u32, // 1 = pre, 2 = post, 4 = accumulate
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> pre: array<u32>;
@group(0) @binding(2) var<storage, read> post: array<f32>;
@group(0) @binding(3) var<storage, read> had: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> tile: array<f32, TILE>;

fn preAt(i: u32) -> f32 {
  let pair = unpack2x16float(pre[i >> 1u]);
  return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Chunk position of tile slot e (row e >> cShift, column e & (C - 1)).
fn slotPos(e: u32) -> u32 {
  return (e >> params.cShift) * params.rStride + (e & ((1u << params.cShift) - 1u));
}

fn store(outBase: u32, col0: u32, e: u32, v: f32) {
  let pos = slotPos(e);
  var y = v * params.mult;
  if ((params.flags & 2u) != 0u) {
    y *= post[params.postOffset + col0 + pos];
  }
  let o = outBase + pos;
  if ((params.flags & 4u) != 0u) {
    y += out[o];
  }
  out[o] = y;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let unit = wg.y * nwg.x + wg.x;
  if (unit >= params.units) {
    return;
  }
  let tileIdx = unit % params.tilesPerChunk;
  let chunkRow = unit / params.tilesPerChunk;
  let chunkIdx = chunkRow % params.chunksPerRow;
  let row = chunkRow / params.chunksPerRow;
  let cShift = params.cShift;
  let blockShift = params.p1Shift + cShift;
  let blockLen = 1u << blockShift; // slots per had' block: P1 * C
  let count = params.K * blockLen;
  // Position in the full row of this tile's slot 0.
  let col0 = chunkIdx * params.chunk + (tileIdx << cShift);
  let xBase = params.xOffset + row * params.xStride + col0;
  let outBase = params.outOffset + row * params.outStride + col0;

  for (var e = lid; e < count; e += WG) {
    let pos = slotPos(e);
    var v = x[xBase + pos];
    if ((params.flags & 1u) != 0u) {
      v *= preAt(params.preOffset + col0 + pos);
    }
    tile[e] = v;
  }
  workgroupBarrier();

  // Butterflies between tile rows t and t + h (bit h of t clear); h < P1 keeps them inside a block.
  let p1 = 1u << params.p1Shift;
  for (var h = 1u; h < p1; h <<= 1u) {
    for (var b = lid; b < count / 2u; b += WG) {
      let q = b >> cShift;
      let t = ((q & ~(h - 1u)) << 1u) | (q & (h - 1u));
      let i0 = (t << cShift) | (b & ((1u << cShift) - 1u));
      let i1 = i0 + (h << cShift);
      let u = tile[i0];
      let w = tile[i1];
      tile[i0] = u + w;
      tile[i1] = u - w;
    }
    workgroupBarrier();
  }

  if (params.K == 1u) {
    for (var e = lid; e < count; e += WG) {
      store(outBase, col0, e, tile[e]);
    }
    return;
  }

  // Output block j = sum_i had'[j][i] * block i, four output blocks per thread sharing each read;
  // a set sign bit flips the sign bit of the value.
  let groups = (params.K / 4u) << blockShift;
  let hw = params.hadWords;
  for (var g = lid; g < groups; g += WG) {
    let rem = g & (blockLen - 1u);
    let j0 = (g >> blockShift) * 4u;
    var acc = vec4<f32>(0.0);
    for (var wi = 0u; wi < hw; wi++) {
      let base = params.hadOffset + j0 * hw + wi;
      let bits = vec4<u32>(had[base], had[base + hw], had[base + 2u * hw], had[base + 3u * hw]);
      let iEnd = min(32u, params.K - wi * 32u);
      for (var ii = 0u; ii < iEnd; ii++) {
        let v = bitcast<u32>(tile[((wi * 32u + ii) << blockShift) + rem]);
        let sign = ((bits >> vec4<u32>(ii)) & vec4<u32>(1u)) << vec4<u32>(31u);
        acc += bitcast<vec4<f32>>(vec4<u32>(v) ^ sign);
      }
    }
    store(outBase, col0, (j0 << blockShift) + rem, acc.x);
    store(outBase, col0, ((j0 + 1u) << blockShift) + rem, acc.y);
    store(outBase, col0, ((j0 + 2u) << blockShift) + rem, acc.z);
    store(outBase, col0, ((j0 + 3u) << blockShift) + rem, acc.w);
  }
}
