// Server settings from command-line flags and environment variables (flags win), read once by main.ts
// and handed to createApp/startServer as a typed ServerConfig.

import { parseArgs } from "node:util";

export interface ServerConfig {
  /** Model directory (--model, TRELLIS_MODEL); read by main.ts, not by the server. */
  modelDir: string | null;
  /** Tokenizer directory when it differs from the model's (--tokenizer, TRELLIS_TOKENIZER). */
  tokenizerDir: string | null;
  /** Names clients may send as `model`; the first is canonical (--served-model-name, TRELLIS_SERVED_MODEL_NAME). */
  servedModelNames: string[];
  /** Accept any `model` value when one model is served (--accept-any-model, TRELLIS_ACCEPT_ANY_MODEL). */
  acceptAnyModel: boolean;
  host: string;
  port: number;
  /** Bearer keys for /v1/*, /tokenize, /detokenize; empty disables auth (--api-key, TRELLIS_API_KEY). */
  apiKeys: string[];
  /** Browser origins allowed by CORS; "*" for any; empty disables CORS (--cors-origins, TRELLIS_CORS_ORIGINS). */
  corsOrigins: string[];
  /** Sequences that may wait for a running slot before new requests get 429. */
  maxWaiting: number;
  /** Prompt tokens that may wait in total before new requests get 429. */
  maxWaitingTokens: number;
  /** Sequences handed to the engine at once. */
  maxRunning: number;
  /** KV cache capacity in tokens for the engine; null lets the engine size it. */
  kvCacheTokens: number | null;
  /** Prompt tokens per prefill pass, at most (longer prompts and more of them run in several passes,
   * decode rounds between); null: the engine's default, 2048 (--max-batch-tokens). */
  maxBatchTokens: number | null;
  /** Longest prompt + completion per sequence; null: the model's, at most 4096 (--max-context). */
  maxContext: number | null;
  /** Largest `n` accepted. */
  maxN: number;
  /** Most stop strings accepted. */
  maxStop: number;
  /** Largest request body in bytes (413 beyond). */
  maxBodyBytes: number;
  /** How long shutdown waits for running requests before cancelling them. */
  shutdownGraceMs: number;
  /** Retry-After sent with 429 and 503 answers. */
  retryAfterS: number;
  /** One JSON line per request on stdout. */
  logRequests: boolean;
}

export const DEFAULT_CONFIG: Readonly<ServerConfig> = {
  modelDir: null,
  tokenizerDir: null,
  servedModelNames: [],
  acceptAnyModel: false,
  host: "127.0.0.1",
  port: 8000,
  apiKeys: [],
  corsOrigins: [],
  maxWaiting: 256,
  maxWaitingTokens: 1 << 20,
  maxRunning: 64,
  kvCacheTokens: null,
  maxBatchTokens: null,
  maxContext: null,
  maxN: 8,
  maxStop: 4,
  maxBodyBytes: 8 << 20,
  shutdownGraceMs: 30_000,
  retryAfterS: 1,
  logRequests: true,
};

type Kind = "string" | "list" | "int" | "number" | "bool";

/** Flag name, environment variable, config field, value kind: the whole surface in one table. */
const SETTINGS: [flag: string, env: string, field: keyof ServerConfig, kind: Kind][] = [
  ["model", "TRELLIS_MODEL", "modelDir", "string"],
  ["tokenizer", "TRELLIS_TOKENIZER", "tokenizerDir", "string"],
  ["served-model-name", "TRELLIS_SERVED_MODEL_NAME", "servedModelNames", "list"],
  ["accept-any-model", "TRELLIS_ACCEPT_ANY_MODEL", "acceptAnyModel", "bool"],
  ["host", "TRELLIS_HOST", "host", "string"],
  ["port", "TRELLIS_PORT", "port", "int"],
  ["api-key", "TRELLIS_API_KEY", "apiKeys", "list"],
  ["cors-origins", "TRELLIS_CORS_ORIGINS", "corsOrigins", "list"],
  ["max-waiting", "TRELLIS_MAX_WAITING", "maxWaiting", "int"],
  ["max-waiting-tokens", "TRELLIS_MAX_WAITING_TOKENS", "maxWaitingTokens", "int"],
  ["max-running", "TRELLIS_MAX_RUNNING", "maxRunning", "int"],
  ["kv-cache-tokens", "TRELLIS_KV_CACHE_TOKENS", "kvCacheTokens", "int"],
  ["max-batch-tokens", "TRELLIS_MAX_BATCH_TOKENS", "maxBatchTokens", "int"],
  ["max-context", "TRELLIS_MAX_CONTEXT", "maxContext", "int"],
  ["max-n", "TRELLIS_MAX_N", "maxN", "int"],
  ["max-stop", "TRELLIS_MAX_STOP", "maxStop", "int"],
  ["max-body-bytes", "TRELLIS_MAX_BODY_BYTES", "maxBodyBytes", "int"],
  ["shutdown-grace-ms", "TRELLIS_SHUTDOWN_GRACE_MS", "shutdownGraceMs", "int"],
  ["retry-after", "TRELLIS_RETRY_AFTER", "retryAfterS", "number"],
  ["log-requests", "TRELLIS_LOG_REQUESTS", "logRequests", "bool"],
];

/**
 * vLLM's names for the same settings (`vllm serve`'s flags), so existing launch scripts and Helm values
 * work unchanged; --served-model-name, --api-key, --host and --port are already spelled as vLLM spells
 * them, and `serve MODEL` takes the model positionally as vLLM does.
 */
