// The part of the data path chat and text completions share: prompts × n → sequences (context check,
// per-choice seeds, stop ids) → admission, and the finished choices and usage afterwards.

import { contextOverflow, type GenerateRequest } from "../../engine/mod.ts";
import type { Grammar } from "../../grammar/mod.ts";
import { CLIENT_CLOSED, type RequestLog, type ServerContext } from "../context.ts";
import { ApiError } from "../errors.ts";
import type { GenerationOptions } from "../schemas/common.ts";
import type { Submission } from "../admission.ts";
import { Sequence, type SequenceOutput, type TokenLogprob } from "../sequence.ts";
import { sseResponse } from "../sse.ts";
import type { TextCodec } from "../../text/mod.ts";

export function randomId(): string {
  return crypto.randomUUID().replaceAll("-", "");
}

export interface BuildOptions {
  requestId: string;
  /** Token ids of each prompt; choice index = promptIndex × n + sampleIndex (docs/API.md §6). */
  prompts: number[][];
  opts: GenerationOptions;
  arrivalMs: number;
  /** Field to blame for an over-long prompt: "messages" or "prompt". */
  param: string;
  /** Constrained decoding: every choice generates under a matcher of this grammar. */
  grammar?: Grammar | null;
}

/** The longest text any one token of `codec` stands for, in UTF-16 units (computed once per codec). */
const longestToken = new WeakMap<TextCodec, number>();

function longestTokenChars(codec: TextCodec): number {
  let longest = longestToken.get(codec);
  if (longest === undefined) {
    longest = 1;
    for (let id = 0; id < codec.vocabSize; id++) longest = Math.max(longest, codec.tokenText(id).length);
    longestToken.set(codec, longest);
  }
  return longest;
}

/**
 * Refuses, before encoding, prompt text that cannot fit the context whatever its tokens: more characters
 * than the context times the longest token's text (`tokenText`, which spells byte tokens as "<0xNN>" and so
 * only overestimates). Encoding megabytes would block the HTTP thread for seconds (/health included).
 */
export function checkPromptText(ctx: ServerContext, text: string, param: string): void {
  ctx.admission.checkAvailable();
  const maxContext = ctx.engine.info.maxContext;
  const limit = maxContext * longestTokenChars(ctx.codec);
  if (text.length > limit) {
    throw new ApiError(
      "invalid_request",
      `The prompt has ${text.length} characters, more than the ${maxContext}-token context can hold ` +
        `(at most ${limit}: no token is longer than ${limit / maxContext} characters)`,
      { param, code: "context_length_exceeded" },
    );
  }
}

/** One Sequence per choice; a prompt that leaves no room for a completion is a 400 before any GPU work. */
export function buildSequences(ctx: ServerContext, b: BuildOptions): Sequence[] {
  // 503 while loading, lost or draining, before anything reads the model's info.
  ctx.admission.checkAvailable();
  const maxContext = ctx.engine.info.maxContext;
  const template = b.opts.request;
  const stopTokenIds = [
    ...new Set([
      ...ctx.codec.eosIds,
      ...ctx.codec.endOfTurnIds,
      ...ctx.engine.info.eosIds,
      ...template.stopTokenIds,
    ]),
  ];
  b.prompts.forEach((promptIds, p) => {
    if (promptIds.length === 0) {
      const what = b.param === "messages" ? "The messages render to" : "The prompt encodes to";
      throw new ApiError(
        "invalid_request",
        `${what} an empty prompt: expected at least one token (a Llama 2 chat needs a user message)`,
        { param: b.prompts.length > 1 ? `${b.param}[${p}]` : b.param },
      );
    }
    // At least one token must be left for the completion.
    const overflow = contextOverflow({ promptTokens: promptIds.length, maxTokens: 1, maxContext });
    if (overflow !== null) {
      throw new ApiError("invalid_request", overflow, { param: b.param, code: "context_length_exceeded" });
    }
  });
  const seqs: Sequence[] = [];
  b.prompts.forEach((promptIds, p) => {
    // Prompt + max_tokens beyond the context is clamped and finishes with "length" (docs/API.md §8, ours).
    const room = maxContext - promptIds.length;
    const maxTokens = Math.min(b.opts.maxTokens ?? room, room);
    for (let i = 0; i < b.opts.n; i++) {
      const index = p * b.opts.n + i;
      // The grammar allows the stop tokens once its output is complete.
      const matcher = b.grammar?.matcher(stopTokenIds);
      const request: GenerateRequest = {
        ...template,
        id: `${b.requestId}-${index}`,
        promptIds,
        maxTokens,
        sampling: { ...template.sampling, seed: (template.sampling.seed + i) >>> 0 },
        stopTokenIds,
        ...(matcher ? { constraint: matcher.port } : {}),
      };
      seqs.push(
        new Sequence({
          request,
          index,
          stop: b.opts.stop,
          includeStopStr: b.opts.includeStopStr,
          skipSpecialTokens: b.opts.skipSpecialTokens,
          codec: ctx.codec,
          arrivalMs: b.arrivalMs,
          metrics: ctx.metrics,
          release: matcher?.release,
        }),
      );
    }
  });
  return seqs;
}

