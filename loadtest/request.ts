// One streaming request against an OpenAI-compatible server (Trellis, vLLM, llama.cpp's server, OpenAI),
// with raw fetch and the SSE parser: times the first text-bearing chunk (TTFT) and every gap between
// text-bearing chunks (ITL), takes token counts from the usage chunk that stream_options.include_usage asks
// for, and classifies whatever went wrong.

import { SseParser } from "./sse.ts";
import type { RequestResult } from "./stats.ts";

export type Endpoint = "chat" | "completions";

export interface ChatMessage {
  role: string;
  content: string;
}

/** What to send: a prompt (completions, or a one-message chat) or whole messages (chat only). */
export interface RequestSpec {
  prompt?: string;
  messages?: ChatMessage[];
  maxTokens: number;
  /** The generator's estimate of the prompt's tokens, used when the server reports no usage. */
  promptTokensEstimate: number;
}

export interface ClientOptions {
  /** Full endpoint URL, e.g. http://127.0.0.1:8000/v1/chat/completions. */
  endpointUrl: string;
  endpoint: Endpoint;
  model: string;
  apiKey?: string;
  /** Sends `ignore_eos: true` (vLLM, Trellis and llama.cpp honour it) so every request runs to max_tokens. */
  ignoreEos?: boolean;
  temperature?: number;
  /** Per-request limit, milliseconds (default 10 minutes). */
  timeoutMs?: number;
  /** Extra top-level body fields. */
  extraBody?: Record<string, unknown>;
  /** Aborts the request (failure "aborted"). */
  signal?: AbortSignal;
}

/** The JSON body for one request. */
export function requestBody(opts: ClientOptions, spec: RequestSpec): Record<string, unknown> {
  const body: Record<string, unknown> = { model: opts.model };
  if (opts.endpoint === "chat") {
    body.messages = spec.messages ?? [{ role: "user", content: spec.prompt ?? "" }];
  } else {
    if (spec.prompt === undefined) {
      throw new Error("completions endpoint: every request needs a `prompt` (chat `messages` were given)");
    }
    body.prompt = spec.prompt;
  }
  body.max_tokens = spec.maxTokens;
  body.stream = true;
  body.stream_options = { include_usage: true };
  if (opts.temperature !== undefined) body.temperature = opts.temperature;
  if (opts.ignoreEos) body.ignore_eos = true;
  return { ...body, ...opts.extraBody };
}

function parseRetryAfter(headers: Headers): number | undefined {
  const ms = Number(headers.get("retry-after-ms") ?? NaN);
  if (Number.isFinite(ms) && ms >= 0) return ms / 1000;
  const raw = headers.get("retry-after");
  if (raw === null) return undefined;
  const s = Number(raw);
  if (Number.isFinite(s) && s >= 0) return s;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - Date.now()) / 1000);
}

interface ErrorObject {
  message: string;
  type: string;
}

function errorObject(value: unknown): ErrorObject | null {
  const e = (value as { error?: unknown } | null)?.error as Record<string, unknown> | undefined;
  if (typeof e === "object" && e !== null && typeof e.message === "string" && typeof e.type === "string") {
    return { message: e.message, type: e.type };
  }
  return null;
}

/**
 * Sends `spec` and reads the stream to its end. Never throws for server or network trouble: the result says
 * what happened. `clockZero` is the run's performance.now() origin, for `startMs`.
 */
export async function sendRequest(
  opts: ClientOptions,
  spec: RequestSpec,
  index: number,
  clockZero = 0,
): Promise<RequestResult> {
  const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream" };
  if (opts.apiKey) headers.authorization = `Bearer ${opts.apiKey}`;
  const body = JSON.stringify(requestBody(opts, spec));
  const started = performance.now();
  const result: RequestResult = {
    index,
    status: 0,
    ok: false,
    startMs: started - clockZero,
    e2eMs: 0,
    itlMs: [],
    promptTokens: spec.promptTokensEstimate,
    outputTokens: 0,
    usageReported: false,
    sawDone: false,
  };
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 600_000);
  const signal = opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout;
  let textChunks = 0;
  let last = 0;
  let streamError: string | undefined;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    const res = await fetch(opts.endpointUrl, { method: "POST", headers, body, signal });
    result.status = res.status;
    if (res.status !== 200) {
      result.failure = `http_${res.status}`;
      result.retryAfterS = parseRetryAfter(res.headers);
      const text = await res.text();
      let parsed: unknown = null;
      try {
        parsed = JSON.parse(text);
      } catch { /* not JSON: errorBodyOk stays false */ }
      const err = errorObject(parsed);
      result.errorBodyOk = err !== null;
      result.error = err?.message ?? text.slice(0, 200);
      return result;
    }
    if (res.body === null) throw new Error("200 response without a body");
    const parser = new SseParser();
    const chat = opts.endpoint === "chat";
    reader = res.body.getReader();
    const handle = (data: string, now: number) => {
      if (data === "[DONE]") {
        result.sawDone = true;
        return;
      }
      const chunk = JSON.parse(data);
      const err = errorObject(chunk);
      if (err !== null) {
        streamError = `${err.type}: ${err.message}`;
        return;
      }
      if (chunk.usage) {
        result.promptTokens = chunk.usage.prompt_tokens ?? result.promptTokens;
        result.outputTokens = chunk.usage.completion_tokens ?? 0;
        result.usageReported = true;
      }
      for (const choice of chunk.choices ?? []) {
        const text = chat ? choice.delta?.content : choice.text;
        if (typeof text === "string" && text !== "") {
          if (textChunks === 0) result.ttftMs = now - started;
          else result.itlMs.push(now - last);
          last = now;
          textChunks++;
        }
        if (choice.finish_reason) result.finishReason = choice.finish_reason;
      }
    };
    while (true) {
      const { value, done } = await reader.read();
      const now = performance.now();
      const events = done ? parser.end() : parser.push(value);
      for (const ev of events) handle(ev.data, now);
      if (done) break;
    }
    result.e2eMs = performance.now() - started;
    if (!result.usageReported) result.outputTokens = textChunks;
    if (streamError !== undefined) {
      result.failure = "stream_error";
      result.error = streamError;
    } else if (!result.sawDone || result.finishReason === undefined) {
      result.failure = "incomplete";
      result.error = `stream ended without ${result.sawDone ? "a finish_reason" : "data: [DONE]"}`;
    } else {
      result.ok = true;
    }
  } catch (e) {
    result.e2eMs = performance.now() - started;
    reader?.cancel().catch(() => {});
    if (timeout.aborted) result.failure = "timeout";
    else if (opts.signal?.aborted) result.failure = "aborted";
    else if (result.status === 0) result.failure = "network";
    else result.failure = e instanceof SyntaxError ? "bad_stream" : "incomplete";
    result.error = e instanceof Error ? e.message : String(e);
  }
  if (result.e2eMs === 0) result.e2eMs = performance.now() - started;
  return result;
}
