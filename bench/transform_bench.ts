// `deno run -A bench/transform_bench.ts [--arch llama2-7b] [--tokens 1,16] [--json OUT]`: GPU time per
// dispatch of the fused transform kernels (kernels/transform) at a model's shapes, as the decode step runs
// them: normTransform (finish + norm + three input transforms), ropeKv, the MLP middle and down's input
// transform, o's input transform. Timestamp queries around many dispatches, after a warm-up.
import { parseArgs } from "node:util";
import { describeGpu, openGpu } from "../engine/gpu.ts";
import { blockTransform, HadTable, normTransform, ropeKv } from "../kernels/mod.ts";
import { GpuTimer } from "./_timing.ts";
import { type ArchName, ARCHS } from "./synth.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    arch: { type: "string", default: "llama2-7b" },
    tokens: { type: "string", default: "1" },
    json: {
      type: "string",
    },
  },
});
const arch = ARCHS[values.arch as ArchName];
if (!arch) throw new Error(`Unknown --arch ${values.arch}`);
const gpu = await openGpu();
const k = gpu.kernels, dev = gpu.device;
const { dim, hiddenDim: hidden, nHeads, nKvHeads } = arch;
const hd = dim / nHeads, qDim = nHeads * hd, kvDim = nKvHeads * hd;
const buf = (bytes: number) =>
  dev.createBuffer({
    size: Math.ceil(bytes / 16) * 16,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
const maxT = Math.max(...values.tokens.split(",").map(Number));
const side = buf((4 * dim + 4 * hidden + 4 * qDim) * 4);
const had = new HadTable(dev, [dim, hidden, qDim, kvDim]);
const a = buf(maxT * 3 * Math.max(dim, hidden) * 8), b = buf(maxT * 3 * Math.max(dim, hidden) * 8);
const x0 = buf(maxT * dim * 4), x1 = buf(maxT * dim * 4);
const meta = buf(4096), table = buf(4096);
const rope = buf(4096 * hd * 4);
const kc = buf(64 * nKvHeads * 16 * hd * 2), vc = buf(64 * nKvHeads * 16 * hd * 2);
const timer = new GpuTimer(k);
const rows: { kernel: string; tokens: number; us: number }[] = [];
for (const T of values.tokens.split(",").map(Number)) {
  const cases: [string, (p: GPUComputePassEncoder) => void][] = [
    ["normTransform finish+norm+3 parts", (p) =>
      normTransform(k, p, {
        xIn: x0,
        xOut: x1,
        vec: side,
        had,
        out: a,
        rows: T,
        parts: 3,
        dim,
        eps: 1e-5,
        finish: { y: b, sv: 0, had: had.spec(dim, false) },
        norm: { gamma: dim },
        su: 2 * dim,
        inHad: had.spec(dim, true),
      })],
    ["ropeKv", (p) =>
      ropeKv(k, p, {
        y: a,
        vec: side,
        had,
        rope,
        tokenSeq: meta,
        tokenPos: meta,
        blockTable: table,
        qOut: b,
        kCache: kc,
        vCache: vc,
        T,
        nHeads,
        nKvHeads,
        headDim: hd,
        blockSize: 16,
        maxBlocksPerSeq: 8,
        ropeMaxPos: 4096,
        sv: 0,
        hq: had.spec(qDim, false),
        hkv: had.spec(kvDim, false),
      })],
    ["blockTransform gated (MLP middle)", (p) =>
      blockTransform(k, p, {
        x: a,
        vec: side,
        had,
        out: b,
        T,
        n: hidden,
        gated: true,
        spec: had.spec(hidden, false),
        sv: 0,
        su: 2 * hidden,
      })],
    [
      "blockTransform input (down)",
      (p) =>
        blockTransform(k, p, {
          x: a,
          vec: side,
          had,
          out: b,
          T,
          n: hidden,
          gated: false,
          spec: had.spec(hidden, true),
        }),
    ],
    [
      "blockTransform input (o)",
      (p) =>
        blockTransform(k, p, {
          x: a,
          vec: side,
          had,
          out: b,
          T,
          n: qDim,
          gated: false,
          spec: had.spec(qDim, true),
          su: 0,
        }),
    ],
  ];
  for (const [name, encode] of cases) {
    await timer.perDispatch(encode, 50, 1);
    const reps = await timer.repsFor(encode, 10);
    const us = (await timer.perDispatch(encode, reps, 5)) * 1e3;
    rows.push({ kernel: name, tokens: T, us });
    console.log(`${name} T=${T}: ${us.toFixed(2)} us`);
  }
}
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ adapter: describeGpu(gpu), arch: values.arch, rows }, null, 2) + "\n",
  );
}
dev.destroy();
