// POST /v1/completions (legacy text completions): schema → encode each prompt → prompts × n sequences
// → admission → chunks or JSON (docs/API.md §6). choices[i].index = promptIndex × n + sampleIndex.

import { Hono } from "hono";
import type { AppEnv, ServerContext } from "../context.ts";
import { ApiError } from "../errors.ts";
import { notSupported, resolveCommon } from "../schemas/common.ts";
import { CompletionRequest } from "../schemas/completions.ts";
import type { TokenLogprob } from "../sequence.ts";
import { compilePlan, completionPlan } from "../structured.ts";
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

function checkSupported(body: CompletionRequest, n: number): void {
  if (body.suffix) throw notSupported("suffix", "an empty string or null", body.suffix);
  if (body.echo && body.logprobs != null) {
    throw notSupported("echo", "false when logprobs are requested (no prompt logprobs yet)", body.echo);
  }
  if (body.best_of != null) {
    if (body.best_of < n) {
      throw new ApiError(
        "invalid_request",
        `Invalid value for "best_of": expected at least n (${n}), got ${body.best_of}`,
        {
          param: "best_of",
        },
      );
    }
    if (body.best_of > n) throw notSupported("best_of", `null or equal to n (${n})`, body.best_of);
  }
}

interface Prompt {
  ids: number[];
  /** Text used for `echo`. */
  text: () => string;
}

/** Encodes the prompts, after refusing (400) more prompts × n than the server admits, or text too long
 * for the context: nothing is encoded or built for a request that cannot run. */
function toPrompts(ctx: ServerContext, prompt: CompletionRequest["prompt"], n: number): Prompt[] {
  const count = typeof prompt === "string" || typeof prompt[0] === "number" ? 1 : prompt.length;
  ctx.admission.checkCount(count * n);
  const fromText = (text: string, i: number): Prompt => {
    checkPromptText(ctx, text, count > 1 ? `prompt[${i}]` : "prompt");
    return { ids: ctx.codec.encode(text, { addSpecialTokens: true }), text: () => text };
  };
  const fromIds = (ids: number[], p: string): Prompt => {
    const bad = ids.findIndex((id) => id >= ctx.codec.vocabSize);
    if (bad !== -1) {
      throw new ApiError(
        "invalid_request",
        `Invalid value for "${p}[${bad}]": token id ${
          ids[bad]
        } is outside the vocabulary of ${ctx.codec.vocabSize}`,
        { param: `${p}[${bad}]` },
      );
    }
    return { ids, text: () => ctx.codec.decode(ids, { skipSpecialTokens: false }) };
  };
  if (typeof prompt === "string") return [fromText(prompt, 0)];
  if (prompt.every((p) => typeof p === "string")) return (prompt as string[]).map(fromText);
  if (prompt.every((p) => typeof p === "number")) return [fromIds(prompt as number[], "prompt")];
  return (prompt as number[][]).map((ids, i) => fromIds(ids, `prompt[${i}]`));
}

/** Legacy logprobs: parallel arrays; `text_offset` counts from the start of the returned text. */
function legacyLogprobs(ctx: ServerContext, items: readonly TokenLogprob[], offsetBase: number) {
  const tokens = items.map((lp) => ctx.codec.tokenText(lp.id));
  return {
    tokens,
    token_logprobs: items.map((lp) => lp.logprob),
    // The chosen token, then its alternatives (as vLLM does); a token already listed keeps the first value.
    top_logprobs: items.map((lp, i) => {
      const entries: Record<string, number> = { [tokens[i]]: lp.logprob };
      for (const [id, logprob] of lp.top ?? []) {
        const text = ctx.codec.tokenText(id);
        if (!(text in entries)) entries[text] = logprob;
      }
      return entries;
    }),
    text_offset: items.map((lp) => offsetBase + lp.offset),
  };
}

export function completionsRoute(ctx: ServerContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.post("/v1/completions", async (c) => {
    const arrivalMs = performance.now();
    const body = await parseJsonBody(c, CompletionRequest);
    const model = ctx.models.resolve(body.model);
    const opts = resolveCommon(
      body,
      { maxTokens: body.max_tokens, logprobs: body.logprobs ?? undefined },
      { maxN: ctx.config.maxN, maxStop: ctx.config.maxStop, vocabSize: ctx.codec.vocabSize },
    );
    checkSupported(body, opts.n);
    const wantLogprobs = opts.request.logprobs !== undefined;
    const prompts = toPrompts(ctx, body.prompt, opts.n);
    const echo = body.echo ?? false;
    const echoText = (index: number) => echo ? prompts[Math.floor(index / opts.n)].text() : "";

    const id = `cmpl-${randomId()}`;
    const plan = completionPlan(body);
    ctx.admission.checkAvailable();
    const grammar = await compilePlan(ctx.grammars, plan);
    const seqs = buildSequences(ctx, {
      requestId: id,
      prompts: prompts.map((p) => p.ids),
      opts,
      arrivalMs,
      param: "prompt",
      grammar,
    });
    const { outputs, cancel } = admit(ctx, seqs, opts.n, c.req.raw.signal);
    const log = c.get("log");
    const base = {
      id,
      object: "text_completion" as const,
      created: Math.floor(Date.now() / 1000),
      model,
      system_fingerprint: ctx.fingerprint,
    };

    if (!opts.stream) {
      try {
        const choices = await collectChoices(outputs, seqs.length, cancel);
        return c.json({
          ...base,
          choices: choices.map((ch) => {
            const prefix = echoText(ch.index);
            return {
              index: ch.index,
              text: prefix + ch.text,
              logprobs: wantLogprobs ? legacyLogprobs(ctx, ch.logprobs, prefix.length) : null,
              finish_reason: ch.finishReason,
            };
          }),
          usage: usageOf(seqs, opts.n),
        });
      } finally {
        finishLog(log, seqs, opts.n);
      }
    }

    const usageField = opts.includeUsage ? { usage: null } : {};
    async function* chunks() {
      const started = new Set<number>();
      for await (const out of outputs) {
        const finish = finishOf(out);
        const prefix = echoText(out.index);
        let text = out.text;
        if (!started.has(out.index)) {
          started.add(out.index);
          text = prefix + text;
        }
        if (text === "" && finish === null) continue;
        yield {
          ...base,
          choices: [{
            index: out.index,
            text,
            logprobs: wantLogprobs ? legacyLogprobs(ctx, out.logprobs, prefix.length) : null,
            finish_reason: finish,
          }],
          ...usageField,
        };
      }
      if (opts.includeUsage) yield { ...base, choices: [], usage: usageOf(seqs, opts.n) };
    }

    return streamResponse(chunks(), { requestId: c.get("requestId"), log, seqs, n: opts.n, cancel });
  });

  return app;
}
