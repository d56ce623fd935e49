// `deno run -A bench/step_profile.ts [--arch llama2-7b] [--code HYB] [--bits 2] [--context 640] [--reps 7] [--ablate]
// [--prefill N] [--max-batch-tokens N] [--cache-dir DIR] [--json OUT]`: where the GPU time of one batch-1 decode
// step goes (or, with --prefill, of the forward pass of an N-token prompt in chunks of --max-batch-tokens,
// default the Engine's: the dispatches the prefill recorded, tapped). Decodes a synthetic
// checkpoint (bench/synth.ts) up to `context` positions through the Engine, takes the step it captured last,
// and times it two ways with timestamp queries: whole (all dispatches in one compute pass, as the engine
// records it) and dispatch by dispatch (each in a pass of its own, so each carries a pass's fixed cost).
// Prints the time per kernel (pipeline) summed over the step, and the first layer's dispatches in order.
// With --ablate, also each kernel's marginal cost inside the whole step: the whole pass again with that
// kernel's dispatches swapped for near-empty ones (the chain keeps its length), so the difference is what the
// kernel costs beyond a dependent dispatch's floor, free of the per-pass overhead the split times carry.
import { parseArgs } from "node:util";
import { Engine } from "../engine/engine.ts";
import type { CapturedDispatch } from "../kernels/core.ts";
import { type ArchName, ARCHS, type SynthCode } from "./synth.ts";
import { pipelinedDecode, synthModelDir } from "./model_bench.ts";
import { emptyDispatch, median } from "./_timing.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    arch: { type: "string", default: "llama2-7b" },
    code: { type: "string", default: "HYB" },
    bits: { type: "string", default: "2" },
    context: { type: "string", default: "640" },
    prefill: { type: "string", default: "0" },
    "max-batch-tokens": { type: "string" },
    reps: { type: "string", default: "7" },
    ablate: { type: "boolean", default: false },
    "cache-dir": { type: "string", default: "/tmp/trellis-synth" },
    json: { type: "string" },
  },
});
const arch = values.arch as ArchName;
if (!(arch in ARCHS)) {
  throw new Error(`Unknown --arch ${arch}: expected one of ${Object.keys(ARCHS).join(", ")}`);
}
const bits = Number(values.bits) as 2 | 3 | 4;
const prefillLen = Number(values.prefill);
const context = Math.max(Number(values.context), prefillLen + 1);
const reps = Number(values.reps);
const dir = await synthModelDir(
  { arch, code: values.code as SynthCode, bits },
  values["cache-dir"]!,
  console.log,
);
const eng = await Engine.load({
  modelDir: dir,
  maxContext: Math.max(context + 64, 256),
  maxSeqs: 1,
  maxBatchTokens: values["max-batch-tokens"] === undefined ? undefined : Number(values["max-batch-tokens"]),
  maxRoundSteps: 32,
  kvTokens: context + 128,
  prefixCache: false,
  progress: false,
});
const dev = eng.gpu.device;
if (!dev.features.has("timestamp-query")) throw new Error("step_profile needs the timestamp-query feature");
const prompt = Array.from(
  { length: prefillLen || Math.min(128, context - 1) },
  (_, i) => 3 + (i * 7919) % 1000,
);
eng.addSequence({
  request: {
    id: "p",
    promptIds: prompt,
    maxTokens: context - prompt.length + 8,
    sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 },
  },
});
let list: CapturedDispatch[];
if (prefillLen) {
  const tap: CapturedDispatch[] = [];
  eng.kernels.tap = tap;
  await eng.prefill(["p"]);
  eng.kernels.tap = null;
  list = tap;
} else {
  await eng.prefill(["p"]);
  await pipelinedDecode(eng, ["p"], context - prompt.length, 32);
  const steps = eng.capturedSteps();
  list = steps[steps.length - 1];
}
const n = list.length;

const qs = dev.createQuerySet({ type: "timestamp", count: 2 * n });
const resolve = dev.createBuffer({
  size: 16 * n,
  usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
});
const read = dev.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });

function record(pass: GPUComputePassEncoder, d: CapturedDispatch): void {
  pass.setPipeline(d.pipeline);
  pass.setBindGroup(0, d.group);
  pass.dispatchWorkgroups(d.x, d.y, d.z);
}

/** Timestamps of `dispatches` (default: the step) in one pass, or (split) each in a pass of its own. */
async function times(split: boolean, dispatches: CapturedDispatch[] = list): Promise<BigInt64Array> {
  const enc = dev.createCommandEncoder();
  if (split) {
    dispatches.forEach((d, i) => {
      const pass = enc.beginComputePass({
        timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
      });
      record(pass, d);
      pass.end();
    });
  } else {
    const pass = enc.beginComputePass({
      timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
    });
    for (const d of dispatches) record(pass, d);
    pass.end();
  }
  const count = split ? 2 * dispatches.length : 2;
  enc.resolveQuerySet(qs, 0, count, resolve, 0);
  enc.copyBufferToBuffer(resolve, 0, read, 0, count * 8);
  dev.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ, 0, count * 8);
  const out = new BigInt64Array(read.getMappedRange(0, count * 8).slice(0));
  read.unmap();
  return out;
}

