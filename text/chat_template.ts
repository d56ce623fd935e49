// Chat messages -> prompt text through a Jinja chat template (@huggingface/jinja), before
// Tokenizer.encode(text, { addSpecial: false }). The checkpoint's tokenizer_config.json template is used
// when it has one; else the built-in Llama 2 chat or Llama 3.1 Instruct default below.
//
// Tools: a template that reads `tools` (Llama 3.1's) gets them as they are, and assistant tool calls with
// their arguments parsed (as vLLM passes them). A template without a tool format (Llama 2's) gets the
// conversation rewritten in the Llama 3.1 JSON tool-calling convention (Meta's Llama 3.1 prompt format,
// "JSON based tool calling"): the function definitions and the instruction go into the system prompt, an
// assistant's tool calls become its text `{"name": ..., "parameters": ...}` ("; " between calls), and tool
// results become user turns "Function result (name, id): ..." (adjacent ones merged).

import { Template } from "@huggingface/jinja";
import type { ToolDefinition } from "./codec.ts";

export interface TemplateMessage {
  role: string;
  content: string;
  /** Other fields (tool_calls, name, ...) are passed to the template as they are. */
  [field: string]: unknown;
}

export interface RenderChatOptions {
  /** Append the header that opens the assistant's turn (Llama 3); Llama 2's template ignores it. */
  addGenerationPrompt: boolean;
  bosToken: string;
  eosToken: string;
  /** More template variables (date_string, ...); the named fields above win over these. */
  extra?: Record<string, unknown>;
  /** Function definitions the model may call, as OpenAI's `tools` ({type: "function", function}). */
  tools?: readonly ToolDefinition[];
}

/** A call in an assistant message (OpenAI shape; `arguments` is JSON text). */
interface TemplateToolCall {
  id?: string;
  function: { name: string; arguments: string };
}

export type ChatFamily = "llama2" | "llama3";

/** Llama 2 chat: every user turn is `<s>[INST] ... [/INST]`, every assistant turn ` ... </s>`; a system
 * prompt goes inside the first user turn between <<SYS>> markers. Roles must alternate user/assistant. */
export const LLAMA2_CHAT_TEMPLATE = `
{%- set turns = messages -%}
{%- set system = none -%}
{%- if messages | length > 0 and messages[0].role == 'system' -%}
  {%- set system = messages[0].content -%}
  {%- set turns = messages[1:] -%}
{%- endif -%}
{%- for m in turns -%}
  {%- if (m.role == 'user') != (loop.index0 % 2 == 0) -%}
    {{- raise_exception('Llama 2 chat needs turns alternating user/assistant/user/assistant/... after an optional system message, found "' + m.role + '" as turn ' + (loop.index0 | string)) -}}
  {%- endif -%}
  {%- if m.role == 'user' -%}
    {%- if loop.first and system is not none -%}
      {%- set text = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + m.content -%}
    {%- else -%}
      {%- set text = m.content -%}
    {%- endif -%}
    {{- bos_token + '[INST] ' + (text | trim) + ' [/INST]' -}}
  {%- elif m.role == 'assistant' -%}
    {{- ' ' + (m.content | trim) + ' ' + eos_token -}}
  {%- endif -%}
{%- endfor -%}
`;

/** Llama 3.1 Instruct: a system header always comes first (knowledge cutoff, today's date, the system
 * prompt), then one header + text + <|eot_id|> per message; tool results go under the ipython role. With
 * tools (Meta's JSON tool calling, tools in the first user message as Meta's template does by default),
 * the system turn says "Environment: ipython", the first user turn lists the functions, and assistant tool
 * calls are written `{"name": ..., "parameters": ...}` ("; " between several). Built-in tools
 * (builtin_tools, <|python_tag|>) are not supported. */
