// QTIP fused dequantize-matvec for decode batches: out[t, o] (+)= sum_i hatW[o, i] * x[t, i], t < TOKENS
// (1..16), with hatW (m, n) decoded in registers from the GPU-layout trellis (qtip_layout.ts) and never stored.
//
// This file is a template: qtip_mv.ts fills every {{NAME}} for one (code, K, pair order, TOKENS, WG, ...) and
// writes the per-lane decode as straight-line code, so every shift is a constant and no per-thread array exists
// (an indexed per-thread array would live in local memory).
//
// Work split: one workgroup per ROWS tile-rows (16 output rows each); WG threads are 8 lanes x SLOTS slots,
// thread tid = slot * 8 + lane. Thread (slot, lane) decodes lane `lane` of tiles J = slot, slot + SLOTS, ...
// of each of its tile-rows: the 16 pairs of one lane are 2 rows x 16 columns of the tile, so it keeps
// ROWS x 2 x TOKENS partial sums in registers and reads the tile's 16 columns of x as 4 vec4 per token, once
// for all ROWS. A warp reads 4 consecutive tiles: coalesced. The slots meet in a reduction at the end
// (subgroup shuffles, then workgroup memory; or a workgroup-memory tree), one tile-row after the other, that
// reuses the LUT's workgroup memory.
// Stacked linears (q/k/v, gate/up) run as one dispatch: tile-rows from part1 and from part2 on read the x and
// the LUT of part 1 and part 2, partStride vec4 and lutPartStride entries further on (the host keeps a
// workgroup's tile-rows inside one part).
// HYB: the LUT lives in workgroup memory as packed f16 pairs, REPS copies interleaved (entry e of copy c at
// e * REPS + c, c = tid % REPS), so the lanes of a warp seldom meet in a bank; bit 15 of t = s(s + 1) negates
// the first value, which is the low half of the packed pair: one xor with (t & 0x8000). Only t's low 16 bits
// are read, and they depend only on s's low 16 bits, so a state may carry higher bits of its word: a HYB
// state is one shift (or a funnel of two words), with no mask.
// Bindings: x f32 (TOKENS, xStride) as vec4 from xOffset; trellis u32 GPU layout; lut f32 (2^TLUT_BITS, 2)
// (HYB; a dummy otherwise); out f32 (TOKENS, outStride) at outOffset; params.
// Reference: qtip_ref.ts `decodeHatW` then `matmulRef`.

const K: u32 = {{K}}u;
const TOKENS: u32 = {{TOKENS}}u;
const ROWS: u32 = {{ROWS}}u; // tile-rows a workgroup takes
const WG: u32 = {{WG}}u;
const SLOTS: u32 = {{WG}}u / 8u;
const TILE_WORDS: u32 = 8u * {{K}}u;
const HEADER: u32 = 4u;
const LUT_ENTRIES: u32 = {{LUT_ENTRIES}}u;
const REP_MASK: u32 = {{REPS}}u - 1u;
const REP_SHIFT: u32 = {{REP_SHIFT}}u;
const ROT_SHIFT: u32 = 5u - {{REP_SHIFT}}u;
// Workgroup words: the LUT copies during the loop, then the reduction's partial sums.
const SMEM_WORDS: u32 = {{SMEM_WORDS}}u;

struct Params {
  tileRows: u32,
  tilesPerRow: u32,
  xStride: u32, // vec4 units
  xOffset: u32, // vec4 units
  outStride: u32,
  outOffset: u32,
  accumulate: u32,
  part1: u32, // first tile-row of part 1 (tileRows: none)
  part2: u32, // first tile-row of part 2 (tileRows: none)
  partStride: u32, // vec4 units between the x of consecutive parts
  lutPartStride: u32, // LUT entries between the LUTs of consecutive parts
  _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> trellis: array<u32>;
@group(0) @binding(2) var<storage, read> lut: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> smem: array<u32, SMEM_WORDS>;

// 1MAD: byte sum of s * 34038481 + 76625530, centred and scaled.
fn mad1(s: u32) -> f32 {
  let r = s * 34038481u + 76625530u;
  var b = (r & 0x00ff00ffu) + ((r >> 8u) & 0x00ff00ffu);
  b = (b & 0xffffu) + (b >> 16u);
  return (f32(b) - 510.0) / 147.800537109375;
}

// Rounds to the nearest-even f16, for |v| in the f16 normal range (3INST sums are 0 or >= 2^-13).
fn f16Round(v: f32) -> f32 {
  let b = bitcast<u32>(v);
  return bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
}

// 3INST: the two f16 halves of a masked LCG, summed in f16.
fn inst3(s: u32) -> f32 {
  let r = s * 89226354u + 64248484u;
  let h = unpack2x16float((r & 0x8fff8fffu) ^ 0x3b603b60u);
  return f16Round(h.x + h.y);
}

fn store(o: u32, v: f32) {
  if (params.accumulate != 0u) {
    out[o] = out[o] + v;
  } else {
    out[o] = v;
  }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) tid: u32,
{{SG_BUILTINS}}
) {
  let I = (wid.y * nwg.x + wid.x) * ROWS; // the workgroup's first tile-row
  let part = select(0u, 1u, I >= params.part1) + select(0u, 1u, I >= params.part2);
  let lut0 = part * params.lutPartStride;
  // Each entry is read from global memory once and stored REPS times (a trip per copy would wait on a global
  // load per copy). The copies are written in a rotated order, copy (c + e / (32 / REPS)) % REPS at step c,
  // so the 32 words one warp stores at a step fall in 32 different banks (stored in the same order by every
  // lane, the copies of 32 consecutive entries meet in 32 / REPS banks: a 16-way conflict at 16 copies).
  for (var e = tid; e < LUT_ENTRIES; e += WG) {
    let w = pack2x16float(lut[lut0 + e]);
    let turn = e >> ROT_SHIFT;
    for (var c = 0u; c <= REP_MASK; c++) {
      smem[(e << REP_SHIFT) | ((c + turn) & REP_MASK)] = w;
    }
  }
  workgroupBarrier();
  if (I >= params.tileRows) {
    return;
  }
  let lane = tid & 7u;
  let slot = tid >> 3u;
  let rep = tid & REP_MASK;
  let tpr = params.tilesPerRow;
  let xRow = params.xOffset + part * params.partStride;
  let laneBase = HEADER + I * tpr * TILE_WORDS + lane * K;
  let rowWords = tpr * TILE_WORDS; // from a tile-row's words to the next one's
  // The word after the lane's K words: the next lane's first, or the tile's first for lane 7.
  let wrap = select(K, K - TILE_WORDS, lane == 7u);
{{ACC}}
  for (var j = slot; j < tpr; j += SLOTS) {
{{BODY}}
  }
  workgroupBarrier(); // the LUT's words become the reduction's
{{REDUCE}}
}
