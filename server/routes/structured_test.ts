// Structured outputs and tool calls through the routes, on the fake engine with a real GrammarPool over
// the byte codec: the fake follows its script while the grammar allows it and otherwise walks the grammar
// at random from the request's seed, so every seed gives a different well-formed output. Checked: JSON
// that parses and validates for many seeds (both routes), tool calls in OpenAI's shape with
// finish_reason "tool_calls", streamed deltas that reassemble to the non-streamed result, tools rendered
// into the prompt, "auto" parsing, and schema refusals and a slow compile that leave other requests alone.

import assert from "node:assert/strict";
import { z } from "zod";
import { createApp } from "../app.ts";
import { GrammarPool } from "../../grammar/mod.ts";
import { DEFAULT_MODEL_DIR } from "../../engine/mod.ts";
import { TokenizerCodec } from "../../text/mod.ts";
import { byteCodec, byteIds, FakeEngine } from "../../test/support/mod.ts";
import { CHAT, type Json, readSse, setup, type TestServer } from "../../test/support/server.ts";

/** Seconds of compiling over a real vocabulary: an enum of 40000 distinct strings. */
const SLOW_SCHEMA = {
  enum: Array.from({ length: 40000 }, (_, i) => `item-${i}-${((i * 2654435761) >>> 0).toString(36)}`),
};

const ITEM = z.object({
  title: z.string().max(10),
  qty: z.number().int().min(1).max(50),
  kind: z.enum(["book", "tool"]),
  note: z.string().max(6).nullable(),
});
const ITEM_FORMAT = { type: "json_schema", json_schema: { name: "item", schema: z.toJSONSchema(ITEM) } };

const WEATHER = z.object({ city: z.string().max(8), unit: z.enum(["c", "f"]) });
const TOOLS = [
  { type: "function", function: { name: "get_weather", parameters: z.toJSONSchema(WEATHER) } },
  { type: "function", function: { name: "get_time", description: "Current time" } },
];

async function withServer(fn: (t: TestServer) => Promise<void>, script = "no json here"): Promise<void> {
  const t = setup({ script: () => byteIds(script), delayMs: 0, maxContext: 4096 });
  try {
    await fn(t);
  } finally {
    await t.server.shutdown(100);
  }
}

/** Tool calls rebuilt from streamed chunks the way the SDKs do; also the finish reason and content. */
function fromStream(events: unknown[]) {
  const calls: { id: string; name: string; arguments: string }[] = [];
  let content = "";
  let finish: string | null = null;
  for (const e of events) {
    if (e === "[DONE]") continue;
    const choice = (e as Json).choices[0];
    if (!choice) continue;
    content += choice.delta.content ?? "";
    for (const d of choice.delta.tool_calls ?? []) {
      if (d.id) {
        assert.equal(d.index, calls.length);
        assert.equal(d.type, "function");
        assert.equal(d.function.arguments, "", "a call's first delta has empty arguments");
        calls.push({ id: d.id, name: d.function.name, arguments: "" });
      } else {
        assert.equal(d.function.name, undefined, "name only on the first delta");
        calls[d.index].arguments += d.function.arguments;
      }
    }
    finish = choice.finish_reason ?? finish;
  }
  return { calls, content, finish };
}

Deno.test("response_format json_schema: every seed's output parses and validates, streamed or not", async () => {
  await withServer(async (t) => {
    for (let seed = 1; seed <= 25; seed++) {
      const body = { ...CHAT, response_format: ITEM_FORMAT, seed, max_tokens: 300 };
      const res = await t.post("/v1/chat/completions", body);
      const json: Json = await res.json();
      assert.equal(res.status, 200, JSON.stringify(json));
      const choice = json.choices[0];
      assert.equal(choice.finish_reason, "stop", choice.message.content);
      ITEM.parse(JSON.parse(choice.message.content));
      if (seed % 5 === 0) {
        const streamed = fromStream(
          await readSse(await t.post("/v1/chat/completions", { ...body, stream: true })),
        );
        assert.equal(streamed.content, choice.message.content);
        assert.equal(streamed.finish, "stop");
      }
    }
    // Each choice had a matcher of its own, and the engine saw a constrained request.
    assert.ok(t.engine.requests.every((r) => r.constraint !== undefined));
  });
});

