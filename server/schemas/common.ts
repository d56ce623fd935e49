// Request fields shared by /v1/chat/completions and /v1/completions (sampling, stop, streaming, the
// vLLM extensions) and their resolution into one typed GenerationOptions, whose `request` part is the
// engine's GenerateRequest minus what each choice fills in. Zod only; no Hono.

import { z } from "zod";
import { type GenerateRequest, MAX_LOGIT_BIAS, type SamplingParams } from "../../engine/mod.ts";
import { ApiError } from "../errors.ts";

const TWO_POW_63 = 2 ** 63;

// OpenAI fields (shared ones, in the order of OpenAI's documentation).
export const FREQUENCY_PENALTY = z.number().min(-2).max(2).nullish();
export const LOGIT_BIAS = z.record(z.string(), z.number().min(-100).max(100)).superRefine((bias, ctx) => {
  for (const key of Object.keys(bias)) {
    if (!/^\d+$/.test(key)) {
      ctx.addIssue({
        code: "custom",
        path: [key],
        message: `expected token ids written as decimal strings as keys, got "${key}"`,
      });
    }
  }
}).nullish();
export const MAX_TOKENS = z.number().int().min(1).nullish();
export const N = z.number().int().min(1).nullish();
export const PRESENCE_PENALTY = z.number().min(-2).max(2).nullish();
/** OpenAI's rule for function and json_schema names. */
export const NAME = z.string().regex(
  /^[a-zA-Z0-9_-]{1,64}$/,
  "expected 1 to 64 letters, digits, underscores or dashes",
);
const JSON_SCHEMA_OBJECT = z.record(z.string(), z.unknown(), { error: "expected a JSON schema object" });
/** Constrained decoding of the output (grammar/): any JSON object, or JSON valid against a schema. */
export const RESPONSE_FORMAT = z.object({
  type: z.enum(["text", "json_object", "json_schema"], {
    error: 'expected "text", "json_object" or "json_schema"',
  }),
  json_schema: z.object({
    name: NAME,
    description: z.string().nullish(),
    schema: JSON_SCHEMA_OBJECT.nullish(),
    strict: z.boolean().nullish(),
  }).optional(),
}).superRefine((f, ctx) => {
  if (f.type === "json_schema" && f.json_schema === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["json_schema"],
      message: 'type "json_schema" needs a json_schema object',
    });
  }
}).nullish();
/** A function the model may call; other tool types (custom, built-in) are refused by name. */
export const TOOL = z.object({
  type: z.string(),
  function: z.object({
    name: NAME,
    description: z.string().nullish(),
    parameters: JSON_SCHEMA_OBJECT.nullish(),
    strict: z.boolean().nullish(),
  }).optional(),
}).superRefine((t, ctx) => {
  if (t.type !== "function") {
    ctx.addIssue({
      code: "custom",
      path: ["type"],
      message: `unsupported tool type "${t.type}": this server serves only "function" tools`,
    });
  } else if (t.function === undefined) {
    ctx.addIssue({ code: "custom", path: ["function"], message: "a function tool needs a function object" });
  }
});
/** Signed 64-bit per OpenAI; JSON numbers past 2^53 arrive rounded, which is still deterministic. */
export const SEED = z.number().refine((v) => Number.isInteger(v) && v >= -TWO_POW_63 && v < TWO_POW_63, {
  error: "expected a signed 64-bit integer",
}).nullish();
export const STOP = z.union([z.string(), z.array(z.string())], {
  error: "expected a string or an array of strings",
}).nullish();
export const STREAM = z.boolean().nullish();
export const STREAM_OPTIONS = z.object({
  include_usage: z.boolean().nullish(),
  include_obfuscation: z.boolean().nullish(),
}).nullish();
export const TEMPERATURE = z.number().min(0).max(2).nullish();
export const TOP_P = z.number().gt(0).max(1).nullish();
export const USER = z.string().nullish();