export const VLLM_ALIASES: Readonly<Record<string, string>> = {
  "max-model-len": "max-context",
  "max-num-seqs": "max-running",
  "max-num-batched-tokens": "max-batch-tokens",
};

/** Every setting's environment variable name, for --help and the README. */
export const ENV_NAMES: readonly string[] = SETTINGS.map((s) => s[1]);

/** One line per setting: flag, environment variable, default; then the vLLM aliases and --host's reason. */
export function configHelp(): string {
  const lines = SETTINGS.map(([flag, env, field, kind]) => {
    const value = DEFAULT_CONFIG[field];
    const shown = Array.isArray(value) ? (value.length ? value.join(",") : "none") : String(value);
    const arg = kind === "bool" ? `--[no-]${flag}` : `--${flag} ${kind === "list" ? "A,B" : "VALUE"}`;
    return `  ${arg.padEnd(34)} ${env.padEnd(28)} default ${shown}`;
  });
  const aliases = Object.entries(VLLM_ALIASES).map(([alias, flag]) => `--${alias} (--${flag})`).join(", ");
  return [
    ...lines,
    "",
    `  MODEL (positional) is --model, as in \`vllm serve MODEL\`. vLLM's names also work: ${aliases}.`,
    "  --host defaults to 127.0.0.1, this machine only: the API has no key unless --api-key is set, so it is",
    "  not offered to the network by accident (vLLM binds every interface). The container image sets 0.0.0.0.",
  ].join("\n");
}

function convert(name: string, kind: Kind, raw: string): unknown {
  switch (kind) {
    case "string":
      return raw;
    case "list":
      return raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
    case "bool": {
      const v = raw.toLowerCase();
      if (["1", "true", "yes", "on"].includes(v)) return true;
      if (["0", "false", "no", "off"].includes(v)) return false;
      throw new Error(`Invalid setting ${name}: expected true or false, got "${raw}"`);
    }
    case "int": {
      const n = Number(raw);
      if (!Number.isSafeInteger(n) || n < 0) {
        throw new Error(`Invalid setting ${name}: expected a non-negative integer, got "${raw}"`);
      }
      return n;
    }
    case "number": {
      const n = Number(raw);
      if (!Number.isFinite(n) || n < 0) {
        throw new Error(`Invalid setting ${name}: expected a non-negative number, got "${raw}"`);
      }
      return n;
    }
  }
}

/**
 * Reads flags (`--max-running 32`, `--api-key a --api-key b`, `--no-log-requests`) over environment
 * variables over DEFAULT_CONFIG. Throws on unknown flags and malformed values.
 */
export function parseConfig(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>> = Deno.env.toObject(),
): ServerConfig {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {};
  for (const [flag, , , kind] of SETTINGS) {
    options[flag] = kind === "bool" ? { type: "boolean" } : { type: "string", multiple: kind === "list" };
  }
  // vLLM's flag names become ours (`--max-model-len 4096` and `--max-model-len=4096` alike).
  const renamed = args.map((a) => {
    const m = /^--([a-z-]+)(=.*)?$/.exec(a);
    return m && Object.hasOwn(VLLM_ALIASES, m[1]) ? `--${VLLM_ALIASES[m[1]]}${m[2] ?? ""}` : a;
  });
  const { values, positionals } = parseArgs({
    args: renamed,
    options,
    strict: true,
    allowNegative: true,
    allowPositionals: true,
  });
  if (positionals.length > 1) {
    throw new Error(
      `Unexpected arguments ${
        positionals.slice(1).map((p) => `"${p}"`).join(", ")
      }: only MODEL goes without a flag`,
    );
  }
  if (positionals.length === 1) {
    if (values.model !== undefined && values.model !== positionals[0]) {
      throw new Error(`Model given twice: "${positionals[0]}" and --model "${values.model}"`);
    }
    values.model = positionals[0];
  }
  const config: Record<string, unknown> = { ...DEFAULT_CONFIG };
  for (const [flag, envName, field, kind] of SETTINGS) {
    const envValue = env[envName];
    if (envValue !== undefined && envValue !== "") config[field] = convert(envName, kind, envValue);
    const flagValue = values[flag];
    if (flagValue === undefined) continue;
    if (kind === "bool") config[field] = flagValue;
    else if (kind === "list") {
      config[field] = (flagValue as string[]).flatMap((v) => convert(`--${flag}`, kind, v) as string[]);
    } else config[field] = convert(`--${flag}`, kind, flagValue as string);
  }
  const out = config as unknown as ServerConfig;
  for (const field of ["maxRunning", "maxN", "maxBodyBytes"] as const) {
    if (out[field] < 1) throw new Error(`Invalid setting ${field}: expected at least 1, got ${out[field]}`);
  }
  if (out.port > 65535) throw new Error(`Invalid setting port: expected at most 65535, got ${out.port}`);
  // One prompt token and one completion token at least: a smaller context would start, report healthy and
  // refuse every request.
  if (out.maxBatchTokens !== null && out.maxBatchTokens < 1) {
    throw new Error(`Invalid setting maxBatchTokens: expected at least 1, got ${out.maxBatchTokens}`);
  }
  if (out.maxContext !== null && out.maxContext < 2) {
    throw new Error(`Invalid setting maxContext: expected at least 2 tokens, got ${out.maxContext}`);
  }
  return out;
}
