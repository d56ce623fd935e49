// QTIP fused dequantize-matmul: out[t, o] (+)= sum_i hatW[o, i] * x[t, i], t < M, with hatW (m, n) decoded
// in registers from the bitshift trellis (L = 16, 16x16 tiles) and never written out.
// Bindings: x f32 (M, xStride) read from xOffset;
//           trellis u32, the GPU layout of qtip_layout.ts: header [magic, flags, K, V], then (m/16) x (n/16)
//             tiles of 8K words, tile-row major; a tile's pair P (2K bits at 2K*P) is two weights of one row;
//           lut f32 (LUT_SIZE, 2): HYB's tlut (a dummy for 1MAD/3INST);
//           out f32 (M, outStride) written (or accumulated) at outOffset; params.
// Overrides: CODE 0 HYB / 1 1MAD / 2 3INST; K bits per weight (2, 3, 4); TLUT_BITS and LUT_SIZE = 2^TLUT_BITS.
// Entry point (decode batches use the generated matvec of qtip_mv.ts instead):
//   matmul (any M): one workgroup of 256 per 64 rows x 64 tokens, x = ceil(m/64), y = ceil(M/64). Each
//     32-column step decodes 8 tiles into workgroup memory once, then every thread does a 4 x 4 block.
// Reference: qtip_ref.ts `decodeHatW` then `matmulRef`.

override CODE: u32 = 0u;
override K: u32 = 2u;
override TLUT_BITS: u32 = 9u;
override LUT_SIZE: u32 = 512u;

const HEADER: u32 = 4u;
const BO: u32 = 64u; // matmul rows per workgroup
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
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> trellis: array<u32>;
@group(0) @binding(2) var<storage, read> lut: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> lutS: array<vec2<f32>, LUT_SIZE>;
var<workgroup> ws: array<f32, 2048>; // matmul (BK, BO): ws[k * BO + row]
var<workgroup> xt: array<f32, 2048>; // matmul (BK, BT): xt[k * BT + token]

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
  let rg = tid & 15u;
  let tg = tid >> 4u;
  // acc[a][b]: row row0 + rg + 16a, token tok0 + tg + 16b.
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < params.n; k0 += BK) {
    workgroupBarrier();
    // Decode 4 tile-rows x 2 tile-columns: 1024 pairs, 4 per thread.
    for (var i = 0u; i < 4u; i++) {
      let pi = tid + 256u * i;
      let P = pi & 127u;
      let tr = pi >> 8u;
      let tc = (pi >> 7u) & 1u;
      let J = (k0 >> 4u) + tc;
      var v = vec2<f32>(0.0);
      if (row0 + tr * 16u < params.m && J < tilesPerRow) {
        v = tilePair(HEADER + ((params.tileRow0 + (row0 >> 4u) + tr) * tilesPerRow + J) * tileWords, 2u * K * P);
      }
      let pos = pairPosition(P, mma);
      let kk = tc * 16u + pos.y;
      ws[kk * BO + tr * 16u + pos.x] = v.x;
      ws[(kk + 1u) * BO + tr * 16u + pos.x] = v.y;
    }
    for (var i = 0u; i < 8u; i++) {
      let xi = tid + 256u * i;
      let kk = xi & 31u;
      let t = xi >> 5u;
      var v = 0.0;
      if (tok0 + t < params.M && k0 + kk < params.n) {
        v = x[params.xOffset + (tok0 + t) * params.xStride + k0 + kk];
      }
      xt[kk * BT + t] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let wv = vec4<f32>(ws[kk * BO + rg], ws[kk * BO + rg + 16u], ws[kk * BO + rg + 32u], ws[kk * BO + rg + 48u]);
      let xv = vec4<f32>(xt[kk * BT + tg], xt[kk * BT + tg + 16u], xt[kk * BT + tg + 32u], xt[kk * BT + tg + 48u]);
      acc[0] += wv.x * xv;
      acc[1] += wv.y * xv;
      acc[2] += wv.z * xv;
      acc[3] += wv.w * xv;
    }
  }
  for (var a = 0u; a < 4u; a++) {
    let row = row0 + rg + 16u * a;
    for (var b = 0u; b < 4u; b++) {
      let t = tok0 + tg + 16u * b;
      if (row < params.m && t < params.M) {
        store(params.outOffset + t * params.outStride + row, acc[a][b]);
      }
    }
  }
}
