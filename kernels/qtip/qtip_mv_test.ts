// The generated decode matvec (qtip_mv.ts) across its tuning space, stacked parts, and the subgroup path,
// against decodeHatW + matmulRef. The subgroup path runs where the adapter grants `subgroups` and reports
// one subgroup size (lavapipe: 8, the H100: 32), and says why when it cannot.
import { defaultCopies, qtipMatmul, type QtipMatmulOptions, type QtipTune } from "./qtip.ts";
import { qtipMvSource, type QtipMvVariant } from "./qtip_mv.ts";
import { fuseGpuLayouts, toGpuLayout } from "./qtip_layout.ts";
import { codeV, decodeHatW, matmulRef, type QtipCode, type TrellisLayout } from "./qtip_ref.ts";
import {
  fakeKernels,
  noGpu,
  noSubgroups,
  randomF32,
  readF32,
  REQUIRE_GPU,
  run,
  scratch,
  seededRandom,
  testKernels,
  upload,
  withSubgroupKernels,
} from "../../test/support/mod.ts";
import { Kernels } from "../core.ts";

const RTOL = 1e-4;
const NO_GPU = await noGpu();

/** Why the subgroup path cannot run here (null: it can). */
const NO_SUBGROUPS = await noSubgroups();

function randomWords(count: number, seed: number): Uint16Array {
  const r = seededRandom(seed);
  return Uint16Array.from({ length: count }, () => Math.floor(r() * 65536));
}

function randomTlut(seed: number, bits = 9): Uint16Array {
  const r = seededRandom(seed);
  return new Uint16Array(new Float16Array(Array.from({ length: 2 << bits }, () => 3 * r() - 1.5)).buffer);
}

interface Linear {
  code: QtipCode;
  K: 2 | 3 | 4;
  layout: TrellisLayout;
  m: number;
  n: number;
  tlutBits: number;
  hatW: Float32Array;
  gpu: Uint32Array;
  lut?: Float32Array;
}

function makeLinear(
  code: QtipCode,
  K: 2 | 3 | 4,
  layout: TrellisLayout,
  m: number,
  n: number,
  seed: number,
  lutSeed = seed + 1,
): Linear {
  const tlutBits = 9;
  const words = randomWords((m * n * K) / 16, seed);
  const tlut = randomTlut(lutSeed, tlutBits);
  return {
    code,
    K,
    layout,
    m,
    n,
    tlutBits,
    hatW: decodeHatW(words, { m, n, code, K, tlut, layout, tlutBits }),
    gpu: toGpuLayout(words, { m, n, K, V: codeV(code), layout }),
    lut: code === "hyb" ? Float32Array.from(new Float16Array(tlut.buffer)) : undefined,
  };
}

/** Checks qtipMatmul(M tokens) of `lin` with the given tuning against the reference. */
async function check(
  k: Kernels,
  lin: Linear,
  M: number,
  tune: Partial<Pick<QtipMvVariant, "wg" | "repShift" | "unroll" | "subgroups" | "rows">>,
  label: string,
): Promise<void> {
  const x = randomF32(M * lin.n, M * 31 + lin.m);
  const out = scratch(k, M * lin.m * 4);
  await run(k, (pass) =>
    qtipMatmul(k, pass, {
      x: upload(k, x),
      trellis: upload(k, lin.gpu),
      lut: lin.lut ? upload(k, lin.lut) : undefined,
      out,
      M,
      m: lin.m,
      n: lin.n,
      code: lin.code,
      K: lin.K,
      mma: lin.layout === "swizzled",
      tune,
    }));
  const got = await readF32(k, out, M * lin.m);
  const want = matmulRef(lin.hatW, x, M, lin.m, lin.n);
  const scale = matmulRef(lin.hatW.map(Math.abs), x.map(Math.abs), M, lin.m, lin.n);
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= RTOL * scale[i] + 1e-6)) {
      throw new Error(`${label}: out[${i}] = ${got[i]}, expected ${want[i]} (scale ${scale[i]})`);
    }
  }
}

Deno.test({
  name: "qtip_mv: every workgroup size, LUT replication and unroll gives the reference product",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    const lin = makeLinear("hyb", 2, "swizzled", 64, 1056, 5); // 66 tiles per row: uneven over the slots
    for (const wg of [64, 128, 256, 512, 1024]) {
      for (const repShift of [0, 2, 4, 5]) {
        for (const unroll of [1, 2] as const) {
          await check(
            k,
            lin,
            3,
            { wg, repShift, unroll, subgroups: false },
            `wg ${wg} rep ${repShift} u${unroll}`,
          );
        }
      }
    }
  },
});

