import assert from "node:assert/strict";
import { type Json, readSse, setup } from "../../test/support/server.ts";
import { byteIds, FAKE_BOS } from "../../test/support/mod.ts";

const CMPL = { model: "fake", prompt: "Hi" };

Deno.test("completions: a string prompt gets BOS, max_tokens defaults to 16, OpenAI's shape", async () => {
  const t = setup({ script: () => byteIds("abcdefghijklmnopqrstuvwxyz") });
  const res = await t.post("/v1/completions", CMPL);
  assert.equal(res.status, 200);
  const body: Json = await res.json();
  assert.match(body.id, /^cmpl-[0-9a-f]{32}$/);
  assert.equal(body.object, "text_completion");
  assert.equal(body.model, "fake");
  assert.deepEqual(body.choices, [{
    index: 0,
    text: "abcdefghijklmnop",
    logprobs: null,
    finish_reason: "length",
  }]);
  assert.deepEqual(t.engine.requests[0].promptIds, [FAKE_BOS, ...byteIds("Hi")]);
  assert.equal(t.engine.requests[0].maxTokens, 16);
  assert.equal(body.usage.prompt_tokens, 3);
  assert.equal(body.usage.completion_tokens, 16);
  assert.equal(body.usage.total_tokens, 19);
});

Deno.test("completions: max_tokens null generates until EOS or the end of the context", async () => {
  const t = setup({ maxContext: 64 });
  const body: Json = await (await t.post("/v1/completions", { ...CMPL, max_tokens: null })).json();
  assert.equal(t.engine.requests[0].maxTokens, 61);
  assert.equal(body.choices[0].text, "Hello world");
  assert.equal(body.choices[0].finish_reason, "stop");
});

Deno.test("completions: an array of prompts × n gives index = prompt × n + sample", async () => {
  const t = setup({ script: (req) => byteIds(`${req.promptIds.length}/${req.sampling.seed}`) });
  const body: Json =
    await (await t.post("/v1/completions", { ...CMPL, prompt: ["a", "bbb"], n: 2, seed: 10 }))
      .json();
  assert.deepEqual(body.choices.map((c: Json) => [c.index, c.text]), [
    [0, "2/10"],
    [1, "2/11"],
    [2, "4/10"],
    [3, "4/11"],
  ]);
  assert.equal(body.usage.prompt_tokens, 6, "each prompt counts once");
  assert.equal(body.usage.completion_tokens, 16);
});

Deno.test("completions: token-id prompts go to the engine as given", async () => {
  const t = setup();
  await (await t.post("/v1/completions", { ...CMPL, prompt: [72, 105] })).json();
  await (await t.post("/v1/completions", { ...CMPL, prompt: [[1], [2, 3]] })).json();
  assert.deepEqual(t.engine.requests.map((r) => r.promptIds), [[72, 105], [1], [2, 3]]);
});

Deno.test("completions: echo prepends the prompt text", async () => {
  const t = setup({ script: () => byteIds("!") });
  const body: Json = await (await t.post("/v1/completions", { ...CMPL, prompt: "Hey", echo: true })).json();
  assert.equal(body.choices[0].text, "Hey!");
});

Deno.test("completions: logprobs 0 gives the legacy parallel arrays with text offsets", async () => {
  const t = setup({ script: () => byteIds("ab") });
  const body: Json = await (await t.post("/v1/completions", { ...CMPL, logprobs: 0 })).json();
  assert.deepEqual(body.choices[0].logprobs, {
    tokens: ["a", "b"],
    token_logprobs: [-0.97, -0.98],
    top_logprobs: [{ a: -0.97 }, { b: -0.98 }],
    text_offset: [0, 1],
  });
});

Deno.test("completions: logprobs N lists the chosen token and its alternatives per position", async () => {
  const t = setup({ script: () => byteIds("ab") });
  const body: Json = await (await t.post("/v1/completions", { ...CMPL, logprobs: 2 })).json();
  assert.equal(t.engine.requests[0].logprobs, 2);
  assert.deepEqual(body.choices[0].logprobs.top_logprobs, [{ a: -0.97, b: -1.97 }, { b: -0.98, c: -1.98 }]);
});

Deno.test("completions: stop strings cut the text", async () => {
  const t = setup();
  const body: Json = await (await t.post("/v1/completions", { ...CMPL, stop: ["wor"] })).json();
  assert.equal(body.choices[0].text, "Hello ");
  assert.equal(body.choices[0].finish_reason, "stop");
});

Deno.test("completions: streaming framing: text pieces, finish chunk, usage only when asked, [DONE]", async () => {
  const t = setup({ script: () => byteIds("xyz") });
  const plain = await readSse(await t.post("/v1/completions", { ...CMPL, stream: true }));
  assert.equal(plain.at(-1), "[DONE]");
  const chunks = plain.slice(0, -1) as Json[];
  assert.deepEqual(chunks.map((c) => [c.choices[0].text, c.choices[0].finish_reason]), [
    ["x", null],
    ["y", null],
    ["z", null],
    ["", "stop"],
  ]);
  for (const c of chunks) {
    assert.equal(c.object, "text_completion");
    assert.equal(c.id, chunks[0].id);
    assert.ok(!("usage" in c));
  }

  const withUsage = await readSse(
    await t.post("/v1/completions", { ...CMPL, stream: true, stream_options: { include_usage: true } }),
  );
  const last = withUsage.at(-2) as Json;
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 3);
  assert.ok((withUsage.slice(0, -2) as Json[]).every((c) => c.usage === null));
});

Deno.test("completions: a streamed echo sends the prompt with the first piece", async () => {
  const t = setup({ script: () => byteIds("!") });
  const events = await readSse(
    await t.post("/v1/completions", { ...CMPL, prompt: "Yo", echo: true, stream: true }),
  );
  assert.equal((events[0] as Json).choices[0].text, "Yo!");
});
