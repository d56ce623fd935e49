// createApp(deps): the Hono app (request ids and logs, CORS, body limit, auth, routes, OpenAI error
// bodies) around one engine and codec; startServer(config, deps) serves it with Deno.serve.

import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import type { EngineHandle, ModelInfo } from "../engine/mod.ts";
import { bearerAuth } from "./auth.ts";
import { DEFAULT_CONFIG, type ServerConfig } from "./config.ts";
import {
  type AppEnv,
  CLIENT_CLOSED,
  type LogFn,
  modelInfo,
  ModelNames,
  RequestLog,
  type ServerContext,
} from "./context.ts";
import { ApiError, toApiError } from "./errors.ts";
import { Metrics } from "./metrics.ts";
import { chatCompletionsRoute } from "./routes/chat_completions.ts";
import { completionsRoute } from "./routes/completions.ts";
import { detokenizeRoute } from "./routes/detokenize.ts";
import { healthRoute } from "./routes/health.ts";
import { metricsRoute } from "./routes/metrics.ts";
import { modelsRoute } from "./routes/models.ts";
import { tokenizeRoute } from "./routes/tokenize.ts";
import { Admission } from "./admission.ts";
import { DisconnectWatch } from "./disconnect.ts";
import type { TextCodec } from "../text/mod.ts";
import { GrammarPool } from "../grammar/mod.ts";

export interface AppDeps {
  engine: EngineHandle;
  codec: TextCodec;
  /** Missing fields take DEFAULT_CONFIG's values. */
  config?: Partial<ServerConfig>;
  /** Built from config when absent. */
  admission?: Admission;
  metrics?: Metrics;
  /** Receives one record per request and per server error; default: JSON lines on stdout when config.logRequests. */
  log?: LogFn;
  /** Built over the codec's vocabulary at first use when absent. */
  grammars?: GrammarPool;
}

export interface ServerApp {
  app: Hono<AppEnv>;
  models: ModelNames;
  log: LogFn;
  admission: Admission;
  metrics: Metrics;
  config: ServerConfig;
  /** Graceful drain: new requests get 503, running ones get `graceMs` (default config.shutdownGraceMs), then are
   * cancelled; the grammar Workers stop. */
  shutdown(graceMs?: number): Promise<void>;
  /** The grammar compiler (main.ts warms it up once the model is loaded). */
  grammars(): GrammarPool;
}

const PUBLIC_HEADERS = ["x-request-id", "retry-after", "retry-after-ms", "x-should-retry"];

/** FNV-1a, enough to tell model builds apart in `system_fingerprint`. */
function fingerprintOf(info: ModelInfo): string {
  const text = `${info.source}|${info.quantization}|${info.vocabSize}|${info.maxContext}`;
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) h = Math.imul(h ^ byte, 0x01000193);
  return `fp_${(h >>> 0).toString(16).padStart(8, "0")}`;
}

function defaultModelName(source: string): string {
  const parts = source.replace(/[\\/]+$/, "").split(/[\\/]/);
  return parts[parts.length - 1] || "model";
}

function stdoutLog(record: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), ...record }));
}

export function createApp(deps: AppDeps): ServerApp {
  const config: ServerConfig = { ...DEFAULT_CONFIG, ...deps.config };
  const names = config.servedModelNames.length > 0
    ? config.servedModelNames
    : [defaultModelName(config.modelDir ?? modelInfo(deps.engine)?.source ?? "model")];
  const log: LogFn = deps.log ?? (config.logRequests ? stdoutLog : () => {});
  const admission = deps.admission ?? new Admission({
    engine: deps.engine,
    maxRunning: config.maxRunning,
    maxWaiting: config.maxWaiting,
    maxWaitingTokens: config.maxWaitingTokens,
    retryAfterS: config.retryAfterS,
  });
  const metrics = deps.metrics ?? new Metrics(names[0]);
  let fingerprint: string | undefined;
  let grammars = deps.grammars ?? null;
  // Masks have a bit per logits row, so the pool needs the engine's vocabulary size: made at first use.
  const grammarPool = () =>
    grammars ??= new GrammarPool({
      vocabulary: deps.codec.vocabulary(),
      vocabSize: deps.engine.info.vocabSize,
    });
  const ctx: ServerContext = {
    engine: deps.engine,
    codec: deps.codec,
    config,
    admission,
    metrics,
    models: new ModelNames(names, config.acceptAnyModel),
    get fingerprint() {
      // Computed once the model has loaded; requests only reach the routes that use it after that.
      fingerprint ??= fingerprintOf(deps.engine.info);
      return fingerprint;
    },
    startedAtS: Math.floor(Date.now() / 1000),
    log,
    grammars: grammarPool,
  };

  const app = new Hono<AppEnv>();

  // Request id (echoed when the client sent a sane one) and the request's log line.
  app.use("*", async (c, next) => {
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && /^[\x21-\x7e]{1,128}$/.test(incoming) ? incoming : crypto.randomUUID();
    const requestLog = new RequestLog(log, {
      request_id: requestId,
      method: c.req.method,
      route: c.req.path,
    });
    c.set("requestId", requestId);
    c.set("log", requestLog);
    await next();
    c.res.headers.set("x-request-id", requestId);
    if (requestLog.deferred) return;
    if (c.req.raw.signal.aborted) {
      // The client went away: nginx's 499, not the 503 the abandoned request ended with.
      requestLog.fields.outcome = "cancelled";
      requestLog.write(CLIENT_CLOSED);
    } else requestLog.write(c.res.status);
  });

  if (config.corsOrigins.length > 0) {
    app.use(
      "*",
      cors({
        origin: config.corsOrigins.includes("*") ? "*" : config.corsOrigins,
        allowMethods: ["GET", "POST", "OPTIONS"],
        // No allowHeaders list: preflight echoes what the browser asks for (Authorization, Content-Type,
        // X-Stainless-*), since Access-Control-Allow-Headers takes no wildcard prefixes.
        exposeHeaders: PUBLIC_HEADERS,
        maxAge: 600,
      }),
    );
  }

  app.use(
    "*",
    bodyLimit({
      maxSize: config.maxBodyBytes,
      onError: () => {
        throw new ApiError(
          "too_large",
          `Request body is too large: the limit is ${config.maxBodyBytes} bytes`,
        );
      },
    }),
  );

  if (config.apiKeys.length > 0) {
    const auth = bearerAuth(config.apiKeys);
    app.use("/v1/*", auth);
    app.use("/tokenize", auth);
    app.use("/detokenize", auth);
  }

  for (
    const route of [
      chatCompletionsRoute,
      completionsRoute,
      modelsRoute,
      healthRoute,
      metricsRoute,
      tokenizeRoute,
      detokenizeRoute,
    ]
  ) {
    app.route("/", route(ctx));
  }

  app.notFound((c) => {
    throw new ApiError("unknown_url", `Unknown route: ${c.req.method} ${c.req.path}`);
  });

  app.onError((err, c) => {
    const apiError = toApiError(err);
    if (apiError.status >= 500 && !(err instanceof ApiError)) {
      log({ level: "error", msg: "unhandled error", request_id: c.get("requestId"), error: String(err) });
    }
    return c.json(apiError.body(), apiError.status, apiError.headers());
  });

  return {
    app,
    models: ctx.models,
    log,
    admission,
    metrics,
    config,
    shutdown: async (graceMs = config.shutdownGraceMs) => {
      await admission.shutdown(graceMs);
      await grammars?.close();
    },
    grammars: grammarPool,
  };
}

