// POST /v1/completions (legacy text completions) request schema (docs/API.md §6). Non-strict like chat.
// Fields follow OpenAI's documentation order; vLLM extensions come last.

import { z } from "zod";
import {
  FREQUENCY_PENALTY,
  LOGIT_BIAS,
  N,
  PRESENCE_PENALTY,
  RESPONSE_FORMAT,
  SEED,
  STOP,
  STREAM,
  STREAM_OPTIONS,
  TEMPERATURE,
  TOP_P,
  USER,
  VLLM_EXTENSIONS,
} from "./common.ts";

const TOKEN_IDS = z.array(z.number().int().min(0)).min(1, "expected at least one token id");

/** Prompts per request at most, as OpenAI's API caps the array. */
export const MAX_PROMPTS = 2048;

/** A list of more than MAX_PROMPTS prompts is refused before its elements are validated: zod would spend
 * seconds on a 4 MB body of one-token prompts before any length check ran. */
function capPrompts(value: unknown, ctx: z.core.ParsePayload): unknown {
  if (Array.isArray(value) && value.length > MAX_PROMPTS && typeof value[0] !== "number") {
    ctx.issues.push({
      code: "too_big",
      origin: "array",
      maximum: MAX_PROMPTS,
      inclusive: true,
      input: value,
      message: `expected at most ${MAX_PROMPTS} prompts, got ${value.length}`,
    });
    return z.NEVER;
  }
  return value;
}

export const PROMPT = z.preprocess(
  capPrompts,
  z.union([
    z.string(),
    z.array(z.string()).min(1, "expected at least one prompt"),
    TOKEN_IDS,
    z.array(TOKEN_IDS).min(1, "expected at least one prompt"),
  ], { error: "expected a string, or a non-empty array of strings, of token ids or of token-id arrays" }),
);

export const CompletionRequest = z.object({
  model: z.string(),
  prompt: PROMPT,
  best_of: z.number().int().min(1).nullish(),
  echo: z.boolean().nullish(),
  frequency_penalty: FREQUENCY_PENALTY,
  logit_bias: LOGIT_BIAS,
  logprobs: z.number().int().min(0).max(5).nullish(),
  // Legacy default 16; an explicit null means until EOS or the end of the context.
  max_tokens: z.number().int().min(1).nullable().default(16),
  n: N,
  presence_penalty: PRESENCE_PENALTY,
  seed: SEED,
  stop: STOP,
  stream: STREAM,
  stream_options: STREAM_OPTIONS,
  suffix: z.string().nullish(),
  temperature: TEMPERATURE,
  top_p: TOP_P,
  user: USER,
  // --- vLLM extensions ---
  ...VLLM_EXTENSIONS,
  /** vLLM accepts chat's response_format on completions too. */
  response_format: RESPONSE_FORMAT,
});

export type CompletionRequest = z.infer<typeof CompletionRequest>;
