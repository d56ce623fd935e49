// QTIP fused dequantize-matmul: out[t, o] (+)= sum_i hatW[o, i] * x[t, i], t < M, with hatW (m, n) decoded
// in registers from the bitshift trellis (L = 16, 16x16 tiles) and never written out.
// Bindings: x f32 (M, xStride) read from xOffset;
//           trellis u32, the GPU layout of qtip_layout.ts: header [magic, flags, K, V], then (m/16) x (n/16)
//             tiles of 8K words, tile-row major; a tile's pair P (2K bits at 2K*P) is two weights of one row;
//           lut f32 (LUT_SIZE, 2): HYB's tlut (a dummy for 1MAD/3INST);
//           out f32 (M, outStride) written (or accumulated) at outOffset; params.
// Stacked linears (q/k/v, gate/up) run as one dispatch when every part starts at a multiple of BO rows: rows
// from tile-row part1 (part2) on read the x of part 2 (3), partStride elements after the previous part's,
// and its LUT, lutStride entries after the previous one's.
// Overrides: CODE 0 HYB / 1 1MAD / 2 3INST; K bits per weight (2, 3, 4); TLUT_BITS and LUT_SIZE = 2^TLUT_BITS.
// Entry point (decode batches use the generated matvec of qtip_mv.ts instead):
//   matmul (any M): 256 invocations per block of BO = 64 RB rows x BT = 64 TB tokens, grid x = ceil(m / BO),
//     y = ceil(M / BT). Each step of BKS tile columns (BK = 16 BKS columns) decodes the block's 4 RB BKS
//     tiles into workgroup memory once (each weight then serves BT tokens; each invocation 2 RB consecutive
//     pairs of one tile per tile column, from three trellis words) and stages x transposed; every invocation
//     accumulates 4 RB rows x 4 TB tokens with vec4 FMAs: rows 4 tr .. 4 tr + 3 (+ 64), tokens 4 tc ..
//     4 tc + 3 (+ 64), each read as one vec4 per column. The next step's trellis words and x are loaded into
//     registers before this step's FMAs, so their latency hides behind them (with DB, two copies of the
//     step's workgroup arrays and one barrier a step; slower on the H100). With z > 1 the columns split
//     into z runs of kSpan, each written to its own copy of the output (zStride apart) for
//     qtip_reduce.wgsl to sum: for grids too small to fill the GPU.
// Reference: qtip_ref.ts `decodeHatW` then `matmulRef`.

override CODE: u32 = 0u;
override K: u32 = 2u;
override TLUT_BITS: u32 = 9u;
override LUT_SIZE: u32 = 512u;

override RB: u32 = 1u; // matmul row blocks of 64: BO = 64 RB rows per workgroup (1 or 2)
override TB: u32 = 1u; // matmul token blocks of 64: BT = 64 TB tokens per workgroup (1 or 2)

const HEADER: u32 = 4u;
override BO: u32 = 64u * RB; // matmul rows per workgroup
override BT: u32 = 64u * TB; // matmul tokens per workgroup
override BKS: u32 = 1u; // matmul tile columns per step (1 or 2)
override BK: u32 = 16u * BKS; // matmul columns per step
override PPT: u32 = 2u * RB; // trellis pairs each invocation decodes per step and tile column
override WSV: u32 = BK * BO / 4u; // (BK, BO) as vec4
override XSV: u32 = BK * BT / 4u; // (BK, BT) as vec4
// 1: two copies of ws and xs, a step's inputs stored into one while the other step's FMAs read the other, so
// a step needs one barrier, not two.
override DB: u32 = 0u;

