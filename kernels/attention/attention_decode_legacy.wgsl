// Split-K paged attention for few query tokens per sequence (flash-decoding: split the keys, then
// combine partial softmaxes). For token t of sequence row s at position pos and query head h of kv
// group g = h / group:  out[t, h] = sum_{p <= pos} softmax_p(scale * q[t, h] . K[s, p, g]) V[s, p, g].
// Entry `split`: workgroup (x, y, z) = (partition j, g * headChunks + chunk, t) attends to positions
//   [j * partSize, min((j + 1) * partSize, pos + 1)) for the HG query heads of its chunk and writes
//   per-head (max, sum) and the unnormalised output to the scratch; attention_reduce.wgsl combines.
// Entry `direct`: the same with one partition covering [0, pos]; writes normalised rows to out.
// Bindings: q f32 (T, qStride) from qOffset, head h at columns [h * HEAD_DIM, (h + 1) * HEAD_DIM);
//           kCache, vCache f16 pairs as u32 (numBlocks, nKvHeads, blockSize, HEAD_DIM / 2);
//           tokenSeq u32 (T); tokenPos u32 (T); blockTable u32 (numSeqRows, maxBlocksPerSeq);
//           dst f32: `direct` -> out (T, outStride) from outOffset, head h at h * HEAD_DIM;
//                    `split` -> scratch: stats (T, nHeads, nParts, 2) = (max, sum), then
//                               partial outputs (T, nHeads, nParts, HEAD_DIM); params.
// Per chunk of CHUNK positions, three phases with no per-position loop chains: (A) TPP invocations per
// position read its K row once (its block-table lookup kept for phase C) and score it for the HG heads;
// (B) the chunk max per head updates the running max (online softmax, FlashAttention-2 sec. 3.1) and
// the scores become weights; (C) invocation (group, pair) accumulates weight * V for the positions of
// its group, reading V rows coalesced. The groups meet in workgroup memory at the end.
// The earlier plan of the decode attention, kept for KernelFeatures.legacy "attn-decode" (A/B runs) and for
// what attention_decode.wgsl's register plan does not serve (head dims not a multiple of 8, or of more
// than 4 vec4 a thread; CPU adapters without subgroups): attention.ts decodeKernel() chooses.
// Reference: attention_ref.ts `attentionRef`.

override WG: u32 = 256u;
override HEAD_DIM: u32 = 128u;
// Query heads per workgroup (all, or a chunk, of one kv group's heads), so K/V are read once for them.
override HG: u32 = 1u;
// Positions per pass.
override CHUNK: u32 = 64u;
override HD2: u32 = HEAD_DIM / 2u;
// Position groups of phase C: invocation lid works on pair lid % HD2 of group lid / HD2.
override GROUPS: u32 = WG / HD2;
// Invocations per position in phase A (a power of two, TPP * CHUNK <= WG, HD2 a multiple of TPP).
override TPP: u32 = 1u;

const MAX_HG: u32 = 8u;
const NEG: f32 = -1e30;

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
@group(0) @binding(1) var<storage, read> kCache: array<u32>;
@group(0) @binding(2) var<storage, read> vCache: array<u32>;
@group(0) @binding(3) var<storage, read> tokenSeq: array<u32>;
@group(0) @binding(4) var<storage, read> tokenPos: array<u32>;
@group(0) @binding(5) var<storage, read> blockTable: array<u32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

var<workgroup> qs: array<f32, HG * HEAD_DIM>; // scaled queries (HG, HEAD_DIM)
var<workgroup> sc: array<f32, HG * CHUNK>; // scores, then weights (HG, CHUNK)
var<workgroup> rowAt: array<u32, CHUNK>; // first cache word of each position's row
var<workgroup> hm: array<f32, HG>; // running max per head
var<workgroup> corr: array<f32, HG>; // rescale of the accumulators for this chunk
var<workgroup> red: array<vec2<f32>, GROUPS * HG * HD2>; // phase-C partials (group, head, pair)
var<workgroup> redl: array<f32, GROUPS * HG>; // partial weight sums (group, head)

struct Attended {
  acc: array<vec2<f32>, MAX_HG>, // (head) output pair of this invocation (lid < HD2), unnormalised
  l: array<f32, MAX_HG>, // (head) sum of weights
}

