// GPU checks of qtipMatmul: random trellises of every code, K and on-disk order, and the fixtures' real
// linears, through toGpuLayout and both entry points, against decodeHatW + matmulRef.
import { QTIP_SOURCE, qtipMatmul, type QtipTile } from "./qtip.ts";
import { toGpuLayout } from "./qtip_layout.ts";
import { codeV, decodeHatW, matmulRef, type QtipCode, type TrellisLayout } from "./qtip_ref.ts";
import { fixturesDir, loadFixtureLinears, noFixtures } from "./_fixtures.ts";
import {
  assertCompilesCleanly,
  noGpu,
  randomF32,
  readF32,
  run,
  scratch,
  seededRandom,
  testKernels,
  upload,
} from "../../test/support/mod.ts";
import type { Kernels } from "../core.ts";

const NO_GPU = await noGpu();

const RTOL = 1e-4; // of sum_i |hatW[o, i] * x[t, i]|: f32 sums in a different order than the f64 reference

function randomWords(count: number, seed: number): Uint16Array {
  const r = seededRandom(seed);
  return Uint16Array.from({ length: count }, () => Math.floor(r() * 65536));
}

function randomTlut(seed: number): Uint16Array {
  const r = seededRandom(seed);
  return new Uint16Array(new Float16Array(Array.from({ length: 1024 }, () => 3 * r() - 1.5)).buffer);
}

/** Per-element scale sum_i |hatW[o, i] * x[t, i]|. */
function absScale(hatW: Float32Array, x: Float32Array, M: number, m: number, n: number): Float64Array {
  return matmulRef(hatW.map(Math.abs), x.map(Math.abs), M, m, n);
}

function assertMatches(got: Float32Array, want: Float64Array, scale: Float64Array, label: string): void {
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= RTOL * scale[i] + 1e-6)) {
      throw new Error(`${label}: mismatch at ${i}: got ${got[i]}, expected ${want[i]} (scale ${scale[i]})`);
    }
  }
}

interface Case {
  code: QtipCode;
  K: 2 | 3 | 4;
  layout: TrellisLayout;
  m: number;
  n: number;
  M: number;
}

async function runCase(
  k: Kernels,
  c: Case,
  words: Uint16Array,
  tlut: Uint16Array,
  seed: number,
  path?: "tiled",
  tile?: QtipTile,
): Promise<{ got: Float32Array; want: Float64Array; scale: Float64Array }> {
  const hatW = decodeHatW(words, { m: c.m, n: c.n, code: c.code, K: c.K, tlut, layout: c.layout });
  const x = randomF32(c.M * c.n, seed);
  const gpu = toGpuLayout(words, { m: c.m, n: c.n, K: c.K, V: codeV(c.code), layout: c.layout });
  const out = scratch(k, c.M * c.m * 4);
  const lut = c.code === "hyb" ? upload(k, Float32Array.from(new Float16Array(tlut.buffer))) : undefined;
  await run(k, (pass) =>
    qtipMatmul(k, pass, {
      x: upload(k, x),
      trellis: upload(k, gpu),
      lut,
      out,
      M: c.M,
      m: c.m,
      n: c.n,
      code: c.code,
      K: c.K,
      mma: c.layout === "swizzled",
      path,
      tune: tile ? { tile } : undefined,
    }));
  return {
    got: await readF32(k, out, c.M * c.m),
    want: matmulRef(hatW, x, c.M, c.m, c.n),
    scale: absScale(hatW, x, c.M, c.m, c.n),
  };
}

Deno.test("qtip.wgsl compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "qtip", QTIP_SOURCE);
});

// Shapes per on-disk order (swizzled needs multiples of 32); M spans both entry points.
const shapes: Record<TrellisLayout, [number, number, number][]> = {
  plain: [[16, 16, 1], [32, 48, 3], [48, 256, 8], [16, 2192, 2], [48, 256, 33]],
  swizzled: [[32, 32, 1], [64, 96, 7], [256, 896, 3], [96, 64, 9], [256, 896, 33]],
};

for (const code of ["hyb", "1mad", "3inst"] as QtipCode[]) {
  for (const K of [2, 3, 4] as const) {
    Deno.test(`qtipMatmul() matches decodeHatW @ x for ${code} K=${K}`, { ignore: NO_GPU }, async () => {
      const k = await testKernels();
      for (const layout of ["plain", "swizzled"] as TrellisLayout[]) {
        for (const [m, n, M] of shapes[layout]) {
          const c: Case = { code, K, layout, m, n, M };
          const seed = m * 7 + n * 3 + M + K;
          // Beyond 16 tokens: the chunked matvec (default) and the tiled matmul.
          for (const path of M > 16 ? [undefined, "tiled" as const] : [undefined]) {
            const words = randomWords((m * n * K) / 16, seed);
            const r = await runCase(k, c, words, randomTlut(seed), seed + 1, path);
            assertMatches(
              r.got,
              r.want,
              r.scale,
              `${code} K=${K} ${layout} ${m}x${n} M=${M} ${path ?? "auto"}`,
            );
          }
        }
      }
    });
  }
}

