// The generation loop and its Worker client on the embedded model: stop tokens, max tokens,
// min tokens, cancellation, context limits, and the KV cache back to empty afterwards.
import assert from "node:assert/strict";
import { Engine } from "./engine.ts";
import { Runner } from "./runner.ts";
import { EngineClient } from "./client.ts";
import { DEFAULT_MODEL_DIR } from "./defaults.ts";
import type { GenerateRequest, SamplingParams, TokenEvent } from "./types.ts";
import { penaltiesApplyRef, penaltiesMarkPromptRef } from "../kernels/penalties/penalties_ref.ts";
import { noGpu, waitFor } from "../test/support/mod.ts";
import { runAll } from "../test/support/runner.ts";

const NO_GPU = await noGpu();

const ref = JSON.parse(await Deno.readTextFile(`${DEFAULT_MODEL_DIR}/reference.json`));
const P0: number[] = ref.prompts.p0_genesis.ids;
const P1: number[] = ref.prompts.p1_chat.ids;
const GREEDY_P0: number[] = ref.fp32_runtime.greedy_32.p0_genesis;
const GREEDY_P1: number[] = ref.fp32_runtime.greedy_32.p1_chat;
const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };

function request(id: string, promptIds: number[], extra: Partial<GenerateRequest> = {}): GenerateRequest {
  return { id, promptIds, maxTokens: 16, sampling: GREEDY, stopTokenIds: [], ...extra };
}

const ids = (evs: TokenEvent[]) => evs.flatMap((e) => e.ids);
const finish = (evs: TokenEvent[]) => evs.at(-1)?.finishReason;

Deno.test({
  name: "Runner: max tokens, stop tokens (not reported), min tokens, ignore_eos, context limit, KV freed",
  ignore: NO_GPU,
  async fn() {
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 4,
      maxContext: 96,
      progress: false,
    });
    try {
      // The first token of GREEDY_P0 that does not occur before position 5 serves as a "stop token".
      const stopAt = GREEDY_P0.findIndex((t, i) => i >= 5 && !GREEDY_P0.slice(0, i).includes(t));
      const stopTok = GREEDY_P0[stopAt];
      const ev = await runAll(engine, [
        request("len", P0, { maxTokens: 11 }),
        request("stop", P0, { maxTokens: 30, stopTokenIds: [stopTok] }),
        request("min", P0, { maxTokens: 30, stopTokenIds: [stopTok], minTokens: stopAt + 1 }),
        request("ign", P1, { maxTokens: 13, stopTokenIds: [GREEDY_P1[2]], ignoreEos: true }),
        request("long", P0, { maxTokens: 200 }),
        request("lp", P1, { maxTokens: 5, logprobs: 0 }),
      ]);
      assert.deepEqual(ids(ev.get("len")!), GREEDY_P0.slice(0, 11));
      assert.equal(finish(ev.get("len")!), "length");
      assert.deepEqual(ids(ev.get("stop")!), GREEDY_P0.slice(0, stopAt));
      assert.equal(finish(ev.get("stop")!), "stop");
      const min = ids(ev.get("min")!);
      assert.deepEqual(
        min.slice(0, stopAt + 1),
        GREEDY_P0.slice(0, stopAt + 1),
        "min_tokens lets the stop token through",
      );
      assert.deepEqual(ids(ev.get("ign")!), GREEDY_P1.slice(0, 13));
      assert.equal(finish(ev.get("ign")!), "length");
      assert.equal(finish(ev.get("long")!), "error");
      assert.match(ev.get("long")!.at(-1)!.error!, /context holds 96/);
      const lp = ev.get("lp")!.flatMap((e) => e.logprobs ?? []);
      assert.equal(lp.length, 5);
      for (const v of lp) assert.ok(v <= 0 && v > -50, `logprob ${v}`);
      assert.equal(ev.get("len")!.some((e) => e.logprobs), false, "no logprobs unless asked");
      assert.equal(engine.kvBlocks.usedBlocks, 0);
    } finally {
      engine.destroy();
    }
  },
});

