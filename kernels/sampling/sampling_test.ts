import { packSamplingParams, sample, SAMPLING_SOURCE, type SamplingRow } from "./sampling.ts";
import {
  logprobRef,
  philox4x32,
  type SampleRefDetail,
  sampleRefDetail,
  uniformDraw,
} from "./sampling_ref.ts";
import {
  assertClose,
  assertCompilesCleanly,
  noGpu,
  randomF32,
  readF32,
  readU32,
  run,
  scratch,
  seededRandom,
  testKernels,
  upload,
} from "../../test/support/mod.ts";
import { Kernels } from "../core.ts";

const NO_GPU = await noGpu();

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0 };

interface RunOptions {
  logits: Float32Array;
  rows: SamplingRow[];
  vocab: number;
  stride?: number;
  offset?: number;
  /** Junk rows placed before the real ones in the params buffer. */
  paramsOffset?: number;
  logprobs?: boolean;
}

/** Samples on the GPU; returns the outputs indexed by row (through each row's outIndex). */
async function gpuSample(k: Kernels, o: RunOptions): Promise<{ tokens: number[]; logprobs: number[] }> {
  const junk = Array.from({ length: o.paramsOffset ?? 0 }, () => ({ ...GREEDY, counter: 0, outIndex: 1e6 }));
  const params = upload(k, new Uint8Array(packSamplingParams([...junk, ...o.rows])));
  const slots = Math.max(...o.rows.map((r) => r.outIndex)) + 1;
  const tokens = scratch(k, slots * 4);
  const logprobs = o.logprobs === false ? undefined : scratch(k, slots * 4);
  await run(k, (pass) =>
    sample(k, pass, {
      logits: upload(k, o.logits),
      logitsStride: o.stride,
      logitsOffset: o.offset,
      params,
      paramsOffset: o.paramsOffset,
      rows: o.rows.length,
      vocab: o.vocab,
      tokens,
      logprobs,
    }));
  const t = await readU32(k, tokens, slots);
  const lp = logprobs ? await readF32(k, logprobs, slots) : new Float32Array(slots);
  return { tokens: o.rows.map((r) => t[r.outIndex]), logprobs: o.rows.map((r) => lp[r.outIndex]) };
}

/** Row r of a dense (rows, vocab) matrix. */
function rowOf(logits: Float32Array, r: number, vocab: number, stride = vocab, offset = 0): Float32Array {
  return logits.subarray(offset + r * stride, offset + r * stride + vocab);
}

/** The lowest index of the largest value, NaN counting as -Infinity (torch.argmax's tie rule). */
function argmaxOf(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) {
    if (!Number.isNaN(row[i]) && (Number.isNaN(row[best]) || row[i] > row[best])) best = i;
  }
  return best;
}

/** Tokens the reference could pick if u moved by up to `slack` (float rounding of the kept mass). */
function acceptable(d: SampleRefDetail, slack: number): Set<number> {
  if (Number.isNaN(d.u)) return new Set([d.token]);
  const lo = (d.u - slack) * d.keptMass;
  const hi = (d.u + slack) * d.keptMass;
  const out = new Set<number>();
  let acc = 0;
  for (let i = 0; i < d.weights.length; i++) {
    if (!d.kept[i] || d.weights[i] === 0) continue;
    const next = acc + d.weights[i];
    if (next > lo && acc <= hi) out.add(i);
    acc = next;
  }
  return out;
}

/** Asserts each GPU token is one the reference accepts (u slack 1e-5) and logprobs match (atol 1e-4). */
function assertMatchesRef(
  got: { tokens: number[]; logprobs: number[] },
  o: RunOptions,
  label: string,
): void {
  o.rows.forEach((r, i) => {
    const row = rowOf(o.logits, i, o.vocab, o.stride, o.offset);
    const d = sampleRefDetail(row, r);
    const ok = acceptable(d, 1e-5);
    if (!ok.has(got.tokens[i])) {
      throw new Error(
        `${label} row ${i}: GPU sampled ${got.tokens[i]}, expected one of [${[...ok]}] (u ${d.u})`,
      );
    }
    if (o.logprobs !== false) {
      const want = logprobRef(row, got.tokens[i]);
      assertClose([got.logprobs[i]], [want], { atol: 1e-4, rtol: 0, label: `${label} row ${i} logprob` });
    }
  });
}

Deno.test("sample() compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "sampling", SAMPLING_SOURCE);
});

