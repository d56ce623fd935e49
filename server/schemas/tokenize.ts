// POST /tokenize request schema (vLLM's shape): a plain prompt or chat messages, never both.

import { z } from "zod";
import { ChatCompletionRequest } from "./chat_completions.ts";

export const TokenizeRequest = z.object({
  model: z.string().nullish(),
  prompt: z.string().nullish(),
  messages: ChatCompletionRequest.shape.messages.nullish(),
  /** Default true for a prompt (adds BOS), false for messages (the template adds it). */
  add_special_tokens: z.boolean().nullish(),
  add_generation_prompt: z.boolean().nullish(),
}).superRefine((body, ctx) => {
  if ((body.prompt == null) === (body.messages == null)) {
    ctx.addIssue({ code: "custom", path: [], message: "expected exactly one of prompt or messages" });
  }
});

export type TokenizeRequest = z.infer<typeof TokenizeRequest>;