// Every block of the tiled matmul, single and double buffered (two copies fit a 32 KiB device's workgroup
// memory for all but 128 x 128 blocks), with partial row and token blocks (13 tile-rows, 150 tokens), for a
// table code and both computed codes at each K (3 has runs of pairs that cross two word boundaries).
Deno.test("qtipMatmul() tiled blocks of 64/128 rows x 64/128 tokens match decodeHatW @ x", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  const cases: Case[] = [
    { code: "hyb", K: 2, layout: "swizzled", m: 224, n: 64, M: 150 },
    { code: "hyb", K: 3, layout: "plain", m: 208, n: 48, M: 150 },
    { code: "1mad", K: 3, layout: "swizzled", m: 224, n: 32, M: 70 },
    { code: "3inst", K: 4, layout: "plain", m: 208, n: 32, M: 130 },
  ];
  // Columns split in runs of 32, 32 and 16, summed by the reduce; 32-column steps (n = 80 ends in half a
  // step; 2 splits of 64 and 16 columns).
  const split: Case = { code: "hyb", K: 2, layout: "plain", m: 208, n: 80, M: 70 };
  for (
    const tile of [
      { rb: 1, tb: 1, splits: 3 },
      { rb: 2, tb: 2, splits: 2 },
      { rb: 1, tb: 2, splits: 2, bk: 32 },
      { rb: 2, tb: 1, bk: 32 },
      { rb: 1, tb: 1, splits: 2, db: true },
      { rb: 1, tb: 2, db: false },
    ] as const
  ) {
    const words = randomWords((split.m * split.n * split.K) / 16, 5);
    const r = await runCase(k, split, words, randomTlut(6), 7, "tiled", tile);
    assertMatches(r.got, r.want, r.scale, `split ${JSON.stringify(tile)}`);
  }
  for (const c of cases) {
    for (const rb of [1, 2] as const) {
      for (const tb of [1, 2] as const) {
        for (const db of rb + tb < 4 ? [false, true] : [false]) {
          const seed = c.m + c.n + c.M + c.K;
          const words = randomWords((c.m * c.n * c.K) / 16, seed);
          const r = await runCase(k, c, words, randomTlut(seed), seed + 1, "tiled", { rb, tb, db });
          assertMatches(
            r.got,
            r.want,
            r.scale,
            `${c.code} K=${c.K} ${c.layout} M=${c.M} rb=${rb} tb=${tb} db=${db}`,
          );
        }
      }
    }
  }
});

// M = 20 with an unaligned x stride takes the tiled matmul; once more with its columns split in 3 runs.
for (const [M, splits] of [[2, 1], [20, 1], [20, 3]]) {
  Deno.test(
    `qtipMatmul() honours strides, offsets and accumulate at M=${M}${splits > 1 ? `, ${splits} splits` : ""}`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const m = 64, n = 96, K = 3, xStride = 101, xOffset = 5, outStride = 70, outOffset = 3;
      const words = randomWords((m * n * K) / 16, 77);
      const tlut = randomTlut(78);
      const hatW = decodeHatW(words, { m, n, code: "hyb", K, tlut, layout: "swizzled" });
      const xFull = randomF32(xOffset + M * xStride, 79);
      const x = new Float32Array(M * n);
      for (let t = 0; t < M; t++) {
        x.set(xFull.subarray(xOffset + t * xStride, xOffset + t * xStride + n), t * n);
      }
      const outLen = outOffset + M * outStride;
      const prior = randomF32(outLen, 80);
      const out = upload(k, prior);
      await run(k, (pass) =>
        qtipMatmul(k, pass, {
          x: upload(k, xFull),
          trellis: upload(k, toGpuLayout(words, { m, n, K, V: 2, layout: "swizzled" })),
          lut: upload(k, Float32Array.from(new Float16Array(tlut.buffer))),
          out,
          M,
          m,
          n,
          code: "hyb",
          K,
          mma: true,
          accumulate: true,
          xOffset,
          xStride,
          outOffset,
          outStride,
          tune: splits > 1 ? { tile: { rb: 1, tb: 1, splits } } : undefined,
        }));
      const got = await readF32(k, out, outLen);
      const want = matmulRef(hatW, x, M, m, n);
      const scale = absScale(hatW, x, M, m, n);
      for (let i = 0; i < outLen; i++) {
        const rel = i - outOffset, t = Math.floor(rel / outStride), o = rel % outStride;
        const inside = rel >= 0 && t < M && o < m;
        const expect = inside ? prior[i] + want[t * m + o] : prior[i];
        const tol = inside ? RTOL * scale[t * m + o] + 1e-5 : 0;
        if (!(Math.abs(got[i] - expect) <= tol)) {
          throw new Error(`out[${i}] (inside=${inside}): got ${got[i]}, expected ${expect}`);
        }
      }
    },
  );
}

Deno.test("qtipMatmul() on the fixtures' linears matches hatW_decoded @ x", {
  ignore: NO_GPU || noFixtures(),
}, async () => {
  const dir = fixturesDir()!;
  const k = await testKernels();
  for (const f of loadFixtureLinears(dir)) {
    for (const M of [1, 5, 12]) {
      const c: Case = { code: "hyb", K: 2, layout: "swizzled", m: f.m, n: f.n, M };
      const r = await runCase(k, c, f.trellis, f.tlut, M);
      // The reference product uses the fixture's own hatW, not our decode of it.
      const hatW = Float32Array.from(new Float16Array(f.hatW.buffer, f.hatW.byteOffset, f.hatW.length));
      const x = randomF32(M * f.n, M);
      assertMatches(
        r.got,
        matmulRef(hatW, x, M, f.m, f.n),
        absScale(hatW, x, M, f.m, f.n),
        `${f.label} M=${M}`,
      );
    }
  }
});
