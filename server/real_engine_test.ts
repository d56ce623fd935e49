// The server on the real engine (EngineClient, a Worker) with the embedded 2-bit model, driven over
// loopback by the official openai client: greedy text matching the model's reference tokens, completions
// with logprobs, seeded reproducibility with n = 2, a stop string, LangChain's ChatOpenAI (invoke and
// stream), SDK exception classes for 404 and 400, and an aborted stream freeing its KV blocks. Skipped without a WebGPU adapter.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { ChatOpenAI } from "@langchain/openai";
import { DEFAULT_MODEL_DIR } from "../engine/mod.ts";
import { noGpu } from "../test/support/mod.ts";
import { withEmbeddedServer } from "../test/support/server.ts";

const NO_GPU = await noGpu();

const ref = JSON.parse(await Deno.readTextFile(`${DEFAULT_MODEL_DIR}/reference.json`));
const P0_TEXT: string = ref.prompts.p0_genesis.text;
const GREEDY_P0: number[] = ref.fp32_runtime.greedy_32.p0_genesis;

Deno.test({
  name: "real engine: the openai client against the embedded model",
  ignore: NO_GPU,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withEmbeddedServer({ maxSeqs: 4, maxContext: 128 }, async ({ engine, codec, url, logs }) => {
      const client = new OpenAI({ baseURL: url, apiKey: "unused" });

      // Greedy completion of the reference prompt: the text of the reference's first 12 tokens.
      const greedy = await client.completions.create({
        model: "embedded",
        prompt: P0_TEXT,
        max_tokens: 12,
        temperature: 0,
        logprobs: 0,
      });
      const promptIds = codec.encode(P0_TEXT, { addSpecialTokens: true });
      const expected = codec.decode([...promptIds, ...GREEDY_P0.slice(0, 12)]).slice(
        codec.decode(promptIds).length,
      );
      assert.equal(greedy.choices[0].text, expected);
      assert.equal(greedy.choices[0].finish_reason, "length");
      assert.equal(greedy.usage?.completion_tokens, 12);
      const lps = greedy.choices[0].logprobs!.token_logprobs!;
      assert.equal(lps.length, 12);
      assert.ok(lps.every((lp) => Number.isFinite(lp) && lp <= 0), JSON.stringify(lps));

      // Seeded sampling with n = 2: reproducible as a set, and streamed the same way.
      const seeded = { model: "embedded", prompt: P0_TEXT, max_tokens: 10, temperature: 1, seed: 5, n: 2 };
      const a = await client.completions.create(seeded);
      const b = await client.completions.create(seeded);
      assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));

      // A stop string cut from the greedy text.
      const stop = expected.trim().split(" ")[1];
      const cut = await client.completions.create({
        model: "embedded",
        prompt: P0_TEXT,
        max_tokens: 12,
        temperature: 0,
        stop: [stop],
      });
      assert.equal(cut.choices[0].text, expected.slice(0, expected.indexOf(stop)));
      assert.equal(cut.choices[0].finish_reason, "stop");

      // Chat, streamed, with usage.
      const stream = await client.chat.completions.create({
        model: "embedded",
        messages: [{ role: "user", content: "Who was the father of Enos?" }],
        max_tokens: 8,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      let chunks = 0;
      let usage: OpenAI.CompletionUsage | null | undefined;
      for await (const chunk of stream) {
        chunks++;
        usage ??= chunk.usage;
      }
      assert.ok(chunks >= 3);
      assert.ok(usage && usage.completion_tokens >= 1 && usage.completion_tokens <= 8);

      // top_logprobs through the Worker: each position lists 3 alternatives, the greedy token first.
      const tops = await client.chat.completions.create({
        model: "embedded",
        messages: [{ role: "user", content: ref.prompts.p1_chat.text }],
        max_tokens: 4,
        temperature: 0,
        logprobs: true,
        top_logprobs: 3,
      });
      const content = tops.choices[0].logprobs!.content!;
      assert.ok(content.length >= 1);
      for (const entry of content) {
        assert.equal(entry.top_logprobs.length, 3);
        assert.equal(entry.top_logprobs[0].token, entry.token);
        assert.equal(entry.top_logprobs[0].logprob, entry.logprob);
      }

      // LangChain's ChatOpenAI on the real model: invoke equals the openai client's greedy chat, and a
      // stream carries the same text and usage.
      const chatRef = await client.chat.completions.create({
        model: "embedded",
        messages: [{ role: "user", content: ref.prompts.p1_chat.text }],
        max_tokens: 8,
        temperature: 0,
      });
      const lc = new ChatOpenAI({
        model: "embedded",
        apiKey: "unused",
        temperature: 0,
        maxTokens: 8,
        configuration: { baseURL: url },
      });
      const lcReply = await lc.invoke(ref.prompts.p1_chat.text);
      assert.equal(lcReply.content, chatRef.choices[0].message.content);
      assert.equal(lcReply.usage_metadata?.output_tokens, chatRef.usage?.completion_tokens);
      let lcText = "";
      let lcTokens: number | undefined;
      for await (const chunk of await lc.stream(ref.prompts.p1_chat.text)) {
        lcText += chunk.content;
        if (chunk.usage_metadata) lcTokens = chunk.usage_metadata.output_tokens;
      }
      assert.equal(lcText, chatRef.choices[0].message.content);
      assert.equal(lcTokens, chatRef.usage?.completion_tokens);

      // Errors reach the SDK as its own exception classes.
      await assert.rejects(
        client.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] }),
        OpenAI.NotFoundError,
      );
      await assert.rejects(
        client.completions.create({ model: "embedded", prompt: "x", max_tokens: 5, suffix: "y" }),
        (e) => e instanceof OpenAI.BadRequestError && /suffix/.test(e.message),
      );

      // Abort mid-stream: the engine frees the sequence's KV blocks.
      const controller = new AbortController();
      const long = await client.completions.create(
        {
          model: "embedded",
          prompt: P0_TEXT,
          max_tokens: 100,
          temperature: 0,
          stream: true,
          ignore_eos: true,
        } as OpenAI.CompletionCreateParamsStreaming,
        { signal: controller.signal },
      );
      let seen = 0;
      try {
        for await (const _ of long) if (++seen === 3) controller.abort();
      } catch { /* the SDK may surface the abort */ }
      // Cancellation lands at the next decode-round boundary; on a loaded lavapipe a round can take seconds.
      const deadline = Date.now() + 30_000;
      while ((engine.stats().kvBlocksUsed > 0 || engine.stats().running > 0) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(engine.stats().kvBlocksUsed, 0);
      assert.equal(engine.stats().running, 0);
      assert.equal(logs.filter((l) => typeof l.status === "number" && (l.status as number) >= 500).length, 0);
    });
  },
});
