// GET /health: 200 when the engine is ready; 503 while loading, after the GPU was lost, or while draining.

import { Hono } from "hono";
import type { AppEnv, ServerContext } from "../context.ts";
import { ApiError } from "../errors.ts";

export function healthRoute(ctx: ServerContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/health", (c) => {
    const retryAfterS = ctx.config.retryAfterS;
    if (ctx.admission.draining) throw new ApiError("unavailable", "Server is shutting down", { retryAfterS });
    const state = ctx.engine.state();
    if (state === "loading") {
      throw new ApiError("unavailable", "Model is still loading", { code: "model_loading", retryAfterS });
    }
    if (state === "lost") throw new ApiError("unavailable", "Engine is unavailable: the GPU device was lost");
    return c.json({ status: "ok" });
  });
  return app;
}
