// POST /tokenize (vLLM's extension): a prompt or chat messages → token ids, count and context size.

import { Hono } from "hono";
import { type AppEnv, modelInfo, type ServerContext } from "../context.ts";
import { ApiError } from "../errors.ts";
import { TokenizeRequest } from "../schemas/tokenize.ts";
import { toChatMessages } from "../schemas/chat_completions.ts";
import { parseJsonBody } from "./_request.ts";

export function tokenizeRoute(ctx: ServerContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post("/tokenize", async (c) => {
    const body = await parseJsonBody(c, TokenizeRequest);
    if (body.model != null) ctx.models.resolve(body.model);
    let tokens: number[];
    if (body.messages != null) {
      const messages = toChatMessages(body.messages);
      let text: string;
      try {
        text = ctx.codec.renderChat(messages, { addGenerationPrompt: body.add_generation_prompt ?? true });
      } catch (err) {
        const detail = err instanceof Error ? err.message : String(err);
        throw new ApiError("invalid_request", `Cannot apply the chat template to messages: ${detail}`, {
          param: "messages",
        });
      }
      tokens = ctx.codec.encode(text, { addSpecialTokens: body.add_special_tokens ?? false });
    } else {
      tokens = ctx.codec.encode(body.prompt!, { addSpecialTokens: body.add_special_tokens ?? true });
    }
    return c.json({ count: tokens.length, max_model_len: modelInfo(ctx.engine)?.maxContext ?? null, tokens });
  });
  return app;
}
