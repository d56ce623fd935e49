import assert from "node:assert/strict";
import {
  type LogitBiasEntry,
  packLogitBias,
  packPenaltyRows,
  PENALTIES_SOURCE,
  penaltiesApply,
  penaltiesCount,
  penaltiesMarkPrompt,
  PENALTY_NO_INPUT,
  PENALTY_PROMPT_BIT,
  PENALTY_ROW_BYTES,
  type PenaltyRow,
} from "./penalties.ts";
import { penaltiesApplyRef, penaltiesCountRef, penaltiesMarkPromptRef } from "./penalties_ref.ts";
import {
  assertCompilesCleanly,
  noGpu,
  randomF32,
  readF32,
  readU32,
  run,
  seededRandom,
  testKernels,
  upload,
} from "../../test/support/mod.ts";
import type { Kernels } from "../core.ts";

const NO_GPU = await noGpu();

/** Penalised entries may differ by this many ulp (fma contraction, GPU division); others must match exactly. */
const MAX_ULP = 2;

const NEUTRAL = {
  presence: 0,
  frequency: 0,
  repetition: 1,
  biasCount: 0,
  biasOffset: 0,
  inputIndex: PENALTY_NO_INPUT,
};

/** Distance in f32 steps between a and b (0 for equal bits or two NaNs, Infinity for one NaN). */
function ulpDiff(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) && Number.isNaN(b) ? 0 : Infinity;
  const ia = new Int32Array(new Float32Array([a, b]).buffer);
  const ord = (i: number) => (i < 0 ? -2147483648 - i : i);
  return Math.abs(ord(ia[0]) - ord(ia[1]));
}

/** Asserts GPU == reference: bit-exact where `exact[i]`, within MAX_ULP elsewhere. Returns the worst ulp. */
function assertMatches(
  got: Float32Array,
  want: Float32Array,
  exact: (i: number) => boolean,
  label: string,
): number {
  assert.equal(got.length, want.length);
  const gb = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const wb = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    if (exact(i)) {
      if (gb[i] !== wb[i]) assert.fail(`${label}: index ${i} got ${got[i]}, expected exactly ${want[i]}`);
    } else {
      const d = ulpDiff(got[i], want[i]);
      if (d > MAX_ULP) assert.fail(`${label}: index ${i} got ${got[i]}, expected ${want[i]} (${d} ulp)`);
      worst = Math.max(worst, d);
    }
  }
  return worst;
}

interface Case {
  vocab: number;
  nRows: number;
  stride?: number;
  offset?: number;
}

const cases: Case[] = [
  { vocab: 1, nRows: 1 },
  { vocab: 1, nRows: 4 },
  { vocab: 7, nRows: 5 },
  { vocab: 7, nRows: 2, stride: 9, offset: 3 },
  { vocab: 137, nRows: 3 },
  { vocab: 137, nRows: 5, stride: 140, offset: 5 },
  { vocab: 4032, nRows: 4 },
  { vocab: 4032, nRows: 2, stride: 4100, offset: 17 },
  { vocab: 128256, nRows: 1 },
  { vocab: 128256, nRows: 3, stride: 128260, offset: 1 },
];

/** Random counts for numSlots slots: mostly 0, some generated counts, some prompt bits, some both. */
function randomCounts(numSlots: number, vocab: number, seed: number): Uint32Array {
  const rnd = seededRandom(seed);
  const counts = new Uint32Array(numSlots * vocab);
  for (let i = 0; i < counts.length; i++) {
    const u = rnd();
    if (u < 0.1) counts[i] = 1 + Math.floor(rnd() * 5);
    else if (u < 0.15) counts[i] = PENALTY_PROMPT_BIT;
    else if (u < 0.2) counts[i] = (PENALTY_PROMPT_BIT | (1 + Math.floor(rnd() * 100))) >>> 0;
    else if (u < 0.21) counts[i] = 100000;
  }
  // Small vocabularies still see every kind of entry.
  if (vocab >= 4) {
    for (let s = 0; s < numSlots; s++) {
      counts[s * vocab] = 3;
      counts[s * vocab + 1] = PENALTY_PROMPT_BIT;
      counts[s * vocab + 2] = (PENALTY_PROMPT_BIT | 2) >>> 0;
    }
  } else {
    counts[0] = (PENALTY_PROMPT_BIT | 1) >>> 0;
  }
  return counts;
}

