// POST /v1/chat/completions: schema → chat template → encode → sequences → admission → chunks or JSON.
// Response and stream shapes follow docs/API.md §4 and §5.

import { Hono } from "hono";
import type { AppEnv, ServerContext } from "../context.ts";
import { ApiError } from "../errors.ts";
import { ChatCompletionRequest, toChatMessages } from "../schemas/chat_completions.ts";
import { notSupported, resolveCommon } from "../schemas/common.ts";
import type { TokenLogprob } from "../sequence.ts";
import {
  admit,
  buildSequences,
  collectChoices,
  finishLog,
  finishOf,
  randomId,
  streamResponse,
  usageOf,
} from "./_generate.ts";
import { parseJsonBody } from "./_request.ts";

/** Fields we parse but cannot honour yet: a 400 that says so instead of silently ignoring them. */
function checkSupported(body: ChatCompletionRequest): void {
  if (body.tools && body.tools.length > 0) throw notSupported("tools", "an empty list or null", "[...]");
  if (body.functions && body.functions.length > 0) {
    throw notSupported("functions", "an empty list or null", "[...]");
  }
  const toolChoice = body.tool_choice;
  if (toolChoice != null && toolChoice !== "none" && toolChoice !== "auto") {
    throw notSupported("tool_choice", `"none" or "auto" (tools are not supported)`, toolChoice);
  }
  const functionCall = body.function_call;
  if (functionCall != null && functionCall !== "none" && functionCall !== "auto") {
    throw notSupported("function_call", `"none" or "auto" (functions are not supported)`, functionCall);
  }
  const format = body.response_format?.type;
  if (format !== undefined && format !== "text") {
    throw notSupported("response_format", `{"type": "text"}`, { type: format });
  }
}

function logprobsOf(ctx: ServerContext, items: readonly TokenLogprob[]) {
  return {
    content: items.map((lp) => ({
      token: ctx.codec.tokenText(lp.id),
      logprob: lp.logprob,
      bytes: ctx.codec.tokenBytes(lp.id),
      top_logprobs: (lp.top ?? []).map(([id, logprob]) => ({
        token: ctx.codec.tokenText(id),
        logprob,
        bytes: ctx.codec.tokenBytes(id),
      })),
    })),
    refusal: null,
  };
}

export function chatCompletionsRoute(ctx: ServerContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.post("/v1/chat/completions", async (c) => {
    const arrivalMs = performance.now();
    const body = await parseJsonBody(c, ChatCompletionRequest);
    const model = ctx.models.resolve(body.model);
    checkSupported(body);
    const opts = resolveCommon(
      body,
      {
        maxTokens: body.max_completion_tokens ?? body.max_tokens ?? null,
        logprobs: body.logprobs ? body.top_logprobs ?? 0 : undefined,
      },
      { maxN: ctx.config.maxN, maxStop: ctx.config.maxStop, vocabSize: ctx.codec.vocabSize },
    );
    const wantLogprobs = opts.request.logprobs !== undefined;

    let promptText: string;
    try {
      promptText = ctx.codec.renderChat(toChatMessages(body.messages), { addGenerationPrompt: true });
    } catch (err) {
      const detail = err instanceof Error ? err.message : String(err);
      throw new ApiError("invalid_request", `Cannot apply the chat template to messages: ${detail}`, {
        param: "messages",
      });
    }
    const promptIds = ctx.codec.encode(promptText, { addSpecialTokens: false });
    const id = `chatcmpl-${randomId()}`;
    const seqs = buildSequences(ctx, {
      requestId: id,
      prompts: [promptIds],
      opts,
      arrivalMs,
      param: "messages",
    });
    const { outputs, cancel } = admit(ctx, seqs, opts.n, c.req.raw.signal);

    const log = c.get("log");
    const base = {
      id,
      object: "chat.completion.chunk" as const,
      created: Math.floor(Date.now() / 1000),
      model,
      system_fingerprint: ctx.fingerprint,
    };

    if (!opts.stream) {
      let choices;
      try {
        choices = await collectChoices(outputs, seqs.length, cancel);
      } finally {
        finishLog(log, seqs, opts.n);
      }
      return c.json({
        ...base,
        object: "chat.completion",
        choices: choices.map((ch) => ({
          index: ch.index,
          message: { role: "assistant", content: ch.text, refusal: null },
          logprobs: wantLogprobs ? logprobsOf(ctx, ch.logprobs) : null,
          finish_reason: ch.finishReason,
        })),
        usage: usageOf(seqs, opts.n),
      });
    }

    const usageField = opts.includeUsage ? { usage: null } : {};
    async function* chunks() {
      const started = new Set<number>();
      const chunk = (
        index: number,
        delta: object,
        finish: string | null,
        logprobs: TokenLogprob[] | null,
      ) => ({
        ...base,
        choices: [{
          index,
          delta,
          logprobs: wantLogprobs && logprobs !== null && logprobs.length > 0
            ? logprobsOf(ctx, logprobs)
            : null,
          finish_reason: finish,
        }],
        ...usageField,
      });
      for await (const out of outputs) {
        const finish = finishOf(out);
        // The role chunk goes out with the choice's first token, never earlier (TTFT, docs/API.md §5.3).
        if (!started.has(out.index)) {
          started.add(out.index);
          yield chunk(out.index, { role: "assistant", content: "" }, null, null);
        }
        if (out.text !== "") yield chunk(out.index, { content: out.text }, null, out.logprobs);
        if (finish !== null) yield chunk(out.index, {}, finish, out.text === "" ? out.logprobs : null);
      }
      if (opts.includeUsage) yield { ...base, choices: [], usage: usageOf(seqs, opts.n) };
    }

    return streamResponse(chunks(), { requestId: c.get("requestId"), log, seqs, n: opts.n, cancel });
  });

  return app;
}
