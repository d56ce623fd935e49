// Causal paged attention for query tiles (prefill chunks), FlashAttention-2 style (Dao 2023, alg. 1).
// For token t of sequence row s at position pos and query head h of kv group g = h / group:
//   out[t, h] = sum_{p <= pos} softmax_p(scale * q[t, h] . K[s, p, g]) V[s, p, g]
// with K/V read from the paged cache (the batch's own tokens are written there first by kv_write).
//
// This file is a template: attention.ts `prefillSource(plan)` replaces each block name in double braces with constants or
// fully unrolled statements, so every per-invocation value lives in a named scalar or vec4 variable (no
// dynamically indexed private arrays, which GPU compilers spill to local memory).
//
// Dispatch (x, y) = (nKvHeads * headChunks, ceil(T / BQ)). Workgroup (x, y) takes the query heads
// [headBase, headBase + nh) of kv group g = x / headChunks and the token block b = ceil(T / BQ) - 1 - y
// (the last, longest-context blocks start first), tokens [b * BQ, min(T, (b + 1) * BQ)). The block's runs
// (maximal spans of consecutive positions of one sequence; BQ <= NT tokens, so the invocations find a
// run's end in parallel) are its tiles, attended one after the other:
// rows r < R of a tile are (tile token r / HG, head headBase + r % HG); rows past the tile repeat its last
// valid row and are not written.
// A tile walks positions [0, last pos + 1) in steps of BK keys. Invocation (tx, ty) of the TX x TY
// workgroup owns rows ty + i * TY (i < RM): the scores of keys tx + k * TX (k < KN) and the output columns
// 4 * (tx + j * TX) .. + 3 (j < NCV). Per step, two barriers:
//   scores (q from qs, K from kt) -> partial row maxima to pm -> barrier ->
//   the next step's K and V (loaded into registers before the scores) to kt and vt[next] ->
//   running max, p = exp(s - max) to pe, rescale -> barrier -> acc += p V (vt[this]).
// The row sums are kept per invocation over its own keys and added up through pm at the end.
// Bindings: q f32 (T, qStride) from qOffset, head h at columns [h * HEAD_DIM, (h + 1) * HEAD_DIM);
//           kCache, vCache f16 pairs (numBlocks, nKvHeads, blockSize, HEAD_DIM / 2) as u32, read LW u32
//           at a time; tokenSeq u32 (T); tokenPos u32 (T); blockTable u32 (numSeqRows, maxBlocksPerSeq);
//           out f32 (T, outStride) from outOffset, head h at h * HEAD_DIM; params.
// Reference: attention_ref.ts `attentionRef`.

{{CONSTS}}
const NEG: f32 = -1e30;

struct Params {
  T: u32,
  nHeads: u32,
  nKvHeads: u32,
  group: u32,
  headChunks: u32,
  blockSize: u32,
  maxBlocksPerSeq: u32,
  qStride: u32,
  qOffset: u32,
  outStride: u32,
  outOffset: u32,
  scale: f32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kCache: array<UNIT>;
@group(0) @binding(2) var<storage, read> vCache: array<UNIT>;
@group(0) @binding(3) var<storage, read> tokenSeq: array<u32>;
@group(0) @binding(4) var<storage, read> tokenPos: array<u32>;
@group(0) @binding(5) var<storage, read> blockTable: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, R * QS>; // scaled queries (R, QS), 4 columns a word
var<workgroup> kt: array<vec2<u32>, BK * KS>; // K tile (BK, KS), 4 halves a word
var<workgroup> vt: array<vec2<u32>, 2u * BK * VS>; // two V tiles (BK, VS)
var<workgroup> pm: array<f32, R * TX>; // partial row maxima (R, TX), at the end partial row sums
var<workgroup> pe: array<vec4<f32>, R * BK / 4u>; // exp(score - running max) (R, BK)
var<workgroup> runEnd: atomic<u32>;
var<workgroup> runEndU: u32;

// Whether token t continues token t - 1's run.
fn continues(t: u32) -> bool {
  return tokenSeq[t] == tokenSeq[t - 1u] && tokenPos[t] == tokenPos[t - 1u] + 1u;
}

// Index (in UNITs) of the c-th LW-word unit of the cache row of position pos, kv head g.
fn cacheIndex(tableRow: u32, g: u32, pos: u32, c: u32) -> u32 {
  let blk = blockTable[tableRow + pos / params.blockSize];
  return ((blk * params.nKvHeads + g) * params.blockSize + pos % params.blockSize) * CPR + c;
}

{{STAGE_FNS}}

fn unpack4(w: vec2<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}

@compute @workgroup_size(TX, TY)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) li: vec3<u32>) {
  let tx = li.x;
  let ty = li.y;
  let lid = ty * TX + tx;
  let g = wg.x / params.headChunks;
  let headBase = g * params.group + (wg.x % params.headChunks) * HG;
  let nh = min(HG, (g + 1u) * params.group - headBase);
  let nBlocks = (params.T + BQ - 1u) / BQ;
  let tEnd = min(params.T, (nBlocks - wg.y) * BQ);
  var t0 = (nBlocks - 1u - wg.y) * BQ;
{{ZERO_FILL}}
  while (t0 < tEnd) {
    // The run's end: the first later token of the block that does not continue it (found in parallel).
    if (lid == 0u) {
      atomicStore(&runEnd, tEnd);
    }
    workgroupBarrier();
    if (t0 + 1u + lid < tEnd && !continues(t0 + 1u + lid)) {
      atomicMin(&runEnd, t0 + 1u + lid);
    }
    workgroupBarrier();
    if (lid == 0u) {
      runEndU = atomicLoad(&runEnd);
    }
    let nq = workgroupUniformLoad(&runEndU) - t0;
    let kEnd = tokenPos[t0 + nq - 1u] + 1u;
    let nSteps = (kEnd + BK - 1u) / BK;
    let tableRow = tokenSeq[t0] * params.maxBlocksPerSeq;

    for (var i = lid; i < R * QS; i += NT) {
      let r = i / QS;
      let d = 4u * (i % QS);
      let tok = t0 + min(r / HG, nq - 1u);
      let h = headBase + min(r % HG, nh - 1u);
      let j = params.qOffset + tok * params.qStride + h * HEAD_DIM + d;
{{Q_LOAD}}
    }
{{ROW_INIT}}
{{FIRST_TILE}}
    workgroupBarrier();

    for (var step = 0u; step < nSteps; step++) {
      let k0 = step * BK;
      let vb = (step % 2u) * (BK * VS);
      let nNext = select(0u, min(BK, kEnd - min(kEnd, k0 + BK)), step + 1u < nSteps);
{{PREFETCH}}
{{SCORES}}
      workgroupBarrier();
{{STORE_NEXT}}
{{SOFTMAX}}
      workgroupBarrier();
{{PV}}
    }

{{EPILOGUE}}
    workgroupBarrier();
    t0 += nq;
  }
}