export const LLAMA31_CHAT_TEMPLATE = `
{{- bos_token -}}
{%- if builtin_tools is defined or custom_tools is defined -%}
  {{- raise_exception('The built-in Llama 3.1 template does not support builtin_tools: use the checkpoint chat template') -}}
{%- endif -%}
{%- if tools is not defined -%}
  {%- set tools = none -%}
{%- endif -%}
{%- if date_string is not defined -%}
  {%- set date_string = '26 Jul 2024' -%}
{%- endif -%}
{%- set turns = messages -%}
{%- set system = '' -%}
{%- if messages | length > 0 and messages[0].role == 'system' -%}
  {%- set system = messages[0].content | trim -%}
  {%- set turns = messages[1:] -%}
{%- endif -%}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' -}}
{%- if tools is not none -%}
  {{- 'Environment: ipython\\n' -}}
{%- endif -%}
{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '\\n\\n' -}}
{{- system + '<|eot_id|>' -}}
{%- if tools is not none -%}
  {%- if turns | length == 0 -%}
    {{- raise_exception('Tools go into the first user message, and there is none') -}}
  {%- endif -%}
  {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
  {{- 'Given the following functions, please respond with a JSON for a function call ' -}}
  {{- 'with its proper arguments that best answers the given prompt.\\n\\n' -}}
  {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' -}}
  {{- 'Do not use variables.\\n\\n' -}}
  {%- for t in tools -%}
    {{- t | tojson(indent=4) + '\\n\\n' -}}
  {%- endfor -%}
  {{- (turns[0].content | trim) + '<|eot_id|>' -}}
  {%- set turns = turns[1:] -%}
{%- endif -%}
{%- for m in turns -%}
  {%- if m.tool_calls is defined and m.tool_calls -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
    {%- for c in m.tool_calls -%}
      {%- if not loop.first -%}
        {{- '; ' -}}
      {%- endif -%}
      {{- '{"name": "' + c.function.name + '", "parameters": ' + (c.function.arguments | tojson) + '}' -}}
    {%- endfor -%}
    {{- '<|eot_id|>' -}}
  {%- elif m.role == 'tool' or m.role == 'ipython' -%}
    {{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' -}}
    {%- if m.content is mapping or m.content is iterable -%}
      {{- m.content | tojson -}}
    {%- else -%}
      {{- m.content -}}
    {%- endif -%}
    {{- '<|eot_id|>' -}}
  {%- else -%}
    {{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + (m.content | trim) + '<|eot_id|>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
{%- endif -%}
`;

const DEFAULTS: Record<ChatFamily, string> = { llama2: LLAMA2_CHAT_TEMPLATE, llama3: LLAMA31_CHAT_TEMPLATE };

/** Parsed templates by source text; a server renders the same one for every request. */
const compiled = new Map<string, Template>();

/** The default template family for a tokenizer: Llama 3 vocabularies have the header tokens its chat
 * format is built from; everything else is treated as Llama 2. */
export function chatFamily(tok: { tokenToId(token: string): number | undefined }): ChatFamily {
  return tok.tokenToId("<|start_header_id|>") !== undefined && tok.tokenToId("<|eot_id|>") !== undefined
    ? "llama3"
    : "llama2";
}

/** Renders `messages` with the checkpoint's template (tokenizer.chatTemplate), or the family's default
 * when it has none (null or undefined). Parse and render errors, raise_exception included, become an
 * Error whose message ends with the template's own. */
export function renderChat(
  tokenizerConfigTemplate: string | null | undefined,
  family: ChatFamily,
  messages: TemplateMessage[],
  opts: RenderChatOptions,
): string {
  const source = tokenizerConfigTemplate ?? DEFAULTS[family];
  if (source === undefined) {
    throw new Error(`Cannot pick a chat template: unknown family "${family}", expected "llama2" or "llama3"`);
  }
  messages.forEach((m, i) => {
    if (m === null || typeof m !== "object" || typeof m.role !== "string" || m.role === "") {
      throw new Error(`Cannot render chat message ${i}: expected a non-empty string role`);
    }
    if (typeof m.content !== "string") {
      throw new Error(`Cannot render chat message ${i} ("${m.role}"): expected string content`);
    }
  });
  const tools = opts.tools?.length ? opts.tools : undefined;
  const toolVars: Record<string, unknown> = {};
  if (readsTools(source)) {
    messages = messages.map(withParsedArguments);
    if (tools) toolVars.tools = tools;
  } else {
    messages = toolConvention(messages, tools);
  }
  const which = tokenizerConfigTemplate == null ? `built-in ${family} chat template` : "chat template";
  let template = compiled.get(source);
  if (template === undefined) {
    try {
      template = new Template(source);
    } catch (err) {
      throw new Error(`Cannot parse ${which}: ${describe(err)}`);
    }
    compiled.set(source, template);
  }
  try {
    return template.render({
      ...opts.extra,
      ...toolVars,
      messages,
      add_generation_prompt: opts.addGenerationPrompt,
      bos_token: opts.bosToken,
      eos_token: opts.eosToken,
    });
  } catch (err) {
    throw new Error(`Cannot render ${which}: ${describe(err)}`);
  }
}

