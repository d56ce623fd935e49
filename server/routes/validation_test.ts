// Every request validation rule of /v1/chat/completions and /v1/completions: status 400, the OpenAI error
// object, the offending `param`, and a message that says what was expected. No engine work happens.

import assert from "node:assert/strict";
import { CHAT, type Json, setup } from "../../test/support/server.ts";

const CMPL = { model: "fake", prompt: "Hi" };
const TOOL_F = { type: "function", function: { name: "f", parameters: { type: "object" } } };

function jsonSchema(schema: unknown) {
  return { type: "json_schema", json_schema: { name: "out", schema } };
}

interface Case {
  name: string;
  path?: string;
  body: unknown;
  param: string | null;
  message: RegExp;
}

const CASES: Case[] = [
  // --- chat: messages ---
  { name: "missing messages", body: { model: "fake" }, param: "messages", message: /expected array/ },
  {
    name: "empty messages",
    body: { ...CHAT, messages: [] },
    param: "messages",
    message: /at least one message/,
  },
  {
    name: "unknown role",
    body: { ...CHAT, messages: [{ role: "user", content: "a" }, { role: "wizard", content: "x" }] },
    param: "messages[1].role",
    message: /unknown role "wizard".*system, developer, user, assistant, tool/,
  },
  {
    name: "image content part",
    body: {
      ...CHAT,
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }],
    },
    param: "messages[0].content[0].type",
    message: /unsupported content part "image_url"/,
  },
  {
    name: "text part without text",
    body: { ...CHAT, messages: [{ role: "user", content: [{ type: "text", text: 3 }] }] },
    param: "messages[0].content[0].text",
    message: /expected a string/,
  },
  {
    name: "content of the wrong type",
    body: { ...CHAT, messages: [{ role: "user", content: 5 }] },
    param: "messages[0].content",
    message: /string or an array of content parts/,
  },
  {
    name: "null content on a user message",
    body: { ...CHAT, messages: [{ role: "user", content: null }] },
    param: "messages[0].content",
    message: /only on an assistant message with tool_calls/,
  },
  {
    name: "tool message without tool_call_id",
    body: { ...CHAT, messages: [{ role: "tool", content: "1" }] },
    param: "messages[0].tool_call_id",
    message: /needs tool_call_id/,
  },
  {
    name: "non-string tool call arguments in history",
    body: {
      ...CHAT,
      messages: [{
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: { a: 1 } } }],
      }],
    },
    param: "messages[0].tool_calls[0].function.arguments",
    message: /expected string/,
  },
  { name: "missing model", body: { messages: CHAT.messages }, param: "model", message: /expected string/ },
  // --- chat: sampling and limits ---
  { name: "temperature above 2", body: { ...CHAT, temperature: 2.5 }, param: "temperature", message: /<=2/ },
  {
    name: "negative temperature",
    body: { ...CHAT, temperature: -0.1 },
    param: "temperature",
    message: />=0/,
  },
  { name: "top_p of 0", body: { ...CHAT, top_p: 0 }, param: "top_p", message: />0/ },
  { name: "top_p above 1", body: { ...CHAT, top_p: 1.5 }, param: "top_p", message: /<=1/ },
  { name: "n of 0", body: { ...CHAT, n: 0 }, param: "n", message: />=1/ },
  { name: "fractional n", body: { ...CHAT, n: 1.5 }, param: "n", message: /int/ },
  { name: "n over the cap", body: { ...CHAT, n: 9 }, param: "n", message: /at most 8, got 9/ },
  { name: "max_tokens of 0", body: { ...CHAT, max_tokens: 0 }, param: "max_tokens", message: />=1/ },
  {
    name: "negative max_completion_tokens",
    body: { ...CHAT, max_completion_tokens: -5 },
    param: "max_completion_tokens",
    message: />=1/,
  },
  {
    name: "stop of the wrong type",
    body: { ...CHAT, stop: 5 },
    param: "stop",
    message: /string or an array/,
  },
  {
    name: "too many stop strings",
    body: { ...CHAT, stop: ["a", "b", "c", "d", "e"] },
    param: "stop",
    message: /at most 4 stop strings, got 5/,
  },
  { name: "fractional seed", body: { ...CHAT, seed: 1.5 }, param: "seed", message: /64-bit integer/ },
  { name: "stream not a boolean", body: { ...CHAT, stream: "yes" }, param: "stream", message: /boolean/ },
  {
    name: "top_logprobs without logprobs",
    body: { ...CHAT, top_logprobs: 2 },
    param: "top_logprobs",
    message: /needs logprobs: true/,
  },
  {
    name: "top_logprobs above 20",
    body: { ...CHAT, logprobs: true, top_logprobs: 21 },
    param: "top_logprobs",
    message: /<=20/,
  },
  {
    name: "presence_penalty out of range",
    body: { ...CHAT, presence_penalty: 3 },
    param: "presence_penalty",
    message: /<=2/,
  },
  {
    name: "repetition_penalty of 0",
    body: { ...CHAT, repetition_penalty: 0 },
    param: "repetition_penalty",
    message: />0/,
  },
  {
    name: "logit_bias with a non-numeric key",
    body: { ...CHAT, logit_bias: { abc: 1 } },
    param: "logit_bias.abc",
    message: /decimal strings/,
  },
  {
    name: "logit_bias with an id past the vocabulary",
    body: { ...CHAT, logit_bias: { "9999": 1 } },
    param: "logit_bias.9999",
    message: /outside the vocabulary of 259/,
  },
  {
    name: "logit_bias value out of range",
    body: { ...CHAT, logit_bias: { "5": 101 } },
    param: "logit_bias.5",
    message: /<=100/,
  },
  // --- chat: tools and structured outputs ---
  {
    name: "a custom tool",
    body: { ...CHAT, tools: [{ type: "custom", custom: { name: "f" } }] },
    param: "tools[0].type",
    message: /unsupported tool type "custom": this server serves only "function" tools/,
  },
  {
    name: "a function name with a space",
    body: { ...CHAT, tools: [{ type: "function", function: { name: "get weather" } }] },
    param: "tools[0].function.name",
    message: /letters, digits, underscores or dashes/,
  },
  {
    name: "two functions of one name",
    body: { ...CHAT, tools: [TOOL_F, TOOL_F] },
    param: "tools[1].function.name",
    message: /"f" is already the name of tools\[0\]/,
  },
  {
    name: "parameters that are not a schema object",
    body: { ...CHAT, tools: [{ type: "function", function: { name: "f", parameters: "x" } }] },
    param: "tools[0].function.parameters",
    message: /expected a JSON schema object/,
  },
  {
    name: "tool_choice required without tools",
    body: { ...CHAT, tool_choice: "required" },
    param: "tool_choice",
    message: /"required" needs tools, and the request has none/,
  },
  {
    name: "tool_choice naming a function that is not offered",
    body: { ...CHAT, tools: [TOOL_F], tool_choice: { type: "function", function: { name: "g" } } },
    param: "tool_choice",
    message: /function "g" is not among the tools \(f\)/,
  },
  {
    name: "tool_choice of the wrong shape",
    body: { ...CHAT, tool_choice: "maybe" },
    param: "tool_choice",
    message: /"none"\|"auto"\|"required"/,
  },
  {
    name: "forced tool parameters with an unsupported keyword",
    body: {
      ...CHAT,
      tools: [{ type: "function", function: { name: "f", parameters: { type: "object", not: {} } } }],
      tool_choice: "required",
    },
    param: "tools[0].function.parameters",
    message:
      /Unsupported JSON schema in "tools\[0\].function.parameters" at "\/not": keyword "not" is not supported/,
  },
  {
    name: "legacy functions",
    body: { ...CHAT, functions: [{ name: "f" }] },
    param: "functions",
    message: /not supported yet: expected an empty list or null \(send "tools" instead\)/,
  },
  {
    name: "response_format json_schema without its object",
    body: { ...CHAT, response_format: { type: "json_schema" } },
    param: "response_format.json_schema",
    message: /needs a json_schema object/,
  },
  {
    name: "response_format json_schema with a bad name",
    body: { ...CHAT, response_format: { type: "json_schema", json_schema: { name: "a b", schema: {} } } },
    param: "response_format.json_schema.name",
    message: /letters, digits/,
  },
  {
    name: "response_format json_schema with uniqueItems",
    body: { ...CHAT, response_format: jsonSchema({ type: "array", uniqueItems: true }) },
    param: "response_format.json_schema.schema",
    message: /at "\/uniqueItems": keyword "uniqueItems" is not supported: uniqueness/,
  },
  {
    name: "response_format json_schema with a dangling $ref",
    body: { ...CHAT, response_format: jsonSchema({ $ref: "#/$defs/item" }) },
    param: "response_format.json_schema.schema",
    message: /reference "#\/\$defs\/item" does not resolve/,
  },
  {
    name: "response_format json_schema that recurses forever",
    body: {
      ...CHAT,
      response_format: jsonSchema({
        type: "object",
        properties: { next: { $ref: "#" } },
        required: ["next"],
      }),
    },
    param: "response_format.json_schema.schema",
    message: /no finite instance/,
  },
  {
    name: "response_format json_schema with a lookahead pattern",
    body: { ...CHAT, response_format: jsonSchema({ type: "string", pattern: "^(?!x).*$" }) },
    param: "response_format.json_schema.schema",
    message: /lookaround assertions are not supported/,
  },
  {
    name: "completions: response_format with multipleOf",
    path: "/v1/completions",
    body: { ...CMPL, response_format: jsonSchema({ type: "integer", multipleOf: 3 }) },
    param: "response_format.json_schema.schema",
    message: /keyword "multipleOf" is not supported/,
  },
  {
    name: "unknown response_format type",
    body: { ...CHAT, response_format: { type: "yaml" } },
    param: "response_format.type",
    message: /text|json_object/,
  },
  { name: "top_k below -1", body: { ...CHAT, top_k: -2 }, param: "top_k", message: />=-1/ },
  { name: "min_p above 1", body: { ...CHAT, min_p: 1.5 }, param: "min_p", message: /<=1/ },
  { name: "negative min_tokens", body: { ...CHAT, min_tokens: -1 }, param: "min_tokens", message: />=0/ },
  {
    name: "stop_token_ids past the vocabulary",
    body: { ...CHAT, stop_token_ids: [1, 300] },
    param: "stop_token_ids[1]",
    message: /token id 300 is outside the vocabulary/,
  },
  // --- completions ---
  {
    name: "completions: missing prompt",
    path: "/v1/completions",
    body: { model: "fake" },
    param: "prompt",
    message: /expected a string, or a non-empty array/,
  },
  {
    name: "completions: empty prompt list",
    path: "/v1/completions",
    body: { ...CMPL, prompt: [] },
    param: "prompt",
    message: /non-empty array/,
  },
  {
    name: "completions: mixed prompt list",
    path: "/v1/completions",
    body: { ...CMPL, prompt: ["a", 1] },
    param: "prompt",
    message: /non-empty array of strings, of token ids or of token-id arrays/,
  },
  {
    name: "completions: token id past the vocabulary",
    path: "/v1/completions",
    body: { ...CMPL, prompt: [[1, 2], [3, 999]] },
    param: "prompt[1][1]",
    message: /token id 999 is outside the vocabulary of 259/,
  },
  {
    name: "completions: max_tokens of 0",
    path: "/v1/completions",
    body: { ...CMPL, max_tokens: 0 },
    param: "max_tokens",
    message: />=1/,
  },
  {
    name: "completions: logprobs above 5",
    path: "/v1/completions",
    body: { ...CMPL, logprobs: 6 },
    param: "logprobs",
    message: /<=5/,
  },
  {
    name: "completions: suffix",
    path: "/v1/completions",
    body: { ...CMPL, suffix: "x" },
    param: "suffix",
    message: /not supported/,
  },
  {
    name: "completions: best_of below n",
    path: "/v1/completions",
    body: { ...CMPL, n: 2, best_of: 1 },
    param: "best_of",
    message: /at least n \(2\)/,
  },
  {
    name: "completions: best_of above n",
    path: "/v1/completions",
    body: { ...CMPL, best_of: 3 },
    param: "best_of",
    message: /not supported/,
  },
  {
    name: "completions: echo with logprobs",
    path: "/v1/completions",
    body: { ...CMPL, echo: true, logprobs: 0 },
    param: "echo",
    message: /not supported/,
  },
  {
    name: "completions: temperature above 2",
    path: "/v1/completions",
    body: { ...CMPL, temperature: 3 },
    param: "temperature",
    message: /<=2/,
  },
];