Deno.test({
  name: "Runner: more requests than slots queue up and all complete; cancel frees a running sequence",
  ignore: NO_GPU,
  async fn() {
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 2,
      maxContext: 64,
      progress: false,
    });
    try {
      const reqs = [0, 1, 2, 3, 4].map((i) => request(`r${i}`, i % 2 ? P1 : P0, { maxTokens: 6 + i }));
      reqs.push(request("cancel-me", P0, { maxTokens: 40 }));
      let cancelled = false;
      const ev = await runAll(engine, reqs, (id, e, runner) => {
        if (id === "cancel-me" && e.ids.length && !cancelled) {
          cancelled = true;
          runner.cancel(id);
        }
      });
      for (let i = 0; i < 5; i++) {
        const want = (i % 2 ? GREEDY_P1 : GREEDY_P0).slice(0, 6 + i);
        assert.deepEqual(ids(ev.get(`r${i}`)!), want, `r${i}`);
      }
      assert.equal(finish(ev.get("cancel-me")!), "abort");
      assert.ok(ids(ev.get("cancel-me")!).length < 40);
      assert.equal(engine.kvBlocks.usedBlocks, 0);
    } finally {
      engine.destroy();
    }
  },
});

Deno.test({
  name: "EngineClient runs the engine in a Worker: greedy tokens, abort, stats; close() outlives its thread",
  ignore: NO_GPU,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const before = new Set(threads().keys());
    const client = new EngineClient({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 2,
      maxContext: 64,
      progress: false,
    });
    let workerThreads: number[] = [];
    try {
      assert.equal(client.state(), "loading");
      await client.ready();
      assert.equal(client.state(), "ready");
      assert.equal(client.info.maxContext, 64);
      const got: number[] = [];
      for await (const ev of client.generate(request("a", P0, { maxTokens: 10 }))) got.push(...ev.ids);
      assert.deepEqual(got, GREEDY_P0.slice(0, 10));
      const ac = new AbortController();
      const evs: TokenEvent[] = [];
      for await (const ev of client.generate(request("b", P0, { maxTokens: 40 }), ac.signal)) {
        evs.push(ev);
        if (ev.ids.length) ac.abort();
      }
      assert.equal(finish(evs), "abort", JSON.stringify(evs.at(-1)));
      // Stats arrive every 250 ms. One taken after the abort has counted b's tokens and runs nothing; wait
      // for it however long a loaded machine takes.
      const after = () => client.stats().running === 0 && client.stats().generationTokens > got.length;
      await waitFor(after, "stats taken after the abort");
      assert.equal(client.stats().kvBlocksUsed, 0);
      assert.equal(client.stats().waiting, 0);
      // Deno names a Worker's thread "worker-N"; the driver threads it starts inherit the name.
      workerThreads = [...threads()].filter(([id, name]) => !before.has(id) && /^worker-/.test(name))
        .map(([id]) => id);
      assert.ok(workerThreads.length >= 1, JSON.stringify([...threads()]));
    } finally {
      await client.close();
    }
    // The thread tore its WebGPU instance down (unloading the driver) before close() returned: a process
    // exiting right after cannot race that teardown.
    const alive = threads();
    assert.deepEqual(workerThreads.filter((id) => alive.has(id)), [], "the Worker's threads still run");
  },
});

/** This process's threads (Linux /proc): id -> name. */
function threads(): Map<number, string> {
  const out = new Map<number, string>();
  for (const e of Deno.readDirSync("/proc/self/task")) {
    try {
      out.set(Number(e.name), Deno.readTextFileSync(`/proc/self/task/${e.name}/comm`).trim());
    } catch {
      // ended while listed
    }
  }
  return out;
}

