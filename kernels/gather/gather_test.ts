import { GATHER_SOURCE, gatherRows, gatherU32, scatterU32 } from "./gather.ts";
import { gatherRef, gatherRowsRef, scatterRef } from "./gather_ref.ts";
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
import assert from "node:assert/strict";

const NO_GPU = await noGpu();

function randomIndices(count: number, range: number, seed: number, distinct: boolean): Uint32Array {
  const r = seededRandom(seed);
  if (distinct) {
    const all = Array.from({ length: range }, (_, i) => i);
    for (let i = all.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [all[i], all[j]] = [all[j], all[i]];
    }
    return Uint32Array.from(all.slice(0, count));
  }
  return Uint32Array.from({ length: count }, () => Math.floor(r() * range));
}

Deno.test("gather kernels compile cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "gather", GATHER_SOURCE);
});

for (const count of [1, 7, 65, 300]) {
  Deno.test(
    `gatherU32() and scatterU32() match the reference for ${count} indices`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const src = Uint32Array.from({ length: 400 }, (_, i) => i * 7 + 3);
      const idx = randomIndices(count, 390, count, true);
      const dst = scratch(k, (count + 5) * 4);
      await run(
        k,
        (pass) =>
          gatherU32(k, pass, {
            src: upload(k, src),
            idx: upload(k, idx),
            dst,
            count,
            srcOffset: 10,
            dstOffset: 5,
          }),
      );
      const got = await readU32(k, dst, count + 5);
      assert.deepEqual([...got.subarray(5)], [...gatherRef(src, idx, 10)]);

      const before = Uint32Array.from({ length: 410 }, (_, i) => 1000000 + i);
      const dst2 = upload(k, before);
      const vals = Uint32Array.from({ length: count }, (_, i) => i + 1);
      await run(
        k,
        (pass) =>
          scatterU32(k, pass, { src: upload(k, vals), idx: upload(k, idx), dst: dst2, count, dstOffset: 10 }),
      );
      assert.deepEqual([...await readU32(k, dst2, 410)], [...scatterRef(before, vals, idx, 10)]);
    },
  );
}

Deno.test("gatherRows() copies whole rows at awkward widths", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  for (const [rows, width, stride] of [[1, 1, 1], [3, 70, 70], [5, 129, 200]]) {
    const x = randomF32(20 * stride, width);
    const idx = randomIndices(rows, 20, rows + width, false);
    const out = scratch(k, rows * width * 4);
    await run(
      k,
      (pass) =>
        gatherRows(k, pass, {
          src: upload(k, x),
          idx: upload(k, idx),
          dst: out,
          count: rows,
          width,
          rowStride: stride,
        }),
    );
    assertClose(await readF32(k, out, rows * width), gatherRowsRef(x, idx, stride, width), {
      atol: 0,
      rtol: 0,
    });
  }
});