/** Whether a template has a tool format of its own (it reads `tools`). */
function readsTools(source: string): boolean {
  return /\btools\b/.test(source);
}

/** An assistant message's calls with `arguments` parsed, as Llama 3.1's template writes them with tojson
 * (vLLM does the same); arguments that are not JSON stay text. */
function withParsedArguments(m: TemplateMessage): TemplateMessage {
  const calls = m.tool_calls as TemplateToolCall[] | undefined;
  if (!Array.isArray(calls) || calls.length === 0) return m;
  return {
    ...m,
    tool_calls: calls.map((c) => {
      let args: unknown = c.function.arguments;
      try {
        args = JSON.parse(c.function.arguments);
      } catch { /* kept as text */ }
      return { ...c, function: { ...c.function, arguments: args } };
    }),
  };
}

/** The instruction the Llama 3.1 JSON tool-calling convention puts before the function definitions. */
export const TOOL_PROMPT = "You have access to the following functions. To call a function, please respond " +
  "with JSON for a function call. Respond in the format " +
  '{"name": function name, "parameters": dictionary of argument name and its value}. ' +
  'Separate several calls with "; ". Do not use variables.';

/** One call as the model writes it in the convention. */
export function formatToolCall(name: string, args: string): string {
  return `{"name": ${JSON.stringify(name)}, "parameters": ${args}}`;
}

/**
 * The conversation rewritten in the Llama 3.1 JSON tool-calling convention, for a template without a tool
 * format: tools into the system prompt, tool calls into assistant text, tool results into user turns.
 */
function toolConvention(
  messages: TemplateMessage[],
  tools: readonly ToolDefinition[] | undefined,
): TemplateMessage[] {
  const names = new Map<string, string>();
  const out: TemplateMessage[] = [];
  let fromTool = false;
  for (const m of messages) {
    const calls = m.tool_calls as TemplateToolCall[] | undefined;
    if (m.role === "assistant" && Array.isArray(calls) && calls.length > 0) {
      for (const c of calls) if (c.id) names.set(c.id, c.function.name);
      const text = calls.map((c) => formatToolCall(c.function.name, c.function.arguments)).join("; ");
      out.push({ role: "assistant", content: m.content === "" ? text : `${m.content}\n${text}` });
      fromTool = false;
    } else if (m.role === "tool" || m.role === "ipython") {
      const id = typeof m.tool_call_id === "string" ? m.tool_call_id : "";
      const name = typeof m.name === "string" ? m.name : names.get(id) ?? "function";
      const text = `Function result (${id ? `${name}, ${id}` : name}): ${m.content}`;
      const last = out.at(-1);
      if (last?.role === "user") last.content = `${last.content}\n\n${text}`;
      else out.push({ role: "user", content: text });
      fromTool = true;
    } else if (m.role === "user" && fromTool && out.at(-1)?.role === "user") {
      const last = out.at(-1)!;
      last.content = `${last.content}\n\n${m.content}`;
      fromTool = false;
    } else {
      out.push({ role: m.role, content: m.content });
      fromTool = false;
    }
  }
  if (!tools) return out;
  const definitions = tools.map((t) => JSON.stringify(t)).join("\n");
  const block = `${TOOL_PROMPT}\n\n${definitions}`;
  if (out[0]?.role === "system") out[0] = { role: "system", content: `${block}\n\n${out[0].content}` };
  else out.unshift({ role: "system", content: block });
  return out;
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name === "Error" ? "" : err.name + ": "}${err.message}` : String(err);
}