Deno.test({
  name: "Runner: prefix caching reuses prompt blocks (sequential and n > 1) and gives the same tokens",
  ignore: NO_GPU,
  async fn() {
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 4,
      maxContext: 96,
      progress: false,
    });
    try {
      const q = [...P1, ...P0.slice(1)]; // 38 tokens: two full blocks of 16
      const first = await runAll(engine, [request("q0", q, { maxTokens: 12 })]);
      assert.equal(first.get("q0")![0].cachedPromptTokens, 0);
      assert.ok(first.get("q0")![0].queuedMs! >= 0, "the first event says how long the request queued");
      let runner: Runner | null = null;
      const again = await runAll(engine, [
        request("q1", q, { maxTokens: 12 }),
        request("q2", q, { maxTokens: 12 }),
        request("q3", q, { maxTokens: 12 }),
      ], (_id, _ev, r) => (runner = r));
      // The metrics' prefix-cache counters: every prompt token looked up, two full blocks found each time.
      assert.equal(runner!.stats().prefixCacheQueries, 3 * q.length);
      assert.equal(runner!.stats().prefixCacheHits, 3 * 32);
      for (const id of ["q1", "q2", "q3"]) {
        assert.deepEqual(ids(again.get(id)!), ids(first.get("q0")!), id);
        assert.equal(again.get(id)![0].cachedPromptTokens, 32, `${id} reused both full blocks`);
      }
      // Two new identical prompts at once (n = 2): the second waits for the first's prefill and reuses it.
      const u = [...P0, ...P1.slice(1)];
      const pair = await runAll(engine, [
        request("u0", u, { maxTokens: 6 }),
        request("u1", u, { maxTokens: 6 }),
      ]);
      assert.deepEqual(
        [pair.get("u0")![0].cachedPromptTokens, pair.get("u1")![0].cachedPromptTokens],
        [0, 32],
      );
      assert.deepEqual(ids(pair.get("u1")!), ids(pair.get("u0")!));
      // A prompt that shares only the first block reuses one block, and still decodes like a cold run.
      const r = [...P1.slice(0, 16), ...P0];
      const warm = await runAll(engine, [request("r", r, { maxTokens: 10 })]);
      assert.equal(warm.get("r")![0].cachedPromptTokens, 16);
      const cold = await Engine.load({
        modelDir: DEFAULT_MODEL_DIR,
        maxSeqs: 1,
        maxContext: 96,
        progress: false,
        prefixCache: false,
      });
      try {
        const ref = await runAll(cold, [request("r", r, { maxTokens: 10 })]);
        assert.deepEqual(ids(warm.get("r")!), ids(ref.get("r")!));
        assert.equal(ref.get("r")![0].cachedPromptTokens, 0);
      } finally {
        cold.destroy();
      }
      assert.equal(engine.kvBlocks.usedBlocks, 0);
      assert.ok(engine.kvBlocks.cachedBlocks >= 2);
    } finally {
      engine.destroy();
    }
  },
});

Deno.test({
  name: "Runner: penalties and logit_bias on the GPU match the host reference applied to the engine's logits",
  ignore: NO_GPU,
  async fn() {
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 2,
      maxContext: 96,
      progress: false,
    });
    try {
      const V = engine.cfg.vocabSize;
      const bias: [number, number][] = [[GREEDY_P0[0], -100], [GREEDY_P0[2], 3], [GREEDY_P0[2], 1.5]];
      const sampling: SamplingParams = {
        ...GREEDY,
        presencePenalty: 0.4,
        frequencyPenalty: 0.6,
        repetitionPenalty: 1.3,
        logitBias: bias,
      };
      const n = 10;
      // A plain greedy sequence runs beside the penalized one: its tokens must stay the reference's.
      const ev = await runAll(engine, [
        request("pen", P0, { maxTokens: n, sampling }),
        request("plain", P0, { maxTokens: n }),
      ]);
      assert.deepEqual(ids(ev.get("plain")!), GREEDY_P0.slice(0, n));
      const got = ids(ev.get("pen")!);
      assert.equal(got.length, n);
      assert.notEqual(got[0], GREEDY_P0[0], "a -100 bias removes the greedy first token");
      // Rounds of 8 steps (counts updated inside a round) give the same tokens as rounds of 1.
      const long = await runAll(engine, [request("pen8", P0, { maxTokens: n, sampling })], undefined, {
        roundSteps: 8,
        busyRoundSteps: 8,
        targetRoundMs: 1e9,
      });
      assert.deepEqual(ids(long.get("pen8")!), got);
      // Host reference: the engine's own logits of prompt + tokens so far, then the reference penalties.
      const counts = penaltiesMarkPromptRef(new Uint32Array(V), P0, 0, V);
      let compared = 0;
      for (let i = 0; i < n; i++) {
        const logits = await engine.promptLogits([...P0, ...got.slice(0, i)], { lastOnly: true });
        const row = {
          presence: 0.4,
          frequency: 0.6,
          repetition: 1.3,
          biasCount: bias.length,
          biasOffset: 0,
          slot: 0,
          inputIndex: 0,
        };
        const out = penaltiesApplyRef({
          logits,
          rows: [row],
          counts,
          bias: bias.map(([id, value]) => ({ id, value })),
          vocab: V,
        });
        let best = 0;
        for (let v = 1; v < V; v++) if (out[v] > out[best]) best = v;
        const sorted = Float32Array.from(out).sort((a, b) => b - a);
        // Steps whose top two are within the logit tolerance may go either way; every other step must
        // match, and there must be enough of them for the comparison to mean something.
        if (sorted[0] - sorted[1] > 1e-2) {
          assert.equal(got[i], best, `step ${i}`);
          compared++;
        }
        counts[got[i]]++;
      }
      assert.ok(compared >= n - 2, `only ${compared} of ${n} steps had a clear winner`);
      assert.equal(engine.kvBlocks.usedBlocks, 0);
    } finally {
      engine.destroy();
    }
  },
});

