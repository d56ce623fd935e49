// LangChain's ChatOpenAI against startServer on loopback with the fake engine (docs/API.md §9.3): invoke,
// stream with usage metadata, and a 404 surfaced as an error rather than retried six times.

import assert from "node:assert/strict";
import { ChatOpenAI } from "@langchain/openai";
import { startServer } from "./app.ts";
import { DEFAULT_CONFIG } from "./config.ts";
import { byteCodec, byteIds, FakeEngine } from "../test/support/mod.ts";

Deno.test("langchain: ChatOpenAI invoke and stream (usage metadata arrives); unknown model fails fast", async () => {
  const engine = new FakeEngine({ script: () => byteIds("lang chain") });
  const logs: Record<string, unknown>[] = [];
  const handle = startServer(
    { ...DEFAULT_CONFIG, port: 0, servedModelNames: ["fake"], apiKeys: ["sk-lc"] },
    { engine, codec: byteCodec, log: (r) => logs.push(r) },
  );
  try {
    const chat = new ChatOpenAI({
      model: "fake",
      apiKey: "sk-lc",
      temperature: 0,
      configuration: { baseURL: handle.url },
    });
    const reply = await chat.invoke("Hello");
    assert.equal(reply.content, "lang chain");
    assert.equal(reply.usage_metadata?.output_tokens, 10);

    let text = "";
    let outputTokens: number | undefined;
    for await (const chunk of await chat.stream([["system", "Be brief."], ["human", "Hi"]])) {
      text += chunk.content;
      if (chunk.usage_metadata) outputTokens = chunk.usage_metadata.output_tokens;
    }
    assert.equal(text, "lang chain");
    assert.equal(outputTokens, 10);
    assert.equal(engine.requests.at(-1)!.sampling.temperature, 0);

    const wrong = new ChatOpenAI({
      model: "nope",
      apiKey: "sk-lc",
      maxRetries: 5,
      configuration: { baseURL: handle.url },
    });
    const before = logs.filter((l) => l.status === 404).length;
    await assert.rejects(wrong.invoke("x"), /does not exist/);
    assert.equal(logs.filter((l) => l.status === 404).length - before, 1, "a 404 is not retried");
  } finally {
    await handle.shutdown(100);
  }
});
