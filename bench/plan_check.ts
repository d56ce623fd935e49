// `deno run -A bench/plan_check.ts [--arch A,B] [--layers N] [--cache-dir DIR]`: the discrete-GPU kernel
// plans against the CPU adapter's plans at the published models' real shapes, on whatever adapter runs it.
// On lavapipe the engine normally takes the CPU plans (KernelFeatures.cpuAdapter); the tests check those and
// the GPU plans at small shapes against host references. This loads a truncated synthetic checkpoint of each
// architecture (bench/synth.ts) twice, once with each plan set, and compares the last-position logits of one
// prompt (prefill through the tiled paths) and the greedy tokens of a few decode rounds (the matvecs, split
// attention, fused transforms): a plan that is wrong at 5120, 8192, 13824 or 28672 shows here before a GPU
// call spends time on it. Exits 1 when a comparison fails.
//
// Lavapipe, 2026-12-08, one layer each: llama2-7b, llama2-13b (its 5120 = had_20 x 256 mixed in place, 32 KiB
// of workgroup memory), llama2-70b and llama31-8b agree (last logits within 2.7e-5 to 4.7e-5 of the peak, 12
// greedy tokens equal).
import { parseArgs } from "node:util";
import { Engine } from "../engine/engine.ts";
import { openGpu } from "../engine/gpu.ts";
import { Kernels } from "../kernels/core.ts";
import type { SamplingParams } from "../engine/types.ts";
import { type ArchName, ARCHS } from "./synth.ts";
import { synthModelDir } from "./model_bench.ts";

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };
/** Largest |logit difference| allowed, relative to the peak |logit|: both plan sets round in f32 (the tests'
 * host-reference tolerance is 3e-4 of the peak). */
const TOL = 3e-4;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    arch: { type: "string", default: "llama2-7b,llama2-13b,llama2-70b,llama31-8b" },
    layers: { type: "string", default: "1" },
    "cache-dir": { type: "string", default: `${Deno.env.get("TMPDIR") ?? "/tmp"}/trellis-synth` },
    prompt: { type: "string", default: "24" },
    gen: { type: "string", default: "12" },
  },
});
const layers = Number(values.layers);
const promptLen = Number(values.prompt), gen = Number(values.gen);

interface PlanResult {
  logits: Float32Array;
  tokens: number[];
}

async function runPlans(dir: string, cpuAdapter: boolean, prompt: number[]): Promise<PlanResult> {
  const g = await openGpu();
  const gpu = { ...g, kernels: new Kernels(g.device, { ...g.kernels.features, cpuAdapter }) };
  const eng = await Engine.load({
    modelDir: dir,
    maxContext: 64,
    maxSeqs: 2,
    maxBatchTokens: 64,
    progress: false,
    gpu,
  });
  try {
    const logits = await eng.promptLogits(prompt, { lastOnly: true });
    eng.addSequence({ request: { id: "s", promptIds: prompt, maxTokens: gen + 1, sampling: GREEDY } });
    const tokens = [...(await eng.prefill(["s"])).get("s")!.ids];
    while (tokens.length < gen) {
      const r = await eng.decodeRound(["s"], Math.min(4, gen - tokens.length));
      tokens.push(...r.tokens.get("s")!.ids);
    }
    return { logits, tokens };
  } finally {
    eng.destroy();
  }
}

let failed = false;
for (const arch of values.arch.split(",") as ArchName[]) {
  if (!(arch in ARCHS)) throw new Error(`Unknown --arch "${arch}": expected one of ${Object.keys(ARCHS)}`);
  const dir = await synthModelDir({ arch, code: "HYB", bits: 2, layers }, values["cache-dir"], console.log);
  const V = ARCHS[arch].vocabSize;
  const prompt = Array.from({ length: promptLen }, (_, i) => 3 + ((i * 7919 + 17) % (V - 3)));
  const cpu = await runPlans(dir, true, prompt);
  const gpu = await runPlans(dir, false, prompt);
  let maxDiff = 0, peak = 0;
  for (let v = 0; v < V; v++) {
    maxDiff = Math.max(maxDiff, Math.abs(cpu.logits[v] - gpu.logits[v]));
    peak = Math.max(peak, Math.abs(cpu.logits[v]));
  }
  const same = cpu.tokens.every((t, i) => t === gpu.tokens[i]);
  const ok = maxDiff <= TOL * peak && same;
  failed ||= !ok;
  console.log(
    `${arch} (${layers} layer${layers === 1 ? "" : "s"}): last logits max |diff| ${
      maxDiff.toExponential(2)
    } ` +
      `of peak ${peak.toFixed(3)} (${(maxDiff / peak).toExponential(2)}); greedy ${
        same ? "equal" : `differ: cpu ${cpu.tokens} gpu ${gpu.tokens}`
      } -> ${ok ? "ok" : "FAILED"}`,
  );
}
if (failed) Deno.exit(1);