Deno.test("response_format json_object on both routes: a JSON object every time", async () => {
  await withServer(async (t) => {
    const outputs = new Set<string>();
    for (let seed = 1; seed <= 15; seed++) {
      const chat: Json = await (await t.post("/v1/chat/completions", {
        ...CHAT,
        response_format: { type: "json_object" },
        seed,
        max_tokens: 300,
      })).json();
      const cmpl: Json = await (await t.post("/v1/completions", {
        model: "fake",
        prompt: "Hi",
        response_format: { type: "json_object" },
        seed,
        max_tokens: 300,
      })).json();
      for (const text of [chat.choices[0].message.content, cmpl.choices[0].text]) {
        const value = JSON.parse(text);
        assert.ok(value !== null && typeof value === "object" && !Array.isArray(value), text);
        outputs.add(text);
      }
    }
    assert.ok(outputs.size > 5, "different seeds walk the grammar differently");
  });
});

Deno.test("tool_choice required: calls in OpenAI's shape; deltas reassemble to the non-streamed calls", async () => {
  await withServer(async (t) => {
    let parallel = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const body = { ...CHAT, tools: TOOLS, tool_choice: "required", seed, max_tokens: 300 };
      const json: Json = await (await t.post("/v1/chat/completions", body)).json();
      const choice = json.choices[0];
      assert.equal(choice.finish_reason, "tool_calls", JSON.stringify(choice));
      assert.equal(choice.message.content, null);
      const calls = choice.message.tool_calls;
      assert.ok(calls.length >= 1);
      if (calls.length > 1) parallel++;
      for (const call of calls) {
        assert.match(call.id, /^call_[0-9a-f]{24}$/);
        assert.equal(call.type, "function");
        const args = JSON.parse(call.function.arguments);
        if (call.function.name === "get_weather") WEATHER.parse(args);
        else assert.deepEqual([call.function.name, args], ["get_time", {}]);
      }
      assert.equal(new Set(calls.map((c: Json) => c.id)).size, calls.length);
      const streamed = fromStream(
        await readSse(await t.post("/v1/chat/completions", { ...body, stream: true })),
      );
      assert.equal(streamed.finish, "tool_calls");
      assert.equal(streamed.content, "");
      assert.deepEqual(
        streamed.calls.map((c) => [c.name, c.arguments]),
        calls.map((c: Json) => [c.function.name, c.function.arguments]),
      );
    }
    assert.ok(parallel > 0, "parallel_tool_calls lets a turn hold several calls");
    // The functions reached the prompt (the fake template writes them as JSON).
    const prompt = new TextDecoder().decode(
      new Uint8Array(t.engine.requests[0].promptIds.filter((i) => i < 256)),
    );
    assert.ok(prompt.includes('"name":"get_weather"'), prompt);
  });
});

Deno.test("a named tool_choice and parallel_tool_calls false: exactly one call of that function", async () => {
  await withServer(async (t) => {
    for (let seed = 1; seed <= 10; seed++) {
      const json: Json = await (await t.post("/v1/chat/completions", {
        ...CHAT,
        tools: TOOLS,
        tool_choice: { type: "function", function: { name: "get_weather" } },
        seed,
        max_tokens: 300,
      })).json();
      const calls = json.choices[0].message.tool_calls;
      assert.equal(calls.length, 1);
      assert.equal(calls[0].function.name, "get_weather");
      WEATHER.parse(JSON.parse(calls[0].function.arguments));
      const single: Json = await (await t.post("/v1/chat/completions", {
        ...CHAT,
        tools: TOOLS,
        tool_choice: "required",
        parallel_tool_calls: false,
        seed,
        max_tokens: 300,
      })).json();
      assert.equal(single.choices[0].message.tool_calls.length, 1);
    }
  });
});