Deno.test({
  name: "qtip_mv: two and four tile-rows a workgroup give the reference product",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    // 128 rows = 8 tile-rows: 4 or 2 workgroups; 34 tiles a row, uneven over the slots.
    const cases = [["hyb", 2, "swizzled"], ["3inst", 3, "plain"], ["1mad", 4, "swizzled"]] as const;
    for (const [code, K, layout] of cases) {
      const lin = makeLinear(code, K, layout, 128, 544, 60 + K);
      for (const rows of [2, 4] as const) {
        for (const [M, wg, unroll] of [[1, 64, 1], [3, 256, 2], [16, 128, 1]] as const) {
          await check(
            k,
            lin,
            M,
            { rows, wg, unroll, subgroups: false, repShift: 2 },
            `${code} K=${K} rows ${rows} M=${M} wg ${wg} u${unroll}`,
          );
        }
      }
    }
    // A workgroup's tile-rows may not straddle a part (or the end): refused, naming the multiple.
    const err = await run(k, (pass) =>
      qtipMatmul(k, pass, {
        x: scratch(k, 4 * 128 * 4),
        trellis: upload(k, makeLinear("hyb", 2, "swizzled", 96, 128, 1).gpu),
        lut: upload(k, new Float32Array(1024)),
        out: scratch(k, 4 * 96 * 4),
        M: 1,
        m: 96,
        n: 128,
        code: "hyb",
        K: 2,
        mma: true,
        tune: { rows: 4 },
      })).then(() => null, (e) => e as Error);
    if (!err || !/multiples of 64/.test(err.message)) throw new Error(`96 rows in fours: ${err?.message}`);
  },
});

Deno.test({
  name: "qtip_mv: 1..16 tokens for every code and K (plain and swizzled orders)",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    for (const code of ["hyb", "1mad", "3inst"] as QtipCode[]) {
      for (const K of [2, 3, 4] as const) {
        const layout: TrellisLayout = (K + code.length) % 2 === 0 ? "swizzled" : "plain";
        const lin = makeLinear(code, K, layout, 96, 160, K * 13 + code.length);
        for (const M of [1, 2, 5, 8, 11, 16]) {
          await check(
            k,
            lin,
            M,
            { subgroups: false, unroll: M % 2 === 0 ? 2 : 1 },
            `${code} K=${K} ${layout} M=${M}`,
          );
        }
      }
    }
  },
});

Deno.test({
  name: "qtipMatmul: stacked parts read their own x rows and LUTs (matvec and tiled matmul)",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    // q, k, v of a GQA model fused along m (each part with its own LUT), n = 128; each part's x rows sit
    // partStride elements after the previous part's. The tiled matmul runs parts that start at its block
    // boundaries in one dispatch (64 and 128 rows with 64-row blocks), others one at a time (64 and 96 rows,
    // or any with 128-row blocks).
    const n = 128;
    for (const rows of [[64, 32, 32], [64, 64, 128]]) {
      const m = rows.reduce((a, b) => a + b);
      const starts = [rows[0], rows[0] + rows[1]];
      const parts = rows.map((r, i) => makeLinear("hyb", 2, "swizzled", r, n, 40 + i));
      const fused = fuseGpuLayouts(parts.map((p) => p.gpu));
      const luts = new Float32Array(3 * 1024);
      parts.forEach((p, i) => luts.set(p.lut!, i * 1024));
      const runs: [number, QtipMatmulOptions["path"], QtipTune | undefined][] = [
        [2, "auto", undefined],
        [3, "matvec", { rows: 2 }], // workgroups of two tile-rows, each inside one part
        [20, "auto", undefined],
        [20, "tiled", { tile: { rb: 1, tb: 1 } }],
        [70, "tiled", { tile: { rb: 2, tb: 2 } }],
      ];
      for (const [M, path, tune] of runs) {
        const partStride = M * n + 8;
        const xs = parts.map((_, i) => randomF32(M * n, 90 + i + M));
        const xAll = new Float32Array(3 * partStride);
        xs.forEach((xp, p) => xAll.set(xp, p * partStride));
        const out = scratch(k, M * m * 4);
        await run(k, (pass) =>
          qtipMatmul(k, pass, {
            x: upload(k, xAll),
            trellis: upload(k, fused),
            lut: upload(k, luts),
            out,
            M,
            m,
            n,
            code: "hyb",
            K: 2,
            mma: true,
            parts: { starts, partStride },
            path,
            tune,
          }));
        const got = await readF32(k, out, M * m);
        let row0 = 0;
        parts.forEach((lin, p) => {
          const want = matmulRef(lin.hatW, xs[p], M, lin.m, n);
          const scale = matmulRef(lin.hatW.map(Math.abs), xs[p].map(Math.abs), M, lin.m, n);
          for (let t = 0; t < M; t++) {
            for (let r = 0; r < lin.m; r++) {
              const g = got[t * m + row0 + r], w = want[t * lin.m + r];
              if (!(Math.abs(g - w) <= RTOL * scale[t * lin.m + r] + 1e-6)) {
                throw new Error(
                  `parts ${rows} M=${M} ${path} ${JSON.stringify(tune)} part ${p} token ${t} row ${r}: ` +
                    `got ${g}, expected ${w}`,
                );
              }
            }
          }
          row0 += lin.m;
        });
      }
    }
  },
});

