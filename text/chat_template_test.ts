// renderChat() tests: the built-in Llama 2 / Llama 3.1 templates against the checkpoints' own templates
// (the embedded model's Llama 2 chat template; the Llama 3.1 fixture's, when the fixtures are there) over a
// table of conversations, error messages from raise_exception and bad input, and chatFamily().

import assert from "node:assert/strict";
import {
  chatFamily,
  formatToolCall,
  LLAMA2_CHAT_TEMPLATE,
  LLAMA31_CHAT_TEMPLATE,
  renderChat,
  type RenderChatOptions,
  type TemplateMessage,
  TOOL_PROMPT,
} from "./chat_template.ts";
import type { ToolDefinition } from "./codec.ts";
import { Tokenizer } from "./tokenizer.ts";
import { NO_FIXTURES } from "./_tokenizer_fixtures.ts";
import { EMBEDDED_MODEL_DIR, fixturesDir } from "../test/support/mod.ts";

const LLAMA2_OPTS: RenderChatOptions = { addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>" };
const LLAMA3_OPTS: RenderChatOptions = {
  addGenerationPrompt: true,
  bosToken: "<|begin_of_text|>",
  eosToken: "<|eot_id|>",
};

/** Conversations both stock templates accept: optional system, then alternating user/assistant turns. */
const CONVERSATIONS: TemplateMessage[][] = [
  [{ role: "user", content: "Who was the father of Enos?" }],
  [{ role: "system", content: "Answer from the King James Bible." }, {
    role: "user",
    content: "Who was Seth?",
  }],
  [
    { role: "system", content: "  Be brief.\n" },
    { role: "user", content: " Who begat Enos? " },
    { role: "assistant", content: "Seth. " },
    { role: "user", content: "And\n\nwhom did Enos beget?\t" },
  ],
  [{ role: "user", content: "\u4e2d\u6587 \u{1F600} <s> {{ not jinja }} {% raw %}" }],
  [{ role: "user", content: "" }],
  [
    { role: "user", content: "one" },
    { role: "assistant", content: "two" },
  ],
];

async function embeddedTemplate(): Promise<string> {
  const tok = await Tokenizer.fromDir(EMBEDDED_MODEL_DIR);
  assert.ok(tok.chatTemplate !== null);
  return tok.chatTemplate;
}

Deno.test("the built-in Llama 2 template renders like the checkpoint's Llama 2 chat template", async () => {
  const stock = await embeddedTemplate();
  for (const messages of CONVERSATIONS) {
    const want = renderChat(stock, "llama2", messages, LLAMA2_OPTS);
    assert.equal(renderChat(null, "llama2", messages, LLAMA2_OPTS), want, JSON.stringify(messages));
    assert.equal(renderChat(undefined, "llama2", messages, LLAMA2_OPTS), want);
  }
  const three = renderChat(null, "llama2", CONVERSATIONS[2], LLAMA2_OPTS);
  assert.equal(
    three,
    "<s>[INST] <<SYS>>\n  Be brief.\n\n<</SYS>>\n\n Who begat Enos? [/INST] Seth. </s>" +
      "<s>[INST] And\n\nwhom did Enos beget? [/INST]",
  );
});

Deno.test("renderChat() puts the template's raise_exception message in its Error", async () => {
  const stock = await embeddedTemplate();
  const bad: TemplateMessage[] = [{ role: "assistant", content: "first" }, {
    role: "user",
    content: "second",
  }];
  assert.throws(
    () => renderChat(stock, "llama2", bad, LLAMA2_OPTS),
    /^Error: Cannot render chat template: Conversation roles must alternate user\/assistant/,
  );
  assert.throws(
    () => renderChat(null, "llama2", bad, LLAMA2_OPTS),
    /Cannot render built-in llama2 chat template: .*alternating user\/assistant.*found "assistant" as turn 0/,
  );
  assert.throws(
    () => renderChat(null, "llama3", bad, { ...LLAMA3_OPTS, extra: { builtin_tools: ["brave_search"] } }),
    /Cannot render built-in llama3 chat template: .*does not support builtin_tools/,
  );
});

Deno.test("renderChat() names bad templates, families and messages", () => {
  const messages = [{ role: "user", content: "hi" }];
  assert.throws(
    () => renderChat("{% if %}", "llama2", messages, LLAMA2_OPTS),
    /^Error: Cannot parse chat template: /,
  );
  assert.throws(
    () => renderChat(null, "llama4" as "llama3", messages, LLAMA3_OPTS),
    /unknown family "llama4", expected "llama2" or "llama3"/,
  );
  assert.throws(
    () => renderChat(null, "llama3", [{ role: "user", content: 7 as unknown as string }], LLAMA3_OPTS),
    /message 0 \("user"\): expected string content/,
  );
  assert.throws(
    () => renderChat(null, "llama3", [{ role: "", content: "x" }], LLAMA3_OPTS),
    /message 0: expected a non-empty string role/,
  );
});

Deno.test("the built-in Llama 3.1 template opens the assistant turn only when asked", () => {
  const messages = [{ role: "user", content: " hi " }];
  const closed = renderChat(null, "llama3", messages, { ...LLAMA3_OPTS, addGenerationPrompt: false });
  assert.equal(
    closed,
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
      "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
  );
  const open = renderChat(null, "llama3", messages, { ...LLAMA3_OPTS, extra: { date_string: "1 Jan 2025" } });
  assert.equal(
    open.replace("1 Jan 2025", "26 Jul 2024"),
    closed + "<|start_header_id|>assistant<|end_header_id|>\n\n",
  );
  // The named options win over `extra`.
  const again = renderChat(null, "llama3", messages, { ...LLAMA3_OPTS, extra: { bos_token: "X" } });
  assert.ok(again.startsWith("<|begin_of_text|>"));
  assert.equal(LLAMA31_CHAT_TEMPLATE.includes("raise_exception"), true);
  assert.equal(LLAMA2_CHAT_TEMPLATE.includes("raise_exception"), true);
});

Deno.test({
  name: "the built-in Llama 3.1 template renders like the Llama 3.1 fixture's chat template",
  ignore: NO_FIXTURES,
  async fn() {
    const tok = await Tokenizer.fromDir(`${fixturesDir()}llama31-style-fp16`);
    assert.ok(tok.chatTemplate !== null);
    const conversations = [
      ...CONVERSATIONS,
      [{ role: "user", content: "2+2?" }, { role: "assistant", content: "4" }, {
        role: "ipython",
        content: "4",
      }],
      [{ role: "system", content: "s" }, { role: "user", content: "u" }, {
        role: "tool",
        content: '{"a": 1}',
      }],
    ];
    for (const messages of conversations) {
      for (const addGenerationPrompt of [true, false]) {
        const opts = { ...LLAMA3_OPTS, addGenerationPrompt };
        const want = renderChat(tok.chatTemplate, "llama3", messages, opts);
        assert.equal(renderChat(null, "llama3", messages, opts), want, JSON.stringify(messages));
      }
    }
  },
});

const TOOLS: ToolDefinition[] = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];

