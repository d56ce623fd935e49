// GET /v1/models and GET /v1/models/{id}: every served name and alias as an OpenAI model object
// (docs/API.md §2).

import { Hono } from "hono";
import { type AppEnv, modelInfo, type ServerContext } from "../context.ts";
import { ApiError } from "../errors.ts";

function modelObject(ctx: ServerContext, id: string) {
  const info = modelInfo(ctx.engine);
  const object = { id, object: "model", created: ctx.startedAtS, owned_by: "trellis" };
  // While the model loads only the OpenAI fields are known.
  return info === null
    ? object
    : { ...object, root: info.source, max_model_len: info.maxContext, quantization: info.quantization };
}

export function modelsRoute(ctx: ServerContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/v1/models", (c) => {
    return c.json({ object: "list", data: ctx.models.names.map((id) => modelObject(ctx, id)) });
  });
  app.get("/v1/models/:id{.+}", (c) => {
    const id = c.req.param("id");
    if (!ctx.models.names.includes(id)) {
      const served = ctx.models.names.map((n) => `"${n}"`).join(", ");
      throw new ApiError("model_not_found", `Model "${id}" does not exist: this server serves ${served}`, {
        param: "model",
      });
    }
    return c.json(modelObject(ctx, id));
  });
  return app;
}
