// Reading a JSON body through a zod schema: the one place a ZodError becomes an OpenAI 400.

import type { Context } from "hono";
import type { z } from "zod";
import { ApiError, fromZodError } from "../errors.ts";

export async function parseJsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const text = await c.req.text();
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    throw new ApiError("invalid_request", `Request body is not valid JSON: ${detail}`);
  }
  const result = schema.safeParse(raw);
  if (!result.success) throw fromZodError(result.error);
  return result.data;
}
