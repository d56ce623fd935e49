// Split-K paged attention for few query tokens per sequence (flash-decoding: split the keys, then
// combine partial softmaxes), register plan. For token t of sequence row s at position pos and query head
// h of kv group g = h / group:  out[t, h] = sum_{p <= pos} softmax_p(scale * q[t, h] . K[s, p, g]) V[s, p, g].
// Entry `split`: workgroup (x, y, z) = (partition j, g * headChunks + chunk, t) attends to positions
//   [j * partSize, min((j + 1) * partSize, pos + 1)) for the HG query heads of its chunk and writes
//   per-head (max, sum) and the unnormalised output to the scratch; attention_reduce.wgsl or
//   attention_o_input.wgsl combines. Entry `direct`: one partition covering [0, pos], normalised rows to out.
//
// This file is a template: decode.ts `decodeSource(plan)` replaces each block name in double braces with
// constants and straight-line statements, so every per-invocation value (queries, K and V words, scores,
// accumulators) is a named scalar or vector: no indexed per-invocation arrays, which a GPU keeps in
// local memory. The design note (why this shape is short on latency) is at the top of decode.ts.
//
// Work split: a team of L consecutive invocations reads one position's K and V rows, lane `lane` the
// vec4<u32> (8 halves) lane + i * L for i < VPT, so a team's loads are consecutive 16-byte words. A round
// is R = TEAMS * NP positions: invocation (team, lane) takes positions base + team + j * TEAMS, j < NP,
// and issues all its K and V loads of the round before any arithmetic. Scores: each lane's dot products
// meet across the team by subgroupShuffleXor (or, without subgroups, in workgroup memory); every lane of a
// team then holds the same scores. Softmax: GS invocations share a running max (FlashAttention-2 sec. 3.1)
// taken by subgroupMax (GS = the subgroup; without subgroups GS = L, the team, and no exchange is needed),
// so a round has no barrier; each lane accumulates weight * V for its own dims. At the end the teams of a
// subgroup add up by shuffles, each group's (max, sum, output) goes to workgroup memory, and after the one
// barrier the groups are combined like partitions. A subgroup is taken to be GS consecutive invocations
// (as on NVIDIA and lavapipe; qtip_mv.ts and o_input.ts assume the same).
// Bindings: q f32 (T, qStride) from qOffset, head h at columns [h * HEAD_DIM, (h + 1) * HEAD_DIM);
//           kCache, vCache f16 as vec4<u32> (numBlocks, nKvHeads, blockSize, HEAD_DIM / 8);
//           tokenSeq u32 (T); tokenPos u32 (T); blockTable u32 (numSeqRows, maxBlocksPerSeq);
//           dst f32: `direct` -> out (T, outStride) from outOffset, head h at h * HEAD_DIM;
//                    `split` -> scratch: stats (T, nHeads, nParts, 2) = (max, sum), then
//                               partial outputs (T, nHeads, nParts, HEAD_DIM); params.
// Dispatch: (nParts, nKvHeads * headChunks, T) workgroups of WG (`direct`: nParts = 1).
// Reference: attention_ref.ts `attentionRef`.

{{CONSTS}}

const NEG: f32 = -1e30;

