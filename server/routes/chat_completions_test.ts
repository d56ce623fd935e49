import assert from "node:assert/strict";
import { CHAT, type Json, readSse, setup } from "../../test/support/server.ts";
import { byteIds, FAKE_EOT } from "../../test/support/mod.ts";

Deno.test("chat: non-streaming response has OpenAI's shape and usage", async () => {
  const t = setup();
  const res = await t.post("/v1/chat/completions", CHAT);
  assert.equal(res.status, 200);
  const body: Json = await res.json();
  assert.match(body.id, /^chatcmpl-[0-9a-f]{32}$/);
  assert.equal(body.object, "chat.completion");
  assert.equal(body.model, "fake");
  assert.ok(Number.isInteger(body.created) && Math.abs(body.created - Date.now() / 1000) < 5);
  assert.match(body.system_fingerprint, /^fp_[0-9a-f]{8}$/);
  assert.deepEqual(body.choices, [{
    index: 0,
    message: { role: "assistant", content: "Hello world", refusal: null },
    logprobs: null,
    finish_reason: "stop",
  }]);
  // The fake template renders "<s>user: Hi<|eot|>assistant: ": 1 + 8 + 1 + 11 tokens.
  const promptIds = t.engine.requests[0].promptIds;
  assert.equal(promptIds.length, 21);
  assert.deepEqual(body.usage, {
    prompt_tokens: 21,
    completion_tokens: 11,
    total_tokens: 32,
    prompt_tokens_details: { cached_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0 },
  });
  assert.ok(res.headers.get("x-request-id"));
});

Deno.test("chat: the alias is accepted and echoed; the engine request carries the resolved settings", async () => {
  const t = setup();
  const res = await t.post("/v1/chat/completions", {
    ...CHAT,
    model: "fake-alias",
    temperature: 0.5,
    top_p: 0.9,
    top_k: 40,
    min_p: 0.05,
    seed: 7,
    max_completion_tokens: 3,
    max_tokens: 9,
    stop_token_ids: [33],
    min_tokens: 2,
    ignore_eos: true,
  });
  const body: Json = await res.json();
  assert.equal(body.model, "fake-alias");
  assert.equal(body.choices[0].message.content, "Hel");
  assert.equal(body.choices[0].finish_reason, "length");
  const req = t.engine.requests[0];
  assert.deepEqual(req.sampling, { temperature: 0.5, topP: 0.9, topK: 40, minP: 0.05, seed: 7 });
  assert.equal(req.maxTokens, 3, "max_completion_tokens wins over max_tokens");
  assert.equal(req.minTokens, 2);
  assert.equal(req.ignoreEos, true);
  assert.deepEqual([...req.stopTokenIds].sort((a, b) => a - b), [33, 257, 258]);
});

Deno.test("chat: defaults are temperature 1, top_p 1, no top-k, and max tokens fill the context", async () => {
  const t = setup({ maxContext: 100 });
  await (await t.post("/v1/chat/completions", CHAT)).json();
  const req = t.engine.requests[0];
  assert.equal(req.sampling.temperature, 1);
  assert.equal(req.sampling.topP, 1);
  assert.equal(req.sampling.topK, 0);
  assert.equal(req.maxTokens, 100 - req.promptIds.length);
  assert.equal(req.logprobs, undefined);
});

Deno.test("chat: prompt + max_tokens beyond the context is clamped and finishes with length", async () => {
  const t = setup({ maxContext: 25 });
  const body: Json = await (await t.post("/v1/chat/completions", { ...CHAT, max_tokens: 1000 })).json();
  assert.equal(t.engine.requests[0].maxTokens, 4);
  assert.equal(body.choices[0].message.content, "Hell");
  assert.equal(body.choices[0].finish_reason, "length");
});

Deno.test("chat: a prompt that fills the context is a 400 context_length_exceeded before any engine work", async () => {
  const t = setup({ maxContext: 21 });
  const res = await t.post("/v1/chat/completions", CHAT);
  assert.equal(res.status, 400);
  const body: Json = await res.json();
  assert.equal(body.error.code, "context_length_exceeded");
  assert.equal(body.error.param, "messages");
  assert.match(body.error.message, /21 tokens.*context holds 21/);
  assert.equal(t.engine.requests.length, 0);
});

