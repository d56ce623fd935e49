// `deno run -A bench/latency_lab.ts [--reps 64] [--only name,..] [--json OUT]`: what one small decode kernel costs in a chain
// of dependent dispatches, warm (its inputs in L2, as when the same dispatch repeats) and cold (a 128 MiB
// streaming read between dispatches, as the weights of a decode step evict everything else, minus a chain
// of the streaming reads alone). Llama 2 7B shapes, batch 1: normTransform (the attention block's, 3 parts),
// ropeKv, blockTransform (o_proj's input, the MLP middle), greedy sampling and the split decode attention at
// 640 positions (with attention_reduce, the same in both plans), each in its current plan and, where one is
// kept, its legacy plan (KernelFeatures.legacy; the fused attention combine + o input also as "one trip",
// every partition's partials loaded at once). The floor is a chain of near-empty dispatches.
// Prints microseconds per dispatch; step_profile --ablate gives the same kernels' marginal cost in a step.
import { parseArgs } from "node:util";
import { openGpu } from "../engine/gpu.ts";
import { Kernels } from "../kernels/core.ts";
import { blockTransform, HadTable, normTransform, ropeKv } from "../kernels/transform/transform.ts";
import { emptyDispatch, GpuTimer } from "./_timing.ts";
import { buildRopeTable } from "../kernels/rope/rope.ts";
import { packSamplingParams, sample } from "../kernels/sampling/sampling.ts";
import { attentionDecode, attentionScratchBytes } from "../kernels/attention/attention.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { reps: { type: "string", default: "64" }, only: { type: "string" }, json: { type: "string" } },
});
const reps = Number(values.reps);
const gpu = await openGpu();
const base = gpu.kernels;
const dev = base.device;
const legacyK = new Kernels(dev, {
  ...base.features,
  legacy: new Set(["norm", "rope", "block", "attn-o", "sampling", "attn-decode"]),
});
const noShuffleK = new Kernels(dev, { ...base.features, legacy: new Set(["vec-shuffle"]) });
// The fused combine + o input with every partition loaded in one trip (call 22's plan).
const oneTripK = new Kernels(dev, { ...base.features, legacy: new Set(["o-group"]) });
const timer = new GpuTimer(base, "timestamp");

