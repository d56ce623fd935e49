// Sampling: tokens[o_r] = draw from softmax(l_r / t) kept by top-k, min-p, top-p (argmax when t = 0);
//           logprobs[o_r] = log_softmax(l_r)[token] (raw logits), o_r = rowParams[r].outIndex.
// Bindings: logits f32 (rows, logitsStride) from logitsOffset; rowParams RowParams (paramsOffset + rows);
//           tokens u32 (any length); logprobs f32 (any length; written when wantLogprobs != 0); params.
// Dispatch: one workgroup of WG threads per row (x = rows); WG a power of two >= 256.
// Reference: sampling_ref.ts `sampleRef` (its header is the exact specification).
//
// Passes over the row, all inside one workgroup, none sorting the vocabulary:
//  A. max, argmax (lowest index on ties) and, for logprobs, the raw softmax normaliser (online
//     softmax: Milakov & Gimelshein 2018). Greedy rows stop here.
//  B. top-k: radix select of the k-th largest logit on order-preserving u32 keys, 8 bits per pass
//     (4 passes), each pass a 256-bin histogram of the keys that match the prefix found so far.
//  C. top-p: kept mass M, then bisection on the key for the largest threshold whose kept mass above
//     it reaches topP * M (at most 32 passes, each a parallel sum). Min-p is a per-token test in all
//     passes (w_i >= minP, where w_max = 1).
//  D. draw: u from Philox4x32-10(counter, seed); each thread sums the kept weights of one contiguous
//     chunk, a workgroup scan of the chunk sums finds the chunk holding u * W, and that thread walks
//     its chunk in index order.
// Every test compares keys (integers), so -Infinity and NaN logits never meet float arithmetic.

override WG: u32 = 256u;

// Order-preserving keys: key(a) < key(b) iff a < b. NaN maps to the key of -Infinity.
const NEG_INF_KEY: u32 = 0x007fffffu;
const POS_INF_KEY: u32 = 0xff800000u;
const NO_INDEX: u32 = 0xffffffffu;

struct Params {
  rows: u32,
  vocab: u32,
  logitsStride: u32,
  logitsOffset: u32,
  paramsOffset: u32,
  wantLogprobs: u32,
  _pad0: u32,
  _pad1: u32,
}

// 32 bytes; packed by sampling.ts `packSamplingParams`. Extension point (not implemented): logit bias
// and repetition / presence / frequency penalties append their fields after outIndex and adjust the
// value returned by `logitAt`, which every pass reads through.
struct RowParams {
  temperature: f32, // 0 = greedy
  topK: u32, // 0 = off
  topP: f32, // 1 = off
  minP: f32, // 0 = off
  seedLo: u32,
  seedHi: u32,
  counter: u32, // the sequence's sampling step
  outIndex: u32, // where this row's token (and logprob) go
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> rowParams: array<RowParams>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(3) var<storage, read_write> logprobs: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> redKey: array<u32, WG>;
var<workgroup> redIdx: array<u32, WG>;
var<workgroup> redVal: array<f32, WG>;
var<workgroup> redSum: array<f32, WG>;
var<workgroup> scanCount: array<u32, WG>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> digitFound: u32;
var<workgroup> aboveFound: u32;
var<workgroup> pickThread: atomic<u32>;
var<workgroup> pickToken: u32;

// Row state, identical in every invocation of the workgroup.
var<private> base: u32;
var<private> keyMax: u32;
var<private> maxVal: f32;
var<private> temperature: f32;
var<private> minP: f32;

fn logitAt(i: u32) -> f32 {
  return logits[base + i];
}

fn sortKey(x: f32) -> u32 {
  var b = bitcast<u32>(x);
  if (b == 0x80000000u) {
    b = 0u; // -0 ties with +0
  }
  let k = select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
  return select(k, NEG_INF_KEY, k > POS_INF_KEY || k < NEG_INF_KEY);
}

// exp((x - top) / t) for a value x below the maximum top (keys k < kTop), 0 for -Infinity or when top
// is +Infinity. The clamp keeps an overflowing difference finite; exp(-150) is 0 in f32.
fn relWeight(k: u32, x: f32, kTop: u32, top: f32, t: f32) -> f32 {
  if (k <= NEG_INF_KEY || kTop >= POS_INF_KEY) {
    return 0.0;
  }
  return exp(max((x - top) / t, -150.0));
}

// The sampling weight of a token if it is kept (key >= lowKey and min-p), else 0.
fn keptWeight(k: u32, x: f32, lowKey: u32) -> f32 {
  if (k < lowKey) {
    return 0.0;
  }
  var w = 1.0;
  if (k != keyMax) {
    w = relWeight(k, x, keyMax, maxVal, temperature);
  }
  return select(0.0, w, w >= minP);
}

// Sum of v over the workgroup, returned uniformly.
fn sumAll(lid: u32, v: f32) -> f32 {
  workgroupBarrier(); // earlier readers of redSum are done
  redSum[lid] = v;
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off >>= 1u) {
    if (lid < off) {
      redSum[lid] += redSum[lid + off];
    }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&redSum[0]);
}

