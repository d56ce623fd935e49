import {
  TOP_LOGPROBS_MAX,
  TOP_LOGPROBS_NO_TOKEN,
  TOP_LOGPROBS_SOURCE,
  topLogprobs,
  type TopLogprobsOptions,
  unpackTopLogprobs,
} from "./top_logprobs.ts";
import { topLogprobsRef, type TopLogprobsRefRow, topLogprobsRefRows } from "./top_logprobs_ref.ts";
import { logprobRef } from "../sampling/sampling_ref.ts";
import { packSamplingParams, sample } from "../sampling/sampling.ts";
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
import { KernelError, type Kernels } from "../core.ts";
import assert from "node:assert/strict";

const NO_GPU = await noGpu();

const JUNK = 0xdeadbeef;

/** Row r of a (rows, stride) matrix from offset. */
function rowOf(logits: Float32Array, r: number, vocab: number, stride = vocab, offset = 0): Float32Array {
  return logits.subarray(offset + r * stride, offset + r * stride + vocab);
}

/** Every token sorted by (logit descending, id ascending): the order topLogprobs promises. */
function fullOrder(row: Float32Array): number[] {
  return [...row.keys()].sort((a, b) => (row[a] > row[b] ? -1 : row[a] < row[b] ? 1 : a - b));
}

/** Compares GPU rows with the reference: ids exactly, logprobs within 1e-5 (both -Infinity allowed). */
function assertRowsMatch(got: TopLogprobsRefRow[], want: TopLogprobsRefRow[], label: string): void {
  assert.equal(got.length, want.length, `${label}: row count`);
  got.forEach((g, r) => {
    assert.deepEqual(g.ids, want[r].ids, `${label} row ${r}: ids`);
    want[r].logprobs.forEach((w, i) => {
      if (w === -Infinity) {
        assert.equal(g.logprobs[i], -Infinity, `${label} row ${r} entry ${i}: expected -Infinity`);
      } else {
        assertClose([g.logprobs[i]], [w], { atol: 1e-5, rtol: 0, label: `${label} row ${r} entry ${i}` });
      }
    });
  });
}

interface GpuRun {
  logits: Float32Array;
  rows: number;
  vocab: number;
  k: number;
  stride?: number;
  offset?: number;
  outOffset?: number;
}

/** Runs topLogprobs into a junk-filled buffer; checks the words around the output stay junk. */
async function gpuTop(k: Kernels, o: GpuRun, logitsBuf?: GPUBuffer): Promise<TopLogprobsRefRow[]> {
  const outOffset = o.outOffset ?? 0;
  const words = outOffset + o.rows * o.k * 2 + 5;
  const out = upload(k, new Uint32Array(words).fill(JUNK));
  await run(k, (pass) =>
    topLogprobs(k, pass, {
      logits: logitsBuf ?? upload(k, o.logits),
      logitsStride: o.stride,
      logitsOffset: o.offset,
      rows: o.rows,
      vocab: o.vocab,
      k: o.k,
      out,
      outOffset: o.outOffset,
    }));
  const data = await readU32(k, out, words);
  for (let i = 0; i < words; i++) {
    if (i >= outOffset && i < outOffset + o.rows * o.k * 2) continue;
    assert.equal(data[i], JUNK, `word ${i} outside the output was overwritten`);
  }
  return unpackTopLogprobs(data, o.rows, o.k, outOffset);
}

// ---- reference checks (no GPU) ----