Deno.test("chat: stop strings are matched across tokens, removed, and finish with stop", async () => {
  const t = setup();
  for (const stop of ["o w", ["zz", "o w"]]) {
    const body: Json = await (await t.post("/v1/chat/completions", { ...CHAT, stop })).json();
    assert.equal(body.choices[0].message.content, "Hell");
    assert.equal(body.choices[0].finish_reason, "stop");
    assert.equal(body.usage.completion_tokens, 7, "tokens up to the one completing the stop string");
  }
  // The engine sequence is released as soon as the stop string matched.
  assert.equal(t.engine.active.size, 0);
  assert.equal(t.engine.kvBlocksUsed, 0);
});

Deno.test("chat: include_stop_str_in_output keeps the stop string; empty stop strings are dropped", async () => {
  const t = setup();
  const a: Json =
    await (await t.post("/v1/chat/completions", { ...CHAT, stop: "wor", include_stop_str_in_output: true }))
      .json();
  assert.equal(a.choices[0].message.content, "Hello wor");
  const b: Json = await (await t.post("/v1/chat/completions", { ...CHAT, stop: [""] })).json();
  assert.equal(b.choices[0].message.content, "Hello world");
  assert.equal(b.choices[0].finish_reason, "stop");
});

Deno.test("chat: a stop string that never completes is released at the end", async () => {
  const t = setup();
  const body: Json = await (await t.post("/v1/chat/completions", { ...CHAT, stop: "ldX" })).json();
  assert.equal(body.choices[0].message.content, "Hello world");
});

Deno.test("chat: end-of-turn and EOS tokens stop the sequence and are not part of the text", async () => {
  const t = setup({ script: () => [...byteIds("Hi"), FAKE_EOT, ...byteIds("more")] });
  const body: Json = await (await t.post("/v1/chat/completions", CHAT)).json();
  assert.equal(body.choices[0].message.content, "Hi");
  assert.equal(body.choices[0].finish_reason, "stop");
  assert.equal(body.usage.completion_tokens, 2);
});

Deno.test("chat: n = 2 runs two sequences with seeds seed and seed + 1; usage sums completions", async () => {
  const t = setup({ script: (req) => byteIds(`s${req.sampling.seed}`) });
  const body: Json = await (await t.post("/v1/chat/completions", { ...CHAT, n: 2, seed: 41 })).json();
  assert.deepEqual(body.choices.map((c: Json) => [c.index, c.message.content]), [[0, "s41"], [1, "s42"]]);
  assert.equal(body.usage.completion_tokens, 6);
  assert.equal(body.usage.prompt_tokens, 21, "the prompt counts once");
  const ids = t.engine.requests.map((r) => r.id);
  assert.equal(new Set(ids).size, 2);
  assert.ok(ids.every((id) => id.startsWith(body.id)));
});

Deno.test("chat: without a seed each request draws a random one", async () => {
  const t = setup();
  await (await t.post("/v1/chat/completions", CHAT)).json();
  await (await t.post("/v1/chat/completions", CHAT)).json();
  assert.notEqual(t.engine.requests[0].sampling.seed, t.engine.requests[1].sampling.seed);
});

Deno.test("chat: large and negative seeds map to distinct u32 values", async () => {
  const t = setup();
  for (const seed of [-1, 2 ** 40, 2 ** 40 + 1, 5]) {
    await (await t.post("/v1/chat/completions", { ...CHAT, seed })).json();
  }
  const seeds = t.engine.requests.map((r) => r.sampling.seed);
  assert.equal(new Set(seeds).size, 4);
  assert.ok(seeds.every((s) => Number.isInteger(s) && s >= 0 && s < 2 ** 32));
  assert.equal(seeds[3], 5);
});

Deno.test("chat: logprobs report each token with its bytes and empty top_logprobs", async () => {
  const t = setup({ script: () => [...byteIds("é"), ...byteIds("a")] });
  const body: Json =
    await (await t.post("/v1/chat/completions", { ...CHAT, logprobs: true, top_logprobs: 0 })).json();
  assert.equal(t.engine.requests[0].logprobs, 0);
  assert.equal(body.choices[0].message.content, "éa");
  assert.deepEqual(body.choices[0].logprobs, {
    content: [
      { token: "<0xC3>", logprob: -1.95, bytes: [0xc3], top_logprobs: [] },
      { token: "<0xA9>", logprob: -1.69, bytes: [0xa9], top_logprobs: [] },
      { token: "a", logprob: -0.97, bytes: [0x61], top_logprobs: [] },
    ],
    refusal: null,
  });
});

