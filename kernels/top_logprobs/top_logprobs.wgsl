// Top logprobs: for each row r of logits, the k most likely tokens, best first, with their raw logprobs
//           out[outOffset + (r * k + i) * 2] = id, [... + 1] = bitcast<u32>(log_softmax(l_r)[id]).
// Bindings: logits f32 (rows, logitsStride) from logitsOffset; out u32 (outOffset + rows * k * 2); params.
// Dispatch: one workgroup of WG threads per row, rows spread over (x, y); WG a power of two.
// Reference: top_logprobs_ref.ts `topLogprobsRef` (its header is the exact specification).
//
// Order: larger logit first, lower id first among equal logits (-0 equals +0). The order is total, so
// round j needs no record of the tokens already chosen: it takes the best entry strictly after the one
// round j - 1 chose. The algorithm, all inside one workgroup:
//  1. One pass over the row: max, argmax (lowest id on ties) and the softmax normaliser
//     sum_i exp(l_i - max) (online softmax, Milakov & Gimelshein 2018). The argmax is round 0's answer.
//  2. Rounds 1..k-1: each re-reads the row and reduces (key, id) over the entries after the previous
//     answer. k <= 20, so this is at most 20 reads of the row, with no sorting and no per-row scratch.
// Logprobs use sampling.wgsl's exact formula, so a sampled token's logprob equals its entry here:
//   max entries: -log(norm); -Infinity logits (or any entry below a +Infinity max): -Infinity;
//   otherwise (l - max) + -log(norm), in f32.
// Rounds past the vocabulary (k > vocab) write id 0xFFFFFFFF and logprob -Infinity.

override WG: u32 = 256u;

// Order-preserving keys: key(a) < key(b) iff a < b. NaN maps to the key of -Infinity.
const NEG_INF_KEY: u32 = 0x007fffffu;
const POS_INF_KEY: u32 = 0xff800000u;
const NO_INDEX: u32 = 0xffffffffu;
const NEG_INF_BITS: u32 = 0xff800000u;

struct Params {
  rows: u32,
  vocab: u32,
  logitsStride: u32,
  logitsOffset: u32,
  k: u32,
  outOffset: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> redKey: array<u32, WG>;
var<workgroup> redIdx: array<u32, WG>;
var<workgroup> redVal: array<f32, WG>;
var<workgroup> redSum: array<f32, WG>;

var<private> base: u32;

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

// exp(x - top) for a value x below the maximum top (keys k < kTop), 0 for -Infinity or when top is
// +Infinity. The clamp keeps an overflowing difference finite; exp(-150) is 0 in f32.
fn relWeight(k: u32, x: f32, kTop: u32, top: f32) -> f32 {
  if (k <= NEG_INF_KEY || kTop >= POS_INF_KEY) {
    return 0.0;
  }
  return exp(max(x - top, -150.0));
}

// (ka, ia) comes before (kb, ib) in the output order.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
  return ka > kb || (ka == kb && ia < ib);
}

// Pass 1: leaves the max key, argmax, max value and normaliser in redKey/redIdx/redVal/redSum[0].
fn reduceMax(lid: u32) {
  var bk = 0u; // below every real key
  var bi = NO_INDEX;
  var bv = 0.0;
  var s = 0.0; // sum of exp(l - bv) over this thread's elements
  for (var i = lid; i < params.vocab; i += WG) {
    let x = logitAt(i);
    let k = sortKey(x);
    if (k > bk) {
      s = s * relWeight(bk, bv, k, x) + 1.0;
      bk = k;
      bi = i;
      bv = x;
    } else {
      s += select(relWeight(k, x, bk, bv), 1.0, k == bk);
    }
  }
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
      if (before(kb, ib, ka, ia)) {
        redKey[lid] = kb;
        redIdx[lid] = ib;
        redVal[lid] = vb;
        redSum[lid] = sb + sa * select(relWeight(ka, va, kb, vb), 1.0, ka == kb);
      } else {
        redSum[lid] = sa + sb * select(relWeight(kb, vb, ka, va), 1.0, ka == kb);
      }
    }
    workgroupBarrier();
  }
}

// The first entry (key, id) strictly after (prevKey, prevIdx) in the output order, in redKey/redIdx[0]
// (key 0 and NO_INDEX when there is none).
fn reduceNext(lid: u32, prevKey: u32, prevIdx: u32) {
  var bk = 0u;
  var bi = NO_INDEX;
  for (var i = lid; i < params.vocab; i += WG) {
    let k = sortKey(logitAt(i));
    if (before(prevKey, prevIdx, k, i) && before(k, i, bk, bi)) {
      bk = k;
      bi = i;
    }
  }
  workgroupBarrier(); // earlier readers of redKey/redIdx are done
  redKey[lid] = bk;
  redIdx[lid] = bi;
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off >>= 1u) {
    if (lid < off) {
      let kb = redKey[lid + off];
      let ib = redIdx[lid + off];
      if (before(kb, ib, redKey[lid], redIdx[lid])) {
        redKey[lid] = kb;
        redIdx[lid] = ib;
      }
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= params.rows) {
    return;
  }
  base = params.logitsOffset + row * params.logitsStride;

  reduceMax(lid);
  let keyMax = workgroupUniformLoad(&redKey[0]);
  var idx = workgroupUniformLoad(&redIdx[0]);
  let maxVal = redVal[0];
  let lpMax = -log(redSum[0]);
  var key = keyMax;

  let first = params.outOffset + row * params.k * 2u;
  for (var j = 0u; j < params.k; j++) {
    if (j > 0u) {
      reduceNext(lid, key, idx);
      key = workgroupUniformLoad(&redKey[0]);
      idx = workgroupUniformLoad(&redIdx[0]);
    }
    if (lid == 0u) {
      var lp = bitcast<f32>(NEG_INF_BITS); // also when nothing is left (k > vocab)
      if (idx != NO_INDEX && key == keyMax) {
        lp = lpMax;
      } else if (idx != NO_INDEX && key > NEG_INF_KEY && keyMax < POS_INF_KEY) {
        lp = logitAt(idx) - maxVal + lpMax;
      }
      out[first + 2u * j] = idx;
      out[first + 2u * j + 1u] = bitcast<u32>(lp);
    }
  }
}