Deno.test("topLogprobsRef() equals a full sort and sampling's logprobRef", () => {
  const rnd = seededRandom(5);
  for (const vocab of [1, 2, 7, 50, 300]) {
    for (let trial = 0; trial < 4; trial++) {
      // Values on a coarse grid so ties are common; some -Infinity; one trial with +-0 ties.
      const row = new Float32Array(vocab).map(() => Math.round(rnd() * 8 - 4) / 2);
      for (let j = 0; j < vocab / 5; j++) row[Math.floor(rnd() * vocab)] = -Infinity;
      if (trial === 3) row.fill(-0, 0, Math.ceil(vocab / 2));
      for (const k of [1, 5, 20]) {
        const got = topLogprobsRef(row, k);
        const order = fullOrder(row);
        for (let i = 0; i < k; i++) {
          if (i >= vocab) {
            assert.equal(got.ids[i], TOP_LOGPROBS_NO_TOKEN);
            assert.equal(got.logprobs[i], -Infinity);
            continue;
          }
          assert.equal(got.ids[i], order[i], `vocab ${vocab} k ${k} entry ${i}`);
          const want = logprobRef(row, order[i]);
          if (want === -Infinity) assert.equal(got.logprobs[i], -Infinity);
          else assertClose([got.logprobs[i]], [want], { atol: 1e-6, rtol: 0, label: `lp ${i}` });
        }
      }
    }
  }
});

Deno.test("topLogprobsRef() handles all -Infinity and +Infinity rows and rejects bad k", () => {
  const allNeg = new Float32Array(4).fill(-Infinity);
  const a = topLogprobsRef(allNeg, 5);
  assert.deepEqual(a.ids, [0, 1, 2, 3, TOP_LOGPROBS_NO_TOKEN]);
  assertClose(a.logprobs.slice(0, 4), new Array(4).fill(-Math.log(4)), { atol: 1e-6 });
  const inf = Float32Array.of(1, Infinity, 3, Infinity);
  const b = topLogprobsRef(inf, 4);
  assert.deepEqual(b.ids, [1, 3, 2, 0]);
  assertClose(b.logprobs.slice(0, 2), [-Math.log(2), -Math.log(2)], { atol: 1e-6 });
  assert.deepEqual(b.logprobs.slice(2), [-Infinity, -Infinity]);
  assert.throws(() => topLogprobsRef(inf, 0), RangeError);
  assert.throws(() => topLogprobsRef(inf, TOP_LOGPROBS_MAX + 1), RangeError);
});

// ---- GPU ----

Deno.test("topLogprobs() compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "top_logprobs", TOP_LOGPROBS_SOURCE);
});

/**
 * Four rows of `vocab` logits in a (4, stride) matrix from offset: row 0 random; row 1 on a coarse grid
 * (many ties, the max among them) with -Infinity entries; row 2 -Infinity but for three tokens (so
 * k = 20 reaches -Infinity entries, ranked by id); row 3 a +0 / -0 tie at the max.
 */
function testLogits(vocab: number, stride: number, offset: number, seed: number): Float32Array {
  const logits = randomF32(offset + 4 * stride, seed, -10, 10);
  const rnd = seededRandom(seed + 1);
  const at = () => Math.floor(rnd() * vocab);
  const r1 = rowOf(logits, 1, vocab, stride, offset);
  for (let i = 0; i < vocab; i++) r1[i] = Math.round(r1[i]);
  for (let j = 0; j < Math.max(1, vocab / 10); j++) r1[at()] = -Infinity;
  const r2 = rowOf(logits, 2, vocab, stride, offset);
  const keep = [at(), at(), at()].map((i) => [i, r2[i]] as const);
  r2.fill(-Infinity);
  for (const [i, v] of keep) r2[i] = v;
  const r3 = rowOf(logits, 3, vocab, stride, offset);
  for (let i = 0; i < vocab; i++) if (r3[i] >= 0) r3[i] = -r3[i] - 0.5;
  r3[vocab - 1] = 0;
  r3[Math.floor(vocab / 3)] = -0;
  return logits;
}