/** An output's finish reason as OpenAI names it; engine errors and cancellations become ApiErrors. */
export function finishOf(out: SequenceOutput): "stop" | "length" | null {
  switch (out.finishReason) {
    case undefined:
      return null;
    case "stop":
    case "length":
      return out.finishReason;
    case "error":
      throw out.error ?? new ApiError("internal", "Engine failed while generating");
    case "abort":
      throw new ApiError("unavailable", "Request was cancelled before it finished", { retryAfterS: 1 });
  }
}

export interface FinishedChoice {
  index: number;
  text: string;
  logprobs: TokenLogprob[];
  finishReason: "stop" | "length";
}

/** Waits for every choice (non-streaming); the first failure cancels the rest and is thrown. */
export async function collectChoices(
  outputs: AsyncIterable<SequenceOutput>,
  count: number,
  cancel: () => void,
): Promise<FinishedChoice[]> {
  const choices: FinishedChoice[] = Array.from(
    { length: count },
    (_, index) => ({ index, text: "", logprobs: [], finishReason: "length" }),
  );
  try {
    for await (const out of outputs) {
      const choice = choices[out.index];
      choice.text += out.text;
      choice.logprobs.push(...out.logprobs);
      const finish = finishOf(out);
      if (finish !== null) choice.finishReason = finish;
    }
  } catch (err) {
    cancel();
    throw err;
  }
  return choices;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
  completion_tokens_details: { reasoning_tokens: number };
}

/** Prompt tokens count once per prompt (not per choice); completion tokens sum over all choices. */
export function usageOf(seqs: readonly Sequence[], n: number): Usage {
  let prompt = 0;
  let cached = 0;
  let completion = 0;
  for (let s = 0; s < seqs.length; s++) {
    const seq = seqs[s];
    completion += seq.completionTokens;
    if (s % n === 0) {
      prompt += seq.promptTokens;
      cached += Math.max(...seqs.slice(s, s + n).map((q) => q.cachedPromptTokens));
    }
  }
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
    completion_tokens_details: { reasoning_tokens: 0 },
  };
}

/** Hands the sequences to Admission (429/503 come from here) and counts the prompt tokens. */
export function admit(ctx: ServerContext, seqs: Sequence[], n: number, signal: AbortSignal): Submission {
  let submission: Submission;
  try {
    submission = ctx.admission.submit(seqs, signal);
  } catch (e) {
    for (const s of seqs) s.dispose();
    throw e;
  }
  ctx.metrics.addPromptTokens(usageOf(seqs, n).prompt_tokens);
  return submission;
}

/** Token counts and time to first token for the request's log line. */
export function finishLog(log: RequestLog, seqs: readonly Sequence[], n: number): void {
  const usage = usageOf(seqs, n);
  log.fields.prompt_tokens = usage.prompt_tokens;
  log.fields.completion_tokens = usage.completion_tokens;
  const first = seqs.map((s) => s.firstTokenMs).filter((t) => t !== null);
  if (first.length > 0) log.firstToken(Math.min(...first));
}

/**
 * The SSE response of a streaming route: cancels the choices when the client goes away or the stream
 * fails, and writes the request's log line (usage, first-token time, outcome) when the stream closes.
 */
export function streamResponse(
  events: AsyncIterable<unknown>,
  o: { requestId: string; log: RequestLog; seqs: readonly Sequence[]; n: number; cancel: () => void },
): Response {
  o.log.deferred = true;
  return sseResponse(events, {
    headers: { "x-request-id": o.requestId },
    onCancel: o.cancel,
    onClose: (outcome) => {
      if (outcome === "error") o.cancel();
      finishLog(o.log, o.seqs, o.n);
      o.log.fields.outcome = outcome;
      o.log.write(outcome === "cancelled" ? CLIENT_CLOSED : 200);
    },
  });
}
