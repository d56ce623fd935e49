// Reading a JSON body through a zod schema: the one place a ZodError becomes an OpenAI 400, and where a
// body that is not declared as JSON is refused.

import type { Context } from "hono";
import type { z } from "zod";
import { ApiError, fromZodError } from "../errors.ts";

/**
 * application/json or any +json type. Refusing the rest matters: text/plain and the form types are what a
 * browser may POST cross-origin without a CORS preflight, so accepting them lets any web page drive a
 * server on 127.0.0.1.
 */
function isJsonMediaType(contentType: string | undefined): boolean {
  const type = (contentType ?? "").split(";")[0].trim().toLowerCase();
  return type === "application/json" || /^application\/[\w.+-]+\+json$/.test(type);
}

export async function parseJsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const contentType = c.req.header("content-type");
  if (!isJsonMediaType(contentType)) {
    const got = contentType === undefined ? "no Content-Type" : `Content-Type "${contentType}"`;
    throw new ApiError(
      "unsupported_media_type",
      `Request body must be JSON: expected Content-Type "application/json", got ${got}`,
    );
  }
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