for (const [n, vocab] of [1, 7, 137, 4032, 128256].entries()) {
  Deno.test(`topLogprobs() matches the reference at vocab=${vocab}, k in {1, 5, 20}, rows 1..4`, {
    ignore: NO_GPU,
  }, async () => {
    const k = await testKernels();
    const stride = vocab + 3 + n; // stride > vocab
    const offset = 2 * n + 1;
    const logits = testLogits(vocab, stride, offset, 100 + vocab);
    const buf = upload(k, logits);
    for (const [j, kk] of [1, 5, 20].entries()) {
      for (const rows of [4, 1 + ((n + j) % 3)]) {
        const o = { logits, rows, vocab, k: kk, stride, offset, outOffset: 3 * j };
        const got = await gpuTop(k, o, buf);
        const want = topLogprobsRefRows(logits, rows, vocab, kk, stride, offset);
        assertRowsMatch(got, want, `vocab ${vocab} k ${kk} rows ${rows}`);
      }
    }
  });
}

Deno.test("topLogprobs() on dense rows with default stride and offsets, and +Infinity logits", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  const vocab = 1000;
  const logits = randomF32(3 * vocab, 9, -30, 30);
  logits[vocab + 17] = Infinity;
  logits[vocab + 400] = Infinity;
  logits[2 * vocab + 5] = -Infinity;
  const got = await gpuTop(k, { logits, rows: 3, vocab, k: 20 });
  assertRowsMatch(got, topLogprobsRefRows(logits, 3, vocab, 20), "dense");
  assert.deepEqual(got[1].ids.slice(0, 2), [17, 400]);
});

Deno.test(
  "topLogprobs() agrees bit for bit with sample()'s logprob of the sampled token",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const vocab = 4032, rows = 4;
    const logits = randomF32(rows * vocab, 77, -4, 4);
    const buf = upload(k, logits);
    const samplingRows = Array.from({ length: rows }, (_, r) => ({
      temperature: r === 0 ? 0 : 1.5, // greedy row 0, wide sampling elsewhere
      topK: 10,
      topP: 1,
      minP: 0,
      seed: 3 + r,
      counter: r,
      outIndex: r,
    }));
    const tokens = scratch(k, rows * 4);
    const logprobs = scratch(k, rows * 4);
    await run(k, (pass) =>
      sample(k, pass, {
        logits: buf,
        params: upload(k, new Uint8Array(packSamplingParams(samplingRows))),
        rows,
        vocab,
        tokens,
        logprobs,
      }));
    const t = await readU32(k, tokens, rows);
    const lp = await readF32(k, logprobs, rows);
    const top = await gpuTop(k, { logits, rows, vocab, k: 20 }, buf);
    assert.equal(top[0].ids[0], t[0], "greedy token is the top entry");
    for (let r = 0; r < rows; r++) {
      const at = top[r].ids.indexOf(t[r]);
      assert.ok(at >= 0, `row ${r}: sampled token ${t[r]} (top-k 10) missing from the top 20`);
      assert.equal(top[r].logprobs[at], lp[r], `row ${r}: logprob differs from sample()'s`);
    }
  },
);

Deno.test(
  "topLogprobs() rejects bad options with a KernelError naming the field",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const logits = upload(k, new Float32Array(100));
    const out = scratch(k, 40 * 4);
    const base: TopLogprobsOptions = { logits, rows: 1, vocab: 100, k: 20, out };
    const enc = k.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    const bad: [Partial<TopLogprobsOptions>, RegExp][] = [
      [{ k: 0 }, /k in 1\.\.20/],
      [{ k: 21 }, /k in 1\.\.20/],
      [{ k: 2.5 }, /k in 1\.\.20/],
      [{ vocab: 0 }, /vocab/],
      [{ vocab: 50, logitsStride: 40 }, /logitsStride >= vocab/],
      [{ rows: 2 }, /logits must hold/],
      [{ logitsOffset: 1 }, /logits must hold/],
      [{ outOffset: 1 }, /out must hold/],
      [{ rows: -1 }, /rows/],
    ];
    for (const [patch, msg] of bad) {
      assert.throws(() => topLogprobs(k, pass, { ...base, ...patch }), (e: unknown) => {
        return e instanceof KernelError && msg.test(e.message);
      }, JSON.stringify(patch));
    }
    pass.end();
    enc.finish();
  },
);
