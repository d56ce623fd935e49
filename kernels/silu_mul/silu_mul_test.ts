import { SILU_MUL_SOURCE, siluMul } from "./silu_mul.ts";
import { siluMulRef } from "./silu_mul_ref.ts";
import {
  assertClose,
  assertCompilesCleanly,
  noGpu,
  randomF32,
  readF32,
  run,
  scratch,
  testKernels,
  upload,
} from "../../test/support/mod.ts";

const NO_GPU = await noGpu();

// WGSL's exp is accurate to 3 + 2|x| ULP; on [-8, 8] that is under 2e-6 relative, so rtol 1e-5 leaves
// room for the divide and the multiply by up while still catching a wrong formula.
const TOL = { atol: 1e-7, rtol: 1e-5 };

const cases = [
  { T: 1, n: 1 },
  { T: 3, n: 7 },
  { T: 2, n: 769 },
  { T: 137, n: 30 },
  { T: 4, n: 1400 },
];

Deno.test("siluMul() compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "silu_mul", SILU_MUL_SOURCE);
});

for (const c of cases) {
  Deno.test(
    `siluMul() matches siluMulRef at T=${c.T} n=${c.n} (separate buffers)`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const gate = randomF32(c.T * c.n, c.n + 1, -8, 8);
      const up = randomF32(c.T * c.n, c.n + 2, -3, 3);
      const out = scratch(k, gate.byteLength);
      await run(
        k,
        (pass) => siluMul(k, pass, { gate: upload(k, gate), up: upload(k, up), out, T: c.T, n: c.n }),
      );
      assertClose(await readF32(k, out, gate.length), siluMulRef(gate, up), TOL);
    },
  );
}

Deno.test(
  "siluMul() reads gate and up as column ranges of one fused buffer",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    // fused (T, stride) with gate at columns [3, 3 + n) and up at [3 + n + 2, 3 + 2n + 2); out strided too.
    const T = 5, n = 137, stride = 2 * n + 9, gateOffset = 3, upOffset = 3 + n + 2;
    const outStride = n + 4, outOffset = 6;
    const fused = randomF32(T * stride, 9, -6, 6);
    const gate = new Float32Array(T * n), up = new Float32Array(T * n);
    for (let t = 0; t < T; t++) {
      gate.set(fused.subarray(t * stride + gateOffset, t * stride + gateOffset + n), t * n);
      up.set(fused.subarray(t * stride + upOffset, t * stride + upOffset + n), t * n);
    }
    const init = new Float32Array(outOffset + T * outStride).fill(-5);
    const out = upload(k, init);
    const buf = upload(k, fused);
    await run(k, (pass) =>
      siluMul(k, pass, {
        gate: buf,
        up: buf,
        out,
        T,
        n,
        gateStride: stride,
        gateOffset,
        upStride: stride,
        upOffset,
        outStride,
        outOffset,
      }));
    const want = init.slice();
    const dense = siluMulRef(gate, up);
    for (let t = 0; t < T; t++) want.set(dense.subarray(t * n, (t + 1) * n), outOffset + t * outStride);
    assertClose(await readF32(k, out, init.length), want, TOL);
  },
);

Deno.test("siluMul() stays finite at extreme gate values", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const gate = new Float32Array([-1e30, -100, -88, -20, -1, -0, 0, 1e-30, 1, 20, 88, 100, 1e30]);
  const up = new Float32Array(gate.length).fill(1.5);
  const out = scratch(k, gate.byteLength);
  await run(
    k,
    (pass) => siluMul(k, pass, { gate: upload(k, gate), up: upload(k, up), out, T: 1, n: gate.length }),
  );
  const got = await readF32(k, out, gate.length);
  for (let i = 0; i < got.length; i++) {
    if (!Number.isFinite(got[i])) {
      throw new Error(`siluMul of ${gate[i]} is ${got[i]}, expected a finite value`);
    }
  }
  // exp's error bound grows with |x| (3 + 2|x| ULP): 2e-5 relative at |x| = 88.
  assertClose(got, siluMulRef(gate, up), { atol: 1e-30, rtol: 1e-4 });
});