Deno.test("tool_choice auto: a call in the model's text becomes tool_calls, other text stays content", async () => {
  const call = '{"name": "get_weather", "parameters": {"city": "Rome", "unit": "c"}}';
  await withServer(async (t) => {
    const json: Json = await (await t.post("/v1/chat/completions", { ...CHAT, tools: TOOLS })).json();
    assert.equal(json.choices[0].finish_reason, "tool_calls");
    assert.deepEqual(json.choices[0].message.tool_calls[0].function, {
      name: "get_weather",
      arguments: '{"city":"Rome","unit":"c"}',
    });
    assert.equal(t.engine.requests[0].constraint, undefined, "auto is not constrained");
    const streamed = fromStream(
      await readSse(await t.post("/v1/chat/completions", { ...CHAT, tools: TOOLS, stream: true })),
    );
    assert.deepEqual(streamed.calls.map((c) => [c.name, c.arguments]), [[
      "get_weather",
      '{"city":"Rome","unit":"c"}',
    ]]);
    assert.equal(streamed.finish, "tool_calls");
    // tool_choice none: the text is content.
    const none: Json =
      await (await t.post("/v1/chat/completions", { ...CHAT, tools: TOOLS, tool_choice: "none" })).json();
    assert.equal(none.choices[0].message.content, call);
    assert.equal(none.choices[0].finish_reason, "stop");
  }, call);
  await withServer(async (t) => {
    const json: Json = await (await t.post("/v1/chat/completions", { ...CHAT, tools: TOOLS })).json();
    assert.equal(json.choices[0].message.content, "Plain words");
    assert.equal(json.choices[0].message.tool_calls, undefined);
    assert.equal(json.choices[0].finish_reason, "stop");
  }, "Plain words");
});

Deno.test("a schema the grammar engine refuses is a 400 naming it; the server goes on", async () => {
  await withServer(async (t) => {
    const res = await t.post("/v1/chat/completions", {
      ...CHAT,
      response_format: {
        type: "json_schema",
        json_schema: { name: "w", schema: { type: "string", pattern: "^a\\b" } },
      },
    });
    const body: Json = await res.json();
    assert.equal(res.status, 400);
    assert.equal(body.error.param, "response_format.json_schema.schema");
    assert.match(
      body.error.message,
      /The grammar engine refused the schema in "response_format.json_schema.schema": ./,
    );
    assert.equal(t.engine.requests.length, 0);
    const ok = await t.post("/v1/chat/completions", {
      ...CHAT,
      response_format: { type: "json_object" },
      seed: 3,
    });
    assert.equal(ok.status, 200);
  });
});

Deno.test("a schema that compiles slowly does not hold up other requests, and times out with a 400", async () => {
  // Over the embedded model's 4032-token vocabulary an enum of 40000 strings takes seconds to compile.
  const codec = await TokenizerCodec.fromDir(DEFAULT_MODEL_DIR);
  const grammars = new GrammarPool({
    vocabulary: codec.vocabulary(),
    vocabSize: codec.vocabSize,
    compileTimeoutMs: 1000,
  });
  const server = createApp({
    engine: new FakeEngine({ delayMs: 0, maxContext: 4096 }),
    codec: byteCodec,
    grammars,
    config: { servedModelNames: ["fake"] },
    log: () => {},
  });
  const post = async (body: unknown) =>
    await server.app.fetch(
      new Request("http://localhost/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      }),
    );
  try {
    const t0 = performance.now();
    const slow = post({
      ...CHAT,
      response_format: {
        type: "json_schema",
        json_schema: { name: "s", schema: SLOW_SCHEMA },
      },
    }).then((r) => ({ r, ms: performance.now() - t0 }));
    const others: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await post(CHAT);
      assert.equal(res.status, 200);
      await res.json();
      others.push(performance.now() - t0);
    }
    const { r, ms } = await slow;
    const body: Json = await r.json();
    assert.equal(r.status, 400);
    assert.match(body.error.message, /took longer than 1 s: simplify the schema/);
    assert.ok(
      Math.max(...others) < ms,
      `plain requests done by ${others.map(Math.round)} ms, the slow one at ${ms}`,
    );
  } finally {
    await server.shutdown(100);
  }
});