// Attends token t's query heads [headBase, headBase + nh) of kv head g over positions [p0, p1). The
// result is complete for invocations lid < HD2 (pair lid); hm holds each head's max.
fn attend(t: u32, g: u32, headBase: u32, nh: u32, p0: u32, p1: u32, lid: u32) -> Attended {
  let tableRow = tokenSeq[t] * params.maxBlocksPerSeq;
  let qBase = params.qOffset + t * params.qStride;
  for (var i = lid; i < HG * HEAD_DIM; i += WG) {
    let h = min(i / HEAD_DIM, nh - 1u);
    qs[i] = q[qBase + (headBase + h) * HEAD_DIM + i % HEAD_DIM] * params.scale;
  }
  if (lid < HG) {
    hm[lid] = NEG;
  }
  let dp = lid % HD2;
  let grp = lid / HD2;
  var acc: array<vec2<f32>, MAX_HG>;
  var l: array<f32, MAX_HG>;
  for (var h = 0u; h < HG; h++) {
    acc[h] = vec2<f32>(0.0);
    l[h] = 0.0;
  }
  workgroupBarrier();
  for (var p = p0; p < p1; p += CHUNK) {
    let n = min(CHUNK, p1 - p);
    // (A) scores: TPP invocations per position, each summing a share of the row's words (words part,
    // part + TPP, ...: the position's invocations read consecutive words), four loads in flight per trip;
    // the shares meet in `red` (free until the end) and then in sc.
    let r = lid / TPP;
    let part = lid % TPP;
    if (r < n) {
      let pos = p + r;
      let blk = blockTable[tableRow + pos / params.blockSize];
      let row = ((blk * params.nKvHeads + g) * params.blockSize + pos % params.blockSize) * HD2;
      if (part == 0u) {
        rowAt[r] = row;
      }
      var s: array<f32, MAX_HG>;
      for (var h = 0u; h < HG; h++) {
        s[h] = 0.0;
      }
      var d = part;
      for (; d + 3u * TPP < HD2; d += 4u * TPP) {
        let k0 = unpack2x16float(kCache[row + d]);
        let k1 = unpack2x16float(kCache[row + d + TPP]);
        let k2 = unpack2x16float(kCache[row + d + 2u * TPP]);
        let k3 = unpack2x16float(kCache[row + d + 3u * TPP]);
        for (var h = 0u; h < HG; h++) {
          let b = h * HEAD_DIM + 2u * d;
          var a = fma(qs[b], k0.x, fma(qs[b + 1u], k0.y, s[h]));
          a = fma(qs[b + 2u * TPP], k1.x, fma(qs[b + 2u * TPP + 1u], k1.y, a));
          a = fma(qs[b + 4u * TPP], k2.x, fma(qs[b + 4u * TPP + 1u], k2.y, a));
          s[h] = fma(qs[b + 6u * TPP], k3.x, fma(qs[b + 6u * TPP + 1u], k3.y, a));
        }
      }
      for (; d < HD2; d += TPP) {
        let kv = unpack2x16float(kCache[row + d]);
        for (var h = 0u; h < HG; h++) {
          s[h] = fma(qs[h * HEAD_DIM + 2u * d], kv.x, fma(qs[h * HEAD_DIM + 2u * d + 1u], kv.y, s[h]));
        }
      }
      for (var h = 0u; h < HG; h++) {
        let i = (h * CHUNK + r) * TPP + part;
        red[i >> 1u][i & 1u] = s[h];
      }
    }
    workgroupBarrier();
    for (var i = lid; i < HG * CHUNK; i += WG) {
      var s = 0.0;
      for (var u = 0u; u < TPP; u++) {
        let at = i * TPP + u;
        s += red[at >> 1u][at & 1u];
      }
      sc[i] = s;
    }
    workgroupBarrier();
    // (B) the running max per head, then weights.
    if (lid < HG) {
      var m = hm[lid];
      for (var r = 0u; r < n; r++) {
        m = max(m, sc[lid * CHUNK + r]);
      }
      corr[lid] = exp(hm[lid] - m);
      hm[lid] = m;
    }
    workgroupBarrier();
    for (var i = lid; i < HG * CHUNK; i += WG) {
      let r = i % CHUNK;
      sc[i] = select(0.0, exp(sc[i] - hm[i / CHUNK]), r < n);
    }
    workgroupBarrier();
    // (C) weighted V rows, GROUPS positions at a time.
    if (grp < GROUPS) {
      for (var h = 0u; h < HG; h++) {
        acc[h] *= corr[h];
        l[h] *= corr[h];
      }
      var r = grp;
      for (; r + 3u * GROUPS < n; r += 4u * GROUPS) {
        let v0 = unpack2x16float(vCache[rowAt[r] + dp]);
        let v1 = unpack2x16float(vCache[rowAt[r + GROUPS] + dp]);
        let v2 = unpack2x16float(vCache[rowAt[r + 2u * GROUPS] + dp]);
        let v3 = unpack2x16float(vCache[rowAt[r + 3u * GROUPS] + dp]);
        for (var h = 0u; h < HG; h++) {
          let w0 = sc[h * CHUNK + r];
          let w1 = sc[h * CHUNK + r + GROUPS];
          let w2 = sc[h * CHUNK + r + 2u * GROUPS];
          let w3 = sc[h * CHUNK + r + 3u * GROUPS];
          acc[h] = fma(vec2<f32>(w3), v3, fma(vec2<f32>(w2), v2, fma(vec2<f32>(w1), v1, fma(vec2<f32>(w0), v0, acc[h]))));
          l[h] += (w0 + w1) + (w2 + w3);
        }
      }
      for (; r < n; r += GROUPS) {
        let v = unpack2x16float(vCache[rowAt[r] + dp]);
        for (var h = 0u; h < HG; h++) {
          let w = sc[h * CHUNK + r];
          acc[h] = fma(vec2<f32>(w), v, acc[h]);
          l[h] += w;
        }
      }
    }
    workgroupBarrier();
  }
  if (grp < GROUPS) {
    for (var h = 0u; h < HG; h++) {
      red[(grp * HG + h) * HD2 + dp] = acc[h];
      if (dp == 0u) {
        redl[grp * HG + h] = l[h];
      }
    }
  }
  workgroupBarrier();
  var res: Attended;
  if (lid < HD2) {
    for (var h = 0u; h < HG; h++) {
      var a = vec2<f32>(0.0);
      var s = 0.0;
      for (var gi = 0u; gi < GROUPS; gi++) {
        a += red[(gi * HG + h) * HD2 + lid];
        s += redl[gi * HG + h];
      }
      res.acc[h] = a;
      res.l[h] = s;
    }
  }
  return res;
}

