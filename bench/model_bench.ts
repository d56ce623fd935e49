// `deno task bench decode|prefill|batch`: end-to-end engine speed on synthetic checkpoints (bench/synth.ts)
// through the Engine's own API (Engine.load, addSequence, prefill, prepare/submit/collectRound), the path the server's
// Runner drives. Prompts are random ids and the prefix cache is off, so nothing is served from a cache.
//
// decode:  batch 1; TTFT = prefill of the prompt through the first sampled token on the host; then decode
//          rounds of `roundSteps` tokens (one host readback per round, as the Runner does) until `gen`.
// prefill: one prompt of P tokens, prefilled in maxBatchTokens chunks; tokens/s = P / time to first token.
// batch:   S sequences prefilled together, then decoded in rounds; aggregate tokens/s over the decode phase,
//          the mean time per step (inter-token latency averaged over a round) and the round time (how long a
//          streaming client waits between bursts), p50 and p99.
import { join } from "node:path";
import { Engine } from "../engine/engine.ts";
import { type GpuSpan, idleFraction } from "../engine/round_clock.ts";
import type { SamplingParams } from "../engine/types.ts";
import { type ArchName, ARCHS, synthCheckpoint, type SynthCode, synthConfig } from "./synth.ts";
import { median, percentile } from "./_timing.ts";

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };

export interface ModelSpec {
  arch: ArchName;
  code: SynthCode;
  bits: 2 | 3 | 4;
  /** Truncated depth (quick runs); default full. */
  layers?: number;
}

/** A synthetic checkpoint for `spec` under `cacheDir`, made once and reused while its config matches. */
export async function synthModelDir(
  spec: ModelSpec,
  cacheDir: string,
  log: (s: string) => void,
): Promise<string> {
  const name = `${spec.arch}-${spec.code}-${spec.bits}bit${spec.layers ? `-L${spec.layers}` : ""}`;
  const dir = join(cacheDir, name);
  const want = JSON.stringify(synthConfig(spec));
  try {
    const have = JSON.stringify(JSON.parse(await Deno.readTextFile(join(dir, "config.json"))));
    if (have === want) return dir;
  } catch {
    // absent or unreadable: (re)make it
  }
  log(`synthesizing ${name} in ${dir}`);
  await synthCheckpoint({ ...spec, out: dir, force: true });
  return dir;
}

function randomPrompt(n: number, vocab: number, seed: number): number[] {
  let s = (seed * 2654435761 + 12345) >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return 3 + ((s >>> 0) % (vocab - 3));
  });
}

export interface LoadOptions {
  modelDir: string;
  maxContext: number;
  maxSeqs: number;
  maxBatchTokens: number;
  roundSteps: number;
  kvTokens: number;
}

function loadEngine(o: LoadOptions): Promise<Engine> {
  return Engine.load({
    modelDir: o.modelDir,
    maxContext: o.maxContext,
    maxSeqs: o.maxSeqs,
    maxBatchTokens: o.maxBatchTokens,
    maxRoundSteps: o.roundSteps,
    kvTokens: o.kvTokens,
    prefixCache: false,
    progress: false,
    // Each round's pass is timestamped (when the device can): the GPU's idle fraction between rounds.
    roundTimestamps: true,
  });
}

/**
 * Decodes `total` more steps of `ids` in rounds of at most `roundSteps`, each round queued while the one
 * before it runs (Engine.collectRound's `next`), as the server's Runner does. Returns the steps made.
 */
export async function pipelinedDecode(
  eng: Engine,
  ids: string[],
  total: number,
  roundSteps: number,
  onRound?: (steps: number, ms: number, gpuSpan?: GpuSpan) => void,
): Promise<number> {
  let made = 0;
  let planned = Math.min(roundSteps, total);
  let cur = eng.prepareRound(ids, planned);
  eng.submitRound(cur);
  let last = performance.now();
  while (made < total) {
    const more = Math.min(roundSteps, total - planned);
    const next = more > 0 ? eng.prepareRound(ids, more) : undefined;
    planned += more;
    const r = await eng.collectRound(cur, next);
    const now = performance.now();
    onRound?.(r.steps, now - last, r.gpuSpan);
    last = now;
    made += r.steps;
    if (!next) break;
    cur = next;
  }
  return made;
}

/**
 * Runs one sequence's prompt and `gen` tokens; returns [ttftMs, decodeMs, decodedTokens, the decode rounds'
 * GPU spans (when timestamped)].
 */