Deno.test({
  name: "Runner: top logprobs (prefill and decode) agree with the sampled token and the engine's own logits",
  ignore: NO_GPU,
  async fn() {
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 2,
      maxContext: 96,
      progress: false,
    });
    try {
      const V = engine.cfg.vocabSize;
      const n = 6;
      const ev = await runAll(
        engine,
        [
          request("top", P1, { maxTokens: n, logprobs: 5 }),
          request("chosen-only", P0, { maxTokens: n, logprobs: 0 }),
        ],
        undefined,
        { roundSteps: 4, busyRoundSteps: 4, targetRoundMs: 1e9 },
      );
      assert.equal(ev.get("chosen-only")!.some((e) => e.topLogprobs), false);
      const got = ids(ev.get("top")!);
      assert.deepEqual(got, GREEDY_P1.slice(0, n));
      const lps = ev.get("top")!.flatMap((e) => e.logprobs ?? []);
      const tops = ev.get("top")!.flatMap((e) => e.topLogprobs ?? []);
      assert.equal(tops.length, n);
      for (let i = 0; i < n; i++) {
        assert.equal(tops[i].length, 5);
        assert.equal(tops[i][0][0], got[i], `step ${i}: greedy picks the most likely token`);
        assert.equal(tops[i][0][1], lps[i], `step ${i}: the same logprob as the sampler reported`);
        for (let r = 1; r < 5; r++) assert.ok(tops[i][r][1] <= tops[i][r - 1][1]);
        // Host log-softmax of the engine's logits for the same prefix.
        const logits = await engine.promptLogits([...P1, ...got.slice(0, i)], { lastOnly: true });
        let max = -Infinity;
        for (let v = 0; v < V; v++) max = Math.max(max, logits[v]);
        let sum = 0;
        for (let v = 0; v < V; v++) sum += Math.exp(logits[v] - max);
        for (const [id, lp] of tops[i]) {
          const want = logits[id] - max - Math.log(sum);
          assert.ok(Math.abs(lp - want) < 5e-3, `step ${i} id ${id}: ${lp} vs ${want}`);
        }
      }
    } finally {
      engine.destroy();
    }
  },
});

