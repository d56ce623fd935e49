// What a request asks its output to be, decided once from the request fields (docs/API.md §3.1): free text, JSON (response_format json_object / json_schema, enforced by a grammar),
// or tool calls (tools + tool_choice: rendered into the prompt; "required" or a named function enforced by
// a grammar, "auto" parsed afterwards). The grammar is compiled by grammar/ (GrammarPool), off this thread.

import { type Grammar, GrammarError, type GrammarPool, type GrammarSpec } from "../grammar/mod.ts";
import type { ToolDefinition } from "../text/mod.ts";
import { ApiError } from "./errors.ts";
import type { ChatCompletionRequest } from "./schemas/chat_completions.ts";
import type { CompletionRequest } from "./schemas/completions.ts";

/** How to read tool calls out of a choice's text (server/tool_calls.ts). */
export interface ToolPlan {
  names: string[];
  /** The grammar forces calls (tool_choice "required" or a named function). */
  forced: boolean;
  parallel: boolean;
}

export interface OutputPlan {
  /** What the output must match; null: free text. */
  grammar: GrammarSpec | null;
  /** The functions to render into the prompt (absent with no tools or tool_choice "none"). */
  tools?: ToolDefinition[];
  /** Set when the request offers tools and may get calls back. */
  toolCalls: ToolPlan | null;
}

function invalid(param: string, message: string): ApiError {
  return new ApiError("invalid_request", `Invalid value for "${param}": ${message}`, { param });
}

function responseFormatGrammar(format: ChatCompletionRequest["response_format"]): GrammarSpec | null {
  if (!format || format.type === "text") return null;
  const schema = format.type === "json_schema" ? format.json_schema?.schema : null;
  if (!schema) return { type: "json_object" };
  return { type: "json_schema", schema: { schema, param: "response_format.json_schema.schema" } };
}

/** /v1/completions: only response_format (a vLLM extension there). */
export function completionPlan(body: CompletionRequest): OutputPlan {
  return { grammar: responseFormatGrammar(body.response_format), toolCalls: null };
}

/** /v1/chat/completions: tools and tool_choice, then response_format. */
export function chatPlan(body: ChatCompletionRequest): OutputPlan {
  const tools = body.tools ?? [];
  const choice = body.tool_choice ?? (tools.length > 0 ? "auto" : "none");
  const format = responseFormatGrammar(body.response_format);
  if (tools.length === 0) {
    if (choice !== "none" && choice !== "auto") {
      throw invalid("tool_choice", `${JSON.stringify(choice)} needs tools, and the request has none`);
    }
    return { grammar: format, toolCalls: null };
  }
  const seen = new Map<string, number>();
  tools.forEach((t, i) => {
    const name = t.function!.name;
    if (seen.has(name)) {
      throw invalid(`tools[${i}].function.name`, `"${name}" is already the name of tools[${seen.get(name)}]`);
    }
    seen.set(name, i);
  });
  if (choice === "none") return { grammar: format, toolCalls: null };
  const definitions: ToolDefinition[] = tools.map((t) => ({
    type: "function",
    function: {
      name: t.function!.name,
      ...(t.function!.description != null ? { description: t.function!.description } : {}),
      ...(t.function!.parameters != null ? { parameters: t.function!.parameters } : {}),
    },
  }));
  const names = [...seen.keys()];
  const parallel = body.parallel_tool_calls ?? true;
  if (choice === "auto") {
    // As in vLLM: the model decides; calls are parsed from its text. A json response_format still applies.
    return { grammar: format, tools: definitions, toolCalls: { names, forced: false, parallel } };
  }
  // A forced call: the tool grammar decides the output (response_format would apply to content only).
  const forced = choice === "required" ? names : [choice.function.name];
  if (!seen.has(forced[0])) {
    throw invalid("tool_choice", `function "${forced[0]}" is not among the tools (${names.join(", ")})`);
  }
  const functions = forced.map((name) => {
    const i = seen.get(name)!;
    const parameters = tools[i].function!.parameters;
    return {
      name,
      parameters: parameters ? { schema: parameters, param: `tools[${i}].function.parameters` } : null,
    };
  });
  return {
    grammar: { type: "tool_calls", functions, parallel: choice === "required" && parallel },
    tools: definitions,
    toolCalls: { names, forced: true, parallel: choice === "required" && parallel },
  };
}

/** The compiled grammar of a plan, or null; an unenforceable schema is a 400 naming its field. */
export async function compilePlan(pool: () => GrammarPool, plan: OutputPlan): Promise<Grammar | null> {
  if (plan.grammar === null) return null;
  try {
    return await pool().compile(plan.grammar);
  } catch (e) {
    if (e instanceof GrammarError) throw new ApiError("invalid_request", e.message, { param: e.param });
    throw e;
  }
}
