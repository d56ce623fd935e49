// POST /detokenize request schema (vLLM's shape): token ids in, text out.

import { z } from "zod";

export const DetokenizeRequest = z.object({
  model: z.string().nullish(),
  tokens: z.array(z.number().int().min(0)),
});

export type DetokenizeRequest = z.infer<typeof DetokenizeRequest>;