Deno.test({
  name: "Runner: a full KV cache preempts and resumes sequences; greedy and seeded outputs are unchanged",
  ignore: NO_GPU,
  async fn() {
    const opts = {
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 4,
      maxContext: 64,
      maxRoundSteps: 4,
      progress: false,
    };
    const seeded: SamplingParams = { temperature: 0.8, topP: 0.95, topK: 0, minP: 0, seed: 11 };
    const reqs = () => [
      request("a", P0, { maxTokens: 40 }),
      request("b", P1, { maxTokens: 40, sampling: seeded }),
      request("c", P0, { maxTokens: 40, sampling: { ...seeded, seed: 12 }, logprobs: 0 }),
      request("d", P1, { maxTokens: 40 }),
    ];
    // Roomy: every sequence fits at once. Tight: 10 blocks of 16 tokens for four sequences of up to 60.
    const roomy = await Engine.load({ ...opts, kvTokens: 4096 });
    let want: Map<string, TokenEvent[]>;
    try {
      want = await runAll(roomy, reqs());
    } finally {
      roomy.destroy();
    }
    const tight = await Engine.load({ ...opts, kvTokens: 160, prefixCache: true });
    try {
      let runner: Runner | null = null;
      const got = await runAll(tight, reqs(), (_id, _ev, r) => (runner = r));
      assert.ok(runner!.preemptions > 0, "the tight cache forced at least one preemption");
      assert.equal(runner!.stats().preemptions, runner!.preemptions);
      for (const id of ["a", "b", "c", "d"]) {
        assert.deepEqual(ids(got.get(id)!), ids(want.get(id)!), id);
        assert.equal(got.get(id)!.at(-1)!.finishReason, "length");
      }
      assert.deepEqual(ids(got.get("a")!).slice(0, 32), GREEDY_P0);
      assert.equal(tight.kvBlocks.usedBlocks, 0);
    } finally {
      tight.destroy();
    }
  },
});

/** A prompt of `n` tokens cut from the reference prompts (repeated): long enough for many prefill batches. */
function longPrompt(n: number): number[] {
  const body = [...P0.slice(1), ...P1.slice(1)];
  return [P0[0], ...Array.from({ length: n - 1 }, (_, i) => body[i % body.length])];
}

Deno.test({
  name: "Runner: during a long prefill, messages land within one batch: cancels (n > 1 and prefix sharers " +
    "too) and a short request that gets its first token before the long prompt is done",
  ignore: NO_GPU,
  async fn() {
    const BATCH = 8;
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 4,
      maxContext: 128,
      maxBatchTokens: BATCH,
      progress: false,
    });
    // Which sequences each prefill batch served, in order.
    const batches: string[][] = [];
    const prefill = engine.prefill.bind(engine);
    engine.prefill = (ids, maxBatches) => {
      batches.push([...ids]);
      return prefill(ids, maxBatches);
    };
    const events = new Map<string, TokenEvent[]>();
    const finished = (id: string) => finish(events.get(id) ?? []) !== undefined;
    const runner = new Runner(engine, (id, ev) => {
      if (!events.has(id)) events.set(id, []);
      events.get(id)!.push(ev);
    });
    const loop = runner.run();
    try {
      const prompt = longPrompt(120); // 15 batches of 8
      // Two choices of one request (n = 2): the second waits to share the first's prompt blocks.
      runner.submit(request("L-0", prompt, { maxTokens: 4 }));
      runner.submit(request("L-1", prompt, { maxTokens: 4 }));
      const served = (id: string) => batches.filter((b) => b.includes(id)).length;
      await waitFor(() => served("L-0") >= 2, "two batches of the long prompt");
      // A short request arriving now is served in the next batch, before the long prompt completes.
      runner.submit(request("S", P0.slice(0, 5), { maxTokens: 1 }));
      await waitFor(() => finished("S"), "the short request");
      assert.equal(ids(events.get("S")!).length, 1);
      assert.ok(!events.has("L-0"), "the long prompt was still prefilling when the short one finished");
      assert.ok(served("L-0") < 15);
      assert.deepEqual(
        [runner.stats().running, runner.stats().waiting],
        [1, 1],
        "live gauges: L-0 runs, L-1 waits",
      );
      // Cancel both choices: they end without a token, within one more batch.
      const before = served("L-0");
      runner.cancel("L-0");
      runner.cancel("L-1");
      await waitFor(() => finished("L-0") && finished("L-1"), "both choices to end");
      for (const id of ["L-0", "L-1"]) {
        assert.deepEqual(events.get(id)!.map((e) => [e.ids, e.finishReason]), [[[], "abort"]], id);
      }
      assert.ok(served("L-0") <= before + 1, `prefill went on for ${served("L-0") - before} batches`);
      assert.equal(served("L-1"), 0, "the sharer never prefilled");
      await waitFor(() => runner.stats().running === 0, "the runner to settle");
      assert.equal(engine.kvBlocks.usedBlocks, 0, "no block held by a sequence");
    } finally {
      runner.close();
      await loop;
      engine.destroy();
    }
  },
});