/** Logits with -Infinity, zeros, negatives and positives. */
function randomLogits(n: number, seed: number): Float32Array {
  const x = randomF32(n, seed, -20, 20);
  const rnd = seededRandom(seed + 1);
  for (let i = 0; i < n; i++) {
    const u = rnd();
    if (u < 0.05) x[i] = -Infinity;
    else if (u < 0.07) x[i] = 0;
  }
  return x;
}

async function gpuApply(
  k: Kernels,
  o: { logits: Float32Array; c: Case; rows: PenaltyRow[]; counts: Uint32Array; bias: LogitBiasEntry[] },
): Promise<Float32Array> {
  const logits = upload(k, o.logits);
  const bias = o.bias.length ? new Uint8Array(packLogitBias(o.bias)) : new Uint32Array(4);
  await run(k, (pass) =>
    penaltiesApply(k, pass, {
      logits,
      logitsStride: o.c.stride,
      logitsOffset: o.c.offset,
      rows: upload(k, new Uint8Array(packPenaltyRows(o.rows))),
      nRows: o.rows.length,
      counts: upload(k, o.counts),
      bias: upload(k, bias),
      vocab: o.c.vocab,
    }));
  return await readF32(k, logits, o.logits.length);
}

Deno.test("penalties compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "penalties", PENALTIES_SOURCE);
});

for (const c of cases) {
  const name = `vocab=${c.vocab} rows=${c.nRows}` +
    (c.stride ? ` stride=${c.stride} offset=${c.offset}` : "");
  Deno.test(`penaltiesApply() matches penaltiesApplyRef at ${name}`, { ignore: NO_GPU }, async () => {
    const k = await testKernels();
    const stride = c.stride ?? c.vocab;
    const offset = c.offset ?? 0;
    const numSlots = c.nRows + 2;
    const counts = randomCounts(numSlots, c.vocab, c.vocab * 31 + c.nRows);
    const logits = randomLogits(offset + c.nRows * stride + 3, c.vocab + c.nRows);
    const rnd = seededRandom(c.vocab + 7 * c.nRows);
    const bias: LogitBiasEntry[] = [];
    const rows: PenaltyRow[] = [];
    for (let r = 0; r < c.nRows; r++) {
      // Row 0 is neutral; row 1 has only bias; the rest mix everything. Slots run backwards.
      const slot = numSlots - 1 - r;
      const biasOffset = bias.length;
      const nBias = r === 0 ? 0 : Math.floor(rnd() * 6);
      for (let i = 0; i < nBias; i++) {
        bias.push({ id: Math.floor(rnd() * c.vocab), value: (rnd() - 0.5) * 10 });
      }
      if (r > 0) {
        bias.push({ id: c.vocab - 1, value: 1.25 }, { id: c.vocab - 1, value: -0.375 }); // same id twice
        bias.push({ id: c.vocab + 5, value: 100 }); // out of range: skipped
      }
      const row: PenaltyRow = { ...NEUTRAL, slot, biasOffset, biasCount: bias.length - biasOffset };
      if (r >= 2) {
        row.presence = (rnd() - 0.5) * 4;
        row.frequency = (rnd() - 0.5) * 4;
        row.repetition = [1, 1.3, 0.7, 1.1][r % 4];
      }
      rows.push(row);
    }
    if (c.nRows === 1) rows[0] = { ...rows[0], presence: 0.5, frequency: 0.25, repetition: 1.2 };

    const got = await gpuApply(k, { logits, c, rows, counts, bias });
    const want = penaltiesApplyRef({
      logits,
      logitsStride: c.stride,
      logitsOffset: offset,
      rows,
      counts,
      bias,
      vocab: c.vocab,
    });

    // Exact wherever the dense rules left the value alone (padding, neutral rows, untouched tokens, bias only).
    const dense = penaltiesApplyRef({
      logits,
      logitsStride: c.stride,
      logitsOffset: offset,
      rows: rows.map((r) => ({ ...r, biasCount: 0 })),
      counts,
      bias: [],
      vocab: c.vocab,
    });
    const touched = (i: number) => new Uint32Array(dense.buffer)[i] !== new Uint32Array(logits.buffer)[i];
    const worst = assertMatches(got, want, (i) => !touched(i), name);

    // Sanity on the reference itself: the neutral row is bit-identical, the pad is untouched, -Inf stays.
    if (c.nRows > 1) {
      const row0 = (a: Float32Array) => new Uint32Array(a.buffer, offset * 4, c.vocab);
      assert.deepEqual(row0(got), row0(logits));
    }
    for (let i = 0; i < logits.length; i++) {
      const inRow = i >= offset && (i - offset) % stride < c.vocab && i < offset + c.nRows * stride;
      if (!inRow) assert.ok(Object.is(got[i], logits[i]), `padding ${i} changed`);
      if (logits[i] === -Infinity && !(inRow && bias.length)) assert.equal(got[i], -Infinity);
    }
    assert.ok(!got.some((x, i) => Number.isNaN(x) && !Number.isNaN(logits[i])), "NaN appeared");
    if (worst > 0) console.log(`${name}: worst penalised entry ${worst} ulp`);
  });
}