// Pass A: leaves keyMax, argmax, the max value and the raw normaliser in redKey/redIdx/redVal/redSum[0].
// This thread's running (key, index, value, normaliser) of pass A.
var<private> bk: u32;
var<private> bi: u32;
var<private> bv: f32;
var<private> bs: f32; // sum of exp(l - bv) over this thread's elements

fn visitMax(i: u32, x: f32, wantNorm: bool) {
  let k = sortKey(x);
  if (k > bk) {
    if (wantNorm) {
      bs = bs * relWeight(bk, bv, k, x, 1.0) + 1.0;
    }
    bk = k;
    bi = i;
    bv = x;
  } else if (wantNorm) {
    bs += select(relWeight(k, x, bk, bv, 1.0), 1.0, k == bk);
  }
}

fn reduceMax(lid: u32, wantNorm: bool) {
  bk = 0u; // below every real key
  bi = NO_INDEX;
  bv = 0.0;
  bs = 0.0;
  // Elements lid, lid + WG, ... in that order; four loads in flight per trip.
  var i = lid;
  for (; i + 3u * WG < params.vocab; i += 4u * WG) {
    let x0 = logitAt(i);
    let x1 = logitAt(i + WG);
    let x2 = logitAt(i + 2u * WG);
    let x3 = logitAt(i + 3u * WG);
    visitMax(i, x0, wantNorm);
    visitMax(i + WG, x1, wantNorm);
    visitMax(i + 2u * WG, x2, wantNorm);
    visitMax(i + 3u * WG, x3, wantNorm);
  }
  for (; i < params.vocab; i += WG) {
    visitMax(i, logitAt(i), wantNorm);
  }
  let s = bs;
  redKey[lid] = bk;
  redIdx[lid] = bi;
  redVal[lid] = bv;
  redSum[lid] = s;
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off >>= 1u) {
    if (lid < off) {
      let ka = redKey[lid];
      let kb = redKey[lid + off];
      let ia = redIdx[lid];
      let ib = redIdx[lid + off];
      let va = redVal[lid];
      let vb = redVal[lid + off];
      let sa = redSum[lid];
      let sb = redSum[lid + off];
      if (kb > ka || (kb == ka && ib < ia)) {
        redKey[lid] = kb;
        redIdx[lid] = ib;
        redVal[lid] = vb;
        if (wantNorm) {
          redSum[lid] = sb + sa * select(relWeight(ka, va, kb, vb, 1.0), 1.0, ka == kb);
        }
      } else if (wantNorm) {
        redSum[lid] = sa + sb * select(relWeight(kb, vb, ka, va, 1.0), 1.0, ka == kb);
      }
    }
    workgroupBarrier();
  }
}

// Inclusive scan of scanCount[0..WG) (Hillis-Steele).
fn scanCounts(lid: u32) {
  for (var off = 1u; off < WG; off <<= 1u) {
    let add = select(0u, scanCount[max(lid, off) - off], lid >= off);
    workgroupBarrier();
    scanCount[lid] += add;
    workgroupBarrier();
  }
}

// Inclusive scan of redSum[0..WG) (Hillis-Steele).
fn scanSums(lid: u32) {
  for (var off = 1u; off < WG; off <<= 1u) {
    let add = select(0.0, redSum[max(lid, off) - off], lid >= off);
    workgroupBarrier();
    redSum[lid] += add;
    workgroupBarrier();
  }
}

// Pass B: the key of the k-th largest logit (counting repeats), 0 < k < vocab.
fn selectTopK(lid: u32, k: u32) -> u32 {
  var prefix = 0u;
  var above = 0u; // keys known to be larger than every key still matching the prefix
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    if (lid < 256u) {
      atomicStore(&hist[lid], 0u);
    }
    workgroupBarrier();
    for (var i = lid; i < params.vocab; i += WG) {
      let key = sortKey(logitAt(i));
      // round 0 matches everything (a shift by 32 is not allowed).
      if (round == 0u || (key >> (shift + 8u)) == (prefix >> (shift + 8u))) {
        atomicAdd(&hist[(key >> shift) & 255u], 1u);
      }
    }
    workgroupBarrier();
    // scanCount[j] = matching keys whose digit is >= 255 - j.
    var own = 0u;
    if (lid < 256u) {
      own = atomicLoad(&hist[255u - lid]);
    }
    scanCount[lid] = own;
    workgroupBarrier();
    scanCounts(lid);
    if (lid < 256u) {
      let atLeast = above + scanCount[255u - lid];
      var greater = above;
      if (lid < 255u) {
        greater += scanCount[254u - lid];
      }
      if (atLeast >= k && greater < k) {
        digitFound = lid;
        aboveFound = greater;
      }
    }
    let digit = workgroupUniformLoad(&digitFound);
    above = workgroupUniformLoad(&aboveFound);
    prefix |= digit << shift;
  }
  return prefix;
}

