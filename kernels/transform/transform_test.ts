// GPU checks of the fused transform kernels against transform_ref.ts (the unfused steps, in doubles), at
// sizes that exercise every had_K path: powers of two, had_20 / had_28 / had_172 mixes, tensor-parallel
// chunks, several parts, gathered rows, offsets and strides.
import { BLOCK_ROWS_MIN_T, blockTransform, HadTable, mixPlan, normTransform, ropeKv } from "./transform.ts";
import { blockDecodeName, blockDecodeSource } from "./block_decode.ts";
import { blockTransformRef, normTransformRef, ropeKvRef } from "./transform_ref.ts";
import { buildRopeTable } from "../rope/rope.ts";
import { Kernels } from "../core.ts";
import {
  assertCompilesCleanly,
  assertNear,
  fakeKernels,
  noGpu,
  noSubgroups,
  randomF32,
  readF32,
  readU32,
  run,
  scratch,
  testKernels,
  upload,
  withSubgroupKernels,
} from "../../test/support/mod.ts";

const NO_GPU = await noGpu();
/** Why the subgroup variants cannot run here (null: they can). */
const NO_SUBGROUPS = NO_GPU ? "no WebGPU adapter" : await noSubgroups();

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
    // dim: a power of two, had_20, had_28 (with 2 tensor-parallel chunks), had_172, and Llama 2 13B's 5120
    // (had_20 x 256: two vectors need 40 KiB, so a 32 KiB device such as lavapipe mixes in place).
    for (const [dim, chunk] of [[256, 256], [320, 320], [896, 448], [1376, 1376], [5120, 5120]]) {
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
            assertNear(got.subarray(16 + g * outRows * dim), want.out[g], 2e-5, `${label} part ${g}`);
          }
          if (finish && !gather) {
            assertNear(await readF32(k, xOut, rows * dim), want.xOut, 2e-6, `${label} residual`);
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
    // Small GQA heads, and Llama 2 13B's (40 x 128 = 5120 = had_20 x 256, in place on a 32 KiB device).
    for (const [hd, nHeads, nKvHeads] of [[64, 4, 2], [128, 40, 40]]) {
      await ropeKvCase(k, hd, nHeads, nKvHeads);
    }
  },
});