Deno.test({
  name: `qtip_mv: the subgroup reduction gives the reference product${
    NO_SUBGROUPS ? ` (not run: ${NO_SUBGROUPS})` : ""
  }`,
  // Under TRELLIS_REQUIRE_GPU=1 a machine without the subgroup path fails here instead of skipping it.
  ignore: NO_SUBGROUPS !== null && !REQUIRE_GPU,
  async fn() {
    await withSubgroupKernels(async (k) => {
      if (typeof k === "string") throw new Error(`Cannot test the subgroup path: ${k}`);
      await checkSubgroups(k);
    });
  },
});

async function checkSubgroups(k: Kernels): Promise<void> {
  const cases = [["hyb", 2, "swizzled"], ["hyb", 4, "plain"], ["3inst", 3, "swizzled"]] as const;
  for (const [code, K, layout] of cases) {
    const lin = makeLinear(code, K, layout, 64, 1056, K);
    for (const wg of [64, 256, 1024]) {
      for (const M of [1, 4, 16]) {
        await check(k, lin, M, { wg, subgroups: true }, `subgroups ${code} K=${K} wg ${wg} M=${M}`);
      }
    }
  }
}

Deno.test({
  name: "qtip_mv: generated WGSL compiles without warnings",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    const v: QtipMvVariant = {
      code: "hyb",
      K: 3,
      mma: true,
      tokens: 4,
      wg: 256,
      repShift: 4,
      tlutBits: 9,
      subgroups: false,
      subgroupSize: 0,
      unroll: 2,
    };
    const module = k.device.createShaderModule({ code: qtipMvSource(v) });
    const info = await module.getCompilationInfo();
    const bad = info.messages.filter((m) => m.type !== "info");
    if (bad.length) throw new Error(bad.map((m) => `${m.lineNum}: ${m.message}`).join("\n"));
  },
});

Deno.test({
  name: "qtipMatmul: prefill-sized batches (128-row blocks, partial row and token tiles) give the reference",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    for (const [code, K, layout] of [["hyb", 2, "swizzled"], ["3inst", 3, "plain"]] as const) {
      const lin = makeLinear(code, K, layout, 160, 96, 70 + K);
      await check(k, lin, 130, {}, `${code} K=${K} M=130`);
    }
  },
});

Deno.test("defaultCopies(): 16 LUT copies within two thirds of the workgroup memory, one on CPU adapters", () => {
  const fake = (storage: number, cpuAdapter = false, legacy: string[] = []) =>
    fakeKernels({ storage, cpuAdapter, legacy });
  const cases: [Kernels, number, number, string][] = [
    [fake(49152), 9, 4, "48 KiB (the H100): 16 x 2 KiB"],
    [fake(65536), 9, 4, "never more than 16"],
    [fake(32768), 9, 3, "32 KiB: 8 copies, room for another workgroup"],
    [fake(16384), 9, 2, "16 KiB: 4 copies"],
    [fake(49152), 10, 3, "a 10-bit LUT is twice the size"],
    [fake(4096), 9, 0, "too small for two"],
    [fake(49152, true), 9, 0, "a CPU adapter has no banks"],
    [fake(49152, false, ["mv-copies"]), 9, 0, "the legacy plan"],
  ];
  for (const [k, bits, want, label] of cases) {
    const got = defaultCopies(k, bits);
    if (got !== want) throw new Error(`${label}: log2 copies ${got}, expected ${want}`);
  }
});
