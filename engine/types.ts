// The engine's contract with its callers (the CLI and the server): typed requests in,
// batches of sampled token ids out. Nothing here knows about HTTP or JSON.

/** Per-request sampling settings; applied on the GPU. */
export interface SamplingParams {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** 1 disables nucleus sampling. */
  topP: number;
  /** 0 disables top-k. */
  topK: number;
  /** 0 disables min-p. */
  minP: number;
  /** u32; the same seed, prompt and settings reproduce a completion. */
  seed: number;
  /** OpenAI presence penalty (generated tokens): subtracted once from a token that was generated. */
  presencePenalty?: number;
  /** OpenAI frequency penalty: subtracted per time a token was generated. */
  frequencyPenalty?: number;
  /** vLLM/HF repetition penalty over prompt and generated tokens (1 disables). */
  repetitionPenalty?: number;
  /** Added to the logits of these token ids before sampling: [id, bias] pairs. */
  logitBias?: [number, number][];
}

/** Most logit_bias entries one request may carry. */
export const MAX_LOGIT_BIAS = 1024;

/**
 * One generation, the one record a request travels in from the server's schema to the sampler: the
 * server builds it per choice (server/routes/_generate.ts), the Runner queues it, the Engine keeps it
 * with the sequence's state, and the Sampler reads its `sampling` at every step.
 */
export interface GenerateRequest {
  /** Unique per request (and per choice when n > 1). */
  id: string;
  /** Prompt token ids, BOS included when the template wants it. */
  promptIds: number[];
  /** Generated tokens at most (the engine also stops at the context limit). */
  maxTokens: number;
  sampling: SamplingParams;
  /** Token ids that finish the sequence (EOS and friends); not reported as output. */
  stopTokenIds: number[];
  /** Keep generating past stop tokens until maxTokens. */
  ignoreEos?: boolean;
  /** Stop tokens are ignored until this many tokens were generated. */
  minTokens?: number;
  /** When > 0, report the chosen token's logprob and this many top alternatives (0 = chosen only). */
  logprobs?: number;
  /**
   * Constrained decoding: the port of a grammar matcher (grammar/ makes it; engine/constraint.ts speaks
   * its protocol). Each token is sampled under the mask the matcher gives for it, and a stop token the
   * grammar allows ends the sequence even before minTokens or with ignoreEos. Transferred to the Worker.
   */
  constraint?: MessagePort;
}

/**
 * The one context-length rule, checked by the server (before any GPU work), the Runner and the Engine:
 * the prompt and the `maxTokens` tokens it may still generate must fit in `maxContext`. Returns the one
 * message for a request that does not fit, or null when it fits.
 */
export function contextOverflow(
  o: { promptTokens: number; maxTokens: number; maxContext: number },
): string | null {
  if (o.promptTokens + o.maxTokens <= o.maxContext) return null;
  return `Prompt is too long: it has ${o.promptTokens} tokens and ${o.maxTokens} more must fit after it, ` +
    `but the context holds ${o.maxContext}`;
}

export type FinishReason = "stop" | "length" | "abort" | "error";

/** One batch of newly generated tokens of one sequence. */
export interface TokenEvent {
  ids: number[];
  /** Log-probability of each id in `ids`, when requested. */
  logprobs?: number[];
  /** Per id in `ids`, the most likely tokens as [id, logprob] pairs, best first (when requested). */
  topLogprobs?: [number, number][][];
  /** Set on the sequence's last event. */
  finishReason?: FinishReason;
  /** Prompt tokens that were served from the prefix cache (first event only). */
  cachedPromptTokens?: number;
  /** Milliseconds the request waited in the engine before it was admitted (first event only). */
  queuedMs?: number;
  /** Set when finishReason is "error". */
  error?: string;
}

export interface EngineStats {
  running: number;
  waiting: number;
  /** 0..1 share of KV cache blocks in use. */
  kvUsage: number;
  kvBlocksTotal: number;
  kvBlocksUsed: number;
  promptTokens: number;
  generationTokens: number;
  /** Prompt tokens looked up in the prefix cache, and how many it had (since start; resumed sequences
   * count again). */
  prefixCacheQueries: number;
  prefixCacheHits: number;
  /** Sequences preempted because the KV cache was full (since start). */
  preemptions: number;
}

export interface ModelInfo {
  /** Directory or name the model was loaded from. */
  source: string;
  vocabSize: number;
  /** Longest prompt + completion the engine accepts. */
  maxContext: number;
  bosId: number | null;
  eosIds: number[];
  quantization: string;
}

export type EngineState = "loading" | "ready" | "lost";

/** What the server holds: an engine running elsewhere (a Worker) or a fake in tests. */
export interface EngineHandle {
  readonly info: ModelInfo;
  state(): EngineState;
  stats(): EngineStats;
  /**
   * Starts a sequence. Events arrive in batches; the iterator ends after the event with
   * finishReason. Aborting `signal` cancels the sequence and frees its KV blocks within a step.
   */
  generate(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<TokenEvent>;
  /** Stops taking work and releases the GPU. */
  close(): Promise<void>;
}