async function ropeKvCase(k: Kernels, hd: number, nHeads: number, nKvHeads: number): Promise<void> {
  {
    const blockSize = 4, maxBlocksPerSeq = 3, T = 3;
    const qDim = nHeads * hd, kvDim = nKvHeads * hd, w = qDim + 2 * kvDim;
    const had = new HadTable(k.device, [...new Set([qDim, kvDim])]);
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
      assertNear(await readF32(k, qOut, T * qDim), want.q, 2e-5, `q (qtip ${qtip})`);
      const kc = new Float16Array((await readU32(k, kCache, cacheWords)).buffer);
      const vc = new Float16Array((await readU32(k, vCache, cacheWords)).buffer);
      for (let t = 0; t < T; t++) {
        const pos = positions[t];
        const blk = table[seqs[t] * maxBlocksPerSeq + Math.floor(pos / blockSize)];
        for (let g = 0; g < nKvHeads; g++) {
          for (let d = 0; d < hd; d++) {
            const at = ((blk * nKvHeads + g) * blockSize + pos % blockSize) * hd + d;
            const i = t * kvDim + g * hd + d;
            assertNear(
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
  }
}

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
            assertNear(
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

/** One blockTransform call (row t of x at 8 + t xStride, of out at 4 + t outStride, both strides padded). */
interface BlockCase {
  n: number;
  chunk: number;
  T: number;
  gated: boolean;
  sv: boolean;
  su: boolean;
  rowsPer?: 4 | 8;
  decodeLanes?: 8 | 16 | 32 | 64;
}

/**
 * Runs one blockTransform call with k against blockTransformRef (failing on a wrong value or a write into the
 * padding between rows) and returns the labels of the pipelines it dispatched.
 */
async function blockCase(k: Kernels, c: BlockCase, label: string): Promise<string[]> {
  const { n, chunk, T, gated } = c;
  const had = new HadTable(k.device, [chunk]);
  const xStride = (gated ? 2 * n : n) + 12, outStride = n + 8;
  const x = randomF32(T * xStride + 8, n + T + (gated ? 1 : 0) + (c.su ? 2 : 0), -3, 3);
  const svv = randomF32(2 * n, 31, 0.5, 1.5);
  const suv = randomF32(n, 32, -1.5, 1.5);
  const vec = pack([new Float32Array(5), svv, suv]);
  const out = scratch(k, (T * outStride + 4) * 4);
  k.tap = [];
  await run(k, (pass) =>
    blockTransform(k, pass, {
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
      sv: c.sv ? vec.at[1] : undefined,
      su: c.su ? vec.at[2] : undefined,
      rowsPer: c.rowsPer,
      decodeLanes: c.decodeLanes,
    }));
  const labels = k.tap.map((d) => d.pipeline.label);
  k.tap = null;
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
    sv: c.sv ? svv : undefined,
    su: c.su ? suv : undefined,
  });
  const got = await readF32(k, out, T * outStride + 4);
  const rowsGot = new Float32Array(T * n);
  for (let t = 0; t < T; t++) rowsGot.set(got.subarray(4 + t * outStride, 4 + t * outStride + n), t * n);
  assertNear(rowsGot, want, 2e-5, label);
  // The padding between rows stays untouched.
  for (let t = 0; t < T; t++) {
    const pad = got.subarray(4 + t * outStride + n, 4 + (t + 1) * outStride);
    if (t < T - 1 && pad.some((v) => v !== 0)) throw new Error(`${label}: row ${t}'s padding was written`);
  }
  had.destroy();
  return labels;
}

/** The four jobs: the MLP middle with and without SV / SU, an input transform with and without SU. */
const JOBS = [
  { gated: true, sv: true, su: true },
  { gated: true, sv: false, su: false },
  { gated: false, sv: false, su: true },
  { gated: false, sv: false, su: false },
];

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
    const cases: { n: number; chunk: number; T: number; per?: 4 | 8; cpu?: boolean; job: number }[] = [];
    sizes.forEach(([n, chunk], s) => {
      JOBS.forEach((_, j) => {
        cases.push({ n, chunk, T: BLOCK_ROWS_MIN_T + 1, per: (s + j) % 2 ? 4 : 8, job: j });
      });
      cases.push({ n, chunk, T: BLOCK_ROWS_MIN_T, job: s % JOBS.length });
      cases.push({ n, chunk, T: BLOCK_ROWS_MIN_T - 1, job: (s + 1) % JOBS.length });
    });
    // The default of a large grid (8 blocks a thread), and a CPU adapter's plan at many rows (never rows).
    cases.push({ n: 3584, chunk: 1792, T: 264, job: 0 });
    cases.push({ n: 3584, chunk: 1792, T: 264, job: 2 });
    cases.push({ n: 2560, chunk: 2560, T: 20, job: 0, cpu: true });
    for (const c of cases) {
      const label =
        `n ${c.n} chunk ${c.chunk} T ${c.T} per ${c.per ?? "default"} ${JSON.stringify(JOBS[c.job])}` +
        (c.cpu ? " cpu" : "");
      const { gated } = JOBS[c.job];
      const labels = await blockCase(
        c.cpu ? cpu : k,
        { n: c.n, chunk: c.chunk, T: c.T, ...JOBS[c.job], rowsPer: c.per },
        label,
      );
      const rows = c.T >= BLOCK_ROWS_MIN_T && !c.cpu;
      const entry = `block_transform:rows_${gated ? "g" : "i"}${c.per ?? (c.T === 264 ? 8 : 4)}:`;
      if (labels.length !== 1 || labels[0].startsWith(entry) !== rows) {
        throw new Error(
          `${label}: dispatched ${labels.join(", ")}; expected ${rows ? entry : "the block plan"}`,
        );
      }
    }
  },
});

/**
 * Decode-plan cases ([n, chunk] x the jobs, T cycling through 1 .. BLOCK_ROWS_MIN_T - 1) against the
 * reference, each dispatch checked to be the decode plan's (`block_decode:`, on the subgroup path where k has
 * subgroups), or `main` under legacy "block". `js` collects the output blocks a workgroup (the :jN: of the
 * module name) each case took, keyed "n T g|i"; `lanes` is blockTransform's decodeLanes.
 */
async function decodeCases(
  k: Kernels,
  sizes: number[][],
  o: { legacy?: boolean; js?: Map<string, number>; jobs?: typeof JOBS; lanes?: 8 | 16 | 32 | 64 } = {},
): Promise<void> {
  let i = 0;
  for (const [n, chunk] of sizes) {
    for (const job of o.jobs ?? JOBS) {
      const T = 1 + (i++ % (BLOCK_ROWS_MIN_T - 1));
      const label =
        `${o.legacy ? "legacy" : "decode"} n ${n} chunk ${chunk} T ${T} lanes ${o.lanes ?? "default"} ` +
        JSON.stringify(job);
      const labels = await blockCase(k, { n, chunk, T, ...job, decodeLanes: o.lanes }, label);
      // block_decode:<job>:v<V>:j<J>:<sg | wg>:decode: with the job's letter and the path k's features allow.
      const want = o.legacy ? /^block_transform:main:/ : new RegExp(
        `^block_decode:${job.gated ? "g" : "i"}:v\\d:j(\\d):${k.features.subgroups ? "sg" : "wg"}:decode:`,
      );
      const m = labels.length === 1 ? want.exec(labels[0]) : null;
      if (!m) throw new Error(`${label}: dispatched ${labels.join(", ")}; expected ${want.source}`);
      o.js?.set(`${n} ${T} ${job.gated ? "g" : "i"}`, Number(m[1]));
    }
  }
}