// Pass C: the top-p key threshold over the tokens kept at lowKey. topKey is keyMax, passed as a
// value so the loop bounds are visibly workgroup-uniform.
fn topPThreshold(lid: u32, lowKey: u32, topKey: u32, topP: f32) -> u32 {
  var part = 0.0;
  for (var i = lid; i < params.vocab; i += WG) {
    let x = logitAt(i);
    part += keptWeight(sortKey(x), x, lowKey);
  }
  let goal = topP * sumAll(lid, part);
  // Invariant: mass(key >= lo) >= goal > mass(key >= hi).
  var lo = lowKey;
  var hi = topKey + 1u;
  loop {
    if (hi - lo <= 1u) {
      break;
    }
    let mid = lo + (hi - lo) / 2u;
    var p = 0.0;
    for (var i = lid; i < params.vocab; i += WG) {
      let x = logitAt(i);
      p += keptWeight(sortKey(x), x, mid);
    }
    if (sumAll(lid, p) >= goal) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

fn mulHiLo(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  return vec2<u32>(a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u), a * b);
}

// Philox4x32-10 (Salmon et al., SC'11; constants from Random123).
fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var round = 0u; round < 10u; round++) {
    if (round > 0u) {
      k += vec2<u32>(0x9e3779b9u, 0xbb67ae85u);
    }
    let p0 = mulHiLo(0xd2511f53u, c.x);
    let p1 = mulHiLo(0xcd9e8d57u, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
  }
  return c;
}

// Pass D: the first kept token whose running mass exceeds u * W.
fn drawToken(lid: u32, lowKey: u32, u: f32, argmax: u32) -> u32 {
  let chunk = (params.vocab + WG - 1u) / WG;
  let start = min(lid * chunk, params.vocab);
  let end = min(start + chunk, params.vocab);
  var part = 0.0;
  for (var i = start; i < end; i++) {
    let x = logitAt(i);
    part += keptWeight(sortKey(x), x, lowKey);
  }
  workgroupBarrier(); // earlier readers of redSum are done
  redSum[lid] = part;
  if (lid == 0u) {
    atomicStore(&pickThread, NO_INDEX);
    pickToken = argmax; // only if rounding left no chunk to walk
  }
  workgroupBarrier();
  scanSums(lid);
  let goal = u * redSum[WG - 1u];
  if (goal < redSum[lid]) {
    atomicMin(&pickThread, lid);
  }
  workgroupBarrier();
  if (atomicLoad(&pickThread) == lid) {
    var local = goal;
    if (lid > 0u) {
      local -= redSum[lid - 1u];
    }
    var run = 0.0;
    var found = NO_INDEX;
    var last = NO_INDEX;
    for (var i = start; i < end; i++) {
      let x = logitAt(i);
      let w = keptWeight(sortKey(x), x, lowKey);
      if (w > 0.0) {
        run += w;
        last = i;
        if (run > local) {
          found = i;
          break;
        }
      }
    }
    if (found == NO_INDEX) {
      found = last; // rounding: u * W fell past this chunk's own sum
    }
    if (found != NO_INDEX) {
      pickToken = found;
    }
  }
  return workgroupUniformLoad(&pickToken);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x;
  if (row >= params.rows) {
    return;
  }
  let rp = rowParams[params.paramsOffset + row];
  base = params.logitsOffset + row * params.logitsStride;
  let wantNorm = params.wantLogprobs != 0u;

  reduceMax(lid, wantNorm);
  let topKey = workgroupUniformLoad(&redKey[0]);
  keyMax = topKey;
  let argmax = redIdx[0];
  maxVal = redVal[0];
  let norm = redSum[0];

  var token = argmax;
  if (rp.temperature > 0.0) {
    temperature = rp.temperature;
    minP = rp.minP;
    var lowKey = NEG_INF_KEY;
    if (rp.topK > 0u && rp.topK < params.vocab) {
      lowKey = selectTopK(lid, rp.topK);
    }
    if (rp.topP < 1.0) {
      lowKey = topPThreshold(lid, lowKey, topKey, rp.topP);
    }
    let bits = philox(vec4<u32>(rp.counter, 0u, 0u, 0u), vec2<u32>(rp.seedLo, rp.seedHi)).x;
    token = drawToken(lid, lowKey, f32(bits >> 8u) * (1.0 / 16777216.0), argmax);
  }

  if (lid == 0u) {
    tokens[rp.outIndex] = token;
    if (wantNorm) {
      let x = logitAt(token);
      let k = sortKey(x);
      var lp = -log(norm);
      if (k != keyMax) {
        lp = select(x - maxVal + lp, bitcast<f32>(0xff800000u), k <= NEG_INF_KEY || keyMax >= POS_INF_KEY);
      }
      logprobs[rp.outIndex] = lp;
    }
  }
}