struct Params {
  M: u32,
  m: u32,
  n: u32,
  xStride: u32,
  outStride: u32,
  xOffset: u32,
  outOffset: u32,
  accumulate: u32,
  tileRow0: u32, // first tile-row of this dispatch's rows in the (stacked) trellis
  lutOffset: u32, // first LUT entry of the first part
  aligned: u32, // xOffset, xStride and partStride are multiples of 4: x is read as vec4
  part1: u32, // tile-row (of this dispatch's) where part 2 starts; past the end when none
  part2: u32, // tile-row where part 3 starts; past the end when none
  partStride: u32,
  lutStride: u32,
  kSpan: u32, // columns per split of the reduction (workgroup z takes [z kSpan, (z + 1) kSpan))
  zStride: u32, // elements between the outputs of consecutive splits (0 without splits)
  _pad2: u32,
  _pad3: u32,
  _pad4: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> trellis: array<u32>;
@group(0) @binding(2) var<storage, read> lut: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> lutS: array<vec2<f32>, LUT_SIZE>;
var<workgroup> ws: array<vec4<f32>, WSV * (1u + DB)>; // (BK, BO) f32 as vec4 of 4 rows: [k BO / 4 + row / 4]
var<workgroup> xs: array<vec4<f32>, XSV * (1u + DB)>; // matmul (BK, BT) f32 as vec4 of 4 tokens

fn loadLut(tid: u32, threads: u32, off: u32) {
  if (CODE == 0u) {
    for (var i = tid; i < LUT_SIZE; i += threads) {
      lutS[i] = lut[off + i];
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

// The 16 bits at bit `off` (< 48) of the 96-bit w0:w1:w2.
fn window3(w0: u32, w1: u32, w2: u32, off: u32) -> u32 {
  let far = off >= 32u;
  return window(select(w0, w1, far), select(w1, w2, far), off & 31u);
}

// The pair whose first state starts at bit `off` of w0:w1:w2.
fn runPair(w0: u32, w1: u32, w2: u32, off: u32) -> vec2<f32> {
  if (CODE == 0u) {
    return hyb(window3(w0, w1, w2, off));
  }
  return vec2<f32>(computed(window3(w0, w1, w2, off)), computed(window3(w0, w1, w2, off + K)));
}

@compute @workgroup_size(256)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row0 = wid.x * BO;
  // The block's part of a stacked linear.
  let part = select(0u, 1u, (row0 >> 4u) >= params.part1) + select(0u, 1u, (row0 >> 4u) >= params.part2);
  let xOffset = params.xOffset + part * params.partStride;
  loadLut(tid, 256u, params.lutOffset + part * params.lutStride);
  workgroupBarrier();
  let tilesPerRow = params.n / 16u;
  let tileWords = 8u * K;
  let mma = (trellis[1] & 1u) != 0u;
  let tok0 = wid.y * BT;
  let tr = tid & 15u; // rows 4 tr .. 4 tr + 3 (and 64 more when RB = 2)
  let tc = tid >> 4u; // tokens 4 tc .. 4 tc + 3 (and 64 more when TB = 2)
  let aligned = params.aligned != 0u;
  // Decoding: tile tt of the block's 4 RB tile-rows, pairs g PPT .. g PPT + PPT - 1 of it.
  let tpt = 128u / PPT;
  let tt = tid / tpt;
  let g = tid % tpt;
  let bit0 = 2u * K * PPT * g;
  let off0 = bit0 & 31u;
  let wi0 = bit0 >> 5u;
  let wi1 = select(wi0 + 1u, wi0 + 1u - tileWords, wi0 + 1u >= tileWords);
  let wi2 = select(wi1 + 1u, wi1 + 1u - tileWords, wi1 + 1u >= tileWords);
  let rowOk = row0 + tt * 16u < params.m;
  let tileBase = HEADER + (params.tileRow0 + (row0 >> 4u) + tt) * tilesPerRow * tileWords;
  // x staging: invocation i of TB passes loads columns 4 q .. 4 q + 3 of token t.
  let xq = tid & 3u;
  let xt = tid >> 2u;

  var a000 = vec4<f32>(0.0);
  var a001 = vec4<f32>(0.0);
  var a002 = vec4<f32>(0.0);
  var a003 = vec4<f32>(0.0);
  var a010 = vec4<f32>(0.0);
  var a011 = vec4<f32>(0.0);
  var a012 = vec4<f32>(0.0);
  var a013 = vec4<f32>(0.0);
  var a100 = vec4<f32>(0.0);
  var a101 = vec4<f32>(0.0);
  var a102 = vec4<f32>(0.0);
  var a103 = vec4<f32>(0.0);
  var a110 = vec4<f32>(0.0);
  var a111 = vec4<f32>(0.0);
  var a112 = vec4<f32>(0.0);
  var a113 = vec4<f32>(0.0);

  // Registers holding the next step's inputs.
  var tw0 = 0u;
  var tw1 = 0u;
  var tw2 = 0u;
  var xv0 = vec4<f32>(0.0);
  var xv1 = vec4<f32>(0.0);
  // The second tile column's, when BKS = 2.
  var tw3 = 0u;
  var tw4 = 0u;
  var tw5 = 0u;
  var xv2 = vec4<f32>(0.0);
  var xv3 = vec4<f32>(0.0);

  var par = 0u; // the copy of ws and xs in use (always 0 without DB)
  let kBeg = wid.z * params.kSpan;
  let kEnd = min(params.n, kBeg + params.kSpan);
  for (var k0 = kBeg; k0 < kEnd + BK; k0 += BK) {
    if (k0 > kBeg) {
      // Step k0 - BK: its decoded weights and x into workgroup memory, then the FMAs. (Past the end of
      // the columns, the second tile column's registers hold zeros and its decode is skipped.)
      let second = BKS == 2u && k0 - BK + 16u < kEnd;
      let wo = par * WSV;
      let xo = par * XSV;
      for (var i = 0u; i < PPT; i++) {
        var v = vec2<f32>(0.0);
        var v2 = vec2<f32>(0.0);
        if (rowOk) {
          v = runPair(tw0, tw1, tw2, off0 + 2u * K * i);
          if (second) {
            v2 = runPair(tw3, tw4, tw5, off0 + 2u * K * i);
          }
        }
        let pos = pairPosition(g * PPT + i, mma);
        let r = tt * 16u + pos.x;
        ws[wo + ((pos.y * BO + r) >> 2u)][r & 3u] = v.x;
        ws[wo + (((pos.y + 1u) * BO + r) >> 2u)][r & 3u] = v.y;
        if (BKS == 2u) {
          ws[wo + (((pos.y + 16u) * BO + r) >> 2u)][r & 3u] = v2.x;
          ws[wo + (((pos.y + 17u) * BO + r) >> 2u)][r & 3u] = v2.y;
        }
      }
      for (var j = 0u; j < 4u; j++) {
        let e = (4u * xq + j) * BT + xt;
        xs[xo + (e >> 2u)][e & 3u] = xv0[j];
        if (TB == 2u) {
          xs[xo + ((e + 64u) >> 2u)][e & 3u] = xv1[j];
        }
        if (BKS == 2u) {
          let e2 = e + 16u * BT;
          xs[xo + (e2 >> 2u)][e2 & 3u] = xv2[j];
          if (TB == 2u) {
            xs[xo + ((e2 + 64u) >> 2u)][e2 & 3u] = xv3[j];
          }
        }
      }
      workgroupBarrier();
    }
    if (k0 < kEnd) {
      // Step k0's trellis words and x, in flight during step k0 - BK's FMAs.
      if (rowOk) {
        let base = tileBase + (k0 >> 4u) * tileWords;
        tw0 = trellis[base + wi0];
        tw1 = trellis[base + wi1];
        tw2 = trellis[base + wi2];
      }
      xv0 = loadX(xOffset, tok0 + xt, k0 + 4u * xq, aligned);
      if (TB == 2u) {
        xv1 = loadX(xOffset, tok0 + 64u + xt, k0 + 4u * xq, aligned);
      }
      if (BKS == 2u) {
        if (k0 + 16u < kEnd) {
          if (rowOk) {
            let base = tileBase + ((k0 >> 4u) + 1u) * tileWords;
            tw3 = trellis[base + wi0];
            tw4 = trellis[base + wi1];
            tw5 = trellis[base + wi2];
          }
          xv2 = loadX(xOffset, tok0 + xt, k0 + 16u + 4u * xq, aligned);
          if (TB == 2u) {
            xv3 = loadX(xOffset, tok0 + 64u + xt, k0 + 16u + 4u * xq, aligned);
          }
        } else {
          xv2 = vec4<f32>(0.0);
          xv3 = vec4<f32>(0.0);
        }
      }
    }
    if (k0 > kBeg) {
      let wo = par * WSV;
      let xo = par * XSV;
      for (var kk = 0u; kk < BK; kk++) {
        let w0 = ws[wo + kk * (BO / 4u) + tr];
        let x0 = xs[xo + kk * (BT / 4u) + tc];
        a000 = fma(w0, vec4<f32>(x0.x), a000);
        a001 = fma(w0, vec4<f32>(x0.y), a001);
        a002 = fma(w0, vec4<f32>(x0.z), a002);
        a003 = fma(w0, vec4<f32>(x0.w), a003);
        if (TB == 2u) {
          let x1 = xs[xo + kk * (BT / 4u) + 16u + tc];
          a010 = fma(w0, vec4<f32>(x1.x), a010);
          a011 = fma(w0, vec4<f32>(x1.y), a011);
          a012 = fma(w0, vec4<f32>(x1.z), a012);
          a013 = fma(w0, vec4<f32>(x1.w), a013);
        }
        if (RB == 2u) {
          let w1 = ws[wo + kk * (BO / 4u) + 16u + tr];
          a100 = fma(w1, vec4<f32>(x0.x), a100);
          a101 = fma(w1, vec4<f32>(x0.y), a101);
          a102 = fma(w1, vec4<f32>(x0.z), a102);
          a103 = fma(w1, vec4<f32>(x0.w), a103);
          if (TB == 2u) {
            let x1 = xs[xo + kk * (BT / 4u) + 16u + tc];
            a110 = fma(w1, vec4<f32>(x1.x), a110);
            a111 = fma(w1, vec4<f32>(x1.y), a111);
            a112 = fma(w1, vec4<f32>(x1.z), a112);
            a113 = fma(w1, vec4<f32>(x1.w), a113);
          }
        }
      }
      if (DB == 0u) {
        workgroupBarrier();
      }
      par ^= DB;
    }
  }
  let r0 = row0 + 4u * tr;
  let t0 = tok0 + 4u * tc;
  let z = wid.z;
  storeRows(z, r0, t0, a000);
  storeRows(z, r0, t0 + 1u, a001);
  storeRows(z, r0, t0 + 2u, a002);
  storeRows(z, r0, t0 + 3u, a003);
  if (TB == 2u) {
    storeRows(z, r0, t0 + 64u, a010);
    storeRows(z, r0, t0 + 65u, a011);
    storeRows(z, r0, t0 + 66u, a012);
    storeRows(z, r0, t0 + 67u, a013);
  }
  if (RB == 2u) {
    storeRows(z, r0 + 64u, t0, a100);
    storeRows(z, r0 + 64u, t0 + 1u, a101);
    storeRows(z, r0 + 64u, t0 + 2u, a102);
    storeRows(z, r0 + 64u, t0 + 3u, a103);
    if (TB == 2u) {
      storeRows(z, r0 + 64u, t0 + 64u, a110);
      storeRows(z, r0 + 64u, t0 + 65u, a111);
      storeRows(z, r0 + 64u, t0 + 66u, a112);
      storeRows(z, r0 + 64u, t0 + 67u, a113);
    }
  }
}

// Columns c .. c + 3 of token t of the x at xOffset (zeros past M).
fn loadX(xOffset: u32, t: u32, c: u32, aligned: bool) -> vec4<f32> {
  if (t >= params.M) {
    return vec4<f32>(0.0);
  }
  let at = xOffset + t * params.xStride + c;
  if (aligned) {
    return x4[at >> 2u];
  }
  return vec4<f32>(x[at], x[at + 1u], x[at + 2u], x[at + 3u]);
}

// Rows r .. r + 3 of token t (those inside the output) of split z's output.
fn storeRows(z: u32, r: u32, t: u32, v: vec4<f32>) {
  if (t >= params.M) {
    return;
  }
  let base = params.outOffset + z * params.zStride + t * params.outStride;
  for (var i = 0u; i < 4u; i++) {
    if (r + i < params.m) {
      store(base + r + i, v[i]);
    }
  }
}
