import { MATMUL_F16_SOURCE, matmulF16, type MatmulF16Options } from "./matmul_f16.ts";
import { matmulF16Ref } from "./matmul_f16_ref.ts";
import {
  assertCompilesCleanly,
  noGpu,
  randomF16,
  randomF32,
  readF32,
  run,
  testKernels,
  upload,
} from "../../test/support/mod.ts";
import { Kernels } from "../core.ts";

const NO_GPU = await noGpu();

// The reference sums in doubles. An f32 dot product of length K errs by at most ~K * 2^-24 * sum|x*w|
// in the worst order and ~sqrt(K) * 2^-24 * sum|x*w| typically; rtol 1e-5 of sum|x*w| is above the
// typical f32 error at K = 1032 (2e-6) and far below what a wrong index or a dropped term gives.
const RTOL_OF_ABS_SUM = 1e-5;
const ATOL = 1e-6;

interface Case {
  M: number;
  N: number;
  K: number;
  accumulate?: boolean;
}

const cases: Case[] = [
  { M: 1, N: 1, K: 8 },
  { M: 1, N: 7, K: 64 },
  { M: 1, N: 64, K: 1032, accumulate: true },
  { M: 1, N: 769, K: 256 },
  { M: 2, N: 7, K: 256, accumulate: true },
  { M: 2, N: 769, K: 1032 },
  { M: 5, N: 1, K: 1032 },
  { M: 5, N: 64, K: 8, accumulate: true },
  { M: 5, N: 769, K: 64 },
  { M: 8, N: 7, K: 8 },
  { M: 8, N: 64, K: 256 },
  { M: 8, N: 769, K: 1032, accumulate: true },
  { M: 9, N: 1, K: 64 },
  { M: 9, N: 7, K: 1032, accumulate: true },
  { M: 9, N: 769, K: 8 },
  { M: 64, N: 64, K: 64 },
  { M: 64, N: 7, K: 256, accumulate: true },
  { M: 64, N: 769, K: 1032 },
  { M: 130, N: 1, K: 256 },
  { M: 130, N: 64, K: 8, accumulate: true },
  { M: 130, N: 769, K: 1032 },
];

/** Runs one case with the given layout and checks every element of the output buffer. */
async function check(
  c: Case,
  layout: Partial<MatmulF16Options> = {},
  seed = 1,
  kernels?: Kernels,
): Promise<void> {
  const k = kernels ?? await testKernels();
  const { M, N, K } = c;
  const xStride = layout.xStride ?? K, xOffset = layout.xOffset ?? 0, wOffset = layout.wOffset ?? 0;
  const outStride = layout.outStride ?? N, outOffset = layout.outOffset ?? 0;
  const xBuf = randomF32(xOffset + M * xStride, seed + M * 7 + K, -1, 1);
  const wAll = randomF16(wOffset + N * K, seed + N * 13 + K, -1, 1);
  const init = randomF32(outOffset + M * outStride + 3, seed + 3, -4, 4);
  const x = new Float32Array(M * K);
  for (let t = 0; t < M; t++) x.set(xBuf.subarray(xOffset + t * xStride, xOffset + t * xStride + K), t * K);
  const ref = matmulF16Ref(x, wAll.values.subarray(wOffset), M, N, K);
  const out = upload(k, init);
  await run(k, (pass) =>
    matmulF16(k, pass, {
      ...layout,
      x: upload(k, xBuf),
      w: upload(k, wAll.bits),
      out,
      M,
      N,
      K,
      accumulate: c.accumulate,
    }));
  const got = await readF32(k, out, init.length);
  // Expected buffer: init everywhere, (init +) ref inside the (M, N) window; exact outside it.
  const want = init.slice();
  const tol = new Float64Array(init.length);
  for (let t = 0; t < M; t++) {
    for (let o = 0; o < N; o++) {
      const i = outOffset + t * outStride + o;
      want[i] = (c.accumulate ? init[i] : 0) + ref.out[t * N + o];
      tol[i] = ATOL + RTOL_OF_ABS_SUM * ref.absSum[t * N + o];
    }
  }
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol[i])) {
      throw new Error(`output element ${i}: got ${got[i]}, want ${want[i]} (tol ${tol[i]})`);
    }
  }
}

Deno.test("matmulF16() compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "matmul_f16", MATMUL_F16_SOURCE);
});

for (const c of cases) {
  const path = c.M <= 8 ? "matvec" : "tiled";
  Deno.test(
    `matmulF16() ${path} matches matmulF16Ref at M=${c.M} N=${c.N} K=${c.K}${c.accumulate ? " +=" : ""}`,
    { ignore: NO_GPU },
    async () => {
      await check(c);
    },
  );
}

for (const M of [3, 70]) {
  Deno.test(`matmulF16() honours strides and offsets (M=${M})`, { ignore: NO_GPU }, async () => {
    await check({ M, N: 37, K: 136, accumulate: M > 8 }, {
      xStride: 148,
      xOffset: 12,
      wOffset: 24,
      outStride: 45,
      outOffset: 5,
    });
  });
}

Deno.test(
  "matmulF16() matvec covers more than 65535 workgroups (lm_head-sized N)",
  { ignore: NO_GPU },
  async () => {
    await check({ M: 2, N: 65535 * 16 + 21, K: 8 });
  },
);

Deno.test(
  "matmulF16() matvec in a discrete GPU's plans: 64 x 2 and 32 x 4 teams, one or two K steps a trip",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    // K = 1032: 129 vec4<u32> steps, one past a whole number of two-step trips for 64 lanes (and 32).
    const shapes: Case[] = [{ M: 1, N: 37, K: 1032 }, { M: 5, N: 20000, K: 520, accumulate: true }];
    for (const legacy of [[], ["f16-unroll"], ["f16-teams"], ["f16-teams", "f16-unroll"]]) {
      const kk = new Kernels(k.device, { ...k.features, cpuAdapter: false, legacy: new Set(legacy) });
      for (const c of shapes) {
        try {
          await check(c, {}, 5, kk);
        } catch (e) {
          throw new Error(`legacy [${legacy}] M=${c.M} N=${c.N} K=${c.K}: ${(e as Error).message}`);
        }
      }
    }
  },
);

Deno.test("matmulF16() rejects K not a multiple of 8 and misaligned x", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const b = upload(k, new Float32Array(64));
  for (const bad of [{ K: 12 }, { K: 16, xOffset: 2 }, { K: 16, xStride: 18 }, { K: 16, wOffset: 4 }]) {
    let threw = false;
    try {
      await run(k, (pass) => matmulF16(k, pass, { x: b, w: b, out: b, M: 1, N: 1, ...bad }));
    } catch (e) {
      threw = (e as Error).message.startsWith("Unsupported matmulF16 layout");
    }
    if (!threw) throw new Error(`matmulF16 accepted ${JSON.stringify(bad)}`);
  }
});
