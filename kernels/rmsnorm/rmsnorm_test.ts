import { rmsnorm, RMSNORM_SOURCE } from "./rmsnorm.ts";
import { rmsnormRef } from "./rmsnorm_ref.ts";
import {
  assertClose,
  assertCompilesCleanly,
  noGpu,
  randomF16,
  randomF32,
  readF32,
  run,
  scratch,
  testKernels,
  upload,
} from "../../test/support/mod.ts";

const NO_GPU = await noGpu();

const cases = [
  { rows: 1, dim: 2 },
  { rows: 3, dim: 8 },
  { rows: 2, dim: 138 },
  { rows: 5, dim: 256 },
  { rows: 2, dim: 770 },
  { rows: 1, dim: 4096 },
];

Deno.test("rmsnorm() compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "rmsnorm", RMSNORM_SOURCE);
});

for (const c of cases) {
  Deno.test(`rmsnorm() matches rmsnormRef at rows=${c.rows} dim=${c.dim}`, { ignore: NO_GPU }, async () => {
    const k = await testKernels();
    const x = randomF32(c.rows * c.dim, c.dim, -3, 3);
    const w = randomF16(c.dim, c.rows + 7, 0.5, 1.5);
    const out = scratch(k, x.byteLength);
    await run(k, (pass) =>
      rmsnorm(k, pass, {
        x: upload(k, x),
        weight: upload(k, w.bits),
        out,
        rows: c.rows,
        dim: c.dim,
        eps: 1e-5,
      }));
    assertClose(await readF32(k, out, x.length), rmsnormRef(x, w.values, c.rows, c.dim, 1e-5), {
      atol: 1e-5,
      rtol: 1e-5,
    });
  });
}

Deno.test("rmsnorm() honours strides and offsets", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const rows = 3, dim = 100, stride = 130, off = 7;
  const x = randomF32(off + rows * stride, 11);
  const w = randomF16(dim, 12);
  const dense = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) dense.set(x.subarray(off + r * stride, off + r * stride + dim), r * dim);
  const out = scratch(k, (rows * stride + 5) * 4);
  await run(k, (pass) =>
    rmsnorm(k, pass, {
      x: upload(k, x),
      weight: upload(k, w.bits),
      out,
      rows,
      dim,
      eps: 1e-6,
      xStride: stride,
      xOffset: off,
      outStride: stride,
      outOffset: 5,
    }));
  const got = await readF32(k, out, rows * stride + 5);
  const want = rmsnormRef(dense, w.values, rows, dim, 1e-6);
  for (let r = 0; r < rows; r++) {
    assertClose(got.subarray(5 + r * stride, 5 + r * stride + dim), want.subarray(r * dim, (r + 1) * dim), {
      label: `row ${r}`,
    });
  }
});
