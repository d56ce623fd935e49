import { embedding, EMBEDDING_SOURCE } from "./embedding.ts";
import { embeddingRef } from "./embedding_ref.ts";
import {
  assertClose,
  assertCompilesCleanly,
  noGpu,
  randomF16,
  readF32,
  run,
  scratch,
  seededRandom,
  testKernels,
  upload,
} from "../../test/support/mod.ts";

const NO_GPU = await noGpu();

const cases = [
  { T: 1, dim: 2, vocab: 3 },
  { T: 7, dim: 7, vocab: 11 },
  { T: 3, dim: 64, vocab: 1000 },
  { T: 137, dim: 38, vocab: 50 },
  { T: 5, dim: 770, vocab: 9 },
];

function randomIds(n: number, vocab: number, seed: number): Uint32Array {
  const r = seededRandom(seed);
  return Uint32Array.from({ length: n }, () => Math.floor(r() * vocab));
}

Deno.test("embedding() compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "embedding", EMBEDDING_SOURCE);
});

for (const c of cases) {
  Deno.test(
    `embedding() matches embeddingRef at T=${c.T} dim=${c.dim} vocab=${c.vocab}`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const ids = randomIds(c.T, c.vocab, c.T * 31 + c.dim);
      ids[c.T - 1] = c.vocab - 1; // the last row of the table, where an off-by-one would read past the end
      const table = randomF16(c.vocab * c.dim, c.dim + 5, -2, 2);
      const out = scratch(k, c.T * c.dim * 4);
      await run(k, (pass) =>
        embedding(k, pass, {
          tokens: upload(k, ids),
          table: upload(k, table.bits),
          out,
          T: c.T,
          dim: c.dim,
          vocab: c.vocab,
        }));
      // f16 -> f32 is exact, so the lookup must be bit-exact.
      assertClose(await readF32(k, out, c.T * c.dim), embeddingRef(ids, table.values, c.dim, c.vocab), {
        atol: 0,
        rtol: 0,
      });
    },
  );
}

Deno.test(
  "embedding() writes zeros for out-of-range ids and honours offsets and strides",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const dim = 10, vocab = 6, T = 5, tokensOffset = 3, outStride = 13, outOffset = 4;
    const ids = new Uint32Array([9, 9, 9, 2, vocab, 5, 0xffffffff, 0]);
    const table = randomF16(vocab * dim, 77, 0.5, 1.5); // no zeros in the table
    const sentinel = -7;
    const init = new Float32Array(outOffset + T * outStride).fill(sentinel);
    const out = upload(k, init);
    await run(k, (pass) =>
      embedding(k, pass, {
        tokens: upload(k, ids),
        table: upload(k, table.bits),
        out,
        T,
        dim,
        vocab,
        tokensOffset,
        outStride,
        outOffset,
      }));
    const got = await readF32(k, out, init.length);
    const want = embeddingRef(ids.subarray(tokensOffset, tokensOffset + T), table.values, dim, vocab);
    const expected = init.slice();
    for (let t = 0; t < T; t++) {
      expected.set(
        want.subarray(t * dim, (t + 1) * dim),
        outOffset + t * outStride,
      );
    }
    assertClose(got, expected, { atol: 0, rtol: 0 });
    // ids vocab and 0xffffffff (rows 1 and 3) must be zero rows, not table rows.
    for (const t of [1, 3]) {
      const row = got.subarray(outOffset + t * outStride, outOffset + t * outStride + dim);
      if (row.some((v) => v !== 0)) throw new Error(`row ${t} of an out-of-range id is not zero: ${row}`);
    }
  },
);

Deno.test("embedding() over a table split in parts (idBase, keepOutside) equals one lookup", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  const dim = 9, vocab = 23, T = 40;
  const ids = randomIds(T, vocab + 2, 5); // a few ids past the vocabulary, which must come out zero
  const table = randomF16(vocab * dim, 13, -2, 2);
  const out = upload(k, new Float32Array(T * dim).fill(-3));
  const cuts = [0, 7, 8, 23]; // parts of 7, 1 and 15 rows
  // Part 0 zeroes what it does not hold (so ids past the vocabulary end up zero); the rest keep it.
  await run(k, (pass) => {
    for (let p = 0; p + 1 < cuts.length; p++) {
      const rows = cuts[p + 1] - cuts[p];
      embedding(k, pass, {
        tokens: upload(k, ids),
        table: upload(k, table.bits.slice(cuts[p] * dim, cuts[p + 1] * dim)),
        out,
        T,
        dim,
        vocab: rows,
        idBase: cuts[p],
        keepOutside: p > 0,
      });
    }
  });
  assertClose(await readF32(k, out, T * dim), embeddingRef(ids, table.values, dim, vocab), {
    atol: 0,
    rtol: 0,
  });
  // The reference with idBase agrees with a slice of the full table.
  const part = embeddingRef(ids, table.values.slice(7 * dim, 8 * dim), dim, 1, 7);
  for (let t = 0; t < T; t++) {
    const want = ids[t] === 7 ? table.values.slice(7 * dim, 8 * dim) : new Float32Array(dim);
    assertClose(part.subarray(t * dim, (t + 1) * dim), want, { atol: 0, rtol: 0 });
  }
});

Deno.test("embedding() covers more than 65535 workgroups", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const dim = 4100, T = 4100, vocab = 3; // T * dim / 256 = 65,664 workgroups, folded into two rows
  const ids = randomIds(T, vocab, 5);
  const table = randomF16(vocab * dim, 6);
  const out = scratch(k, T * dim * 4);
  await run(
    k,
    (pass) =>
      embedding(k, pass, { tokens: upload(k, ids), table: upload(k, table.bits), out, T, dim, vocab }),
  );
  assertClose(await readF32(k, out, T * dim), embeddingRef(ids, table.values, dim, vocab), {
    atol: 0,
    rtol: 0,
  });
});