for (const c of CASES) {
  Deno.test(`validation: ${c.name} is a 400 naming ${c.param ?? "the body"}`, async () => {
    const t = setup();
    const res = await t.post(c.path ?? "/v1/chat/completions", c.body);
    const body: Json = await res.json();
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
    assert.equal(body.error.type, "invalid_request_error");
    assert.equal(body.error.param, c.param);
    assert.match(body.error.message, c.message);
    assert.equal(t.engine.requests.length, 0, "no engine work for a rejected request");
  });
}

Deno.test("validation: a body that is not JSON is a 400 that says so", async () => {
  const t = setup();
  const res = await t.post("/v1/chat/completions", "{not json");
  assert.equal(res.status, 400);
  const body: Json = await res.json();
  assert.match(body.error.message, /not valid JSON/);
  assert.equal(body.error.param, null);
});

Deno.test("validation: a JSON body that is not an object is a 400", async () => {
  const t = setup();
  const res = await t.post("/v1/completions", "[1, 2]");
  assert.equal(res.status, 400);
  assert.match(((await res.json()) as Json).error.message, /expected object/);
});

Deno.test("validation: null for optional fields means the default", async () => {
  const t = setup();
  const res = await t.post("/v1/chat/completions", {
    ...CHAT,
    temperature: null,
    top_p: null,
    n: null,
    stop: null,
    max_tokens: null,
    seed: null,
    stream: null,
    logprobs: null,
    top_logprobs: null,
    presence_penalty: 0,
    frequency_penalty: null,
    logit_bias: {},
    tools: [],
    tool_choice: "none",
    response_format: { type: "text" },
    repetition_penalty: 1,
  });
  assert.equal(res.status, 200, await res.clone().text());
  assert.equal(t.engine.requests[0].sampling.temperature, 1);
});

Deno.test("validation: penalties and logit_bias reach the engine's sampling params", async () => {
  const t = setup();
  const res = await t.post("/v1/chat/completions", {
    ...CHAT,
    presence_penalty: 0.5,
    frequency_penalty: -1,
    repetition_penalty: 1.1,
    logit_bias: { "65": 10, "66": -100 },
  });
  assert.equal(res.status, 200, await res.clone().text());
  const s = t.engine.requests[0].sampling;
  assert.equal(s.presencePenalty, 0.5);
  assert.equal(s.frequencyPenalty, -1);
  assert.equal(s.repetitionPenalty, 1.1);
  assert.deepEqual(s.logitBias, [[65, 10], [66, -100]]);
  const plain = await t.post("/v1/completions", { ...CMPL, presence_penalty: 0, repetition_penalty: 1 });
  assert.equal(plain.status, 200);
  const p = t.engine.requests[1].sampling;
  assert.equal(p.presencePenalty ?? 0, 0);
  assert.equal(p.repetitionPenalty ?? 1, 1);
  assert.equal(p.logitBias, undefined);
});
