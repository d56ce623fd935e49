// GPU checks of the fused transform kernels against transform_ref.ts (the unfused steps, in doubles), at
// sizes that exercise every had_K path: powers of two, had_20 / had_28 / had_172 mixes, tensor-parallel
// chunks, several parts, gathered rows, offsets and strides.
import { BLOCK_ROWS_MIN_T, blockTransform, HadTable, normTransform, ropeKv } from "./transform.ts";
import { blockTransformRef, normTransformRef, ropeKvRef } from "./transform_ref.ts";
import { buildRopeTable } from "../rope/rope.ts";
import { Kernels } from "../core.ts";
import {
  noGpu,
  randomF32,
  readF32,
  readU32,
  run,
  scratch,
  testKernels,
  upload,
} from "../../test/support/mod.ts";

const NO_GPU = await noGpu();

/** Fails unless |got - want| <= tol * (1 + |want|) everywhere (NaN fails). */
function near(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, label: string): void {
  if (got.length < want.length) throw new Error(`${label}: ${got.length} values, expected ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol * (1 + Math.abs(want[i])))) {
      throw new Error(`${label}: [${i}] = ${got[i]}, expected ${want[i]}`);
    }
  }
}

/** Side vectors packed into one buffer; returns their offsets. */
function pack(vs: Float32Array[]): { data: Float32Array; at: number[] } {
  const at: number[] = [];
  let n = 0;
  for (const v of vs) {
    at.push(n);
    n += v.length;
  }
  const data = new Float32Array(n);
  vs.forEach((v, i) => data.set(v, at[i]));
  return { data, at };
}

Deno.test({
  name: "normTransform: finish + residual + RMSNorm + per-part input transforms equal the unfused steps",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    // dim: a power of two, had_20, had_28 (with 2 tensor-parallel chunks), had_172.
    for (const [dim, chunk] of [[256, 256], [320, 320], [896, 448], [1376, 1376]]) {
      const had = new HadTable(k.device, [chunk]);
      for (const parts of [1, 3]) {
        for (const variant of ["qtip", "plain", "first", "gather"] as const) {
          const rows = 3;
          const xIn = randomF32(rows * dim, dim + parts);
          const y = randomF32(rows * dim, dim + 7, -4, 4);
          const sv = randomF32(dim, 11, 0.5, 1.5);
          const gamma = randomF32(dim, 12, 0.5, 1.5);
          const su = Array.from({ length: parts }, (_, g) => randomF32(dim, 13 + g, -1.2, 1.2));
          const vec = pack([sv, gamma, ...su]);
          const qtip = variant !== "plain";
          const finish = variant !== "first";
          const gather = variant === "gather" ? [2, 0] : undefined;
          const want = normTransformRef({
            xIn,
            dim,
            eps: 1e-5,
            parts,
            rows: gather,
            finish: finish ? { y, sv: qtip ? sv : undefined, had: qtip ? { chunk } : null } : undefined,
            gamma,
            su: qtip ? su : undefined,
            inHad: qtip ? { chunk } : null,
          });
          const outRows = gather?.length ?? rows;
          const xOut = scratch(k, rows * dim * 4);
          const out = scratch(k, parts * outRows * dim * 4 + 64);
          const meta = upload(k, new Uint32Array([7, 7, ...(gather ?? [0])]));
          await run(k, (pass) =>
            normTransform(k, pass, {
              xIn: upload(k, xIn),
              xOut,
              vec: upload(k, vec.data),
              had,
              out,
              rows: outRows,
              parts,
              dim,
              eps: 1e-5,
              outOffset: 16,
              finish: finish
                ? {
                  y: upload(k, y),
                  sv: qtip ? vec.at[0] : undefined,
                  had: qtip ? had.spec(dim, false, chunk) : null,
                }
                : undefined,
              writeX: finish,
              norm: { gamma: vec.at[1] },
              su: qtip ? vec.at[2] : undefined,
              inHad: qtip ? had.spec(dim, true, chunk) : null,
              gather: gather ? { meta, idxOffset: 2 } : undefined,
            }));
          const label = `dim ${dim} chunk ${chunk} parts ${parts} ${variant}`;
          const got = await readF32(k, out, parts * outRows * dim + 16);
          for (let g = 0; g < parts; g++) {
            near(got.subarray(16 + g * outRows * dim), want.out[g], 2e-5, `${label} part ${g}`);
          }
          if (finish && !gather) {
            near(await readF32(k, xOut, rows * dim), want.xOut, 2e-6, `${label} residual`);
          }
        }
      }
      had.destroy();
    }
  },
});

Deno.test({
  name: "ropeKv: q/k/v output transforms, RoPE and the paged f16 cache equal the unfused steps",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    const hd = 64, nHeads = 4, nKvHeads = 2, blockSize = 4, maxBlocksPerSeq = 3, T = 3;
    const qDim = nHeads * hd, kvDim = nKvHeads * hd, w = qDim + 2 * kvDim;
    const had = new HadTable(k.device, [qDim, kvDim]);
    const ropeMaxPos = 8;
    const rope = buildRopeTable({ headDim: hd, theta: 10000, maxPos: ropeMaxPos });
    for (const qtip of [true, false]) {
      const y = randomF32(T * w, qtip ? 3 : 4, -2, 2);
      const sv = randomF32(w, 5, 0.5, 1.5);
      const positions = [5, 0, 10]; // the last one past the RoPE table: clamped
      const seqs = [1, 0, 1];
      const table = new Uint32Array([2, 0, 0, 4, 1, 5]); // seq 0: [2, 0, 0]; seq 1: [4, 1, 5]
      const numBlocks = 6;
      const cacheWords = numBlocks * nKvHeads * blockSize * hd / 2;
      const kCache = scratch(k, cacheWords * 4), vCache = scratch(k, cacheWords * 4);
      const qOut = scratch(k, T * qDim * 4);
      await run(k, (pass) =>
        ropeKv(k, pass, {
          y: upload(k, y),
          vec: upload(k, sv),
          had,
          rope: upload(k, rope),
          tokenSeq: upload(k, new Uint32Array(seqs)),
          tokenPos: {
            buffer: upload(k, new Uint32Array([...new Array(64).fill(9), ...positions])),
            offset: 256,
          },
          blockTable: upload(k, table),
          qOut,
          kCache,
          vCache,
          T,
          nHeads,
          nKvHeads,
          headDim: hd,
          blockSize,
          maxBlocksPerSeq,
          ropeMaxPos,
          sv: qtip ? 0 : undefined,
          hq: qtip ? had.spec(qDim, false) : null,
          hkv: qtip ? had.spec(kvDim, false) : null,
        }));
      const want = ropeKvRef({
        y,
        T,
        nHeads,
        nKvHeads,
        headDim: hd,
        positions,
        rope,
        ropeMaxPos,
        sv: qtip ? sv : undefined,
        had: qtip,
      });
      near(await readF32(k, qOut, T * qDim), want.q, 2e-5, `q (qtip ${qtip})`);
      const kc = new Float16Array((await readU32(k, kCache, cacheWords)).buffer);
      const vc = new Float16Array((await readU32(k, vCache, cacheWords)).buffer);
      for (let t = 0; t < T; t++) {
        const pos = positions[t];
        const blk = table[seqs[t] * maxBlocksPerSeq + Math.floor(pos / blockSize)];
        for (let g = 0; g < nKvHeads; g++) {
          for (let d = 0; d < hd; d++) {
            const at = ((blk * nKvHeads + g) * blockSize + pos % blockSize) * hd + d;
            const i = t * kvDim + g * hd + d;
            near(
              [kc[at], vc[at]],
              [Math.f16round(want.k[i]), Math.f16round(want.v[i])],
              1e-3,
              `kv t${t} g${g} d${d}`,
            );
          }
        }
      }
    }
    had.destroy();
  },
});

Deno.test({
  name:
    "blockTransform: the MLP middle and input transforms, as split for a GPU and for a CPU adapter, equal the unfused steps",
  ignore: NO_GPU,
  async fn() {
    const gpu = await testKernels();
    // The GPU split (many workgroups, shared mixes) and the CPU adapter's plan (whole-block FWHT).
    for (const k of [gpu, new Kernels(gpu.device, { ...gpu.features, cpuAdapter: true })]) {
      for (
        const [n, chunk] of [
          [1376, 1376],
          [448, 448],
          [1024, 1024],
          [896, 448],
          [4096, 4096],
          [11008, 11008],
          [
            14336,
            14336,
          ],
        ]
      ) {
        const had = new HadTable(k.device, [chunk]);
        const T = 2;
        for (const gated of [true, false]) {
          for (const qtip of gated ? [true, false] : [true]) {
            const x = randomF32(T * (gated ? 2 * n : n) + 8, n + (gated ? 1 : 0), -3, 3);
            const sv = randomF32(2 * n, 21, 0.5, 1.5);
            const su = randomF32(n, 22, -1.5, 1.5);
            const vec = pack([sv, su]);
            const out = scratch(k, (T * n + 4) * 4);
            await run(k, (pass) =>
              blockTransform(k, pass, {
                x: upload(k, x),
                xOffset: 8,
                vec: upload(k, vec.data),
                had,
                out,
                outOffset: 4,
                T,
                n,
                gated,
                spec: qtip ? had.spec(n, !gated, chunk) : null,
                sv: gated && qtip ? vec.at[0] : undefined,
                su: qtip ? vec.at[1] : undefined,
              }));
            const want = blockTransformRef({
              x: x.subarray(8),
              T,
              n,
              gated,
              had: qtip ? { chunk } : null,
              sv: gated && qtip ? sv : undefined,
              su: qtip ? su : undefined,
            });
            near(
              (await readF32(k, out, T * n + 4)).subarray(4),
              want,
              2e-5,
              `n ${n} chunk ${chunk} gated ${gated} qtip ${qtip}`,
            );
          }
        }
        had.destroy();
      }
    }
  },
});

Deno.test({
  name:
    "blockTransform: many rows take the rows plan (4 or 8 output blocks a thread) from BLOCK_ROWS_MIN_T on, and equal the unfused steps",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    const cpu = new Kernels(k.device, { ...k.features, cpuAdapter: true });
    // [n, chunk]: had_12 with one partial tile, had_20 x H_2 (40 blocks), had_28 in two tensor-parallel
    // chunks, powers of two (H_16, H_64 mixes), had_172 (Q = 1, a partial sign word), had_28 x H_8; blocks
    // shorter than 64: had_172 x H_32 (the test model's MLP), had_172 x H_8, had_28 x H_16 in two chunks.
    const sizes = [
      [768, 768],
      [2560, 2560],
      [3584, 1792],
      [1024, 1024],
      [4096, 4096],
      [11008, 11008],
      [14336, 14336],
      [5504, 5504],
      [1376, 1376],
      [896, 448],
    ];
    const jobs = [
      { gated: true, sv: true, su: true },
      { gated: true, sv: false, su: false },
      { gated: false, sv: false, su: true },
      { gated: false, sv: false, su: false },
    ];
    const cases: { n: number; chunk: number; T: number; per?: 4 | 8; cpu?: boolean; job: number }[] = [];
    sizes.forEach(([n, chunk], s) => {
      jobs.forEach((_, j) => {
        cases.push({ n, chunk, T: BLOCK_ROWS_MIN_T + 1, per: (s + j) % 2 ? 4 : 8, job: j });
      });
      cases.push({ n, chunk, T: BLOCK_ROWS_MIN_T, job: s % jobs.length });
      cases.push({ n, chunk, T: BLOCK_ROWS_MIN_T - 1, job: (s + 1) % jobs.length });
    });
    // The default of a large grid (8 blocks a thread), and a CPU adapter's plan at many rows (never rows).
    cases.push({ n: 3584, chunk: 1792, T: 264, job: 0 });
    cases.push({ n: 3584, chunk: 1792, T: 264, job: 2 });
    cases.push({ n: 2560, chunk: 2560, T: 20, job: 0, cpu: true });
    for (const c of cases) {
      const { n, chunk, T } = c;
      const { gated, sv, su } = jobs[c.job];
      const kk = c.cpu ? cpu : k;
      const had = new HadTable(k.device, [chunk]);
      const xStride = (gated ? 2 * n : n) + 12, outStride = n + 8;
      const x = randomF32(T * xStride + 8, n + T + c.job, -3, 3);
      const svv = randomF32(2 * n, 31, 0.5, 1.5);
      const suv = randomF32(n, 32, -1.5, 1.5);
      const vec = pack([new Float32Array(5), svv, suv]);
      const out = scratch(k, (T * outStride + 4) * 4);
      kk.tap = [];
      await run(k, (pass) =>
        blockTransform(kk, pass, {
          x: upload(k, x),
          xOffset: 8,
          xStride,
          vec: upload(k, vec.data),
          had,
          out,
          outOffset: 4,
          outStride,
          T,
          n,
          gated,
          spec: had.spec(n, !gated, chunk),
          sv: sv ? vec.at[1] : undefined,
          su: su ? vec.at[2] : undefined,
          rowsPer: c.per,
        }));
      const labels = kk.tap.map((d) => d.pipeline.label);
      kk.tap = null;
      const label = `n ${n} chunk ${chunk} T ${T} per ${c.per ?? "default"} ${JSON.stringify(jobs[c.job])}` +
        (c.cpu ? " cpu" : "");
      const rows = T >= BLOCK_ROWS_MIN_T && !c.cpu;
      const entry = `block_transform:rows_${gated ? "g" : "i"}${c.per ?? (T === 264 ? 8 : 4)}:`;
      if (labels.length !== 1 || labels[0].startsWith(entry) !== rows) {
        throw new Error(
          `${label}: dispatched ${labels.join(", ")}; expected ${rows ? entry : "the block plan"}`,
        );
      }
      const xs = new Float32Array(T * (gated ? 2 * n : n));
      for (let t = 0; t < T; t++) {
        xs.set(x.subarray(8 + t * xStride, 8 + t * xStride + (gated ? 2 * n : n)), t * (gated ? 2 * n : n));
      }
      const want = blockTransformRef({
        x: xs,
        T,
        n,
        gated,
        had: { chunk },
        sv: sv ? svv : undefined,
        su: su ? suv : undefined,
      });
      const got = await readF32(k, out, T * outStride + 4);
      const rowsGot = new Float32Array(T * n);
      for (let t = 0; t < T; t++) rowsGot.set(got.subarray(4 + t * outStride, 4 + t * outStride + n), t * n);
      near(rowsGot, want, 2e-5, label);
      // The padding between rows stays untouched.
      for (let t = 0; t < T; t++) {
        const pad = got.subarray(4 + t * outStride + n, 4 + (t + 1) * outStride);
        if (t < T - 1 && pad.some((v) => v !== 0)) {
          throw new Error(`${label}: row ${t}'s padding was written`);
        }
      }
      had.destroy();
    }
  },
});
