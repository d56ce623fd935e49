// Constrained decoding on the embedded model: a sequence with a token constraint samples only what each
// mask allows (greedy picks the best allowed token of the model's own logits), advances one token per
// round while its unconstrained neighbour keeps multi-step rounds and its reference tokens, ends at a stop
// token the mask allows even before min_tokens, and fails cleanly when its matcher does. Then the Runner
// with a real grammar (GrammarPool over the model's vocabulary): every output parses and validates.

import assert from "node:assert/strict";
import { z } from "zod";
import { Engine } from "./engine.ts";
import { DEFAULT_MODEL_DIR } from "./defaults.ts";
import { maskAllows, TokenConstraint } from "./constraint.ts";
import type { GenerateRequest, SamplingParams, TokenEvent } from "./types.ts";
import { GrammarPool } from "../grammar/mod.ts";
import { TokenizerCodec } from "../text/mod.ts";
import { noGpu, seededRandom } from "../test/support/mod.ts";
import { runAll as runRunner } from "../test/support/runner.ts";

const NO_GPU = await noGpu();

const ref = JSON.parse(await Deno.readTextFile(`${DEFAULT_MODEL_DIR}/reference.json`));
const P0: number[] = ref.prompts.p0_genesis.ids;
const P1: number[] = ref.prompts.p1_chat.ids;
const GREEDY_P0: number[] = ref.fp32_runtime.greedy_32.p0_genesis;
const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };
const EOS = 2;

/** A matcher stand-in: a random eighth of the vocabulary each step (never EOS), then only EOS. */
function scriptedMatcher(vocab: number, seed: number, stopAfter: number) {
  const { port1, port2 } = new MessageChannel();
  const rnd = seededRandom(seed);
  const masks: Uint32Array[] = [];
  let accepted = 0;
  port1.onmessage = (e: MessageEvent<{ accept: number[] }>) => {
    accepted += e.data.accept.length;
    const mask = new Uint32Array(Math.ceil(vocab / 32));
    if (accepted >= stopAfter) mask[EOS >> 5] |= 1 << (EOS & 31);
    else {
      for (let t = 3; t < vocab; t++) if (rnd() < 0.125) mask[t >> 5] |= 1 << (t & 31);
    }
    masks.push(mask.slice());
    port1.postMessage({ mask }, [mask.buffer]);
  };
  return { port: port2, masks, close: () => port1.close() };
}

/** Every sequence's events, with constrained rounds beside 8-step ones. */
function runAll(engine: Engine, reqs: GenerateRequest[]): Promise<Map<string, TokenEvent[]>> {
  return runRunner(engine, reqs, undefined, { roundSteps: 8, busyRoundSteps: 8 });
}

const idsOf = (evs: TokenEvent[]) => evs.flatMap((e) => e.ids);

Deno.test({
  name:
    "a constrained sequence samples the best allowed token, one per round, beside unchanged multi-step rounds",
  ignore: NO_GPU,
  async fn() {
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 4,
      maxContext: 128,
      progress: false,
    });
    const V = engine.cfg.vocabSize;
    const matcher = scriptedMatcher(V, 7, 8);
    try {
      const ev = await runAll(engine, [
        { id: "free", promptIds: P0, maxTokens: 16, sampling: GREEDY, stopTokenIds: [] },
        {
          id: "bound",
          promptIds: P1,
          maxTokens: 40,
          sampling: GREEDY,
          stopTokenIds: [EOS],
          minTokens: 30,
          constraint: matcher.port,
        },
      ]);
      // The unconstrained sequence: the reference tokens, in rounds of several steps.
      assert.deepEqual(idsOf(ev.get("free")!), GREEDY_P0.slice(0, 16));
      assert.ok(ev.get("free")!.some((e) => e.ids.length > 1), "multi-step rounds");
      // The constrained one: one token per event, each allowed by its mask, then EOS (before min_tokens).
      const bound = ev.get("bound")!;
      const got = idsOf(bound);
      assert.equal(got.length, 8);
      assert.ok(bound.every((e) => e.ids.length <= 1));
      assert.equal(bound.at(-1)!.finishReason, "stop");
      got.forEach((t, i) => assert.ok(maskAllows(matcher.masks[i], t), `token ${i} (${t}) allowed`));
      // Greedy under a mask: the best allowed token of the model's logits at that position.
      const logits = await engine.promptLogits([...P1, ...got]);
      for (let i = 0; i < got.length; i++) {
        const row = logits.subarray((P1.length - 1 + i) * V, (P1.length + i) * V);
        let best = -1;
        for (let t = 0; t < V; t++) {
          if (maskAllows(matcher.masks[i], t) && (best < 0 || row[t] > row[best])) best = t;
        }
        assert.equal(got[i], best, `position ${i}`);
      }
      assert.equal(engine.kvBlocks.usedBlocks, 0);
    } finally {
      matcher.close();
      engine.destroy();
    }
  },
});