// attention_decode_legacy.wgsl's Params, field for field.
struct Params {
  T: u32,
  nHeads: u32,
  nKvHeads: u32,
  group: u32,
  headChunks: u32,
  blockSize: u32,
  maxBlocksPerSeq: u32,
  partSize: u32,
  nParts: u32,
  qStride: u32,
  qOffset: u32,
  outStride: u32,
  outOffset: u32,
  scale: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kCache: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> vCache: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> tokenSeq: array<u32>;
@group(0) @binding(4) var<storage, read> tokenPos: array<u32>;
@group(0) @binding(5) var<storage, read> blockTable: array<u32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

// Each group's softmax state at the end: (GROUPS, HG) of (max, sum), (GROUPS, HG, Q4) output vec4s.
var<workgroup> recStat: array<vec2<f32>, GROUPS * HG>;
var<workgroup> recAcc: array<vec4<f32>, GROUPS * HG * Q4>;
{{SMEM}}

fn load4(i: u32) -> vec4<f32> {
  return vec4<f32>(q[i], q[i + 1u], q[i + 2u], q[i + 3u]);
}

// Halves 0-3 and 4-7 of a vec4<u32> of a cache row.
fn lo8(w: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}

fn hi8(w: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
}

// (a, b) . the 8 halves of w.
fn dot8(a: vec4<f32>, b: vec4<f32>, w: vec4<u32>) -> f32 {
  return dot(a, lo8(w)) + dot(b, hi8(w));
}

// The first vec4<u32> of kv head g's row at position pos of the sequence whose block table row starts at
// tableRow.
fn rowOf(tableRow: u32, g: u32, pos: u32) -> u32 {
  let blk = blockTable[tableRow + pos / params.blockSize];
  return ((blk * params.nKvHeads + g) * params.blockSize + pos % params.blockSize) * C;
}

// Attends token t's query heads [headBase, headBase + nh) of kv head g over positions
// [p0, min(tokenPos[t] + 1, pEnd)); false (having touched nothing) when that range is empty. Otherwise
// every group's state is in recStat / recAcc, after a barrier.
fn attend(t: u32, g: u32, headBase: u32, nh: u32, p0: u32, pEnd: u32, lid: u32) -> bool {
{{ATTEND}}
}

struct Combined {
  m: f32,
  l: f32,
  o: vec4<f32>,
}

// Output vec4 c of head h: the groups' states combined (attention_reduce.wgsl's math): M = max_g m_g,
// l = sum_g exp(m_g - M) l_g, o = sum_g exp(m_g - M) o_g. A group that saw no position has m_g = NEG and
// l_g = 0, o_g = 0; another group saw one, so M is a score and its weight is 0.
fn combine(h: u32, c: u32) -> Combined {
  var mx = NEG;
  for (var gi = 0u; gi < GROUPS; gi++) {
    mx = max(mx, recStat[gi * HG + h].x);
  }
  var r = Combined(mx, 0.0, vec4<f32>(0.0));
  for (var gi = 0u; gi < GROUPS; gi++) {
    let st = recStat[gi * HG + h];
    let w = exp(st.x - mx);
    r.l = fma(w, st.y, r.l);
    r.o = fma(vec4<f32>(w), recAcc[(gi * HG + h) * Q4 + c], r.o);
  }
  return r;
}

@compute @workgroup_size(WG)
fn direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.z;
  let g = wg.y / params.headChunks;
  let headBase = g * params.group + (wg.y % params.headChunks) * HG;
  let nh = min(HG, (g + 1u) * params.group - headBase);
  if (!attend(t, g, headBase, nh, 0u, 0xffffffffu, lid)) {
    return;
  }
  let rowBase = params.outOffset + t * params.outStride + headBase * HEAD_DIM;
  for (var i = lid; i < HG * Q4; i += WG) {
    let h = i / Q4;
    let c = i % Q4;
    if (h < nh) {
      let r = combine(h, c);
      let y = r.o / r.l;
      let j = rowBase + h * HEAD_DIM + 4u * c;
      dst[j] = y.x;
      dst[j + 1u] = y.y;
      dst[j + 2u] = y.z;
      dst[j + 3u] = y.w;
    }
  }
}

@compute @workgroup_size(WG)
fn split(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.z;
  let p0 = wg.x * params.partSize;
  let g = wg.y / params.headChunks;
  let headBase = g * params.group + (wg.y % params.headChunks) * HG;
  let nh = min(HG, (g + 1u) * params.group - headBase);
  // A partition past the token's position is never read by the combine.
  if (!attend(t, g, headBase, nh, p0, p0 + params.partSize, lid)) {
    return;
  }
  let outBase = 2u * params.T * params.nHeads * params.nParts;
  for (var i = lid; i < HG * Q4; i += WG) {
    let h = i / Q4;
    let c = i % Q4;
    if (h < nh) {
      let r = combine(h, c);
      let row = (t * params.nHeads + headBase + h) * params.nParts + wg.x;
      if (c == 0u) {
        dst[2u * row] = r.m;
        dst[2u * row + 1u] = r.l;
      }
      let j = outBase + row * HEAD_DIM + 4u * c;
      dst[j] = r.o.x;
      dst[j + 1u] = r.o.y;
      dst[j + 2u] = r.o.z;
      dst[j + 3u] = r.o.w;
    }
  }
}