// [n, chunk] for the decode plan: Llama 2 7B's MLP (had_172 x H_64, a partial run of terms), Llama 3.1 8B's
// (had_28 x H_8 x H_64), had_20 x H_4 x H_64 (5120), had_12 x H_2 x H_64 (H_Q narrower than a run), 4096
// (H_64 x H_64, no had_K), had_12 x H_64, blocks shorter than 64 (had_20 x H_32, had_172 x H_8, had_28 x H_16
// in two chunks, had_12 x H_4, had_172 x H_4: several runs of terms in one subgroup of 8, had_20 alone), a
// single block (64), and 65536 (1024 blocks: two trips).
const DECODE_SIZES = [
  [11008, 11008],
  [14336, 14336],
  [5120, 5120],
  [1536, 1536],
  [4096, 4096],
  [768, 768],
  [640, 640],
  [1376, 1376],
  [896, 448],
  [48, 48],
  [688, 688],
  [20, 20],
  [64, 64],
];

Deno.test({
  name:
    "blockTransform: the decode plan without subgroups equals the unfused steps, and legacy 'block' keeps main",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    const js = new Map<string, number>();
    await decodeCases(k, [...DECODE_SIZES, [65536, 65536]], { js });
    // Two output blocks a workgroup where one would give more workgroups than an H100's 132 SMs (11008: 172
    // blocks a row; 4096 at T = 3: 192), one below (768 at T = 7: 84).
    const expect: [string, number][] = [["11008 1 g", 2], ["4096 3 g", 2], ["14336 1 i", 2], ["768 7 g", 1]];
    for (const [key, j] of expect) {
      if (js.get(key) !== j) {
        throw new Error(`${key}: ${js.get(key)} output blocks a workgroup, expected ${j}`);
      }
    }
    const legacy = new Kernels(k.device, { ...k.features, legacy: new Set(["block"]) });
    await decodeCases(legacy, [[11008, 11008], [5120, 5120], [896, 448]], { legacy: true });
    // The H100's layout (32 threads to a block of 64, two values and 16 terms a thread) with H_Q factors
    // narrower than the 16 terms (Q = 8, 4, 2), and 8 threads (8 values, 4 terms).
    await decodeCases(k, [[14336, 14336], [5120, 5120], [1536, 1536], [11008, 11008]], { lanes: 32 });
    await decodeCases(k, [[14336, 14336], [640, 640]], { lanes: 8 });
  },
});

Deno.test({
  name: `blockTransform: the decode plan with subgroups equals the unfused steps${
    NO_SUBGROUPS ? ` (not run: ${NO_SUBGROUPS})` : ""
  }`,
  ignore: NO_SUBGROUPS !== null,
  async fn() {
    await withSubgroupKernels(async (k) => {
      if (typeof k === "string") throw new Error(k);
      await decodeCases(k, DECODE_SIZES);
      // Two trips of the input job (lavapipe's subgroups of 8 leave 32 KB too little for the gated job's
      // partials at 65536, which then takes main).
      await decodeCases(k, [[65536, 65536]], { jobs: JOBS.slice(2) });
    });
  },
});

Deno.test({
  name: "blockDecodeSource: every variant compiles without warnings",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    await withSubgroupKernels(async (sg) => {
      for (const gated of [true, false]) {
        for (const v of [1, 2, 4, 8] as const) {
          for (const j of [1, 2] as const) {
            for (const subgroups of typeof sg !== "string" ? [false, true] : [false]) {
              const variant = { gated, v, j, subgroups };
              const kk = subgroups && typeof sg !== "string" ? sg : k;
              await assertCompilesCleanly(kk, blockDecodeName(variant), blockDecodeSource(variant));
            }
          }
        }
      }
    });
  },
});

Deno.test("mixPlan(): two vectors where they fit, else one with the mixes in place (K <= 32)", () => {
  const device = (storage: number) => fakeKernels({ storage });
  const spec = (n: number, K: number) => ({
    K,
    p: n / K,
    groups: 1,
    rows: 0,
    words: Math.ceil(K / 32),
    scale: 1,
  });
  const cases: [number, [number, ReturnType<typeof spec> | null][], number, boolean, string][] = [
    [49152, [[5120, spec(5120, 20)], [5120, spec(5120, 20)]], 10240, false, "13B on 48 KiB: two vectors"],
    [32768, [[5120, spec(5120, 20)], [5120, spec(5120, 20)]], 5120, true, "13B on 32 KiB: in place"],
    [32768, [[4096, spec(4096, 1)], [1024, null]], 4096, false, "powers of two never mix"],
    // had_172 (K > 32) cannot mix in place: the plan keeps two vectors and the caller reports the shortfall.
    [32768, [[11008, spec(11008, 172)]], 22016, false, "K = 172"],
  ];
  for (const [storage, parts, need, inPlace, label] of cases) {
    const got = mixPlan(device(storage), parts);
    if (got.need !== need || (got.constants.MIX_IN_PLACE === 1) !== inPlace) {
      throw new Error(`${label}: ${JSON.stringify(got)}`);
    }
  }
});