for (const c of cases) {
  const name = `vocab=${c.vocab} rows=${c.nRows}` +
    (c.stride ? ` stride=${c.stride} offset=${c.offset}` : "");
  Deno.test(
    `penaltiesApply() masks constrained rows like penaltiesApplyRef at ${name}`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const stride = c.stride ?? c.vocab;
      const offset = c.offset ?? 0;
      const words = Math.ceil(c.vocab / 32);
      const rnd = seededRandom(c.vocab * 3 + c.nRows);
      // Row r's mask sits at word r * words + 1; about one token in eight allowed, row 0 unmasked.
      const mask = new Uint32Array(c.nRows * words + 2).map(() =>
        (rnd() * 2 ** 32) >>> 0 & (rnd() * 2 ** 32)
      );
      const counts = randomCounts(c.nRows + 1, c.vocab, c.vocab + 5);
      const logits = randomLogits(offset + c.nRows * stride + 3, c.vocab * 7 + c.nRows);
      const bias: LogitBiasEntry[] = [{ id: 0, value: 2.5 }];
      const rows: PenaltyRow[] = Array.from({ length: c.nRows }, (_, r) => ({
        ...NEUTRAL,
        slot: r,
        maskOffset: r === 0 && c.nRows > 1 ? undefined : r * words + 1,
        // Odd rows also have penalties and the bias, which leaves a masked token at -Infinity.
        ...(r % 2 === 1 ? { presence: 0.5, repetition: 1.3, biasCount: 1 } : {}),
      }));
      const logitsBuf = upload(k, logits);
      await run(k, (pass) =>
        penaltiesApply(k, pass, {
          logits: logitsBuf,
          logitsStride: c.stride,
          logitsOffset: c.offset,
          rows: upload(k, new Uint8Array(packPenaltyRows(rows))),
          nRows: c.nRows,
          counts: upload(k, counts),
          bias: upload(k, new Uint8Array(packLogitBias(bias))),
          mask: upload(k, mask),
          vocab: c.vocab,
        }));
      const got = await readF32(k, logitsBuf, logits.length);
      const want = penaltiesApplyRef({
        logits,
        logitsStride: c.stride,
        logitsOffset: offset,
        rows,
        counts,
        bias,
        mask,
        vocab: c.vocab,
      });
      const unmasked = penaltiesApplyRef({
        logits,
        logitsStride: c.stride,
        logitsOffset: offset,
        rows: rows.map((r) => ({ ...r, maskOffset: undefined })),
        counts,
        bias,
        vocab: c.vocab,
      });
      assertMatches(got, want, (i) => Object.is(want[i], -Infinity) || want[i] === logits[i], name);
      // The reference itself: masked entries are -Infinity, the others what the penalties alone give.
      let maskedCount = 0;
      rows.forEach((row, r) => {
        for (let v = 0; v < c.vocab; v++) {
          const i = offset + r * stride + v;
          const allowed = row.maskOffset === undefined ||
            ((mask[row.maskOffset + (v >> 5)] >>> (v & 31)) & 1) === 1;
          if (allowed) assert.ok(Object.is(want[i], unmasked[i]));
          else {
            assert.equal(got[i], -Infinity, `row ${r} token ${v}`);
            maskedCount++;
          }
        }
      });
      if (c.vocab > 7) assert.ok(maskedCount > 0);
    },
  );
}

