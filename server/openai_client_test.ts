// The official `openai` npm client against startServer on loopback with the fake engine (docs/API.md §9.1):
// the calls users make, the stream helper, and the error classes and retries the SDK derives from our
// answers.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { waitFor } from "../test/support/server.ts";
import { startServer } from "./app.ts";
import { DEFAULT_CONFIG, type ServerConfig } from "./config.ts";
import { byteCodec, byteIds, FakeEngine, type FakeEngineOptions } from "../test/support/mod.ts";

const MESSAGES = [{ role: "user" as const, content: "Hi" }];

async function withServer(
  engineOpts: FakeEngineOptions,
  config: Partial<ServerConfig>,
  body: (client: OpenAI, engine: FakeEngine, logs: Record<string, unknown>[]) => Promise<void>,
  clientOpts: { apiKey?: string; maxRetries?: number } = {},
): Promise<void> {
  const engine = new FakeEngine(engineOpts);
  const logs: Record<string, unknown>[] = [];
  const handle = startServer(
    { ...DEFAULT_CONFIG, port: 0, servedModelNames: ["fake"], apiKeys: ["sk-test"], ...config },
    { engine, codec: byteCodec, log: (r) => logs.push(r) },
  );
  const client = new OpenAI({ baseURL: handle.url, apiKey: clientOpts.apiKey ?? "sk-test", ...clientOpts });
  try {
    await body(client, engine, logs);
  } finally {
    await handle.shutdown(200);
  }
}

Deno.test("openai client: chat.completions.create, plain and n = 2 with logprobs", async () => {
  await withServer({ script: (req) => byteIds(`seed ${req.sampling.seed}`) }, {}, async (client) => {
    const plain = await client.chat.completions.create({ model: "fake", messages: MESSAGES, seed: 3 });
    assert.equal(plain.choices[0].message.content, "seed 3");
    assert.equal(plain.choices[0].finish_reason, "stop");
    assert.equal(plain.usage?.completion_tokens, 6);

    const two = await client.chat.completions.create({
      model: "fake",
      messages: MESSAGES,
      n: 2,
      seed: 3,
      logprobs: true,
      top_logprobs: 0,
    });
    assert.deepEqual(two.choices.map((c) => c.message.content), ["seed 3", "seed 4"]);
    assert.equal(two.choices[1].logprobs?.content?.length, 6);
    assert.equal(two.usage?.completion_tokens, 12);

    const { response } = await client.chat.completions.create({ model: "fake", messages: MESSAGES })
      .withResponse();
    assert.ok(response.headers.get("x-request-id"));
  });
});

Deno.test("openai client: streaming with include_usage, and the stream() helper to completion", async () => {
  await withServer({ script: () => byteIds("abc") }, {}, async (client) => {
    const stream = await client.chat.completions.create({
      model: "fake",
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? "";
        finish = choice.finish_reason ?? finish;
      }
    }
    assert.equal(text, "abc");
    assert.equal(finish, "stop");
    assert.equal(usage?.completion_tokens, 3);

    const helper = client.chat.completions.stream({ model: "fake", messages: MESSAGES, n: 2 });
    const final = await helper.finalChatCompletion();
    assert.deepEqual(final.choices.map((c) => [c.message.role, c.message.content, c.finish_reason]), [
      ["assistant", "abc", "stop"],
      ["assistant", "abc", "stop"],
    ]);
  });
});

Deno.test("openai client: completions with a string and an array prompt; models.list", async () => {
  await withServer({ script: () => byteIds("xy") }, {}, async (client) => {
    const one = await client.completions.create({ model: "fake", prompt: "Once" });
    assert.equal(one.choices[0].text, "xy");
    const many = await client.completions.create({ model: "fake", prompt: ["a", "b"], n: 2 });
    assert.deepEqual(many.choices.map((c) => c.index), [0, 1, 2, 3]);
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    assert.deepEqual(models, ["fake"]);
  });
});

Deno.test("openai client: wrong key, unknown model and bad fields raise the right error classes", async () => {
  await withServer({}, {}, async (client) => {
    await assert.rejects(
      client.chat.completions.create({ model: "other", messages: MESSAGES }),
      (err) => err instanceof OpenAI.NotFoundError && err.code === "model_not_found",
    );
    await assert.rejects(
      client.chat.completions.create({ model: "fake", messages: MESSAGES, logprobs: true, top_logprobs: 21 }),
      (err) => err instanceof OpenAI.BadRequestError && err.param === "top_logprobs",
    );
    await assert.rejects(
      client.chat.completions.create({ model: "fake", messages: MESSAGES, n: 99 }),
      (err) => err instanceof OpenAI.BadRequestError && /at most 8/.test(err.message),
    );
  });
  await withServer({}, {}, async (client) => {
    await assert.rejects(
      client.chat.completions.create({ model: "fake", messages: MESSAGES }),
      (err) => err instanceof OpenAI.AuthenticationError && err.code === "invalid_api_key",
    );
  }, { apiKey: "sk-wrong" });
});

Deno.test("openai client: a full queue is a RateLimitError after exactly 3 attempts honouring Retry-After", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  await withServer(
    { gate },
    { maxRunning: 1, maxWaiting: 0, retryAfterS: 0.2 },
    async (client, _engine, logs) => {
      const running = client.chat.completions.create({ model: "fake", messages: MESSAGES });
      await waitFor(() => _engine.active.size === 1, "the first request to run");
      const started = performance.now();
      await assert.rejects(
        client.chat.completions.create({ model: "fake", messages: MESSAGES }),
        (err) => err instanceof OpenAI.RateLimitError && err.code === "rate_limit_exceeded",
      );
      const elapsed = performance.now() - started;
      const refused = logs.filter((l) => l.status === 429);
      assert.equal(refused.length, 3, "one attempt and two retries");
      assert.ok(elapsed >= 380, `two waits of ~200 ms (retry-after-ms), took ${elapsed.toFixed(0)} ms`);
      release();
      assert.equal((await running).choices[0].message.content, "Hello world");
    },
  );
});

Deno.test("openai client: aborting a stream mid-way cancels the engine sequence", async () => {
  await withServer({ delayMs: 5, script: () => new Array(3000).fill(97) }, {}, async (client, engine) => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "fake", messages: MESSAGES, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    // The SDK ends the iteration quietly (or throws an abort error, depending on timing) once aborted.
    try {
      for await (const _ of stream) {
        if (++chunks === 5) controller.abort();
      }
    } catch (err) {
      assert.ok(err instanceof OpenAI.APIUserAbortError || (err as Error).name === "AbortError", String(err));
    }
    assert.ok(chunks >= 5 && chunks < 100, `stopped reading after the abort (${chunks} chunks)`);
    await waitFor(() => engine.active.size === 0, "the engine sequence to be aborted");
    assert.equal(engine.kvBlocksUsed, 0);
    assert.equal(engine.aborted.length, 1);
  });
});
