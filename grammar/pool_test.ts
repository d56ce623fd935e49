// GrammarPool over the byte codec's vocabulary (one token per byte): masks through the engine's own
// TokenConstraint, random walks that must always parse and validate, the tool-call format, the cache and
// eviction, errors as GrammarError, and a slow compile that leaves other grammars' matchers answering.

import assert from "node:assert/strict";
import { z } from "zod";
import { type Grammar, GrammarError, GrammarPool, type GrammarPoolOptions, type GrammarSpec } from "./mod.ts";
import { DEFAULT_MODEL_DIR } from "../engine/mod.ts";
import { TokenizerCodec } from "../text/mod.ts";
import { maskAllows, TokenConstraint } from "../engine/constraint.ts";
import { byteCodec, byteIds, FAKE_EOS, pickAllowed, seededRandom } from "../test/support/mod.ts";

const STOP = [FAKE_EOS];

function pool(opts: Partial<GrammarPoolOptions> = {}): GrammarPool {
  return new GrammarPool({ vocabulary: byteCodec.vocabulary(), vocabSize: byteCodec.vocabSize, ...opts });
}

/** Generates under `grammar` by a seeded random walk; returns the text and whether a stop token ended it. */
async function walk(
  grammar: Grammar,
  seed: number,
  maxTokens = 400,
): Promise<{ text: string; ended: boolean }> {
  const handle = grammar.matcher(STOP);
  const constraint = new TokenConstraint(handle.port);
  const rnd = seededRandom(seed);
  const bytes: number[] = [];
  try {
    for (let i = 0; i < maxTokens; i++) {
      const id = pickAllowed(await constraint.mask(), rnd);
      if (STOP.includes(id)) return { text: new TextDecoder().decode(new Uint8Array(bytes)), ended: true };
      bytes.push(id);
      constraint.advance([id]);
    }
    return { text: new TextDecoder().decode(new Uint8Array(bytes)), ended: false };
  } finally {
    constraint.close();
    handle.release();
  }
}

const PERSON = z.object({
  name: z.string().max(8),
  age: z.number().int().min(0).max(130),
  role: z.enum(["admin", "user"]),
  nick: z.string().max(4).nullable(),
  tags: z.array(z.string().max(3)).max(2),
  verified: z.boolean().optional(),
});

Deno.test("GrammarPool: every random walk under a zod schema parses and validates", async () => {
  const p = pool();
  try {
    const grammar = await p.compile({
      type: "json_schema",
      schema: { schema: z.toJSONSchema(PERSON), param: "response_format" },
    });
    let ended = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const { text, ended: done } = await walk(grammar, seed);
      if (!done) continue;
      ended++;
      const parsed = PERSON.safeParse(JSON.parse(text));
      assert.ok(parsed.success, `seed ${seed}: ${text}: ${parsed.error}`);
    }
    assert.ok(ended >= 30, `only ${ended} of 40 walks ended`);
  } finally {
    await p.close();
  }
});

Deno.test("GrammarPool: masks follow the grammar token by token, and only stop tokens end it", async () => {
  const p = pool();
  try {
    const grammar = await p.compile({
      type: "json_schema",
      schema: {
        schema: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] },
        param: "x",
      },
    });
    const handle = grammar.matcher(STOP);
    const c = new TokenConstraint(handle.port);
    const text = '{"ok": true}';
    for (const id of byteIds(text)) {
      const mask = await c.mask();
      assert.ok(maskAllows(mask, id), `"${String.fromCharCode(id)}" is allowed`);
      assert.ok(!maskAllows(mask, FAKE_EOS), "no stop before the end");
      // One line with ", " and ": ": no free whitespace.
      if (id !== 32) assert.ok(!maskAllows(mask, 32) && !maskAllows(mask, 10), "no free whitespace");
      c.advance([id]);
    }
    const end = await c.mask();
    const allowed = Array.from({ length: byteCodec.vocabSize }, (_, i) => i).filter((i) =>
      maskAllows(end, i)
    );
    assert.deepEqual(allowed, STOP);
    // A token the mask refused is reported, not accepted.
    c.advance([byteIds("x")[0]]);
    await assert.rejects(c.mask(), /Token 120 does not continue the grammar/);
    c.close();
    handle.release();
  } finally {
    await p.close();
  }
});

Deno.test("GrammarPool: json_object allows any object and nothing else", async () => {
  const p = pool();
  try {
    const grammar = await p.compile({ type: "json_object" });
    for (let seed = 1; seed <= 20; seed++) {
      const { text, ended } = await walk(grammar, seed);
      if (!ended) continue;
      const value = JSON.parse(text);
      assert.equal(typeof value, "object");
      assert.ok(value !== null && !Array.isArray(value), text);
    }
  } finally {
    await p.close();
  }
});

Deno.test("GrammarPool: tool calls take the Llama 3.1 JSON format, one or several", async () => {
  const p = pool();
  const weather = z.object({ city: z.string().max(6), unit: z.enum(["c", "f"]) });
  const functions = [
    {
      name: "get_weather",
      parameters: { schema: z.toJSONSchema(weather), param: "tools[0].function.parameters" },
    },
    { name: "now", parameters: null },
  ];
  try {
    for (const parallel of [false, true]) {
      const grammar = await p.compile({ type: "tool_calls", functions, parallel });
      const counts = new Set<number>();
      for (let seed = 1; seed <= 30; seed++) {
        const { text, ended } = await walk(grammar, seed);
        if (!ended) continue;
        const calls = text.split("; ").map((c) => JSON.parse(c));
        counts.add(calls.length);
        for (const call of calls) {
          assert.deepEqual(Object.keys(call), ["name", "parameters"], text);
          if (call.name === "get_weather") weather.parse(call.parameters);
          else assert.deepEqual(call, { name: "now", parameters: {} });
        }
      }
      if (!parallel) assert.deepEqual([...counts], [1]);
      else assert.ok([...counts].some((n) => n > 1), `parallel walks made ${[...counts]} calls`);
    }
  } finally {
    await p.close();
  }
});

