// Tool calls out of a choice's generated text. The chat template asks the model for Llama 3.1's JSON tool
// calling format, `{"name": "<function>", "parameters": {...}}`, several calls separated by ";" (vLLM's
// llama3_json parser reads the same), and the grammar enforces exactly that when tool_choice forces a call.
// ToolCallParser takes the text piece by piece, as streaming releases it, and gives back content and
// OpenAI tool-call deltas; the non-streaming route feeds it the whole text, so both agree by construction.
//
//  - forced (tool_choice "required" or a named function): the text is calls only. A call's first delta
//    (index, id, name, arguments "") goes out once `"parameters": ` is complete, then pieces of the
//    arguments text as they arrive, verbatim: concatenated, they are the arguments JSON.
//  - auto: text that does not start with "{" is content, passed through. Text that does is held to the
//    end and then parsed leniently (whitespace, "arguments" for "parameters"); if it is one or more calls
//    of known functions they go out whole, else it goes out as content. Streaming and not agree.

export interface ToolCallDelta {
  /** Position of the call in the choice's tool_calls. */
  index: number;
  /** On a call's first delta only: its id and function name. */
  id?: string;
  name?: string;
  /** The next piece of the arguments JSON ("" on a first delta that has none yet). */
  arguments: string;
}

export interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

export interface ParserOutput {
  content: string;
  calls: ToolCallDelta[];
}

export interface ToolCallParserOptions {
  /** The functions the request offered. */
  names: readonly string[];
  /** The grammar forces calls (tool_choice "required" or named): stream them as they come. */
  forced: boolean;
  /** More than one call allowed (parallel_tool_calls); otherwise calls after the first are dropped. */
  parallel: boolean;
  /** Tool call ids; default `call_` + 24 random hex digits. */
  newId?: () => string;
}

function randomCallId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

const HEAD = /^\s*\{"name": "((?:[^"\\]|\\.)*)", "parameters": /;

/** Index just past the JSON object or array starting at `text[start]`, or -1 when it does not end. */
export function jsonValueEnd(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "{" || ch === "[") depth++;
    else if (ch === "}" || ch === "]") {
      if (--depth === 0) return i + 1;
      if (depth < 0) return -1;
    }
  }
  return -1;
}

/**
 * Calls in `text` (whole), leniently: JSON objects `{"name", "parameters" | "arguments"}` of known
 * functions separated by ";" and whitespace. Null when the text is anything else.
 */
export function parseToolCalls(
  text: string,
  names: readonly string[],
): { name: string; arguments: string }[] | null {
  const calls: { name: string; arguments: string }[] = [];
  let i = text.length - text.trimStart().length;
  while (i < text.length) {
    if (text[i] !== "{") return null;
    const end = jsonValueEnd(text, i);
    if (end < 0) return null;
    let call: unknown;
    try {
      call = JSON.parse(text.slice(i, end));
    } catch {
      return null;
    }
    const { name, parameters, arguments: args } = call as Record<string, unknown>;
    const value = parameters ?? args;
    if (typeof name !== "string" || !names.includes(name)) return null;
    if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
    calls.push({ name, arguments: JSON.stringify(value) });
    i = end;
    while (i < text.length && /\s/.test(text[i])) i++;
    if (text[i] === ";") i++;
    while (i < text.length && /\s/.test(text[i])) i++;
  }
  return calls.length > 0 ? calls : null;
}

export class ToolCallParser {
  readonly #o: ToolCallParserOptions;
  readonly #newId: () => string;
  readonly calls: ToolCall[] = [];
  /** auto: undecided until the first non-space character; then "content" or "held". */
  #mode: "undecided" | "content" | "held" | "forced";
  #buffer = "";
  /** forced: "head" (before `"parameters": `), "args" (inside the value), "tail" (the closing brace),
   * "between" (after a call). */
  #state: "head" | "args" | "tail" | "between" = "head";
  #depth = 0;
  #inString = false;
  #escape = false;

  constructor(o: ToolCallParserOptions) {
    this.#o = o;
    this.#newId = o.newId ?? randomCallId;
    this.#mode = o.forced ? "forced" : "undecided";
  }