Deno.test("philox4x32() matches the Random123 known-answer vectors", () => {
  // Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter, key, expected output.
  const kat: [number[], number[], number[]][] = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[~0, ~0, ~0, ~0], [~0, ~0], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [
      [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
      [0xa4093822, 0x299f31d0],
      [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ],
  ];
  for (const [ctr, key, want] of kat) {
    const got = [...philox4x32(ctr, key)];
    if (got.join() !== want.join()) throw new Error(`philox4x32 mismatch: got ${got}, expected ${want}`);
  }
});

const GREEDY_VOCABS = [1, 7, 137, 1000, 4032, 128256];

for (const vocab of GREEDY_VOCABS) {
  Deno.test(
    `sample() greedy equals argmax (ties, -Infinity, NaN) at vocab=${vocab}`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const nRows = vocab >= 100000 ? 2 : 4;
      const logits = randomF32(nRows * vocab, vocab + 3, -8, 8);
      const rnd = seededRandom(vocab);
      const at = () => Math.floor(rnd() * vocab);
      // Row 0 plain. Row 1: the max appears twice (the later index written first), plus -Inf and NaN.
      if (vocab > 1) {
        const r1 = rowOf(logits, 1, vocab);
        const a = at(), b = at();
        r1[Math.max(a, b)] = 9;
        r1[Math.min(a, b)] = 9;
        r1[at()] = -Infinity;
        r1[at()] = NaN;
      }
      // Row 2 (small vocabs): every logit -Infinity, so every token ties; row 3: a tie at +0 / -0.
      if (nRows > 2) {
        rowOf(logits, 2, vocab).fill(-Infinity);
        const r3 = rowOf(logits, 3, vocab).fill(-1);
        r3[Math.floor(vocab / 2)] = -0;
        r3[vocab - 1] = 0;
      }
      const rows = Array.from(
        { length: nRows },
        (_, r) => ({ ...GREEDY, seed: r, counter: r, outIndex: nRows - r }),
      );
      const o = { logits, rows, vocab };
      const got = await gpuSample(k, o);
      rows.forEach((_, r) => {
        const want = argmaxOf(rowOf(logits, r, vocab));
        if (got.tokens[r] !== want) throw new Error(`row ${r}: got token ${got.tokens[r]}, expected ${want}`);
      });
      assertMatchesRef(got, o, `vocab ${vocab}`);
      if (nRows > 2) {
        assertClose([got.logprobs[2]], [-Math.log(vocab)], { atol: 1e-4, label: "all -Infinity" });
      }
    },
  );
}

Deno.test(
  "sample() honours logits stride and offset, params offset and outIndex",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const vocab = 1000, stride = 1030, offset = 5, nRows = 3;
    const logits = randomF32(offset + nRows * stride, 21, -5, 5);
    const rows = [
      { temperature: 0.9, topK: 40, topP: 0.95, minP: 0, seed: 7, counter: 3, outIndex: 9 },
      { ...GREEDY, counter: 0, outIndex: 2 },
      { temperature: 1.2, topK: 0, topP: 1, minP: 0.01, seed: -5, counter: 11, outIndex: 4 },
    ];
    const o = { logits, rows, vocab, stride, offset, paramsOffset: 2 };
    assertMatchesRef(await gpuSample(k, o), o, "strided");
  },
);

Deno.test(
  "sample() with topK=1 or a tiny topP equals greedy at any temperature",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const vocab = 769;
    const temps = [0.05, 0.5, 1, 3, 100];
    const rows: SamplingRow[] = [];
    for (const [j, t] of temps.entries()) {
      rows.push({
        temperature: t,
        topK: 1,
        topP: 1,
        minP: 0,
        seed: 100 + j,
        counter: j,
        outIndex: rows.length,
      });
      rows.push({
        temperature: t,
        topK: 0,
        topP: 1e-6,
        minP: 0,
        seed: 200 + j,
        counter: j,
        outIndex: rows.length,
      });
    }
    const logits = randomF32(rows.length * vocab, 31, -3, 3);
    const got = await gpuSample(k, { logits, rows, vocab, logprobs: false });
    rows.forEach((r, i) => {
      const want = argmaxOf(rowOf(logits, i, vocab));
      if (got.tokens[i] !== want) {
        throw new Error(
          `t=${r.temperature} topK=${r.topK} topP=${r.topP}: got ${got.tokens[i]}, expected ${want}`,
        );
      }
    });
  },
);

