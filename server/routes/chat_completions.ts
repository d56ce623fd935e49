// POST /v1/chat/completions: schema → output plan (tools, response_format) → chat template → encode →
// grammar → sequences → admission → chunks or JSON. Response and stream shapes follow docs/API.md §4 and §5;
// tool calls are read from each choice's text by ToolCallParser (streamed as delta.tool_calls pieces).

import { Hono } from "hono";
import type { AppEnv, ServerContext } from "../context.ts";
import { ApiError } from "../errors.ts";
import { ChatCompletionRequest, toChatMessages } from "../schemas/chat_completions.ts";
import { notSupported, resolveCommon } from "../schemas/common.ts";
import type { TokenLogprob } from "../sequence.ts";
import { chatPlan, compilePlan, type ToolPlan } from "../structured.ts";
import { type ToolCallDelta, ToolCallParser } from "../tool_calls.ts";
import {
  admit,
  buildSequences,
  checkPromptText,
  collectChoices,
  finishLog,
  finishOf,
  randomId,
  streamResponse,
  usageOf,
} from "./_generate.ts";
import { parseJsonBody } from "./_request.ts";

/** Fields we parse but cannot honour: a 400 that says so instead of silently ignoring them. */
function checkSupported(body: ChatCompletionRequest): void {
  // The legacy functions API: clients send tools now (docs/API.md §3).
  if (body.functions && body.functions.length > 0) {
    throw notSupported("functions", 'an empty list or null (send "tools" instead)', "[...]");
  }
  const functionCall = body.function_call;
  if (functionCall != null && functionCall !== "none" && functionCall !== "auto") {
    throw notSupported("function_call", '"none" or "auto" (send "tool_choice" instead)', functionCall);
  }
}

/** An OpenAI tool_calls delta entry: the first of a call carries its id, type and name. */
function toolCallChunk(d: ToolCallDelta) {
  return d.id !== undefined
    ? { index: d.index, id: d.id, type: "function", function: { name: d.name, arguments: d.arguments } }
    : { index: d.index, function: { arguments: d.arguments } };
}

function toolParser(plan: ToolPlan | null): ToolCallParser | null {
  return plan && new ToolCallParser(plan);
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
    const plan = chatPlan(body);
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
      promptText = ctx.codec.renderChat(toChatMessages(body.messages), {
        addGenerationPrompt: true,
        tools: plan.tools,
      });
    } catch (err) {
      const detail = err instanceof Error ? err.message : String(err);
      throw new ApiError("invalid_request", `Cannot apply the chat template to messages: ${detail}`, {
        param: "messages",
      });
    }
    checkPromptText(ctx, promptText, "messages");
    const promptIds = ctx.codec.encode(promptText, { addSpecialTokens: false });
    const id = `chatcmpl-${randomId()}`;
    // 503 before compiling while the model loads; the compile runs in a grammar Worker.
    ctx.admission.checkAvailable();
    const grammar = await compilePlan(ctx.grammars, plan);
    const seqs = buildSequences(ctx, {
      requestId: id,
      prompts: [promptIds],
      opts,
      arrivalMs,
      param: "messages",
      grammar,
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
        choices: choices.map((ch) => {
          const parser = toolParser(plan.toolCalls);
          const content = parser ? parser.push(ch.text).content + parser.finish().content : ch.text;
          const calls = parser?.calls ?? [];
          return {
            index: ch.index,
            message: {
              role: "assistant",
              content: calls.length > 0 && content.trim() === "" ? null : content,
              refusal: null,
              ...(calls.length > 0
                ? {
                  tool_calls: calls.map((t) => ({
                    id: t.id,
                    type: "function",
                    function: { name: t.name, arguments: t.arguments },
                  })),
                }
                : {}),
            },
            logprobs: wantLogprobs ? logprobsOf(ctx, ch.logprobs) : null,
            finish_reason: calls.length > 0 && ch.finishReason === "stop" ? "tool_calls" : ch.finishReason,
          };
        }),
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
      const parsers = new Map<number, ToolCallParser>();
      /** Logprobs of text a parser still holds: they ride on the choice's next chunk. */
      const heldLogprobs = new Map<number, TokenLogprob[]>();
      for await (const out of outputs) {
        const finish = finishOf(out);
        // The role chunk goes out with the choice's first token, never earlier (TTFT, docs/API.md §5.3).
        if (!started.has(out.index)) {
          started.add(out.index);
          yield chunk(out.index, { role: "assistant", content: "" }, null, null);
          const parser = toolParser(plan.toolCalls);
          if (parser) parsers.set(out.index, parser);
        }
        const parser = parsers.get(out.index);
        if (!parser) {
          if (out.text !== "") yield chunk(out.index, { content: out.text }, null, out.logprobs);
          if (finish !== null) yield chunk(out.index, {}, finish, out.text === "" ? out.logprobs : null);
          continue;
        }
        let logprobs = [...(heldLogprobs.get(out.index) ?? []), ...out.logprobs];
        const released = [parser.push(out.text)];
        if (finish !== null) released.push(parser.finish());
        for (const r of released) {
          if (r.content !== "") {
            yield chunk(out.index, { content: r.content }, null, logprobs);
            logprobs = [];
          }
          for (const d of r.calls) {
            yield chunk(out.index, { tool_calls: [toolCallChunk(d)] }, null, logprobs);
            logprobs = [];
          }
        }
        heldLogprobs.set(out.index, logprobs);
        if (finish !== null) {
          const reason = parser.calls.length > 0 && finish === "stop" ? "tool_calls" : finish;
          yield chunk(out.index, {}, reason, logprobs);
        }
      }
      if (opts.includeUsage) yield { ...base, choices: [], usage: usageOf(seqs, opts.n) };
    }

    return streamResponse(chunks(), { requestId: c.get("requestId"), log, seqs, n: opts.n, cancel });
  });

  return app;
}