Deno.test({
  name: "a constrained sequence whose matcher fails finishes with an error; its neighbour goes on",
  ignore: NO_GPU,
  async fn() {
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 4,
      maxContext: 96,
      progress: false,
    });
    const { port1, port2 } = new MessageChannel();
    let asked = 0;
    port1.onmessage = () => {
      if (++asked < 3) {
        const mask = new Uint32Array(Math.ceil(engine.cfg.vocabSize / 32)).fill(0xffffffff);
        port1.postMessage({ mask }, [mask.buffer]);
      } else port1.postMessage({ error: "Token 5 does not continue the grammar" });
    };
    try {
      const ev = await runAll(engine, [
        { id: "free", promptIds: P0, maxTokens: 10, sampling: GREEDY, stopTokenIds: [] },
        { id: "bad", promptIds: P1, maxTokens: 10, sampling: GREEDY, stopTokenIds: [], constraint: port2 },
      ]);
      assert.deepEqual(idsOf(ev.get("free")!), GREEDY_P0.slice(0, 10));
      const bad = ev.get("bad")!.at(-1)!;
      assert.equal(bad.finishReason, "error");
      assert.match(bad.error!, /Constrained decoding failed: Token 5 does not continue the grammar/);
      assert.equal(idsOf(ev.get("bad")!).length, 2);
      assert.equal(engine.kvBlocks.usedBlocks, 0);
    } finally {
      port1.close();
      engine.destroy();
    }
  },
});

const ITEM = z.object({ name: z.string().max(6), count: z.number().int().min(0).max(99), ok: z.boolean() });

Deno.test({
  name: "Runner + GrammarPool on the embedded model: every seeded output parses and validates",
  ignore: NO_GPU,
  sanitizeResources: false,
  async fn() {
    const engine = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 8,
      maxContext: 160,
      progress: false,
    });
    const codec = await TokenizerCodec.fromDir(DEFAULT_MODEL_DIR);
    const pool = new GrammarPool({ vocabulary: codec.vocabulary(), vocabSize: engine.cfg.vocabSize });
    try {
      const grammar = await pool.compile({
        type: "json_schema",
        schema: { schema: z.toJSONSchema(ITEM), param: "s" },
      });
      const handles = Array.from({ length: 6 }, () => grammar.matcher([EOS]));
      const reqs: GenerateRequest[] = handles.map((h, i) => ({
        id: `s${i}`,
        promptIds: P1,
        maxTokens: 64,
        sampling: { ...GREEDY, temperature: 1, seed: 100 + i },
        stopTokenIds: [EOS],
        constraint: h.port,
      }));
      const ev = await runAll(engine, reqs);
      for (const [id, evs] of ev) {
        const text = codec.decode(idsOf(evs), { skipSpecialTokens: true });
        assert.equal(evs.at(-1)!.finishReason, "stop", `${id}: ${text}`);
        const parsed = ITEM.safeParse(JSON.parse(text));
        assert.ok(parsed.success, `${id}: ${text}`);
      }
      for (const h of handles) h.release();
    } finally {
      await pool.close();
      engine.destroy();
    }
  },
});

Deno.test("a matcher reply queued behind an expired timer (the thread was blocked) is taken, not a timeout", async () => {
  const ch = new MessageChannel();
  ch.port2.onmessage = () => ch.port2.postMessage({ mask: Uint32Array.of(5) });
  const c = new TokenConstraint(ch.port1, 50);
  // Block the thread past the timeout, as a readback waiting for the GPU queue does.
  const end = performance.now() + 300;
  while (performance.now() < end) { /* busy */ }
  assert.deepEqual([...await c.mask()], [5]);
  c.close();
  ch.port2.close();
});