Deno.test(
  "penaltiesApply() applies each rule as specified on hand-made values",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const vocab = 6;
    // token: 0 unseen, 1 prompt only, 2 generated 2x, 3 prompt + generated 1x, 4 prompt only, 5 unseen
    const counts = new Uint32Array([
      0,
      PENALTY_PROMPT_BIT,
      2,
      (PENALTY_PROMPT_BIT | 1) >>> 0,
      PENALTY_PROMPT_BIT,
      0,
    ]);
    const logits = new Float32Array([1, 2, 4, -2, -Infinity, 3]);
    const rows: PenaltyRow[] = [{
      ...NEUTRAL,
      slot: 0,
      presence: 0.5,
      frequency: 0.25,
      repetition: 2,
      biasCount: 2,
    }];
    const bias = [{ id: 5, value: 1 }, { id: 5, value: 0.5 }];
    const got = await gpuApply(k, { logits, c: { vocab, nRows: 1 }, rows, counts, bias });
    // 1: 2 / 2 = 1; 2: 4 / 2 - (0.25 * 2 + 0.5) = 1; 3: -2 * 2 - (0.25 + 0.5) = -4.75; 4: -inf * 2; 5: 3 + 1.5
    assert.deepEqual(Array.from(got), [1, 1, 1, -4.75, -Infinity, 4.5]);
  },
);

Deno.test("penaltiesCount() increments the row's slot at its input token", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  for (const vocab of [1, 7, 137, 4032]) {
    const numSlots = 6;
    const counts = randomCounts(numSlots, vocab, vocab);
    const rnd = seededRandom(vocab + 3);
    const inputTokens = new Uint32Array(16).map(() => Math.floor(rnd() * vocab));
    inputTokens[9] = vocab; // out of range: ignored
    inputTokens[10] = PENALTY_NO_INPUT;
    const rows: PenaltyRow[] = [
      { ...NEUTRAL, slot: 4, inputIndex: 3 },
      { ...NEUTRAL, slot: 0, inputIndex: PENALTY_NO_INPUT },
      { ...NEUTRAL, slot: 2, inputIndex: 0 },
      { ...NEUTRAL, slot: 5, inputIndex: 9 },
      { ...NEUTRAL, slot: 1, inputIndex: 10 },
      { ...NEUTRAL, slot: 3, inputIndex: 15 },
      { ...NEUTRAL, slot: 3, inputIndex: 15 }, // a slot with two new tokens counts both
    ];
    const countsBuf = upload(k, counts);
    const junk = { ...NEUTRAL, slot: 0, inputIndex: 0 };
    await run(k, (pass) =>
      penaltiesCount(k, pass, {
        counts: countsBuf,
        rows: upload(k, new Uint8Array(packPenaltyRows([junk, ...rows]))),
        rowsOffset: 1,
        inputTokens: upload(k, inputTokens),
        nRows: rows.length,
        vocab,
      }));
    const got = await readU32(k, countsBuf, counts.length);
    const want = penaltiesCountRef(counts, rows, inputTokens, vocab);
    assert.deepEqual(got, want, `vocab ${vocab}`);
    assert.equal(want[4 * vocab + inputTokens[3]] - counts[4 * vocab + inputTokens[3]], 1);
  }
});

Deno.test(
  "penaltiesMarkPrompt() sets the prompt bit once per token of one slot",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    for (const [vocab, n] of [[1, 3], [7, 20], [137, 300], [128256, 70000]]) {
      const numSlots = 3;
      const counts = randomCounts(numSlots, vocab, vocab + 1);
      const rnd = seededRandom(n);
      const tokens = new Uint32Array(n + 5).map(() => Math.floor(rnd() * vocab));
      tokens[6] = vocab + 1; // out of range: ignored
      tokens[7] = tokens[8]; // duplicate
      const countsBuf = upload(k, counts);
      await run(
        k,
        (pass) =>
          penaltiesMarkPrompt(k, pass, {
            counts: countsBuf,
            tokens: upload(k, tokens),
            tokensOffset: 5,
            n,
            slot: 1,
            vocab,
          }),
      );
      const got = await readU32(k, countsBuf, counts.length);
      assert.deepEqual(got, penaltiesMarkPromptRef(counts, tokens.subarray(5), 1, vocab), `vocab ${vocab}`);
    }
  },
);