async function oneSequence(
  eng: Engine,
  prompt: number[],
  gen: number,
  roundSteps: number,
  id: string,
): Promise<[number, number, number, GpuSpan[]]> {
  eng.addSequence({ request: { id, promptIds: prompt, maxTokens: gen, sampling: GREEDY } });
  try {
    const t0 = performance.now();
    await eng.prefill([id]);
    const t1 = performance.now();
    const spans: GpuSpan[] = [];
    const made = 1 + await pipelinedDecode(eng, [id], gen - 1, roundSteps, (_s, _ms, span) => {
      if (span) spans.push(span);
    });
    return [t1 - t0, performance.now() - t1, made - 1, spans];
  } finally {
    eng.removeSequence(id);
  }
}

export interface DecodeRow {
  arch: ArchName;
  code: SynthCode;
  bits: number;
  layers: number;
  prompt: number;
  generated: number;
  roundSteps: number;
  ttftMs: number;
  tokensPerS: number;
  msPerToken: number;
  /** Weight bytes one decode step reads (engine's count) and the bandwidth that implies. */
  bytesPerToken: number;
  weightGBps: number;
  /**
   * Share of the decode phase (first round's start to last round's end, GPU clock) in which the GPU ran no
   * round, median over trials; null without timestamp-query.
   */
  gpuIdleFraction: number | null;
  /** GPU busy time per generated token (the rounds' passes); null without timestamp-query. */
  gpuMsPerToken: number | null;
}

export async function runDecode(
  spec: ModelSpec,
  o: { modelDir: string; prompt: number; gen: number; roundSteps: number; trials: number },
): Promise<DecodeRow> {
  const ctx = o.prompt + o.gen + 16;
  const eng = await loadEngine({
    modelDir: o.modelDir,
    maxContext: ctx,
    maxSeqs: 1,
    maxBatchTokens: 512,
    roundSteps: o.roundSteps,
    kvTokens: ctx + 2 * o.roundSteps + 32,
  });
  try {
    const V = eng.cfg.vocabSize;
    // Warm-up: compiles every pipeline and brings the clocks up.
    await oneSequence(
      eng,
      randomPrompt(o.prompt, V, 99),
      Math.min(o.gen, 2 * o.roundSteps + 1),
      o.roundSteps,
      "w",
    );
    const ttft: number[] = [], tps: number[] = [], idle: number[] = [], busy: number[] = [];
    for (let t = 0; t < o.trials; t++) {
      const [ft, dt, n, spans] = await oneSequence(
        eng,
        randomPrompt(o.prompt, V, t),
        o.gen,
        o.roundSteps,
        `d${t}`,
      );
      ttft.push(ft);
      tps.push(n / (dt / 1e3));
      const f = idleFraction(spans);
      if (f !== null) {
        idle.push(f);
        busy.push(spans.reduce((a, s) => a + s.endNs - s.startNs, 0) / 1e6 / n);
      }
    }
    const tokensPerS = median(tps);
    const bytesPerToken = eng.weights.bytesPerToken;
    return {
      ...spec,
      layers: eng.cfg.nLayers,
      prompt: o.prompt,
      generated: o.gen,
      roundSteps: o.roundSteps,
      ttftMs: median(ttft),
      tokensPerS,
      msPerToken: 1e3 / tokensPerS,
      bytesPerToken,
      weightGBps: (bytesPerToken * tokensPerS) / 1e9,
      gpuIdleFraction: idle.length ? median(idle) : null,
      gpuMsPerToken: busy.length ? median(busy) : null,
    };
  } finally {
    eng.destroy();
  }
}

export interface PrefillRow {
  arch: ArchName;
  code: SynthCode;
  bits: number;
  layers: number;
  promptTokens: number;
  maxBatchTokens: number;
  ms: number;
  tokensPerS: number;
}

export async function runPrefill(
  spec: ModelSpec,
  o: {
    modelDir: string;
    lengths: number[];
    maxBatchTokens: number;
    trials: number;
    log: (s: string) => void;
  },
): Promise<PrefillRow[]> {
  const maxPos = ARCHS[spec.arch].maxPositionEmbeddings;
  const lengths = o.lengths.filter((p) => {
    if (p + 1 <= maxPos) return true;
    o.log(`skip prefill ${p} on ${spec.arch}: its context is ${maxPos} tokens`);
    return false;
  });
  if (lengths.length === 0) return [];
  const ctx = Math.max(...lengths) + 1;
  const eng = await loadEngine({
    modelDir: o.modelDir,
    maxContext: ctx,
    maxSeqs: 1,
    maxBatchTokens: o.maxBatchTokens,
    roundSteps: 1,
    kvTokens: ctx + 32,
  });
  const rows: PrefillRow[] = [];
  try {
    const V = eng.cfg.vocabSize;
    for (const P of lengths) {
      await oneSequence(eng, randomPrompt(P, V, 7), 1, 1, "w"); // warm-up at this length
      const ms: number[] = [];
      for (let t = 0; t < o.trials; t++) {
        const [ft] = await oneSequence(eng, randomPrompt(P, V, 100 + t), 1, 1, `p${t}`);
        ms.push(ft);
      }
      const m = median(ms);
      rows.push({
        ...spec,
        layers: eng.cfg.nLayers,
        promptTokens: P,
        maxBatchTokens: o.maxBatchTokens,
        ms: m,
        tokensPerS: P / (m / 1e3),
      });
      o.log(`prefill ${P}: ${m.toFixed(1)} ms, ${(P / (m / 1e3)).toFixed(0)} tok/s`);
    }
  } finally {
    eng.destroy();
  }
  return rows;
}

