// Structured outputs and tool calls with the real clients, on the real engine (a Worker) and the embedded
// 2-bit model over loopback. A tiny Bible-trained model cannot be expected to choose tools wisely: these
// check well-formedness and the protocol for several seeds — the openai SDK's chat.completions.parse with
// a zod schema, LangChain's withStructuredOutput by json_schema and by function calling, a bindTools agent
// turn whose tool result renders and completes, and streamed tool-call deltas (SDK stream, its stream
// helper, LangChain chunks) that reassemble to the non-streamed calls. Skipped without a WebGPU adapter.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { ChatOpenAI } from "@langchain/openai";
import { type AIMessageChunk, HumanMessage, ToolMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { z } from "zod";
import { noGpu } from "../test/support/mod.ts";
import { withEmbeddedServer } from "../test/support/server.ts";

const NO_GPU = await noGpu();

// Short keys and bounded values keep outputs to a few dozen tokens: lavapipe is slow, and a constrained
// sequence takes one token per decode round.
const ITEM = z.object({ t: z.string().max(4), n: z.number().int().min(0).max(9), k: z.enum(["a", "b"]) });
const WEATHER = z.object({ city: z.string().max(5), unit: z.enum(["c", "f"]) });
const SEEDS = [1, 2, 3, 4];

Deno.test({
  name: "clients: structured outputs and tool calls on the embedded model",
  ignore: NO_GPU,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withEmbeddedServer({ maxSeqs: 16, maxContext: 512 }, async ({ url, logs }) => {
      const client = new OpenAI({ baseURL: url, apiKey: "unused" });
      const ask = [{ role: "user" as const, content: "Name a thing." }];

      const lcChat = (seed: number) =>
        new ChatOpenAI({
          model: "embedded",
          apiKey: "unused",
          temperature: 1,
          maxTokens: 120,
          modelKwargs: { seed },
          configuration: { baseURL: url },
        });

      // Phase 1, one batch of rounds: the openai SDK's chat.completions.parse with a zod schema, and
      // LangChain's withStructuredOutput by response_format json_schema and by a forced function call.
      const [parsed, ...structured] = await Promise.all([
        Promise.all(SEEDS.map((seed) =>
          client.chat.completions.parse({
            model: "embedded",
            messages: ask,
            response_format: zodResponseFormat(ITEM, "item"),
            temperature: 1,
            seed,
            max_tokens: 60,
            logprobs: true,
            top_logprobs: 20,
          })
        )),
        ...(["jsonSchema", "functionCalling"] as const).map((method) =>
          Promise.all(
            SEEDS.slice(0, 3).map((seed) =>
              lcChat(seed).withStructuredOutput(ITEM, { name: "item", method }).invoke("Name a thing.")
            ),
          )
        ),
      ]);
      for (const completion of parsed) {
        const message = completion.choices[0].message;
        assert.equal(completion.choices[0].finish_reason, "stop", message.content ?? "");
        assert.ok(message.parsed !== null, message.content ?? "");
        assert.deepEqual(ITEM.parse(JSON.parse(message.content!)), message.parsed);
        // Alternatives the grammar masked out report -9999, never null.
        for (const entry of completion.choices[0].logprobs!.content!) {
          assert.ok(entry.top_logprobs.every((t) => typeof t.logprob === "number" && t.logprob >= -9999));
        }
      }
      for (const out of structured.flat()) ITEM.parse(out);

      // Phase 2: streamed tool-call deltas reassemble to the non-streamed calls (the same seed side by
      // side: rows of a batch do not change each other's logits), through the SDK's stream, its stream
      // helper and LangChain's chunks; a LangChain agent turn parses its call.
      const toolRequest = {
        model: "embedded",
        messages: [{ role: "user" as const, content: "Weather in Zion?" }],
        tools: [{
          type: "function" as const,
          function: {
            name: "get_weather",
            description: "Weather in a city",
            parameters: z.toJSONSchema(WEATHER),
          },
        }],
        tool_choice: "required" as const,
        parallel_tool_calls: false,
        temperature: 1,
        seed: 11,
        max_tokens: 120,
      };
      const getWeather = tool(({ city }) => `Sunny in ${city}`, {
        name: "get_weather",
        description: "Weather in a city",
        schema: WEATHER,
      });
      const agent = lcChat(11).bindTools([getWeather], { tool_choice: "get_weather" });
      const question = new HumanMessage("Weather in Zion?");
      const lcStream = async () => {
        let chunks: AIMessageChunk | undefined;
        for await (const chunk of await agent.stream([question])) {
          chunks = chunks ? chunks.concat(chunk) : chunk;
        }
        return chunks!;
      };
      const sdkStream = async () => {
        let args = "";
        let name = "";
        let finish: string | null = null;
        for await (const chunk of await client.chat.completions.create({ ...toolRequest, stream: true })) {
          const choice = chunk.choices[0];
          for (const d of choice?.delta.tool_calls ?? []) {
            name += d.function?.name ?? "";
            args += d.function?.arguments ?? "";
          }
          finish = choice?.finish_reason ?? finish;
        }
        return [name, args, finish];
      };
      const [whole, streamed, helper, ai, chunks] = await Promise.all([
        client.chat.completions.create(toolRequest),
        sdkStream(),
        client.chat.completions.stream(toolRequest).finalChatCompletion(),
        agent.invoke([question]),
        lcStream(),
      ]);
      assert.equal(whole.choices[0].finish_reason, "tool_calls");
      assert.equal(whole.choices[0].message.content, null);
      const call = whole.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
      assert.equal(call.function.name, "get_weather");
      WEATHER.parse(JSON.parse(call.function.arguments));
      assert.deepEqual(streamed, [call.function.name, call.function.arguments, "tool_calls"]);
      const helperCall = helper.choices[0].message
        .tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
      assert.deepEqual(helperCall.function, call.function);
      assert.equal(ai.tool_calls?.length, 1);
      const toolCall = ai.tool_calls![0];
      assert.equal(toolCall.name, "get_weather");
      WEATHER.parse(toolCall.args);
      assert.deepEqual(chunks.tool_calls?.map((c) => [c.name, c.args]), [[toolCall.name, toolCall.args]]);

      // Phase 3, the agent's next turn with the tools offered ("auto"): the assistant's call and the
      // tool's reply render into the prompt and the model completes.
      const result = await getWeather.invoke(toolCall);
      assert.ok(result instanceof ToolMessage);
      const reply = await new ChatOpenAI({
        model: "embedded",
        apiKey: "unused",
        temperature: 0,
        maxTokens: 12,
        configuration: { baseURL: url },
      }).bindTools([getWeather]).invoke([question, ai, result]);
      assert.equal(typeof reply.content, "string");
      assert.ok(["stop", "length", "tool_calls"].includes(String(reply.response_metadata.finish_reason)));

      assert.deepEqual(
        logs.filter((l) =>
          l.level === "error" || (typeof l.status === "number" && (l.status as number) >= 400)
        ),
        [],
      );
    });
  },
});
