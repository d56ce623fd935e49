// What every route can reach (engine, codec, admission, metrics, config, served names) and the
// per-request values Hono carries between middleware and handlers (request id, request log).

import type { EngineHandle, ModelInfo } from "../engine/mod.ts";
import type { ServerConfig } from "./config.ts";
import { ApiError } from "./errors.ts";
import type { Metrics } from "./metrics.ts";
import type { Admission } from "./admission.ts";
import type { TextCodec } from "../text/mod.ts";
import type { GrammarPool } from "../grammar/mod.ts";

/** The engine's model info, or null while it is still loading (a Worker engine knows it only then). */
export function modelInfo(engine: EngineHandle): ModelInfo | null {
  if (engine.state() === "loading") return null;
  try {
    return engine.info;
  } catch {
    return null;
  }
}

export type LogFn = (record: Record<string, unknown>) => void;

/** Logged status of a request whose client closed the connection first (nginx's convention). */
export const CLIENT_CLOSED = 499;

/** One structured line per request, written when the response (or its stream) ends. */
export class RequestLog {
  readonly fields: Record<string, unknown>;
  /** Set by streaming routes: the line is written when the stream closes, not when headers go out. */
  deferred = false;
  readonly #startMs = performance.now();
  readonly #log: LogFn;
  #written = false;

  constructor(log: LogFn, fields: Record<string, unknown>) {
    this.#log = log;
    this.fields = fields;
  }

  /** Time to first token, measured from when the request arrived. */
  firstToken(atMs: number): void {
    this.fields.ttft_ms ??= Math.round(atMs - this.#startMs);
  }

  write(status: number): void {
    if (this.#written) return;
    this.#written = true;
    this.#log({
      level: status >= 500 ? "error" : "info",
      msg: "request",
      ...this.fields,
      status,
      duration_ms: Math.round(performance.now() - this.#startMs),
    });
  }
}

export interface AppEnv {
  Variables: { requestId: string; log: RequestLog };
}

/** Served names: the first is canonical, the rest are aliases; all are listed by /v1/models. */
export class ModelNames {
  readonly names: readonly string[];
  readonly #acceptAny: boolean;

  constructor(names: readonly string[], acceptAny: boolean) {
    this.names = names;
    this.#acceptAny = acceptAny && names.length > 0;
  }

  get canonical(): string {
    return this.names[0];
  }

  /** The name to report for a request's `model`; 404 model_not_found for names we do not serve. */
  resolve(requested: string): string {
    if (this.names.includes(requested)) return requested;
    if (this.#acceptAny) return this.canonical;
    const served = this.names.map((n) => `"${n}"`).join(", ");
    throw new ApiError(
      "model_not_found",
      `Model "${requested}" does not exist: this server serves ${served}`,
      {
        param: "model",
      },
    );
  }
}

export interface ServerContext {
  engine: EngineHandle;
  codec: TextCodec;
  config: ServerConfig;
  admission: Admission;
  metrics: Metrics;
  models: ModelNames;
  /** `fp_` + a hash of what can change results for a fixed seed (model, quantization). */
  fingerprint: string;
  /** Unix seconds; `created` of the model objects. */
  startedAtS: number;
  /** The grammar compiler for structured outputs and forced tool calls (made at first use). */
  grammars(): GrammarPool;
  log: LogFn;
}
