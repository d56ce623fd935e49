// `deno run -A bench/constrained_bench.ts [flags]`: what constrained sequences cost the others, through the
// Runner (the server's loop). U unconstrained greedy sequences generate T tokens each, three ways:
//
//   alone          U sequences in rounds of up to --round-steps steps
//   + constrained  the same beside C constrained sequences (a matcher that allows every token but EOS, so
//                  they run throughout): these take step 0 of each round only, the U keep their rounds
//   1-step rounds  U sequences alone with rounds of one step: what they would get if a constrained
//                  sequence forced every round down to one step
//
// Constrained sequences are submitted first and the clock starts once every unconstrained sequence has
// its first token, so prefill is outside the figures: they are the decode phase of the U sequences
// (tokens after the first, per second; median of --trials, configurations interleaved), and the
// constrained sequences' tokens per second over the same time. --round-steps fixes the round size (the Runner's 50 ms target would pick 1 on lavapipe).
// bench/grammar_bench.ts measures the grammar side (compile time, mask round trip).

import { parseArgs } from "node:util";
import { DEFAULT_MODEL_DIR, Engine, Runner } from "../engine/mod.ts";
import type { GenerateRequest, SamplingParams } from "../engine/types.ts";
import { median } from "./_timing.ts";

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: DEFAULT_MODEL_DIR },
    unconstrained: { type: "string", default: "4" },
    constrained: { type: "string", default: "2" },
    tokens: { type: "string", default: "32" },
    "round-steps": { type: "string", default: "8" },
    trials: { type: "string", default: "3" },
    json: { type: "string" },
  },
});
const U = Number(values.unconstrained);
const C = Number(values.constrained);
const T = Number(values.tokens);
const STEPS = Number(values["round-steps"]);
const TRIALS = Number(values.trials);

/** A matcher stand-in that allows every token but `eos`, answering at once. */
function allowAll(vocab: number, eos: number[]): { port: MessagePort; close(): void } {
  const { port1, port2 } = new MessageChannel();
  port1.onmessage = () => {
    const mask = new Uint32Array(Math.ceil(vocab / 32)).fill(0xffffffff);
    for (const e of eos) mask[e >> 5] &= ~(1 << (e & 31));
    port1.postMessage({ mask }, [mask.buffer]);
  };
  return { port: port2, close: () => port1.close() };
}

interface Trial {
  /** Seconds until every unconstrained sequence had its T tokens. */
  freeSeconds: number;
  freeTokensPerS: number;
  constrainedTokensPerS: number;
}

async function trial(engine: Engine, o: { constrained: number; roundSteps: number }): Promise<Trial> {
  const prompt = Array.from({ length: 24 }, (_, i) => 3 + ((i * 7919) % (engine.cfg.vocabSize - 3)));
  const matchers = Array.from(
    { length: o.constrained },
    () => allowAll(engine.cfg.vocabSize, engine.cfg.eosTokenIds),
  );
  const reqs: GenerateRequest[] = [
    ...Array.from({ length: U }, (_, i) => ({
      id: `u${i}`,
      promptIds: [...prompt, i + 3],
      maxTokens: T,
      sampling: GREEDY,
      stopTokenIds: [],
      ignoreEos: true,
    })),
    ...matchers.map((m, i) => ({
      id: `c${i}`,
      promptIds: [...prompt, 100 + i],
      maxTokens: 200,
      sampling: GREEDY,
      stopTokenIds: engine.cfg.eosTokenIds,
      constraint: m.port,
    })),
  ];
  let freeLeft = U;
  let notStarted = U;
  let constrainedTokens = 0;
  let constrainedUnstarted = o.constrained;
  let runner!: Runner;
  let t0 = 0;
  let freeDone = 0;
  let constrainedReady!: () => void;
  const ready = new Promise<void>((resolve) => (constrainedReady = resolve));
  if (o.constrained === 0) constrainedReady();
  const started = new Set<string>();
  const done = new Promise<void>((resolve) => {
    runner = new Runner(engine, (id, ev) => {
      if (ev.finishReason === "error") throw new Error(`${id}: ${ev.error}`);
      const first = ev.ids.length > 0 && !started.has(id);
      if (first) started.add(id);
      if (id.startsWith("c")) {
        if (t0 > 0 && freeDone === 0) constrainedTokens += ev.ids.length;
        if (first && --constrainedUnstarted === 0) constrainedReady();
        return;
      }
      if (first && --notStarted === 0) t0 = performance.now();
      if (ev.finishReason && --freeLeft === 0) {
        freeDone = performance.now();
        resolve();
      }
    }, { roundSteps: o.roundSteps, busyRoundSteps: o.roundSteps, targetRoundMs: 1e9 });
  });
  const loop = runner.run();
  for (const r of reqs.filter((r) => r.id.startsWith("c"))) runner.submit(r);
  await ready;
  for (const r of reqs.filter((r) => r.id.startsWith("u"))) runner.submit(r);
  await done;
  for (const r of reqs) if (r.id.startsWith("c")) runner.cancel(r.id);
  runner.close();
  await loop;
  for (const m of matchers) m.close();
  const seconds = (freeDone - t0) / 1000;
  return {
    freeSeconds: seconds,
    freeTokensPerS: (U * (T - 1)) / seconds,
    constrainedTokensPerS: constrainedTokens / seconds,
  };
}

const engine = await Engine.load({
  modelDir: values.model,
  maxSeqs: U + C,
  maxContext: 256,
  progress: false,
});
const configs = [
  { name: "alone", constrained: 0, roundSteps: STEPS },
  { name: `+ ${C} constrained`, constrained: C, roundSteps: STEPS },
  { name: "1-step rounds", constrained: 0, roundSteps: 1 },
];
await trial(engine, { constrained: 1, roundSteps: STEPS }); // warm-up: pipelines, captured steps
const results: Trial[][] = configs.map(() => []);
for (let i = 0; i < TRIALS; i++) {
  for (const [k, c] of configs.entries()) results[k].push(await trial(engine, c));
}
const rows = [];
for (const [k, c] of configs.entries()) {
  const trials = results[k];
  rows.push({
    config: c.name,
    freeSeconds: median(trials.map((t) => t.freeSeconds)),
    freeTokensPerS: median(trials.map((t) => t.freeTokensPerS)),
    constrainedTokensPerS: median(trials.map((t) => t.constrainedTokensPerS)),
  });
}
engine.destroy();
console.log(
  `${U} unconstrained x ${T} tokens, rounds of ${STEPS} steps, ${TRIALS} trials (median), ${values.model}`,
);
console.log("| config | unconstrained decode (s) | unconstrained tok/s | constrained tok/s |");
console.log("| --- | --- | --- | --- |");
for (const r of rows) {
  console.log(
    `| ${r.config} | ${r.freeSeconds.toFixed(2)} | ${r.freeTokensPerS.toFixed(1)} | ${
      r.constrainedTokensPerS.toFixed(1)
    } |`,
  );
}
if (values.json) {
  await Deno.writeTextFile(values.json, JSON.stringify({ U, C, T, STEPS, rows }, null, 2) + "\n");
}
Deno.exit(0);