  /** Feeds the next piece of generated text; returns what can be released now. */
  push(text: string): ParserOutput {
    if (this.#mode === "content") return { content: text, calls: [] };
    this.#buffer += text;
    if (this.#mode === "undecided") {
      const first = this.#buffer.trimStart();
      if (first === "") return { content: "", calls: [] };
      this.#mode = first.startsWith("{") ? "held" : "content";
      if (this.#mode === "content") {
        const out = this.#buffer;
        this.#buffer = "";
        return { content: out, calls: [] };
      }
    }
    if (this.#mode === "held") return { content: "", calls: [] };
    return { content: "", calls: this.#scan() };
  }

  /** At the end of the choice: what was held back. `calls` holds every call of the choice afterwards. */
  finish(): ParserOutput {
    if (this.#mode === "forced") return { content: "", calls: this.#scan() };
    const text = this.#buffer;
    this.#buffer = "";
    if (this.#mode !== "held") return { content: text, calls: [] };
    const parsed = parseToolCalls(text, this.#o.names);
    if (parsed === null) return { content: text, calls: [] };
    const deltas: ToolCallDelta[] = [];
    for (const c of this.#o.parallel ? parsed : parsed.slice(0, 1)) {
      const call = { id: this.#newId(), ...c };
      // As when streaming a forced call: the first delta names it, the next carries the arguments.
      deltas.push({ index: this.calls.length, id: call.id, name: call.name, arguments: "" });
      deltas.push({ index: this.calls.length, arguments: call.arguments });
      this.calls.push(call);
    }
    return { content: "", calls: deltas };
  }

  /** forced: consumes the buffer as far as it can; returns the deltas it makes. */
  #scan(): ToolCallDelta[] {
    const out: ToolCallDelta[] = [];
    while (this.#buffer !== "") {
      if (this.#state === "head") {
        const m = HEAD.exec(this.#buffer);
        if (!m) break;
        this.#buffer = this.#buffer.slice(m[0].length);
        const call = { id: this.#newId(), name: JSON.parse(`"${m[1]}"`) as string, arguments: "" };
        this.calls.push(call);
        out.push({ index: this.calls.length - 1, id: call.id, name: call.name, arguments: "" });
        this.#state = "args";
        this.#depth = 0;
      } else if (this.#state === "args") {
        const n = this.#argumentsLength();
        const piece = this.#buffer.slice(0, n);
        this.#buffer = this.#buffer.slice(n);
        if (piece !== "") {
          this.calls.at(-1)!.arguments += piece;
          const last = out.at(-1);
          // A call's first delta keeps arguments "" (docs/API.md §5.4); later pieces of one push merge.
          if (last && last.index === this.calls.length - 1 && last.id === undefined) last.arguments += piece;
          else out.push({ index: this.calls.length - 1, arguments: piece });
        }
        if (this.#state === "args") break;
      } else if (this.#state === "tail") {
        if (this.#buffer[0] !== "}") break;
        this.#buffer = this.#buffer.slice(1);
        this.#state = "between";
      } else {
        const m = /^\s*;\s*/.exec(this.#buffer);
        if (!m || m[0].length === this.#buffer.length) break;
        this.#buffer = this.#buffer.slice(m[0].length);
        this.#state = "head";
      }
    }
    return out;
  }

  /** How much of the buffer belongs to the current arguments value; moves to "tail" at its end. */
  #argumentsLength(): number {
    const b = this.#buffer;
    for (let i = 0; i < b.length; i++) {
      const ch = b[i];
      if (this.#inString) {
        if (this.#escape) this.#escape = false;
        else if (ch === "\\") this.#escape = true;
        else if (ch === '"') this.#inString = false;
        continue;
      }
      if (ch === '"') this.#inString = true;
      else if (ch === "{" || ch === "[") this.#depth++;
      else if (ch === "}" || ch === "]") {
        // At depth 0 a closing brace is the call's own: a scalar value ended before it.
        if (this.#depth === 0) {
          this.#state = "tail";
          return i;
        }
        if (--this.#depth === 0) {
          this.#state = "tail";
          return i + 1;
        }
      }
    }
    return b.length;
  }
}
