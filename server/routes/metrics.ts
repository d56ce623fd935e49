// GET /metrics: Prometheus text with vLLM's metric names; gauges are sampled at scrape time.

import { Hono } from "hono";
import type { AppEnv, ServerContext } from "../context.ts";

export function metricsRoute(ctx: ServerContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/metrics", (c) => {
    const stats = ctx.engine.stats();
    const text = ctx.metrics.render({
      running: stats.running,
      // Waiting here for a running slot, plus waiting inside the engine for KV blocks.
      waiting: ctx.admission.waiting + stats.waiting,
      kvUsage: stats.kvUsage,
      prefixCacheQueries: stats.prefixCacheQueries,
      prefixCacheHits: stats.prefixCacheHits,
      preemptions: stats.preemptions,
    });
    return c.text(text, 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });
  return app;
}