Deno.test("chat: top_logprobs lists the engine's alternatives with their text and bytes", async () => {
  const t = setup({ script: () => byteIds("ab") });
  const body: Json =
    await (await t.post("/v1/chat/completions", { ...CHAT, logprobs: true, top_logprobs: 2 })).json();
  assert.equal(t.engine.requests[0].logprobs, 2);
  const content = body.choices[0].logprobs.content;
  assert.equal(content.length, 2);
  assert.deepEqual(content[0].top_logprobs, [
    { token: "a", logprob: -0.97, bytes: [0x61] },
    { token: "b", logprob: -1.97, bytes: [0x62] },
  ]);
  assert.deepEqual(content[1].top_logprobs.map((e: Json) => e.token), ["b", "c"]);
});

Deno.test("chat: streaming framing: role with the first token, deltas, finish chunk, [DONE]", async () => {
  const t = setup({ script: () => byteIds("abc") });
  const res = await t.post("/v1/chat/completions", { ...CHAT, stream: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  assert.equal(res.headers.get("cache-control"), "no-cache");
  assert.equal(res.headers.get("x-accel-buffering"), "no");
  assert.ok(res.headers.get("x-request-id"));
  const events = await readSse(res);
  assert.equal(events.at(-1), "[DONE]");
  const chunks = events.slice(0, -1) as Json[];
  assert.deepEqual(chunks.map((c) => [c.choices[0].delta, c.choices[0].finish_reason]), [
    [{ role: "assistant", content: "" }, null],
    [{ content: "a" }, null],
    [{ content: "b" }, null],
    [{ content: "c" }, null],
    [{}, "stop"],
  ]);
  for (const c of chunks) {
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.id, chunks[0].id);
    assert.equal(c.created, chunks[0].created);
    assert.equal(c.model, "fake");
    assert.equal(c.choices[0].index, 0);
    assert.equal(c.choices[0].logprobs, null);
    assert.ok(!("usage" in c), "no usage field without include_usage");
  }
});

Deno.test("chat: the role chunk waits for the first token (no early role chunk)", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const t = setup({ gate });
  const res = await t.post("/v1/chat/completions", { ...CHAT, stream: true });
  const reader = res.body!.getReader();
  const first = reader.read();
  const early = await Promise.race([
    first.then(() => "chunk"),
    new Promise((r) => setTimeout(() => r("none"), 50)),
  ]);
  assert.equal(early, "none");
  release();
  const chunk = new TextDecoder().decode((await first).value);
  const parsed = JSON.parse(chunk.slice("data: ".length));
  assert.deepEqual(parsed.choices[0].delta, { role: "assistant", content: "" });
  await reader.cancel();
});

Deno.test("chat: include_usage adds usage: null to every chunk and one final usage chunk", async () => {
  const t = setup({ script: () => byteIds("ab") });
  const events = await readSse(
    await t.post("/v1/chat/completions", { ...CHAT, stream: true, stream_options: { include_usage: true } }),
  );
  const chunks = events.slice(0, -1) as Json[];
  assert.equal(events.at(-1), "[DONE]");
  const last = chunks.at(-1)!;
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, {
    prompt_tokens: 21,
    completion_tokens: 2,
    total_tokens: 23,
    prompt_tokens_details: { cached_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0 },
  });
  for (const c of chunks.slice(0, -1)) {
    assert.equal(c.usage, null);
    assert.equal(c.choices.length, 1);
  }
});