Deno.test("GrammarPool: the same spec compiles once; idle grammars beyond maxGrammars are dropped", async () => {
  const p = pool({ maxGrammars: 1, graceMs: 0 });
  try {
    const spec: GrammarSpec = { type: "json_schema", schema: { schema: { type: "integer" }, param: "x" } };
    const a = await p.compile(spec);
    assert.equal(await p.compile(spec), a);
    assert.equal(p.compiles, 1);
    const held = a.matcher(STOP);
    await p.compile({ type: "json_object" });
    assert.equal(p.compiles, 2);
    // The integer grammar has a matcher in use, so both stay; released, it goes.
    assert.equal(p.workers, 3);
    held.release();
    held.port.close();
    assert.equal(p.workers, 2);
  } finally {
    await p.close();
  }
});

Deno.test("GrammarPool: schemas outside the subset and ones xgrammar refuses are GrammarErrors", async () => {
  const p = pool();
  try {
    await assert.rejects(
      p.compile({
        type: "json_schema",
        schema: { schema: { type: "array", uniqueItems: true }, param: "response_format.json_schema.schema" },
      }),
      (e) => {
        assert.ok(e instanceof GrammarError);
        assert.equal(e.param, "response_format.json_schema.schema");
        assert.equal(e.pointer, "/uniqueItems");
        assert.match(
          e.message,
          /Unsupported JSON schema in "response_format.json_schema.schema" at "\/uniqueItems": keyword "uniqueItems"/,
        );
        return true;
      },
    );
    // A pattern JavaScript accepts but xgrammar's regex converter does not: its own message comes back.
    await assert.rejects(
      p.compile({
        type: "json_schema",
        schema: { schema: { type: "string", pattern: "^a\\b$" }, param: "s" },
      }),
      (e) => e instanceof GrammarError && /The grammar engine refused the schema in "s": .+/.test(e.message),
    );
    // The pool still works after a Worker died on a refused grammar.
    const ok = await p.compile({ type: "json_schema", schema: { schema: { type: "boolean" }, param: "s" } });
    const { text } = await walk(ok, 1);
    assert.ok(text === "true" || text === "false", text);
  } finally {
    await p.close();
  }
});

Deno.test("GrammarPool: a slow compile neither stalls another grammar's masks nor outlives its timeout", async () => {
  // The embedded model's 4032-token vocabulary: long strings take seconds to compile over it.
  const codec = await TokenizerCodec.fromDir(DEFAULT_MODEL_DIR);
  const p = new GrammarPool({
    vocabulary: codec.vocabulary(),
    vocabSize: codec.vocabSize,
    compileTimeoutMs: 600,
  });
  try {
    const fast = await p.compile({ type: "json_object" });
    const handle = fast.matcher(codec.eosIds);
    const c = new TokenConstraint(handle.port);
    await c.mask();
    // An enum of 40000 strings takes seconds to compile: past the timeout, it fails with a GrammarError.
    const values = Array.from(
      { length: 40000 },
      (_, i) => `item-${i}-${((i * 2654435761) >>> 0).toString(36)}`,
    );
    const slow = p.compile({
      type: "json_schema",
      schema: { schema: { enum: values }, param: "response_format" },
    });
    const slowDone = slow.then(() => "compiled", (e) => e);
    // Meanwhile the other grammar's matcher answers every request at once.
    const latencies: number[] = [];
    let mask = await c.mask();
    for (let step = 0; step < 12; step++) {
      const t0 = performance.now();
      // The first allowed token that is not a stop token.
      let id = 3;
      while (!maskAllows(mask, id)) id++;
      c.advance([id]);
      mask = await c.mask();
      latencies.push(performance.now() - t0);
    }
    const err = await slowDone;
    assert.ok(err instanceof GrammarError, String(err));
    assert.match(err.message, /took longer than 0.6 s/);
    assert.ok(Math.max(...latencies) < 200, `mask latencies ${latencies.map((l) => l.toFixed(1))} ms`);
    c.close();
    handle.release();
  } finally {
    await p.close();
  }
});

Deno.test("a grammar engine that cannot start: prewarm() rejects (the caller logs it), no Worker is kept, and a compile fails with the reason instead of taking the process down", async () => {
  // An encoding xgrammar does not know makes its tokenizer set-up fail inside the Worker.
  const p = new GrammarPool({
    vocabulary: { tokens: byteCodec.vocabulary().tokens, encoding: "unknown" as "byte_level" },
    vocabSize: byteCodec.vocabSize,
  });
  try {
    await assert.rejects(p.prewarm(), /Cannot start the grammar engine/);
    assert.equal(p.workers, 0, "the failed spare is not kept");
    await assert.rejects(p.compile({ type: "json_object" }), /grammar engine/);
  } finally {
    await p.close();
  }
});
