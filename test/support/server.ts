// The server's in-process test harness: an app over the fake engine, JSON requests, SSE parsing.
// Imported directly by server tests (not through mod.ts, so kernel tests never load the server).

import { createApp, type ServerApp, type ServerHandle, startServer } from "../../server/app.ts";
import { DEFAULT_CONFIG, type ServerConfig } from "../../server/config.ts";
import { DEFAULT_MODEL_DIR, EngineClient } from "../../engine/mod.ts";
import { TokenizerCodec } from "../../text/mod.ts";
import { byteCodec, FakeEngine, type FakeEngineOptions } from "./fake_engine.ts";
export { settles, waitFor } from "./wait.ts";

export interface TestServer {
  engine: FakeEngine;
  server: ServerApp;
  logs: Record<string, unknown>[];
  post(
    path: string,
    body: unknown,
    init?: { headers?: Record<string, string>; signal?: AbortSignal },
  ): Promise<Response>;
  get(path: string, headers?: Record<string, string>): Promise<Response>;
}

export function setup(engineOpts: FakeEngineOptions = {}, config: Partial<ServerConfig> = {}): TestServer {
  const engine = new FakeEngine(engineOpts);
  const logs: Record<string, unknown>[] = [];
  const server = createApp({
    engine,
    codec: byteCodec,
    config: { servedModelNames: ["fake", "fake-alias"], ...config },
    log: (r) => logs.push(r),
  });
  return {
    engine,
    server,
    logs,
    post: async (path, body, init = {}) =>
      await server.app.fetch(
        new Request(`http://localhost${path}`, {
          method: "POST",
          headers: { "content-type": "application/json", ...init.headers },
          body: typeof body === "string" ? body : JSON.stringify(body),
          signal: init.signal,
        }),
      ),
    get: async (path, headers = {}) =>
      await server.app.fetch(new Request(`http://localhost${path}`, { headers })),
  };
}

/** The embedded model behind a real server on a loopback port, as `deno task serve` runs it (model "embedded"). */
export interface EmbeddedServer {
  engine: EngineClient;
  codec: TokenizerCodec;
  url: string;
  logs: Record<string, unknown>[];
}

/** Starts the engine Worker on the embedded model, then a server over it; `run` gets both and is cleaned up
 * after, however it ends. */
export async function withEmbeddedServer(
  limits: { maxSeqs: number; maxContext: number },
  run: (s: EmbeddedServer) => Promise<void>,
): Promise<void> {
  const engine = new EngineClient({ modelDir: DEFAULT_MODEL_DIR, ...limits, progress: false });
  let handle: ServerHandle | null = null;
  const logs: Record<string, unknown>[] = [];
  try {
    await engine.ready();
    const codec = await TokenizerCodec.fromDir(DEFAULT_MODEL_DIR);
    handle = startServer(
      { ...DEFAULT_CONFIG, port: 0, servedModelNames: ["embedded"], modelDir: DEFAULT_MODEL_DIR },
      { engine, codec, log: (r) => logs.push(r) },
    );
    await run({ engine, codec, url: handle.url, logs });
  } finally {
    // Shuts the server and its engine down (or only the engine, if the server never started).
    if (handle) await handle.shutdown(1000);
    else await engine.close();
  }
}

/** Every `data:` payload of an SSE body, JSON-parsed except the final "[DONE]". */
export async function readSse(res: Response): Promise<unknown[]> {
  const text = await res.text();
  if (!text.endsWith("\n\n")) {
    throw new Error(`SSE body does not end with a blank line: ${JSON.stringify(text.slice(-40))}`);
  }
  return text.split("\n\n").filter((frame) => frame !== "" && !frame.startsWith(":")).map((frame) => {
    if (!frame.startsWith("data: ") || frame.includes("\n")) {
      throw new Error(`Malformed SSE frame: ${JSON.stringify(frame)}`);
    }
    const data = frame.slice("data: ".length);
    return data === "[DONE]" ? data : JSON.parse(data);
  });
}

export const CHAT = { model: "fake", messages: [{ role: "user", content: "Hi" }] };

/** Chat chunks' `choices[0]` entries, for framing assertions. */
// deno-lint-ignore no-explicit-any
export type Json = any;
