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
    eng.addSequence("a", [1, 2, 3], 16, { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 }, false, false);
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
const at = (layers: number) => {
  const dispatches = fixed + layers * perLayer;
  return { layers, dispatches, encodeMs: (dispatches * perDispatchUs) / 1000 };
};
const result = {
  adapter: gpu.adapterInfo.description || gpu.adapterInfo.device || "unknown",
  perDispatchEncodeUs: Math.round(perDispatchUs * 100) / 100,
  dispatchesPerLayer: perLayer,
  fixedDispatchesPerStep: fixed,
  llama2_7b: at(32),
  llama2_70b: at(80),
};
console.log(
  `encode ${result.perDispatchEncodeUs} us per dispatch; ${perLayer} dispatches per layer + ${fixed} per step\n` +
    `Llama 2 7B (32 layers): ${result.llama2_7b.dispatches} dispatches, ${
      result.llama2_7b.encodeMs.toFixed(2)
    } ms of host time per token\n` +
    `Llama 2 70B (80 layers): ${result.llama2_70b.dispatches} dispatches, ${
      result.llama2_70b.encodeMs.toFixed(2)
    } ms of host time per token`,
);
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(result, null, 2) + "\n");
dev.destroy();