const SETTINGS = [
  { temperature: 1, topK: 0, topP: 1, minP: 0 },
  { temperature: 0.7, topK: 20, topP: 1, minP: 0 },
  { temperature: 1.3, topK: 0, topP: 0.8, minP: 0 },
  { temperature: 1, topK: 0, topP: 1, minP: 0.05 },
  { temperature: 0.8, topK: 50, topP: 0.9, minP: 0.02 },
];

for (const vocab of [7, 137, 1000, 4032]) {
  Deno.test(
    `sample() matches sampleRef token for token at vocab=${vocab}, with a GPU's 1024 threads and a CPU adapter's 256`,
    { ignore: NO_GPU },
    async () => {
      const gpu = await testKernels();
      const rows: SamplingRow[] = [];
      for (const [j, s] of SETTINGS.entries()) {
        for (let c = 0; c < 6; c++) {
          rows.push({ ...s, seed: 1000 * j + vocab, counter: c, outIndex: rows.length });
        }
      }
      const logits = randomF32(rows.length * vocab, vocab, -6, 6);
      const o = { logits, rows, vocab };
      for (const k of [gpu, new Kernels(gpu.device, { ...gpu.features, cpuAdapter: true })]) {
        const plan = k.features.cpuAdapter ? "256 threads" : "1024 threads";
        assertMatchesRef(await gpuSample(k, o), o, `vocab ${vocab}, ${plan}`);
      }
    },
  );
}

Deno.test("sample() matches sampleRef on a 128256 vocabulary", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const vocab = 128256;
  const rows = [
    { temperature: 0.9, topK: 40, topP: 0.95, minP: 0, seed: 1, counter: 17, outIndex: 0 },
    { temperature: 1, topK: 0, topP: 0.9, minP: 0, seed: 2, counter: 5, outIndex: 1 },
  ];
  const logits = randomF32(rows.length * vocab, 77, -12, 12);
  const o = { logits, rows, vocab };
  assertMatchesRef(await gpuSample(k, o), o, "vocab 128256");
});

Deno.test(
  "sample() depends only on seed, counter and logits, not on the batch",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const vocab = 300;
    const probe = randomF32(vocab, 5, -2, 2);
    const setting = { temperature: 1, topK: 0, topP: 0.95, minP: 0, seed: 123456789 };
    // Batch A: the probe alone at row 0. Batch B: the probe at row 5 among other rows and settings.
    const a = await gpuSample(k, { logits: probe, rows: [{ ...setting, counter: 9, outIndex: 0 }], vocab });
    const others = randomF32(8 * vocab, 6, -2, 2);
    others.set(probe, 5 * vocab);
    const bRows = Array.from({ length: 8 }, (_, r) => ({
      temperature: 0.5 + r / 4,
      topK: r * 3,
      topP: 1,
      minP: 0,
      seed: r,
      counter: r,
      outIndex: 7 - r,
    }));
    bRows[5] = { ...setting, counter: 9, outIndex: 2 };
    const b = await gpuSample(k, { logits: others, rows: bRows, vocab });
    if (a.tokens[0] !== b.tokens[5]) {
      throw new Error(`probe row: batch A gave ${a.tokens[0]}, batch B ${b.tokens[5]}`);
    }

    // Counters 0..63 on a flat distribution give many different tokens.
    const flat = new Float32Array(64 * 8).fill(0);
    const rows = Array.from({ length: 64 }, (_, c) => ({ ...setting, topP: 1, counter: c, outIndex: c }));
    const got = await gpuSample(k, { logits: flat, rows, vocab: 8 });
    const distinct = new Set(got.tokens).size;
    if (distinct < 6) {
      throw new Error(
        `64 counters over 8 equal tokens gave only ${distinct} distinct tokens`,
      );
    }
  },
);

/** Pearson's chi-square of observed counts against probabilities over the same bins. */
function chiSquare(counts: number[], probs: number[], n: number): number {
  return counts.reduce((acc, c, i) => acc + (c - n * probs[i]) ** 2 / (n * probs[i]), 0);
}

