// `deno run -A bench/dispatch_bench.ts [--json OUT]`: the host-side cost of recording a decode step.
// WebGPU has no reusable compute command buffers, so every decode step re-records every dispatch; on a
// fast GPU that JS time, not memory bandwidth, can bound tokens/s. Measures (1) the encode time of one
// cached dispatch, (2) dispatches per decode step, per layer and fixed, from two synthetic models that
// differ only in depth, and (3) what that implies per token at Llama 2 7B / 70B depth.
import { parseArgs } from "node:util";
import { openGpu } from "../engine/gpu.ts";
import { Engine } from "../engine/engine.ts";
import { rmsnorm } from "../kernels/mod.ts";
import { synthCheckpoint } from "./synth.ts";

const { values } = parseArgs({ args: Deno.args, options: { json: { type: "string" } } });
const gpu = await openGpu();
const { device: dev, kernels: k } = gpu;
const mk = (n: number) =>
  dev.createBuffer({ size: n, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
const x = mk(4096 * 4), w = mk(4096 * 2), o = mk(4096 * 4);
// The floor under any recording scheme: replaying prepared (pipeline, bind group, size) triples with no
// other JS, split into the three API calls, pass.end + finish, and submit. Bind groups have five bindings,
// like the engine's kernels.
const replay = await (async () => {
  const code = `@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: vec4<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  y[g.x + p.x] = a[g.x] + b[g.x] * c[g.x];
}`;
  const module = dev.createShaderModule({ code });
  const steps = Array.from({ length: 8 }, (_, i) => {
    const pipeline = dev.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
    const bufs = [0, 1, 2, 3].map(() => mk(4096 * 4));
    const u = dev.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    dev.queue.writeBuffer(u, 0, new Uint32Array([i, 0, 0, 0]));
    const group = dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [...bufs.map((buffer, j) => ({ binding: j, resource: { buffer } })), {
        binding: 4,
        resource: { buffer: u },
      }],
    });
    return { pipeline, group };
  });
  const rows: { recordUs: number; finishUs: number; submitUs: number }[] = [];
  for (let trial = 0; trial < 7; trial++) {
    const n = 4000;
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const s = steps[i & 7];
      pass.setPipeline(s.pipeline);
      pass.setBindGroup(0, s.group);
      pass.dispatchWorkgroups(1);
    }
    const t1 = performance.now();
    pass.end();
    const cmd = enc.finish();
    const t2 = performance.now();
    dev.queue.submit([cmd]);
    const t3 = performance.now();
    rows.push({
      recordUs: (t1 - t0) * 1000 / n,
      finishUs: (t2 - t1) * 1000 / n,
      submitUs: (t3 - t2) * 1000 / n,
    });
    // Idle between trials: on a CPU adapter the last run would otherwise compete with this one.
    await dev.queue.onSubmittedWorkDone();
  }
  const med = (k: "recordUs" | "finishUs" | "submitUs") => rows.map((r) => r[k]).sort((a, b) => a - b)[3];
  return { recordUs: med("recordUs"), finishUs: med("finishUs"), submitUs: med("submitUs") };
})();

const encodeUs: number[] = [];
for (let trial = 0; trial < 5; trial++) {
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  const n = 4000;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) rmsnorm(k, pass, { x, weight: w, out: o, rows: 1, dim: 4096, eps: 1e-5 });
  pass.end();
  enc.finish();
  encodeUs.push(((performance.now() - t0) * 1000) / n);
}
encodeUs.sort((a, b) => a - b);
const perDispatchUs = encodeUs[2];

async function dispatchesPerStep(layers: number): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "trellis-dispatch-" });
  try {
    await synthCheckpoint({ arch: "tiny", code: "HYB", bits: 2, out: dir, layers });
    const eng = await Engine.load({ modelDir: dir, gpu, maxSeqs: 1, maxContext: 64, progress: false });
    eng.addSequence({
      request: {
        id: "a",
        promptIds: [1, 2, 3],
        maxTokens: 16,
        sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 },
      },
      prefixCache: false,
    });
    await eng.prefill(["a"]);
    const d0 = k.dispatches;
    await eng.decodeRound(["a"], 8);
    eng.removeSequence("a");
    return (k.dispatches - d0) / 8;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
const d1 = await dispatchesPerStep(1);
const d2 = await dispatchesPerStep(2);
const perLayer = d2 - d1;
const fixed = d1 - perLayer;
const replayUs = replay.recordUs + replay.finishUs + replay.submitUs;
const at = (layers: number) => {
  const dispatches = fixed + layers * perLayer;
  return {
    layers,
    dispatches,
    /** A step recorded through the kernels' encode functions (the first time its shape is seen). */
    encodeMs: (dispatches * perDispatchUs) / 1000,
    /** A captured step replayed (every later time): record, finish and submit. */
    replayMs: (dispatches * replayUs) / 1000,
  };
};
const result = {
  adapter: gpu.adapterInfo.description || gpu.adapterInfo.device || "unknown",
  perDispatchEncodeUs: Math.round(perDispatchUs * 100) / 100,
  /** Prepared replay, per dispatch: the three calls, end + finish, submit (microseconds). */
  replay,
  dispatchesPerLayer: perLayer,
  fixedDispatchesPerStep: fixed,
  llama2_7b: at(32),
  llama2_70b: at(80),
};
console.log(
  `prepared replay per dispatch: record ${replay.recordUs.toFixed(2)} us, end+finish ${
    replay.finishUs.toFixed(2)
  } us, submit ${replay.submitUs.toFixed(2)} us`,
);
const line = (name: string, r: ReturnType<typeof at>) =>
  `${name} (${r.layers} layers): ${r.dispatches} dispatches, host time per token ${
    r.replayMs.toFixed(2)
  } ms ` +
  `replayed (${r.encodeMs.toFixed(2)} ms the first time a step's shape is recorded)`;
console.log(
  `encode ${result.perDispatchEncodeUs} us per dispatch; ${perLayer} dispatches per layer + ${fixed} per step\n` +
    `${line("Llama 2 7B", result.llama2_7b)}\n${line("Llama 2 70B", result.llama2_70b)}`,
);
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(result, null, 2) + "\n");
dev.destroy();