export interface ServerHandle {
  server: ServerApp;
  addr: Deno.NetAddr;
  /** Base URL clients configure, ending in /v1 (e.g. http://127.0.0.1:8000/v1). */
  url: string;
  /** Resolves when the listener has closed. */
  finished: Promise<void>;
  /**
   * Graceful stop: new requests get 503 while running ones have `graceMs` (default config.shutdownGraceMs)
   * to finish, then the rest are cancelled (their KV blocks freed), the listener closes and the engine is
   * closed. Safe to call more than once.
   */
  shutdown(graceMs?: number): Promise<void>;
}

/**
 * Serves createApp({...deps, config}) on config.host:config.port (port 0 picks a free one) and prints the
 * base URL once listening. main.ts: parseConfig(Deno.args) → load the engine and codec → startServer →
 * handleSignals.
 */
export function startServer(config: ServerConfig, deps: Omit<AppDeps, "config">): ServerHandle {
  const server = createApp({ ...deps, config });
  const log = deps.log ?? (config.logRequests ? stdoutLog : () => {});
  let watch: DisconnectWatch | null = null;
  const http = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: () => {},
  }, async (request, info) => {
    if (request.method !== "POST" || watch === null) return await server.app.fetch(request);
    // A client that hangs up before the response aborts the request's signal (see disconnect.ts).
    const gone = watch.watch(info.remoteAddr);
    try {
      return await server.app.fetch(
        new Request(request, { signal: AbortSignal.any([request.signal, gone.signal]) }),
      );
    } finally {
      gone.done();
    }
  });
  watch = new DisconnectWatch(http.addr.port);
  const host = http.addr.hostname.includes(":") ? `[${http.addr.hostname}]` : http.addr.hostname;
  const url = `http://${host}:${http.addr.port}/v1`;
  log({ level: "info", msg: "listening", url, model: server.models.canonical });
  if (deps.log === undefined && !config.logRequests) {
    console.log(`Trellis serving "${server.models.canonical}" at ${url}`);
  }
  let stopping: Promise<void> | null = null;
  return {
    server,
    addr: http.addr,
    url,
    finished: http.finished,
    shutdown(graceMs?: number) {
      stopping ??= (async () => {
        await server.shutdown(graceMs);
        watch?.close();
        await http.shutdown();
        await deps.engine.close();
      })();
      return stopping;
    },
  };
}

export interface SignalOptions {
  /** Default SIGTERM and SIGINT. */
  signals?: Deno.Signal[];
  /** Default Deno.exit. */
  exit?: (code: number) => void;
  graceMs?: number;
}

/**
 * On SIGTERM (or SIGINT): stop taking work, let running requests finish within the grace period, cancel
 * the rest, close the engine, and exit 0 (1 if shutting down failed). Returns a function that removes the
 * handlers.
 */
export function handleSignals(handle: ServerHandle, opts: SignalOptions = {}): () => void {
  const signals = opts.signals ?? (Deno.build.os === "windows" ? ["SIGINT"] : ["SIGTERM", "SIGINT"]);
  const exit = opts.exit ?? ((code: number) => Deno.exit(code));
  const onSignal = () => {
    handle.server.log({
      level: "info",
      msg: "shutting down",
      grace_ms: opts.graceMs ?? handle.server.config.shutdownGraceMs,
    });
    handle.shutdown(opts.graceMs).then(() => exit(0), (err) => {
      handle.server.log({ level: "error", msg: "shutdown failed", error: String(err) });
      exit(1);
    });
  };
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  return () => signals.forEach((s) => Deno.removeSignalListener(s, onSignal));
}