@compute @workgroup_size(WG)
fn direct(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.z;
  let g = wg.y / params.headChunks;
  let headBase = g * params.group + (wg.y % params.headChunks) * HG;
  let nh = min(HG, (g + 1u) * params.group - headBase);
  let res = attend(t, g, headBase, nh, 0u, tokenPos[t] + 1u, lid);
  if (lid < HD2) {
    for (var h = 0u; h < HG; h++) {
      if (h < nh) {
        let j = params.outOffset + t * params.outStride + (headBase + h) * HEAD_DIM + 2u * lid;
        let y = res.acc[h] / res.l[h];
        dst[j] = y.x;
        dst[j + 1u] = y.y;
      }
    }
  }
}

@compute @workgroup_size(WG)
fn split(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.z;
  let p0 = wg.x * params.partSize;
  let ctx = tokenPos[t] + 1u;
  if (p0 >= ctx) {
    return;
  }
  let g = wg.y / params.headChunks;
  let headBase = g * params.group + (wg.y % params.headChunks) * HG;
  let nh = min(HG, (g + 1u) * params.group - headBase);
  let res = attend(t, g, headBase, nh, p0, min(ctx, p0 + params.partSize), lid);
  let outBase = 2u * params.T * params.nHeads * params.nParts;
  if (lid < HD2) {
    for (var h = 0u; h < HG; h++) {
      if (h < nh) {
        let row = (t * params.nHeads + headBase + h) * params.nParts + wg.x;
        if (lid == 0u) {
          dst[2u * row] = hm[h];
          dst[2u * row + 1u] = res.l[h];
        }
        let j = outBase + row * HEAD_DIM + 2u * lid;
        dst[j] = res.acc[h].x;
        dst[j + 1u] = res.acc[h].y;
      }
    }
  }
}