Deno.test("chat: stream_options without stream is ignored", async () => {
  const t = setup();
  const res = await t.post("/v1/chat/completions", { ...CHAT, stream_options: { include_usage: true } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
});

Deno.test("chat: streaming n = 2 gives each choice its own role and finish chunk", async () => {
  const t = setup({ script: (req) => byteIds(req.id.endsWith("-0") ? "xy" : "pqr") });
  const events = await readSse(await t.post("/v1/chat/completions", { ...CHAT, n: 2, stream: true }));
  const chunks = events.slice(0, -1) as Json[];
  for (const index of [0, 1]) {
    const mine = chunks.filter((c) => c.choices[0].index === index).map((c) => c.choices[0]);
    assert.deepEqual(mine[0].delta, { role: "assistant", content: "" });
    assert.equal(mine.filter((c) => c.delta.role !== undefined).length, 1);
    assert.deepEqual(mine.at(-1).delta, {});
    assert.equal(mine.at(-1).finish_reason, "stop");
    assert.equal(mine.map((c) => c.delta.content ?? "").join(""), index === 0 ? "xy" : "pqr");
  }
});

Deno.test("chat: streaming holds back a partial stop string and never emits it", async () => {
  const t = setup({ script: () => byteIds("ab\nEN!D") });
  const events = await readSse(
    await t.post("/v1/chat/completions", { ...CHAT, stream: true, stop: ["END", "!"] }),
  );
  const pieces = (events.slice(0, -1) as Json[]).map((c) => c.choices[0].delta.content).filter((x) => x);
  assert.deepEqual(pieces, ["a", "b", "\n", "EN"]);
  assert.equal((events.at(-2) as Json).choices[0].finish_reason, "stop");
});

Deno.test("chat: streaming never splits a UTF-8 character; logprobs ride with their text", async () => {
  const t = setup({ script: () => byteIds("a€") });
  const events = await readSse(
    await t.post("/v1/chat/completions", { ...CHAT, stream: true, logprobs: true }),
  );
  const chunks = (events.slice(0, -1) as Json[]).map((c) => c.choices[0]);
  const content = chunks.filter((c) => c.delta.content);
  assert.deepEqual(content.map((c) => c.delta.content), ["a", "€"]);
  assert.deepEqual(content.map((c) => c.logprobs.content.length), [1, 3]);
  assert.deepEqual(content[1].logprobs.content.map((i: Json) => i.bytes[0]), [0xe2, 0x82, 0xac]);
  assert.equal(chunks[0].logprobs, null, "the role chunk carries no logprobs");
});

Deno.test("chat: an engine failure mid-stream is one error event, then [DONE], and no usage chunk", async () => {
  const t = setup({ failAfter: 2 });
  const events = await readSse(
    await t.post("/v1/chat/completions", { ...CHAT, stream: true, stream_options: { include_usage: true } }),
  );
  assert.equal(events.at(-1), "[DONE]");
  const err = events.at(-2) as Json;
  assert.equal(err.error.type, "server_error");
  assert.match(err.error.message, /Fake engine failure/);
  assert.ok(!events.slice(0, -2).some((e) => (e as Json).error || (e as Json).choices?.length === 0));
  assert.equal(t.engine.active.size, 0);
});

Deno.test("chat: an engine failure without streaming is a 500 with the OpenAI error body", async () => {
  const t = setup({ failAfter: 1 });
  const res = await t.post("/v1/chat/completions", CHAT);
  assert.equal(res.status, 500);
  const body: Json = await res.json();
  assert.equal(body.error.type, "server_error");
  assert.equal(body.error.code, null);
});

Deno.test("chat: content parts are concatenated and developer becomes system", async () => {
  const t = setup();
  await (await t.post("/v1/chat/completions", {
    model: "fake",
    messages: [
      { role: "developer", content: "Be terse." },
      { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }], name: "ann" },
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }],
      },
      { role: "tool", content: "42", tool_call_id: "c1" },
    ],
  })).json();
  const text = new TextDecoder().decode(
    new Uint8Array(t.engine.requests[0].promptIds.filter((id) => id < 256)),
  );
  assert.equal(text, "system: Be terse.user: abassistant: f({})tool [c1]: 42assistant: ");
});

Deno.test("chat: unknown fields are ignored", async () => {
  const t = setup();
  const res = await t.post("/v1/chat/completions", {
    ...CHAT,
    store: false,
    metadata: { a: "b" },
    service_tier: "auto",
    parallel_tool_calls: true,
    prompt_cache_key: "k",
    reasoning_effort: "low",
    modalities: ["text"],
    user: "u1",
    some_future_field: { nested: [1, 2] },
  });
  assert.equal(res.status, 200);
});
