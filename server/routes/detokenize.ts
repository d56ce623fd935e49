// POST /detokenize (vLLM's extension): token ids → text.

import { Hono } from "hono";
import type { AppEnv, ServerContext } from "../context.ts";
import { ApiError } from "../errors.ts";
import { DetokenizeRequest } from "../schemas/detokenize.ts";
import { parseJsonBody } from "./_request.ts";

export function detokenizeRoute(ctx: ServerContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post("/detokenize", async (c) => {
    const body = await parseJsonBody(c, DetokenizeRequest);
    if (body.model != null) ctx.models.resolve(body.model);
    const bad = body.tokens.findIndex((id) => id >= ctx.codec.vocabSize);
    if (bad !== -1) {
      throw new ApiError(
        "invalid_request",
        `Invalid value for "tokens[${bad}]": token id ${
          body.tokens[bad]
        } is outside the vocabulary of ${ctx.codec.vocabSize}`,
        { param: `tokens[${bad}]` },
      );
    }
    return c.json({ prompt: ctx.codec.decode(body.tokens, { skipSpecialTokens: false }) });
  });
  return app;
}
