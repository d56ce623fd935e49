// QTIP fused dequantize-matmul: out[t, o] (+)= sum_i hatW[o, i] * x[t, i], t < M, with hatW (m, n) decoded
// in registers from the bitshift trellis (L = 16, 16x16 tiles) and never written out.
// Bindings: x f32 (M, xStride) read from xOffset;
//           trellis u32, the GPU layout of qtip_layout.ts: header [magic, flags, K, V], then (m/16) x (n/16)
//             tiles of 8K words, tile-row major; a tile's pair P (2K bits at 2K*P) is two weights of one row;
//           lut f32 (LUT_SIZE, 2): HYB's tlut (a dummy for 1MAD/3INST);
//           out f32 (M, outStride) written (or accumulated) at outOffset; params.
// Overrides: CODE 0 HYB / 1 1MAD / 2 3INST; K bits per weight (2, 3, 4); TLUT_BITS and LUT_SIZE = 2^TLUT_BITS.
// Entry point (decode batches use the generated matvec of qtip_mv.ts instead):
//   matmul (any M): one workgroup of 256 per BO = 64 RB rows x 64 tokens, x = ceil(m / BO), y = ceil(M / 64).
//     Each 32-column step decodes the block's tiles into workgroup memory once (each weight then serves 64
//     tokens), stages x transposed, and every thread accumulates 4 RB rows x 4 tokens with vec4 FMAs, its
//     rows 4 tr .. 4 tr + 3 (+ 64) and tokens 4 tc .. 4 tc + 3 read as one vec4 each per column.
// Reference: qtip_ref.ts `decodeHatW` then `matmulRef`.

override CODE: u32 = 0u;
override K: u32 = 2u;
override TLUT_BITS: u32 = 9u;
override LUT_SIZE: u32 = 512u;

override RB: u32 = 1u; // matmul row blocks of 64: BO = 64 RB rows per workgroup

const HEADER: u32 = 4u;
override BO: u32 = 64u * RB; // matmul rows per workgroup
const BT: u32 = 64u; // matmul tokens per workgroup
const BK: u32 = 32u; // matmul columns per step (2 tiles)