// Warm the clocks (the H100 idles at 345 MHz): a few hundred ms of whole steps.
const warmEnd = performance.now() + 600;
while (performance.now() < warmEnd) await times(false);
const whole: number[] = [];
const each: number[][] = list.map(() => []);
for (let r = 0; r < reps; r++) {
  const w = await times(false);
  whole.push(Number(w[1] - w[0]) / 1e3);
  const s = await times(true);
  for (let i = 0; i < n; i++) each[i].push(Number(s[2 * i + 1] - s[2 * i]) / 1e3);
}
// The floor of a pass of n dispatches: the same count of near-empty dispatches (264 workgroups, one of
// which bumps a word the next dispatch reads, so each waits for the one before, as the step's do).
const empty = emptyDispatch(dev);
const nullList = list.map(() => empty);
const nulls: number[] = [];
for (let r = 0; r < reps; r++) {
  const t = await times(false, nullList);
  nulls.push(Number(t[1] - t[0]) / 1e3);
}
const nullUs = median(nulls);
const us = each.map(median);
const kernelName = (d: CapturedDispatch) => d.pipeline.label.replace(/:main:/, ":").slice(0, 90);
const byKernel = new Map<string, { count: number; us: number }>();
list.forEach((d, i) => {
  const k = kernelName(d);
  const e = byKernel.get(k) ?? { count: 0, us: 0 };
  e.count++;
  e.us += us[i];
  byKernel.set(k, e);
});
const sum = us.reduce((a, b) => a + b, 0);
const wholeUs = median(whole);
console.log(
  `${arch} ${values.code} ${bits}-bit, ${
    prefillLen ? `prefill of ${prefillLen} tokens` : `decode step at context ${context}`
  }: ${n} dispatches`,
);
console.log(
  `whole step (one pass): ${wholeUs.toFixed(1)} us; dispatch by dispatch: sum ${sum.toFixed(1)} us`,
);
console.log(
  `floor: ${n} near-empty dependent dispatches in one pass take ${nullUs.toFixed(1)} us (${
    (nullUs / n).toFixed(2)
  } us each)`,
);
console.log("kernel | dispatches | us (sum) | share");
const rows = [...byKernel.entries()].sort((a, b) => b[1].us - a[1].us);
for (const [k, e] of rows) {
  console.log(`${k} | ${e.count} | ${e.us.toFixed(1)} | ${(100 * e.us / sum).toFixed(1)}%`);
}
const ablation: {
  kernel: string;
  dispatches: number;
  wholeWithoutUs: number;
  share: number;
  marginalUs: number;
}[] = [];
if (values.ablate) {
  console.log("ablation: whole step with the kernel's dispatches made near-empty");
  console.log(
    "kernel | dispatches | whole without (us) | share | marginal us (sum, at the first clock) | per dispatch",
  );
  for (const [k, e] of rows) {
    const swapped = list.map((d, i) => kernelName(d) === k ? nullList[i] : d);
    // The clock falls in the gaps between readbacks: warm it again, then time the whole step and the
    // swapped one alternately, so each difference compares the same clock.
    const again = performance.now() + 300;
    while (performance.now() < again) await times(false);
    const ts: number[] = [], ws: number[] = [];
    for (let r = 0; r < reps; r++) {
      const w = await times(false);
      ws.push(Number(w[1] - w[0]) / 1e3);
      const t = await times(false, swapped);
      ts.push(Number(t[1] - t[0]) / 1e3);
    }
    // The H100's clock drifts down over a long run (seen in calls 20-21): the kernel's share of the step
    // it was paired with is robust to that; its microseconds are that share of the first whole step.
    const without = median(ts);
    const share = 1 - without / median(ws);
    const marginal = share * wholeUs;
    ablation.push({ kernel: k, dispatches: e.count, wholeWithoutUs: without, share, marginalUs: marginal });
    console.log(
      `${k} | ${e.count} | ${without.toFixed(1)} | ${(100 * share).toFixed(1)}% | ${marginal.toFixed(1)} | ${
        (marginal / e.count).toFixed(2)
      }`,
    );
  }
}
const perLayer = Math.floor((n - 4) / (eng.cfg.nLayers));
console.log("first dispatches in order (us, grid):");
list.slice(0, Math.min(n, 16 + perLayer)).forEach((d, i) => {
  console.log(`  ${i} ${kernelName(d)} ${us[i].toFixed(2)} [${d.x},${d.y},${d.z}]`);
});
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify(
      {
        bench: "step_profile",
        adapter: eng.gpu.adapterInfo.description || eng.gpu.adapterInfo.device,
        arch,
        code: values.code,
        bits,
        context,
        prefill: prefillLen,
        reps,
        dispatches: n,
        wholeStepUs: wholeUs,
        splitSumUs: sum,
        nullChainUs: nullUs,
        kernels: rows.map(([k, e]) => ({ kernel: k, dispatches: e.count, us: e.us })),
        ablation,
        order: list.map((d, i) => ({ kernel: kernelName(d), us: us[i], grid: [d.x, d.y, d.z] })),
      },
      null,
      2,
    ),
  );
}
eng.destroy();
