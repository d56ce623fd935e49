// `deno run -A bench/greedy_check.ts --model DIR [--reference FILE] [--json OUT]`: the engine's greedy
// continuations of the reference prompts on this machine's GPU, alone and batched, against the official
// code's (a reference.json like models/llama2-qtip-2bit/reference.json: prompts.{name}.ids and
// fp32_runtime.greedy_32.{name}). Compares every step whose reference top-2 margin is at least 0.01, as the
// engine tests do. Exits 1 on a mismatch. Made for the GPU machine, where the test suite does not run.
import { parseArgs } from "node:util";
import { Engine } from "../engine/engine.ts";
import { describeGpu } from "../engine/gpu.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { model: { type: "string" }, reference: { type: "string" }, json: { type: "string" } },
});
if (!values.model) {
  console.error("usage: greedy_check.ts --model DIR [--reference FILE] [--json OUT]");
  Deno.exit(2);
}
const ref = JSON.parse(await Deno.readTextFile(values.reference ?? `${values.model}/reference.json`));
const prompts: Record<string, number[]> = {};
for (const [name, p] of Object.entries(ref.prompts)) prompts[name] = (p as { ids: number[] }).ids;
const eng = await Engine.load({ modelDir: values.model, maxSeqs: 4, maxContext: 256, progress: false });

async function greedy(batch: string[], steps: number, round: number): Promise<Record<string, number[]>> {
  const g = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };
  for (const p of batch) {
    eng.addSequence({
      request: { id: `s-${p}`, promptIds: prompts[p], maxTokens: steps, sampling: g },
      prefixCache: false,
    });
  }
  const out: Record<string, number[]> = {};
  const first = await eng.prefill(batch.map((p) => `s-${p}`));
  for (const p of batch) out[p] = [...first.get(`s-${p}`)!.ids];
  while (out[batch[0]].length < steps) {
    const n = Math.min(round, steps - out[batch[0]].length);
    const r = await eng.decodeRound(batch.map((p) => `s-${p}`), n);
    for (const p of batch) out[p].push(...r.tokens.get(`s-${p}`)!.ids);
  }
  for (const p of batch) eng.removeSequence(`s-${p}`);
  return out;
}

const rows: { prompt: string; mode: string; compared: number; equal: boolean; got: number[] }[] = [];
const names = Object.keys(prompts);
const runs: [string, string[]][] = [...names.map((n) => ["alone", [n]] as [string, string[]]), [
  "batched",
  names,
]];
let bad = 0;
for (const [mode, batch] of runs) {
  const got = await greedy(batch, 32, 8);
  for (const p of batch) {
    const want = ref.fp32_runtime.greedy_32[p] as number[];
    const margins = ref.fp32_runtime.greedy_top2_logit_margin?.[p] as number[] | undefined;
    let n = want.length;
    if (margins) {
      n = margins.findIndex((m) => m < 0.01) < 0 ? want.length : margins.findIndex((m) => m < 0.01) + 1;
    }
    const equal = got[p].slice(0, n).every((v, i) => v === want[i]);
    if (!equal) bad++;
    rows.push({ prompt: p, mode, compared: n, equal, got: got[p] });
    console.log(
      `${p} ${mode}: ${equal ? "equal" : "DIFFERENT"} over ${n} steps (got ${
        got[p].slice(0, 8).join(",")
      }...)`,
    );
  }
}
const result = { adapter: describeGpu(eng.gpu), model: values.model, rows, mismatches: bad };
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(result, null, 2) + "\n");
eng.destroy();
Deno.exit(bad ? 1 : 0);
