// GPU-time benchmark of matmulF16 at Llama shapes: `deno run -A kernels/matmul_f16/matmul_f16_bench.ts`.
// Times many dispatches inside one compute pass with timestamp queries and reports microseconds per
// call and the weight-streaming bandwidth (matvec) or TFLOP/s (tiled). Needs `timestamp-query`.
// Env: VARIANTS=32x4,64x2x2 (matvec lanes x teams [x K steps a trip], default 32x4), TOKENS=1,2,4,8,
// PREFILL=512 (empty: none), OUT=dir (a copy of the rows).
import { MATMUL_F16_SOURCE, matmulF16 } from "./matmul_f16.ts";
import { grid2d, ParamWriter } from "../core.ts";
import { testKernels } from "../../test/support/mod.ts";

const k = await testKernels();
if (!k || !k.device.features.has("timestamp-query")) {
  throw new Error("Benchmark needs a GPU with timestamp-query");
}
const dev = k.device;
const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;

const query = dev.createQuerySet({ type: "timestamp", count: 2 });
const resolve = dev.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
const readback = dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });

/** Nanoseconds of GPU time per call of `record` over `iters` calls in one pass. */
async function time(record: (pass: GPUComputePassEncoder) => void, iters: number): Promise<number> {
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass({
    timestampWrites: { querySet: query, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
  });
  for (let i = 0; i < iters; i++) record(pass);
  pass.end();
  enc.resolveQuerySet(query, 0, 2, resolve, 0);
  enc.copyBufferToBuffer(resolve, 0, readback, 0, 16);
  dev.queue.submit([enc.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const [t0, t1] = new BigUint64Array(readback.getMappedRange().slice(0));
  readback.unmap();
  return Number(t1 - t0) / iters;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const shapes = [
  { name: "q/o 4096x4096", N: 4096, K: 4096 },
  { name: "qkv 6144x4096", N: 6144, K: 4096 },
  { name: "gate_up 28672x4096", N: 28672, K: 4096 },
  { name: "down 4096x14336", N: 4096, K: 14336 },
  { name: "lm_head 128256x4096", N: 128256, K: 4096 },
];
const variants = (Deno.env.get("VARIANTS") ?? "32x4").split(",").map((v) => v.split("x").map(Number));
const tokens = (Deno.env.get("TOKENS") ?? "1,2,4,8").split(",").map(Number);
const prefill = (Deno.env.get("PREFILL") ?? "512").split(",").filter(Boolean).map(Number);
const rows: string[] = [];
for (const s of shapes) {
  const w = dev.createBuffer({ size: s.N * s.K * 2, usage });
  const maxM = Math.max(8, ...prefill);
  const x = dev.createBuffer({ size: maxM * s.K * 4, usage });
  const out = dev.createBuffer({ size: maxM * s.N * 4, usage });
  const warm = (pass: GPUComputePassEncoder) => matmulF16(k, pass, { x, w, out, M: 1, N: s.N, K: s.K });
  for (let i = 0; i < 3; i++) await time(warm, 200); // bring the clocks up
  for (const M of tokens) {
    for (const [tpr, teams, unroll = 1] of variants) {
      // Same dispatch as matmulF16's matvec path, with the geometry under test.
      const p = k.pipeline(
        "matmul_f16",
        MATMUL_F16_SOURCE,
        { TOKENS: M, TPR: tpr, TEAMS: teams, UNROLL: unroll },
        "matvec",
      );
      const [gx, gy] = grid2d(k, Math.ceil(s.N / (teams * 4)));
      const rec = (pass: GPUComputePassEncoder) => {
        const params = new ParamWriter().u32(M).u32(s.N).u32(s.K).u32(s.K).u32(0).u32(0).u32(s.N).u32(0)
          .u32(0).u32(Math.ceil(s.N / 64)).u32(0).u32(0);
        k.dispatch(pass, p, [x, w, out, k.params(params)], gx, gy);
      };
      const ns = median([await time(rec, 100), await time(rec, 100), await time(rec, 100)]);
      const tbs = (s.N * s.K * 2) / ns / 1e3;
      rows.push(
        `${s.name}\tM=${M}\tTPR=${tpr} TEAMS=${teams} UNROLL=${unroll}\t${(ns / 1e3).toFixed(1)} us\t` +
          `${tbs.toFixed(2)} TB/s`,
      );
      console.log(rows.at(-1));
    }
  }
  for (const M of prefill) {
    const rec = (pass: GPUComputePassEncoder) => matmulF16(k, pass, { x, w, out, M, N: s.N, K: s.K });
    const ns = median([await time(rec, 10), await time(rec, 10), await time(rec, 10)]);
    const tflops = (2 * M * s.N * s.K) / ns / 1e3;
    rows.push(`${s.name}\tM=${M}\ttiled\t${(ns / 1e3).toFixed(1)} us\t${tflops.toFixed(1)} TFLOP/s`);
    console.log(rows.at(-1));
  }
  w.destroy(), x.destroy(), out.destroy();
}
const outDir = Deno.env.get("OUT");
if (outDir) Deno.writeTextFileSync(`${outDir}/matmul_f16_bench.txt`, rows.join("\n") + "\n");
