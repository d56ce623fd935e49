// Plain reference for top_logprobs.wgsl; this header is the specification both implementations follow.
//
// For one row of logits l[0..V) (f32; NaN never appears, -0 counts as +0) and 1 <= k <= 20:
//  1. Order: token a comes before token b when l_a > l_b, or l_a == l_b and a < b. The answer is the
//     first min(k, V) tokens in this order; entries k > V get id 0xFFFFFFFF and logprob -Infinity.
//  2. Logprob: the raw log-softmax, exactly as sampling_ref.ts `logprobRef` defines it, so the sampled
//     token's logprob and its entry here agree. With m = max l:
//       e_i = 1 if l_i == m; 0 if l_i == -Inf or m == +Inf; else exp(l_i - m);  Z = sum_i e_i;
//       logprob(i) = -log Z if l_i == m; -Infinity if l_i == -Inf or m == +Inf; else (l_i - m) - log Z.
//  3. Rounding: the GPU works in f32; this reference rounds where the GPU's value is a single f32
//     operation (l_i - m, log Z and their difference) and sums Z in f64, so the two differ only by the
//     GPU's f32 summation and exp/log error (well under 1e-5 for logits of moderate size).
import { TOP_LOGPROBS_MAX, TOP_LOGPROBS_NO_TOKEN } from "./top_logprobs.ts";

export interface TopLogprobsRefRow {
  ids: number[];
  logprobs: number[];
}

/** The top `k` tokens of one row of logits and their raw logprobs, best first (lower id on ties). */
export function topLogprobsRef(logits: Float32Array, k: number): TopLogprobsRefRow {
  if (!Number.isInteger(k) || k < 1 || k > TOP_LOGPROBS_MAX) {
    throw new RangeError(`topLogprobsRef: expected k in 1..${TOP_LOGPROBS_MAX}, got ${k}`);
  }
  const n = logits.length;
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > m) m = logits[i];
  const e = (v: number) => (v === m ? 1 : v === -Infinity || m === Infinity ? 0 : Math.exp(v - m));
  let z = 0;
  for (let i = 0; i < n; i++) z += e(logits[i]);
  const logZ = Math.fround(Math.log(z));

  // Partial selection: keep the best k seen so far, sorted, each new token inserted in order.
  const best: number[] = [];
  const before = (a: number, b: number) => logits[a] > logits[b] || (logits[a] === logits[b] && a < b);
  for (let i = 0; i < n; i++) {
    if (best.length === k && !before(i, best[k - 1])) continue;
    let at = best.length;
    while (at > 0 && before(i, best[at - 1])) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }

  const ids: number[] = [];
  const logprobs: number[] = [];
  for (let j = 0; j < k; j++) {
    if (j >= best.length) {
      ids.push(TOP_LOGPROBS_NO_TOKEN);
      logprobs.push(-Infinity);
      continue;
    }
    const i = best[j];
    const v = logits[i];
    ids.push(i);
    if (v === m) logprobs.push(-logZ);
    else if (v === -Infinity || m === Infinity) logprobs.push(-Infinity);
    else logprobs.push(Math.fround(Math.fround(v - m) - logZ));
  }
  return { ids, logprobs };
}

/** `topLogprobsRef` for each row of a (rows, stride) matrix starting at `offset`. */
export function topLogprobsRefRows(
  logits: Float32Array,
  rows: number,
  vocab: number,
  k: number,
  stride = vocab,
  offset = 0,
): TopLogprobsRefRow[] {
  const out: TopLogprobsRefRow[] = [];
  for (let r = 0; r < rows; r++) {
    out.push(topLogprobsRef(logits.subarray(offset + r * stride, offset + r * stride + vocab), k));
  }
  return out;
}