const dim = 4096, hidden = 11008, heads = 32, hd = 128;
const buf = (floats: number, fill = 0.01) => {
  const b = dev.createBuffer({
    size: floats * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  dev.queue.writeBuffer(b, 0, new Float32Array(floats).fill(fill));
  return b;
};
const x = [buf(dim), buf(dim)];
const side = buf(16 * dim + 4 * hidden, 1);
const y = buf(2 * hidden);
const xin = buf(3 * dim);
const had = new HadTable(dev, [dim, hidden]);
const rope = dev.createBuffer({
  size: 4096 * hd * 4,
  usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
});
dev.queue.writeBuffer(rope, 0, new Float32Array(buildRopeTable({ headDim: hd, theta: 10000, maxPos: 4096 })));
const u32 = (vals: number[]) => {
  const b = dev.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  dev.queue.writeBuffer(b, 0, new Uint32Array([...vals, 0, 0, 0, 0].slice(0, 4)));
  return b;
};
const tokenSeq = u32([0]), tokenPos = u32([600]), blockTable = buf(64);
const kCache = buf(64 * heads * 16 * hd / 2), vCache = buf(64 * heads * 16 * hd / 2);
const q = buf(dim);
const vocab = 32000;
const logits = buf(vocab);
const rowParams = dev.createBuffer({ size: 32, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
dev.queue.writeBuffer(
  rowParams,
  0,
  packSamplingParams([{ temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, counter: 0, outIndex: 0 }]),
);
const tokens = buf(4);
// Decode attention: one sequence at 640 positions over blocks 0..39 of the cache.
const ATT_CONTEXT = 640;
const attPos = u32([ATT_CONTEXT - 1]);
const attTable = dev.createBuffer({ size: 64 * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
dev.queue.writeBuffer(attTable, 0, Uint32Array.from({ length: 64 }, (_, i) => i));
const attOut = buf(dim);
const attScratch = buf(
  attentionScratchBytes({ T: 1, nHeads: heads, headDim: hd, maxContext: ATT_CONTEXT }) / 4,
);
const attention = {
  q,
  out: attOut,
  kCache,
  vCache,
  tokenSeq,
  tokenPos: attPos,
  blockTable: attTable,
  T: 1,
  nHeads: heads,
  nKvHeads: heads,
  headDim: hd,
  blockSize: 16,
  maxBlocksPerSeq: 64,
  maxContext: ATT_CONTEXT,
  scratch: attScratch,
};

// The streaming read that evicts L2 between dispatches: 128 MiB, one pass, many workgroups.
const FLUSH_BYTES = 128 << 20;
const flushSrc = dev.createBuffer({ size: FLUSH_BYTES, usage: GPUBufferUsage.STORAGE });
const flushDst = buf(1024);
const flushPipe = dev.createComputePipeline({
  layout: "auto",
  compute: {
    module: dev.createShaderModule({
      code: `@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  var acc = 0u;
  let n = arrayLength(&src);
  for (var i = g.x; i < n; i += nw.x * 256u) {
    let v = src[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) {
    dst[g.x & 1023u] = acc;
  }
}`,
    }),
    entryPoint: "main",
  },
});
const flushGroup = dev.createBindGroup({
  layout: flushPipe.getBindGroupLayout(0),
  entries: [{ binding: 0, resource: { buffer: flushSrc } }, { binding: 1, resource: { buffer: flushDst } }],
});
const flush = (pass: GPUComputePassEncoder) => {
  pass.setPipeline(flushPipe);
  pass.setBindGroup(0, flushGroup);
  pass.dispatchWorkgroups(132 * 8);
};
const empty = emptyDispatch(dev);

/** The attention block's residual step for dispatch r of a chain (residual buffers alternate, so each
 * dispatch waits for the one before), without its transforms. */
const residual = (r: number) => ({
  xIn: x[r & 1],
  xOut: x[1 - (r & 1)],
  vec: side,
  had,
  out: xin,
  rows: 1,
  parts: 3,
  dim,
  eps: 1e-5,
  outPartStride: dim,
  norm: { gamma: dim },
  su: 2 * dim,
});

type Job = (k: Kernels, pass: GPUComputePassEncoder, rep: number) => void;
const jobs: Record<string, Job> = {
  "null": (_k, pass) => {
    pass.setPipeline(empty.pipeline);
    pass.setBindGroup(0, empty.group);
    pass.dispatchWorkgroups(empty.x);
  },
  "normTransform qkv (3 parts)": (k, pass, r) =>
    normTransform(k, pass, {
      ...residual(r),
      finish: { y, sv: 0, had: had.spec(dim, false) },
      inHad: had.spec(dim, true),
    }),
  "normTransform no transforms": (k, pass, r) =>
    normTransform(k, pass, { ...residual(r), finish: { y, sv: 0 } }),
  "ropeKv": (k, pass) =>
    ropeKv(k, pass, {
      y,
      vec: side,
      had,
      rope,
      tokenSeq,
      tokenPos,
      blockTable,
      qOut: q,
      kCache,
      vCache,
      T: 1,
      nHeads: heads,
      nKvHeads: heads,
      headDim: hd,
      blockSize: 16,
      maxBlocksPerSeq: 4,
      ropeMaxPos: 4096,
      sv: 8 * dim,
      hq: had.spec(dim, false),
      hkv: had.spec(dim, false),
    }),
  "blockTransform o input": (k, pass) =>
    blockTransform(k, pass, {
      x: y,
      vec: side,
      had,
      out: xin,
      T: 1,
      n: dim,
      gated: false,
      spec: had.spec(dim, true),
      su: 12 * dim,
    }),
  "blockTransform MLP middle": (k, pass) =>
    blockTransform(k, pass, {
      x: y,
      vec: side,
      had,
      out: xin,
      T: 1,
      n: hidden,
      gated: true,
      spec: had.spec(hidden, false),
      sv: 16 * dim,
      su: 16 * dim + 2 * hidden,
    }),
  "sampling, greedy, 32000": (k, pass) =>
    sample(k, pass, { logits, params: rowParams, rows: 1, vocab, tokens }),
  "attention split + reduce, context 640": (k, pass) => attentionDecode(k, pass, attention),
  // As a QTIP decode step runs it: the split, then the combine fused with o_proj's input transform; the
  // partition size sets how many partials the combine loads (640 / size).
  ...Object.fromEntries([64, 128, 256].map((size) => [
    `attention split + o input, context 640, partitions of ${size}`,
    (k: Kernels, pass: GPUComputePassEncoder) =>
      attentionDecode(k, pass, {
        ...attention,
        partitionSize: size,
        oInput: { vec: side, had, spec: had.spec(dim, true), su: 12 * dim, out: xin },
      }),
  ])),
};

const rows: { kernel: string; plan: string; warmUs: number; coldUs: number }[] = [];
// Warm the clocks first (the H100 idles at 345 MHz).
const warmEnd = performance.now() + 800;
while (performance.now() < warmEnd) await timer.perDispatch((p) => flush(p), 8, 1);
const flushUs = 1e3 * await timer.perDispatch((p) => flush(p), reps);
console.log(`flush (128 MiB read) alone: ${flushUs.toFixed(1)} us per dispatch`);
console.log("kernel | plan | warm us/dispatch | cold us/dispatch (minus the flush)");
// --only a,b: the jobs whose names contain one of these (the null floor always runs).
const only = values.only?.split(",").map((w) => w.toLowerCase());
for (const [name, job] of Object.entries(jobs)) {
  if (only && name !== "null" && !only.some((w) => name.toLowerCase().includes(w))) continue;
  const plans = [
    ["current", base],
    ["legacy", legacyK],
    ["no shuffle", noShuffleK],
    ["one trip", oneTripK],
  ] as const;
  for (const [plan, k] of plans) {
    if (name === "null" && plan !== "current") continue;
    if (plan === "no shuffle" && !name.startsWith("normTransform") && name !== "ropeKv") continue;
    if (plan === "one trip" && !name.includes("o input")) continue;
    // The clock falls in the gaps between readbacks: warm it again first.
    const again = performance.now() + 200;
    while (performance.now() < again) await timer.perDispatch((p) => flush(p), 8, 1);
    const warm = 1e3 * await timer.perDispatch((p, r) => job(k, p, r), reps);
    const both = 1e3 * await timer.perDispatch((p, r) => {
      flush(p);
      job(k, p, r);
    }, reps);
    const cold = both - flushUs;
    rows.push({ kernel: name, plan, warmUs: warm, coldUs: cold });
    console.log(`${name} | ${plan} | ${warm.toFixed(2)} | ${cold.toFixed(2)}`);
  }
}
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify(
      { bench: "latency_lab", adapter: gpu.adapterInfo.description, reps, flushUs, rows },
      null,
      2,
    ),
  );
}
gpu.device.destroy();
