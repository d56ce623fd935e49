// Chat messages -> prompt text through a Jinja chat template (@huggingface/jinja), before
// Tokenizer.encode(text, { addSpecial: false }). The checkpoint's tokenizer_config.json template is used
// when it has one; else the built-in Llama 2 chat or Llama 3.1 Instruct default below.

import { Template } from "@huggingface/jinja";

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
  /** More template variables (date_string, tools, ...); the named fields above win over these. */
  extra?: Record<string, unknown>;
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
 * prompt), then one header + text + <|eot_id|> per message; tool results go under the ipython role.
 * Tool definitions and tool calls are not supported: use the checkpoint's own template for those. */
export const LLAMA31_CHAT_TEMPLATE = `
{{- bos_token -}}
{%- if (tools is defined and tools is not none) or custom_tools is defined or builtin_tools is defined -%}
  {{- raise_exception('The built-in Llama 3.1 template does not support tools: use the checkpoint chat template') -}}
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
{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '\\n\\n' -}}
{{- system + '<|eot_id|>' -}}
{%- for m in turns -%}
  {%- if m.role == 'tool' or m.role == 'ipython' -%}
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
      messages,
      add_generation_prompt: opts.addGenerationPrompt,
      bos_token: opts.bosToken,
      eos_token: opts.eosToken,
    });
  } catch (err) {
    throw new Error(`Cannot render ${which}: ${describe(err)}`);
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name === "Error" ? "" : err.name + ": "}${err.message}` : String(err);
}
