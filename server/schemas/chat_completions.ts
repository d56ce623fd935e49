// POST /v1/chat/completions request schema (docs/API.md §3). Non-strict: unknown fields are stripped, never
// rejected. Fields follow OpenAI's documentation order; vLLM extensions come last.

import { z } from "zod";
import {
  FREQUENCY_PENALTY,
  LOGIT_BIAS,
  MAX_TOKENS,
  N,
  PRESENCE_PENALTY,
  RESPONSE_FORMAT,
  SEED,
  STOP,
  STREAM,
  STREAM_OPTIONS,
  TEMPERATURE,
  TOOL,
  TOP_P,
  USER,
  VLLM_EXTENSIONS,
} from "./common.ts";
import type { ChatMessage } from "../../text/mod.ts";

const ROLES = ["system", "developer", "user", "assistant", "tool"] as const;

/** Only text parts are accepted; image, audio and file parts name themselves in the 400. */
const CONTENT_PART = z.object({ type: z.string(), text: z.unknown().optional() }).superRefine((part, ctx) => {
  if (part.type !== "text") {
    ctx.addIssue({
      code: "custom",
      path: ["type"],
      message: `unsupported content part "${part.type}": this server accepts only "text" parts`,
    });
  } else if (typeof part.text !== "string") {
    ctx.addIssue({ code: "custom", path: ["text"], message: "expected a string" });
  }
});

const TOOL_CALL = z.object({
  id: z.string(),
  type: z.literal("function"),
  function: z.object({ name: z.string(), arguments: z.string() }),
});

const MESSAGE = z.object({
  role: z.string(),
  content: z.union([z.string(), z.array(CONTENT_PART)], {
    error: "expected a string or an array of content parts",
  }).nullish(),
  name: z.string().nullish(),
  tool_calls: z.array(TOOL_CALL).nullish(),
  tool_call_id: z.string().nullish(),
}).superRefine((m, ctx) => {
  if (!(ROLES as readonly string[]).includes(m.role)) {
    ctx.addIssue({
      code: "custom",
      path: ["role"],
      message: `unknown role "${m.role}": expected one of ${ROLES.join(", ")}`,
    });
    return;
  }
  const hasToolCalls = (m.tool_calls?.length ?? 0) > 0;
  if (m.content == null && !(m.role === "assistant" && hasToolCalls)) {
    ctx.addIssue({
      code: "custom",
      path: ["content"],
      message: "content may be null only on an assistant message with tool_calls",
    });
  }
  if (m.role === "tool" && m.tool_call_id == null) {
    ctx.addIssue({ code: "custom", path: ["tool_call_id"], message: "a tool message needs tool_call_id" });
  }
});

export type ChatRequestMessage = z.infer<typeof MESSAGE>;

const TOOL_CHOICE = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string() }) }),
], { error: `expected "none", "auto", "required" or {type: "function", function: {name}}` });

export const ChatCompletionRequest = z.object({
  messages: z.array(MESSAGE).min(1, "expected at least one message"),
  model: z.string(),
  frequency_penalty: FREQUENCY_PENALTY,
  function_call: z.unknown().optional(),
  functions: z.array(z.unknown()).nullish(),
  logit_bias: LOGIT_BIAS,
  logprobs: z.boolean().nullish(),
  max_completion_tokens: MAX_TOKENS,
  max_tokens: MAX_TOKENS,
  n: N,
  parallel_tool_calls: z.boolean().nullish(),
  presence_penalty: PRESENCE_PENALTY,
  response_format: RESPONSE_FORMAT,
  seed: SEED,
  stop: STOP,
  stream: STREAM,
  stream_options: STREAM_OPTIONS,
  temperature: TEMPERATURE,
  tool_choice: TOOL_CHOICE.nullish(),
  tools: z.array(TOOL).nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  top_p: TOP_P,
  user: USER,
  // --- vLLM extensions ---
  ...VLLM_EXTENSIONS,
}).superRefine((body, ctx) => {
  if (body.top_logprobs != null && body.logprobs !== true) {
    ctx.addIssue({ code: "custom", path: ["top_logprobs"], message: "top_logprobs needs logprobs: true" });
  }
});

export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

/** Request messages → template messages: developer becomes system, text parts are concatenated. */
export function toChatMessages(messages: ChatRequestMessage[]): ChatMessage[] {
  return messages.map((m) => {
    const content = typeof m.content === "string"
      ? m.content
      : (m.content ?? []).map((part) => part.text as string).join("");
    const out: ChatMessage = {
      role: m.role === "developer" ? "system" : m.role as ChatMessage["role"],
      content,
    };
    if (m.name != null) out.name = m.name;
    if (m.tool_calls != null && m.tool_calls.length > 0) out.tool_calls = m.tool_calls;
    if (m.tool_call_id != null) out.tool_call_id = m.tool_call_id;
    return out;
  });
}