// --- vLLM extensions, accepted at top level with vLLM's names (docs/API.md §3) ---
export const VLLM_EXTENSIONS = {
  top_k: z.number().int().min(-1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repetition_penalty: z.number().gt(0).nullish(),
  min_tokens: z.number().int().min(0).nullish(),
  ignore_eos: z.boolean().nullish(),
  stop_token_ids: z.array(z.number().int().min(0)).nullish(),
  include_stop_str_in_output: z.boolean().nullish(),
  skip_special_tokens: z.boolean().nullish(),
};

/** The shared fields, only for their parsed type: both endpoint schemas list them in their own order. */
const COMMON_FIELDS = z.object({
  frequency_penalty: FREQUENCY_PENALTY,
  logit_bias: LOGIT_BIAS,
  n: N,
  presence_penalty: PRESENCE_PENALTY,
  seed: SEED,
  stop: STOP,
  stream: STREAM,
  stream_options: STREAM_OPTIONS,
  temperature: TEMPERATURE,
  top_p: TOP_P,
  ...VLLM_EXTENSIONS,
});

/** The shared fields as parsed; both endpoint schemas produce a superset of this. */
export type CommonFields = z.infer<typeof COMMON_FIELDS>;

/** What every choice of a request asks of the engine; each choice adds its id, prompt and token budget. */
export type RequestTemplate = Omit<GenerateRequest, "id" | "promptIds" | "maxTokens">;

export interface GenerationOptions {
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** Tokens per choice at most; null means until a stop or the end of the context. */
  maxTokens: number | null;
  /** Stop strings: matched on the text by the server (the engine stops on token ids only). */
  stop: string[];
  includeStopStr: boolean;
  skipSpecialTokens: boolean;
  /**
   * The engine's part. `stopTokenIds` holds the client's stop_token_ids (the route adds EOS and
   * end-of-turn ids); `sampling.seed` is choice 0's, choice i uses seed + i (docs/API.md §8); `logprobs` is
   * absent unless asked for.
   */
  request: RequestTemplate;
}

export interface Limits {
  maxN: number;
  maxStop: number;
  vocabSize: number;
}

/** A 400 for a field we parse but cannot honour yet (better than silently ignoring it). */
export function notSupported(param: string, expected: string, got: unknown): ApiError {
  return new ApiError(
    "invalid_request",
    `Parameter "${param}" is not supported yet: expected ${expected}, got ${JSON.stringify(got)}`,
    { param },
  );
}

function invalid(param: string, message: string): ApiError {
  return new ApiError("invalid_request", `Invalid value for "${param}": ${message}`, { param });
}

/**
 * Maps a signed 64-bit seed to the engine's u32: seeds in [0, 2^32) map to themselves, others fold
 * the high word in with a multiplicative hash so nearby large seeds stay distinct.
 */
export function seedToU32(seed: number): number {
  const bits = BigInt.asUintN(64, BigInt(seed));
  const lo = Number(bits & 0xffffffffn);
  const hi = Number(bits >> 32n);
  return (lo ^ Math.imul(hi, 0x9e3779b1)) >>> 0;
}

function randomU32(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/** Resolves the shared fields against server limits; throws ApiError 400 on anything we cannot serve. */
export function resolveCommon(
  body: CommonFields,
  extra: {
    maxTokens: number | null;
    /** Absent: no logprobs; else the alternatives to report per token (0: the chosen token's only). */
    logprobs?: number;
  },
  limits: Limits,
): GenerationOptions {
  const n = body.n ?? 1;
  if (n > limits.maxN) throw invalid("n", `expected at most ${limits.maxN}, got ${n}`);

  const bias = body.logit_bias ?? {};
  const logitBias: [number, number][] = [];
  for (const [key, value] of Object.entries(bias)) {
    if (Number(key) >= limits.vocabSize) {
      throw invalid(`logit_bias.${key}`, `token id ${key} is outside the vocabulary of ${limits.vocabSize}`);
    }
    logitBias.push([Number(key), value]);
  }
  if (logitBias.length > MAX_LOGIT_BIAS) {
    throw invalid("logit_bias", `expected at most ${MAX_LOGIT_BIAS} entries, got ${logitBias.length}`);
  }
  const penalties: Partial<SamplingParams> = {};
  if (body.presence_penalty) penalties.presencePenalty = body.presence_penalty;
  if (body.frequency_penalty) penalties.frequencyPenalty = body.frequency_penalty;
  if (body.repetition_penalty != null && body.repetition_penalty !== 1) {
    penalties.repetitionPenalty = body.repetition_penalty;
  }
  if (logitBias.length) penalties.logitBias = logitBias;

  const rawStop = body.stop ?? [];
  const stop = (typeof rawStop === "string" ? [rawStop] : rawStop).filter((s) => s !== "");
  if (stop.length > limits.maxStop) {
    throw invalid("stop", `expected at most ${limits.maxStop} stop strings, got ${stop.length}`);
  }
  const stopTokenIds = body.stop_token_ids ?? [];
  stopTokenIds.forEach((id, i) => {
    if (id >= limits.vocabSize) {
      throw invalid(
        `stop_token_ids[${i}]`,
        `token id ${id} is outside the vocabulary of ${limits.vocabSize}`,
      );
    }
  });

  const stream = body.stream ?? false;
  const topK = body.top_k ?? 0;
  return {
    n,
    stream,
    // stream_options without streaming is ignored (docs/API.md §3, our choice).
    includeUsage: stream && (body.stream_options?.include_usage ?? false),
    maxTokens: extra.maxTokens,
    stop,
    includeStopStr: body.include_stop_str_in_output ?? false,
    skipSpecialTokens: body.skip_special_tokens ?? true,
    request: {
      sampling: {
        temperature: body.temperature ?? 1,
        topP: body.top_p ?? 1,
        topK: topK === -1 ? 0 : topK,
        minP: body.min_p ?? 0,
        seed: body.seed == null ? randomU32() : seedToU32(body.seed),
        ...penalties,
      },
      stopTokenIds,
      ignoreEos: body.ignore_eos ?? false,
      minTokens: body.min_tokens ?? 0,
      ...(extra.logprobs !== undefined ? { logprobs: extra.logprobs } : {}),
    },
  };
}