Deno.test(
  "sample() draws match the truncated distribution (chi-square, 2000 draws)",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const n = 2000;
    const logits6 = Float32Array.of(0.5, 2.0, -1.5, 1.0, 1.5, -0.5); // top-p 0.9 at t=0.7 keeps 1, 4, 3
    const setting = { temperature: 0.7, topK: 0, topP: 0.9, minP: 0, seed: 2024 };
    const logits = new Float32Array(n * 6);
    for (let r = 0; r < n; r++) logits.set(logits6, r * 6);
    const rows = Array.from({ length: n }, (_, c) => ({ ...setting, counter: c, outIndex: c }));
    const got = await gpuSample(k, { logits, rows, vocab: 6, logprobs: false });

    const d = sampleRefDetail(logits6, { ...setting, counter: 0 });
    const keptIdx = [...d.kept.keys()].filter((i) => d.kept[i]);
    if (keptIdx.join() !== "1,3,4") throw new Error(`reference kept [${keptIdx}], expected [1,3,4]`);
    const probs = keptIdx.map((i) => d.weights[i] / d.keptMass);
    const counts = keptIdx.map(() => 0);
    for (const t of got.tokens) {
      const j = keptIdx.indexOf(t);
      if (j < 0) throw new Error(`token ${t} was sampled but top-p excludes it`);
      counts[j]++;
    }
    // 99.9% quantile of chi-square with 2 degrees of freedom.
    const bound = 13.82;
    const chi = chiSquare(counts, probs, n);
    if (chi > bound) throw new Error(`chi-square ${chi.toFixed(2)} > ${bound}: counts ${counts}, p ${probs}`);
    // The test has power: the same counts are far from the distribution without temperature.
    const wrong = sampleRefDetail(logits6, { ...setting, temperature: 1, counter: 0 });
    const wrongProbs = keptIdx.map((i) => wrong.weights[i] / wrong.keptMass);
    const chiWrong = chiSquare(counts, wrongProbs, n);
    if (!(chiWrong > 3 * bound)) throw new Error(`chi-square vs t=1 is only ${chiWrong.toFixed(2)}`);
    // And every draw is exactly the reference's (u is exact; only rounding of masses may differ).
    rows.forEach((r, i) => {
      if (!acceptable(sampleRefDetail(logits6, r), 1e-5).has(got.tokens[i])) {
        throw new Error(
          `counter ${r.counter}: GPU ${got.tokens[i]} differs from the reference (u ${
            uniformDraw(r.seed, r.counter)
          })`,
        );
      }
    });
  },
);

Deno.test("sample() min-p excludes tokens below minP * pmax", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const vocab = 1000, n = 300, minP = 0.1;
  const row = randomF32(vocab, 41, -4, 4);
  const logits = new Float32Array(n * vocab);
  for (let r = 0; r < n; r++) logits.set(row, r * vocab);
  const rows = Array.from(
    { length: n },
    (_, c) => ({ temperature: 1, topK: 0, topP: 1, minP, seed: 9, counter: c, outIndex: c }),
  );
  const got = await gpuSample(k, { logits, rows, vocab, logprobs: false });
  const d = sampleRefDetail(row, { ...rows[0] });
  // A sampler ignoring min-p would pick an excluded token in n draws with probability 1 - (1 - share)^n.
  let total = 0, excluded = 0;
  for (let i = 0; i < vocab; i++) {
    total += d.weights[i];
    if (d.weights[i] < minP) excluded += d.weights[i];
  }
  const miss = (1 - excluded / total) ** n;
  if (!(miss < 1e-6)) {
    throw new Error(`test data too weak: a no-min-p sampler passes with probability ${miss}`);
  }
  for (const t of got.tokens) {
    if (d.weights[t] < minP * (1 - 1e-5)) {
      throw new Error(`token ${t} has p/pmax ${d.weights[t]} < min-p ${minP}`);
    }
  }
  if (new Set(got.tokens).size < 5) {
    throw new Error(`min-p left too few distinct tokens: ${new Set(got.tokens).size}`);
  }
});

Deno.test("sample() top-k keeps every token tied with the k-th value", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const n = 300;
  const row = Float32Array.of(1, 3, 2, 2, 0.5, 2, -Infinity);
  const logits = new Float32Array(n * row.length);
  for (let r = 0; r < n; r++) logits.set(row, r * row.length);
  const rows = Array.from(
    { length: n },
    (_, c) => ({ temperature: 1, topK: 2, topP: 1, minP: 0, seed: 3, counter: c, outIndex: c }),
  );
  const got = await gpuSample(k, { logits, rows, vocab: row.length, logprobs: false });
  const seen = new Set(got.tokens);
  for (const t of seen) {
    if (![1, 2, 3, 5].includes(t)) throw new Error(`top-k=2 sampled token ${t} (logit ${row[t]})`);
  }
  for (const t of [1, 2, 3, 5]) {
    if (!seen.has(t)) throw new Error(`tied token ${t} never sampled in ${n} draws`);
  }
});