struct Params {
  M: u32,
  m: u32,
  n: u32,
  xStride: u32,
  outStride: u32,
  xOffset: u32,
  outOffset: u32,
  accumulate: u32,
  tileRow0: u32, // first tile-row of this part in the (stacked) trellis
  lutOffset: u32, // first LUT entry of this part
  aligned: u32, // xOffset and xStride are multiples of 4: x is read as vec4
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> trellis: array<u32>;
@group(0) @binding(2) var<storage, read> lut: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> lutS: array<vec2<f32>, LUT_SIZE>;
var<workgroup> ws: array<vec4<f32>, 1024>; // matmul (BK, BO) f32 as vec4 of 4 rows: ws[k * BO / 4 + row / 4]
var<workgroup> xs: array<vec4<f32>, 512>; // matmul (BK, BT) f32 as vec4 of 4 tokens

fn loadLut(tid: u32, threads: u32) {
  if (CODE == 0u) {
    for (var i = tid; i < LUT_SIZE; i += threads) {
      lutS[i] = lut[params.lutOffset + i];
    }
  }
}

// The 16 bits at bit `off` (MSB first) of the 64-bit hi:lo, off < 32.
fn window(hi: u32, lo: u32, off: u32) -> u32 {
  return ((hi << off) | ((lo >> 1u) >> (31u - off))) >> 16u;
}

// Rounds to the nearest-even f16, for |v| in the f16 normal range (3INST sums are 0 or >= 2^-13).
fn f16Round(v: f32) -> f32 {
  let b = bitcast<u32>(v);
  return bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
}

// HYB: t = s(s+1); tlut row (t >> (15 - TLUT_BITS)) masked; bit 15 of t negates the first value.
fn hyb(s: u32) -> vec2<f32> {
  let t = s * (s + 1u);
  let v = lutS[(t >> (15u - TLUT_BITS)) & (LUT_SIZE - 1u)];
  return vec2<f32>(select(v.x, -v.x, (t & 0x8000u) != 0u), v.y);
}

// 1MAD (byte sum of s * 34038481 + 76625530) or 3INST (two f16 halves of a masked LCG, summed in f16).
fn computed(s: u32) -> f32 {
  if (CODE == 1u) {
    let r = s * 34038481u + 76625530u;
    var b = (r & 0x00ff00ffu) + ((r >> 8u) & 0x00ff00ffu);
    b = (b & 0xffffu) + (b >> 16u);
    return (f32(b) - 510.0) / 147.800537109375;
  }
  let r = s * 89226354u + 64248484u;
  let h = unpack2x16float((r & 0x8fff8fffu) ^ 0x3b603b60u);
  return f16Round(h.x + h.y);
}

// The state at bit p of the tile whose words start at `base`.
fn tileState(base: u32, p: u32) -> u32 {
  let i = p >> 5u;
  return window(trellis[base + i], trellis[base + (i + 1u) % (8u * K)], p & 31u);
}

fn tilePair(base: u32, p: u32) -> vec2<f32> {
  if (CODE == 0u) {
    return hyb(tileState(base, p));
  }
  return vec2<f32>(computed(tileState(base, p)), computed(tileState(base, p + K)));
}

// Row and first column of pair P in its tile (qtip_layout.ts `pairPosition`).
fn pairPosition(P: u32, mma: bool) -> vec2<u32> {
  if (mma) {
    let u = P & 15u;
    return vec2<u32>((P >> 4u) + 8u * (u & 1u), 8u * ((u >> 1u) & 1u) + 2u * (u >> 2u));
  }
  return vec2<u32>(P >> 3u, 2u * (P & 7u));
}

fn store(o: u32, v: f32) {
  if (params.accumulate != 0u) {
    out[o] = out[o] + v;
  } else {
    out[o] = v;
  }
}

@compute @workgroup_size(256)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  loadLut(tid, 256u);
  let tilesPerRow = params.n / 16u;
  let tileWords = 8u * K;
  let mma = (trellis[1] & 1u) != 0u;
  let row0 = wid.x * BO;
  let tok0 = wid.y * BT;
  let tr = tid & 15u; // rows 4 tr .. 4 tr + 3 (and 64 more when RB = 2)
  let tc = tid >> 4u; // tokens 4 tc .. 4 tc + 3
  let aligned = params.aligned != 0u;
  var a00 = vec4<f32>(0.0);
  var a01 = vec4<f32>(0.0);
  var a02 = vec4<f32>(0.0);
  var a03 = vec4<f32>(0.0);
  var a10 = vec4<f32>(0.0);
  var a11 = vec4<f32>(0.0);
  var a12 = vec4<f32>(0.0);
  var a13 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < params.n; k0 += BK) {
    workgroupBarrier();
    // Decode the (BO, BK) block of hatW: BO/16 tile-rows x 2 tile-columns, 128 pairs each.
    for (var i = 0u; i < 4u * RB; i++) {
      let pi = tid + 256u * i;
      let P = pi & 127u;
      let ti = pi >> 7u;
      let trow = ti >> 1u;
      let J = (k0 >> 4u) + (ti & 1u);
      var v = vec2<f32>(0.0);
      if (row0 + trow * 16u < params.m && J < tilesPerRow) {
        v = tilePair(HEADER + ((params.tileRow0 + (row0 >> 4u) + trow) * tilesPerRow + J) * tileWords, 2u * K * P);
      }
      let pos = pairPosition(P, mma);
      let r = trow * 16u + pos.x;
      let c = (ti & 1u) * 16u + pos.y;
      ws[(c * BO + r) >> 2u][r & 3u] = v.x;
      ws[((c + 1u) * BO + r) >> 2u][r & 3u] = v.y;
    }
    // Stage x (BT tokens x BK columns) transposed: xs[k][token].
    for (var i = 0u; i < 2u; i++) {
      let idx = tid + 256u * i;
      let t = idx & 63u;
      let q = idx >> 6u;
      var v = vec4<f32>(0.0);
      if (tok0 + t < params.M && k0 + 4u * q < params.n) {
        let at = params.xOffset + (tok0 + t) * params.xStride + k0 + 4u * q;
        if (aligned) {
          v = x4[at >> 2u];
        } else {
          v = vec4<f32>(x[at], x[at + 1u], x[at + 2u], x[at + 3u]);
        }
      }
      for (var j = 0u; j < 4u; j++) {
        let e = (4u * q + j) * BT + t;
        xs[e >> 2u][e & 3u] = v[j];
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let xv = xs[kk * (BT / 4u) + tc];
      let w0 = ws[kk * (BO / 4u) + tr];
      a00 = fma(w0, vec4<f32>(xv.x), a00);
      a01 = fma(w0, vec4<f32>(xv.y), a01);
      a02 = fma(w0, vec4<f32>(xv.z), a02);
      a03 = fma(w0, vec4<f32>(xv.w), a03);
      if (RB == 2u) {
        let w1 = ws[kk * (BO / 4u) + 16u + tr];
        a10 = fma(w1, vec4<f32>(xv.x), a10);
        a11 = fma(w1, vec4<f32>(xv.y), a11);
        a12 = fma(w1, vec4<f32>(xv.z), a12);
        a13 = fma(w1, vec4<f32>(xv.w), a13);
      }
    }
  }
  let t0 = tok0 + 4u * tc;
  storeRows(row0 + 4u * tr, t0, a00);
  storeRows(row0 + 4u * tr, t0 + 1u, a01);
  storeRows(row0 + 4u * tr, t0 + 2u, a02);
  storeRows(row0 + 4u * tr, t0 + 3u, a03);
  if (RB == 2u) {
    storeRows(row0 + 64u + 4u * tr, t0, a10);
    storeRows(row0 + 64u + 4u * tr, t0 + 1u, a11);
    storeRows(row0 + 64u + 4u * tr, t0 + 2u, a12);
    storeRows(row0 + 64u + 4u * tr, t0 + 3u, a13);
  }
}

// Rows r .. r + 3 of token t (those inside the output).
fn storeRows(r: u32, t: u32, v: vec4<f32>) {
  if (t >= params.M) {
    return;
  }
  let base = params.outOffset + t * params.outStride;
  for (var i = 0u; i < 4u; i++) {
    if (r + i < params.m) {
      store(base + r + i, v[i]);
    }
  }
}