export interface BatchRow {
  arch: ArchName;
  code: SynthCode;
  bits: number;
  layers: number;
  sequences: number;
  prompt: number;
  generated: number;
  roundSteps: number;
  aggregateTokensPerS: number;
  /** Mean time per decode step (every stream gets one token per step). */
  stepMsMean: number;
  /** Round time (a streaming client's wait between bursts of roundSteps tokens). */
  roundMsP50: number;
  roundMsP99: number;
  /** Per-token inter-token latency within a round, p99 over rounds (round time / steps). */
  itlMsP99: number;
  prefillMs: number;
  /** As DecodeRow's, over this batch's decode rounds. */
  gpuIdleFraction: number | null;
}

export async function runBatch(
  spec: ModelSpec,
  o: {
    modelDir: string;
    sequences: number[];
    prompt: number;
    gen: number;
    roundSteps: number;
    maxBatchTokens: number;
    log: (s: string) => void;
  },
): Promise<BatchRow[]> {
  const maxS = Math.max(...o.sequences);
  const ctx = o.prompt + o.gen + 16;
  const eng = await loadEngine({
    modelDir: o.modelDir,
    maxContext: ctx,
    maxSeqs: maxS,
    maxBatchTokens: o.maxBatchTokens,
    roundSteps: o.roundSteps,
    kvTokens: maxS * (ctx + o.roundSteps + 16),
  });
  const rows: BatchRow[] = [];
  try {
    const V = eng.cfg.vocabSize;
    await oneSequence(eng, randomPrompt(o.prompt, V, 5), 2 * o.roundSteps + 1, o.roundSteps, "w");
    for (const S of o.sequences) {
      const ids = Array.from({ length: S }, (_, i) => `b${S}-${i}`);
      ids.forEach((id, i) =>
        eng.addSequence({
          request: {
            id,
            promptIds: randomPrompt(o.prompt, V, 1000 * S + i),
            maxTokens: o.gen,
            sampling: GREEDY,
          },
        })
      );
      try {
        const t0 = performance.now();
        await eng.prefill(ids);
        const t1 = performance.now();
        // One warm-up round at this batch size (pipelines for M = S), not counted.
        let made = 1;
        const warm = await eng.decodeRound(ids, Math.min(o.roundSteps, o.gen - made));
        made += warm.steps;
        const rounds: { ms: number; steps: number }[] = [];
        const spans: GpuSpan[] = [];
        const t2 = performance.now();
        made += await pipelinedDecode(
          eng,
          ids,
          o.gen - made,
          o.roundSteps,
          (steps, ms, span) => {
            rounds.push({ ms, steps });
            if (span) spans.push(span);
          },
        );
        const dt = performance.now() - t2;
        const steps = rounds.reduce((a, r) => a + r.steps, 0);
        const row: BatchRow = {
          ...spec,
          layers: eng.cfg.nLayers,
          sequences: S,
          prompt: o.prompt,
          generated: o.gen,
          roundSteps: o.roundSteps,
          aggregateTokensPerS: (S * steps) / (dt / 1e3),
          stepMsMean: dt / steps,
          roundMsP50: percentile(rounds.map((r) => r.ms), 50),
          roundMsP99: percentile(rounds.map((r) => r.ms), 99),
          itlMsP99: percentile(rounds.map((r) => r.ms / r.steps), 99),
          prefillMs: t1 - t0,
          gpuIdleFraction: idleFraction(spans),
        };
        rows.push(row);
        o.log(
          `batch ${S}: ${row.aggregateTokensPerS.toFixed(1)} tok/s aggregate, ` +
            `${row.stepMsMean.toFixed(2)} ms/step, round p99 ${row.roundMsP99.toFixed(1)} ms`,
        );
      } finally {
        for (const id of ids) eng.removeSequence(id);
      }
    }
  } finally {
    eng.destroy();
  }
  return rows;
}
