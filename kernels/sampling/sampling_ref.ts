// Plain reference for the GPU sampler (sampling.wgsl): one row of logits and its settings in, the
// sampled token and its raw logprob out. This file is the specification both implementations follow.
//
// Semantics, for one row of logits l[0..V) (f32) and settings (t, topK, topP, minP, seed, counter):
//  0. NaN logits count as -Infinity, and -0 as +0. m = max l; argmax = the lowest index holding m.
//  1. Logprob (raw logits, before temperature and filters, as OpenAI reports it):
//     e_i = 1 if l_i == m; 0 if l_i == -Inf or m == +Inf; else exp(l_i - m).
//     logprob(c) = (l_c == m ? 0 : l_c - m) - log(sum_i e_i)   (-Infinity when e_c is 0 by rule).
//     The rules make rows of all -Infinity (uniform) and rows holding +Infinity well defined.
//  2. t == 0: greedy, the token is argmax (torch.argmax's tie rule).
//  3. t > 0: weights w_i = the same rules as e_i with exp((l_i - m) / t); w_argmax = 1.
//  4. Top-k (0 < topK < V): Tk = the topK-th largest logit counting repeats; keep l_i >= Tk. Every token
//     tied with the k-th value is kept, so more than topK tokens survive when the boundary is tied.
//  5. Min-p (minP > 0): also require w_i >= minP (that is p_i >= minP * p_max).
//  6. Top-p (topP < 1), over the survivors S of 4-5 with mass M = sum_S w: L = the largest logit value
//     such that sum over i in S with l_i >= L of w_i >= topP * M; keep l_i >= L. This is the smallest
//     set of most probable tokens reaching the mass, widened to every token tied with the last one.
//  7. Draw: u = (philox4x32-10(counter = (counter, 0, 0, 0), key = (seedLo, seedHi)).x >>> 8) / 2^24,
//     so u in [0, 1) has 24 bits and is exact in f32. With W = the kept mass, the token is the first
//     kept index i (index order) whose running kept mass sum_{j <= i} w_j exceeds u * W.
// The GPU evaluates the same rules in f32 with different summation orders, so the two agree except
// when u * W or a top-p / min-p boundary falls within float rounding of a cumulative mass.
import { type SamplingRow, seedWords } from "./sampling.ts";

/** A row's sampling settings without its output slot. */
export type SampleRefParams = Omit<SamplingRow, "outIndex">;

export interface SampleRefDetail {
  token: number;
  logprob: number;
  argmax: number;
  /** The draw in [0, 1); NaN for greedy rows. */
  u: number;
  /** w_i of step 3 (all 0 but the argmax for greedy rows). */
  weights: Float64Array;
  /** 1 where the token survived top-k, min-p and top-p. */
  kept: Uint8Array;
  /** Sum of the kept weights. */
  keptMass: number;
}

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;

/** [hi, lo] of the 64-bit product of two u32 values. */
function mulHiLo(a: number, b: number): [number, number] {
  const a0 = a & 0xffff, a1 = a >>> 16, b0 = b & 0xffff, b1 = b >>> 16;
  const p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  const hi = (p11 + (p01 >>> 16) + (p10 >>> 16) + Math.floor(mid / 65536)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}

/**
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), a
 * counter-based generator: four u32 outputs as a pure function of a 4-word counter and a 2-word key.
 */
export function philox4x32(counter: readonly number[], key: readonly number[]): Uint32Array {
  let [c0, c1, c2, c3] = counter.map((v) => v >>> 0);
  let [k0, k1] = key.map((v) => v >>> 0);
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const [hi0, lo0] = mulHiLo(PHILOX_M0, c0);
    const [hi1, lo1] = mulHiLo(PHILOX_M1, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
  }
  return Uint32Array.of(c0, c1, c2, c3);
}

/** The draw u in [0, 1) for (seed, counter): 24 random bits, exact in f32. */
export function uniformDraw(seed: number | bigint, counter: number): number {
  const [lo, hi] = seedWords(seed);
  return (philox4x32([counter, 0, 0, 0], [lo, hi])[0] >>> 8) / 16777216;
}

/** Rule 1: log-softmax of the raw logits at index i. */
export function logprobRef(logits: Float32Array, i: number): number {
  const l = Array.from(logits, (v) => (Number.isNaN(v) ? -Infinity : v));
  let m = -Infinity;
  for (const v of l) if (v > m) m = v;
  const e = (v: number) => (v === m ? 1 : v === -Infinity || m === Infinity ? 0 : Math.exp(v - m));
  let z = 0;
  for (const v of l) z += e(v);
  if (l[i] === m) return -Math.log(z);
  return e(l[i]) === 0 ? -Infinity : l[i] - m - Math.log(z);
}

/** Sort comparator for numbers that may be infinite (b - a is NaN for two -Infinity). */
function descending(a: number, b: number): number {
  return a < b ? 1 : a > b ? -1 : 0;
}

/** The sampled token and its raw logprob, with the intermediate sets for tests. */
export function sampleRefDetail(logits: Float32Array, p: SampleRefParams): SampleRefDetail {
  const n = logits.length;
  const l = Array.from(logits, (v) => (Number.isNaN(v) ? -Infinity : v));
  let argmax = 0;
  for (let i = 1; i < n; i++) if (l[i] > l[argmax]) argmax = i;
  const m = l[argmax];
  const rel = (
    v: number,
    t: number,
  ) => (v === m ? 1 : v === -Infinity || m === Infinity ? 0 : Math.exp((v - m) / t));
  const logprobOf = (i: number) => logprobRef(logits, i);

  const weights = new Float64Array(n);
  const kept = new Uint8Array(n);
  if (p.temperature === 0) {
    weights[argmax] = 1;
    kept[argmax] = 1;
    return { token: argmax, logprob: logprobOf(argmax), argmax, u: NaN, weights, kept, keptMass: 1 };
  }

  for (let i = 0; i < n; i++) weights[i] = rel(l[i], p.temperature);
  let lowest = -Infinity;
  if (p.topK > 0 && p.topK < n) lowest = [...l].sort(descending)[p.topK - 1];
  for (let i = 0; i < n; i++) kept[i] = l[i] >= lowest && weights[i] >= p.minP ? 1 : 0;

  if (p.topP < 1) {
    let mass = 0;
    for (let i = 0; i < n; i++) if (kept[i]) mass += weights[i];
    const order = [...l.keys()].filter((i) => kept[i]).sort((a, b) => descending(l[a], l[b]));
    let acc = 0;
    let threshold = -Infinity;
    for (const i of order) {
      acc += weights[i];
      if (acc >= p.topP * mass) {
        threshold = l[i];
        break;
      }
    }
    for (let i = 0; i < n; i++) if (l[i] < threshold) kept[i] = 0;
  }

  let keptMass = 0;
  for (let i = 0; i < n; i++) if (kept[i]) keptMass += weights[i];
  const u = uniformDraw(p.seed, p.counter);
  let token = argmax;
  let acc = 0;
  for (let i = 0; i < n; i++) {
    if (!kept[i]) continue;
    acc += weights[i];
    if (acc > u * keptMass) {
      token = i;
      break;
    }
  }
  return { token, logprob: logprobOf(token), argmax, u, weights, kept, keptMass };
}

/** The sampled token id and its raw logprob (log-softmax of the logits before temperature). */
export function sampleRef(logits: Float32Array, p: SampleRefParams): { token: number; logprob: number } {
  const { token, logprob } = sampleRefDetail(logits, p);
  return { token, logprob };
}