/** A tool-calling turn: the question, the assistant's call, the tool's answer. */
const TOOL_TURN: TemplateMessage[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Weather in Paris?" },
  {
    role: "assistant",
    content: "",
    tool_calls: [{
      id: "call_1",
      type: "function",
      function: { name: "get_weather", arguments: '{"city": "Paris"}' },
    }],
  },
  { role: "tool", content: '{"temp": 21}', tool_call_id: "call_1" },
];

Deno.test({
  name: "the built-in Llama 3.1 template renders tools, tool calls and results like the fixture's",
  ignore: NO_FIXTURES,
  async fn() {
    const tok = await Tokenizer.fromDir(`${fixturesDir()}llama31-style-fp16`);
    for (const messages of [TOOL_TURN, TOOL_TURN.slice(0, 2), TOOL_TURN.slice(1)]) {
      const opts = { ...LLAMA3_OPTS, tools: TOOLS };
      const want = renderChat(tok.chatTemplate, "llama3", messages, opts);
      assert.equal(renderChat(null, "llama3", messages, opts), want, JSON.stringify(messages));
    }
    const text = renderChat(null, "llama3", TOOL_TURN, { ...LLAMA3_OPTS, tools: TOOLS });
    // The arguments are written as JSON, not as a quoted string.
    assert.ok(text.includes('{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>'), text);
    assert.ok(text.includes('"name": "get_weather",\n'), "tools as indented JSON");
  },
});

Deno.test("templates without a tool format get the Llama 3.1 JSON tool-calling convention", async () => {
  const stock = await embeddedTemplate();
  const followUp: TemplateMessage[] = [
    ...TOOL_TURN,
    { role: "tool", content: "sunny", tool_call_id: "call_1" },
    { role: "user", content: "Thanks. And Rome?" },
  ];
  for (const template of [stock, null]) {
    const text = renderChat(template, "llama2", followUp, { ...LLAMA2_OPTS, tools: TOOLS });
    assert.equal(
      text,
      `<s>[INST] <<SYS>>\n${TOOL_PROMPT}\n\n${JSON.stringify(TOOLS[0])}\n\nBe brief.\n<</SYS>>\n\n` +
        "Weather in Paris? [/INST] " + '{"name": "get_weather", "parameters": {"city": "Paris"}} </s>' +
        '<s>[INST] Function result (get_weather, call_1): {"temp": 21}\n\n' +
        "Function result (get_weather, call_1): sunny\n\nThanks. And Rome? [/INST]",
    );
  }
  // Without tools in the request, history with tool calls still renders; without a system message the
  // instruction becomes one.
  const history = renderChat(stock, "llama2", TOOL_TURN.slice(1), LLAMA2_OPTS);
  assert.ok(
    history.includes("[/INST] " + formatToolCall("get_weather", '{"city": "Paris"}') + " </s>"),
    history,
  );
  assert.ok(
    renderChat(stock, "llama2", TOOL_TURN.slice(1, 2), { ...LLAMA2_OPTS, tools: TOOLS }).startsWith(
      `<s>[INST] <<SYS>>\n${TOOL_PROMPT}`,
    ),
  );
});

Deno.test({
  name: "chatFamily() tells the Llama 3 fixture tokenizer from the Llama 2 one",
  ignore: NO_FIXTURES,
  async fn() {
    assert.equal(chatFamily(await Tokenizer.fromDir(`${fixturesDir()}llama31-style-fp16`)), "llama3");
    assert.equal(chatFamily(await Tokenizer.fromDir(`${fixturesDir()}llama2-style-fp16`)), "llama2");
  },
});

Deno.test("chatFamily() is llama2 for the embedded model and llama3 when the header tokens exist", async () => {
  assert.equal(chatFamily(await Tokenizer.fromDir(EMBEDDED_MODEL_DIR)), "llama2");
  const ids: Record<string, number> = { "<|start_header_id|>": 5, "<|eot_id|>": 6 };
  assert.equal(chatFamily({ tokenToId: (t) => ids[t] }), "llama3");
  assert.equal(chatFamily({ tokenToId: (t) => (t === "<|eot_id|>" ? 6 : undefined) }), "llama2");
});
