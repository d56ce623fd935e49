// Messages between GrammarPool (serving thread) and a grammar Worker, and the matcher protocol a
// sequence's MessagePort carries between the engine and its matcher in that Worker.

import type { Vocabulary } from "./vocabulary.ts";

/** What a Worker compiles: a JSON schema, or tool calls in the Llama 3.1 JSON format. */
export type CompileInput =
  | {
    kind: "json";
    /** The schema as JSON text. */
    schema: string;
    /** Properties and items a schema does not list are refused (OpenAI's strict mode, vLLM's default). */
    strict: boolean;
  }
  | {
    kind: "tool_calls";
    /** Each function's name and its parameters' schema as JSON text. */
    functions: { name: string; parameters: string }[];
    /** More than one call, separated by "; ". */
    parallel: boolean;
  };

export type ToGrammarWorker =
  | { type: "init"; vocabulary: Vocabulary; vocabSize: number }
  | { type: "compile"; input: CompileInput }
  | { type: "matcher"; id: number; port: MessagePort; stopTokenIds: number[] }
  | { type: "release"; id: number };

export type FromGrammarWorker =
  | { type: "ready" }
  | { type: "compiled"; ms: number }
  | { type: "failed"; message: string };

/**
 * The matcher protocol, one message each way per sampled step (engine/constraint.ts is the other side):
 * the engine sends the ids it accepted since its last message (none at first), the matcher answers with
 * the mask of the next token, bit (id & 31) of word (id >> 5) set when id is allowed, or an error.
 */
export interface MatcherRequest {
  accept: number[];
}

export type MatcherReply = { mask: Uint32Array<ArrayBuffer> } | { error: string };

/** JSON is generated on one line with Python's json.dumps separators (vLLM's disable_any_whitespace):
 * free whitespace lets a small model pad forever. */
export const JSON_SEPARATORS: [string, string] = [", ", ": "];

/** The start of one tool call: the Llama 3.1 JSON tool-calling format. */
export function toolCallPrefix(name: string): string {
  return `{"name": ${JSON.stringify(name)}, "parameters": `;
}

/** Between two tool calls of one turn. */
export const TOOL_CALL_SEPARATOR = "; ";