Deno.test("mark, count and apply in one pass equal the reference chain", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const vocab = 137, numSlots = 3;
  const prompt = new Uint32Array([5, 9, 9, 100, 136, 0]);
  const inputTokens = new Uint32Array([9, 42, 7]);
  const rows: PenaltyRow[] = [
    { ...NEUTRAL, slot: 2, inputIndex: 0, repetition: 1.5, presence: 0.4, frequency: 0.1 },
    { ...NEUTRAL, slot: 0, inputIndex: 2, frequency: 1 },
  ];
  const logits = randomLogits(rows.length * vocab, 99);
  const counts = new Uint32Array(numSlots * vocab);
  counts[2 * vocab + 42] = 4;
  const countsBuf = upload(k, counts);
  const logitsBuf = upload(k, logits);
  const rowsBuf = upload(k, new Uint8Array(packPenaltyRows(rows)));
  await run(k, (pass) => {
    penaltiesMarkPrompt(k, pass, {
      counts: countsBuf,
      tokens: upload(k, prompt),
      n: prompt.length,
      slot: 2,
      vocab,
    });
    penaltiesCount(k, pass, {
      counts: countsBuf,
      rows: rowsBuf,
      inputTokens: upload(k, inputTokens),
      nRows: 2,
      vocab,
    });
    penaltiesApply(k, pass, {
      logits: logitsBuf,
      rows: rowsBuf,
      nRows: 2,
      counts: countsBuf,
      bias: upload(k, new Uint32Array(4)),
      vocab,
    });
  });
  let c = penaltiesMarkPromptRef(counts, prompt, 2, vocab);
  c = penaltiesCountRef(c, rows, inputTokens, vocab);
  assert.deepEqual(await readU32(k, countsBuf, counts.length), c);
  assert.equal(c[2 * vocab + 9], (PENALTY_PROMPT_BIT | 1) >>> 0);
  const want = penaltiesApplyRef({ logits, rows, counts: c, bias: [], vocab });
  assertMatches(await readF32(k, logitsBuf, logits.length), want, (i) => want[i] === logits[i], "chain");
});

Deno.test("packPenaltyRows() packs 32-byte rows and rejects bad values", () => {
  const rows: PenaltyRow[] = [{
    presence: 0.5,
    frequency: -1,
    repetition: 1.25,
    biasCount: 2,
    biasOffset: 7,
    slot: 3,
    inputIndex: PENALTY_NO_INPUT,
  }];
  const buf = packPenaltyRows(rows);
  assert.equal(buf.byteLength, PENALTY_ROW_BYTES);
  const v = new DataView(buf);
  assert.deepEqual(
    [v.getFloat32(0, true), v.getFloat32(4, true), v.getFloat32(8, true)],
    [0.5, -1, 1.25],
  );
  assert.deepEqual([12, 16, 20, 24, 28].map((o) => v.getUint32(o, true)), [2, 7, 3, 0xffffffff, 0xffffffff]);
  const masked = new DataView(packPenaltyRows([{ ...rows[0], maskOffset: 126 }]));
  assert.equal(masked.getUint32(28, true), 126);
  assert.throws(
    () => packPenaltyRows([{ ...rows[0], repetition: 0 }]),
    /repetition 0 must be finite and > 0/,
  );
  assert.throws(() => packPenaltyRows([{ ...rows[0], presence: NaN }]), /presence NaN is not finite/);
  assert.throws(() => packPenaltyRows([{ ...rows[0], slot: -1 }]), /slot -1 is not an integer/);
  assert.throws(() => packLogitBias([{ id: 1.5, value: 1 }]), /id 1.5 is not an integer/);
  assert.throws(() => packLogitBias([{ id: 1, value: Infinity }]), /value Infinity for id 1 is not finite/);
  const b = new DataView(packLogitBias([{ id: 9, value: -2.5 }]));
  assert.deepEqual([b.getUint32(0, true), b.getFloat32(4, true)], [9, -2.5]);
});

Deno.test("penaltiesApply() rejects a stride below vocab", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const buf = upload(k, new Uint32Array(4));
  const enc = k.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  assert.throws(
    () =>
      penaltiesApply(k, pass, {
        logits: buf,
        logitsStride: 3,
        rows: buf,
        nRows: 1,
        counts: buf,
        bias: buf,
        vocab: 4,
      }),
    /logitsStride 3 is smaller than vocab 4/,
  );
  pass.end();
});
