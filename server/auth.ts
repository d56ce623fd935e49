// Bearer API keys, compared in constant time so response timing does not reveal how much of a key matched.

import type { MiddlewareHandler } from "hono";
import { ApiError } from "./errors.ts";

const ENCODER = new TextEncoder();

/** Compares every byte of the longer input; the time depends only on the lengths. */
export function timingSafeEqual(a: string, b: string): boolean {
  const x = ENCODER.encode(a);
  const y = ENCODER.encode(b);
  const len = Math.max(x.length, y.length);
  let diff = x.length ^ y.length;
  for (let i = 0; i < len; i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/** Checks `Authorization: Bearer <key>` against every configured key (no early exit). */
export function bearerAuth(keys: readonly string[]): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "OPTIONS") {
      const match = /^Bearer\s+(.+)$/i.exec(c.req.header("authorization") ?? "");
      const token = match ? match[1].trim() : "";
      let ok = false;
      for (const key of keys) ok = timingSafeEqual(token, key) || ok;
      if (!ok) {
        const detail = match ? "the key does not match" : "expected an Authorization: Bearer <key> header";
        throw new ApiError("unauthorized", `Invalid API key: ${detail}`);
      }
    }
    await next();
  };
}
