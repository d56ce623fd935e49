// startServer on loopback with the fake engine: real sockets, a real client disconnect, graceful stop on
// a signal.

import assert from "node:assert/strict";
import { type Json, waitFor } from "../test/support/server.ts";
import { handleSignals, startServer } from "./app.ts";
import { DEFAULT_CONFIG, type ServerConfig } from "./config.ts";
import { byteCodec, FakeEngine, type FakeEngineOptions } from "../test/support/mod.ts";

function serve(engineOpts: FakeEngineOptions = {}, config: Partial<ServerConfig> = {}) {
  const engine = new FakeEngine(engineOpts);
  const logs: Record<string, unknown>[] = [];
  const handle = startServer(
    { ...DEFAULT_CONFIG, host: "127.0.0.1", port: 0, servedModelNames: ["fake"], ...config },
    { engine, codec: byteCodec, log: (r) => logs.push(r) },
  );
  return { engine, handle, logs };
}

Deno.test("loopback: chat over HTTP, and the listening line names the /v1 URL", async () => {
  const { engine, handle, logs } = serve();
  try {
    assert.match(handle.url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    assert.ok(logs.some((l) => l.msg === "listening" && l.url === handle.url));
    const res = await fetch(`${handle.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "fake", messages: [{ role: "user", content: "Hi" }] }),
    });
    const body: Json = await res.json();
    assert.equal(body.choices[0].message.content, "Hello world");
  } finally {
    await handle.shutdown(100);
  }
  assert.equal(engine.closed, true, "shutdown closes the engine");
});

Deno.test("loopback: a client that drops the connection mid-stream frees the engine's KV blocks", async () => {
  const { engine, handle } = serve({ delayMs: 5, script: () => new Array(2000).fill(97) });
  try {
    const controller = new AbortController();
    const res = await fetch(`${handle.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "fake", messages: [{ role: "user", content: "Hi" }], stream: true }),
      signal: controller.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    await reader.read();
    assert.equal(engine.active.size, 1);
    controller.abort();
    await reader.read().catch(() => {});
    await waitFor(() => engine.active.size === 0, "the engine sequence to be aborted");
    assert.equal(engine.kvBlocksUsed, 0);
    assert.equal(engine.aborted.length, 1);
  } finally {
    await handle.shutdown(100);
  }
});

Deno.test("loopback: a non-streaming client that hangs up cancels its sequence", async () => {
  const { engine, handle } = serve({ delayMs: 5, script: () => new Array(2000).fill(97) });
  try {
    const controller = new AbortController();
    const pending = fetch(`${handle.url}/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "fake", prompt: "a", max_tokens: null }),
      signal: controller.signal,
    }).catch((e) => e);
    await waitFor(() => engine.active.size === 1, "generation to start");
    controller.abort();
    await pending;
    await waitFor(() => engine.active.size === 0, "the engine sequence to be aborted");
    assert.equal(engine.kvBlocksUsed, 0);
  } finally {
    await handle.shutdown(100);
  }
});

Deno.test("loopback: a non-streaming client with an ordinary-sized body that hangs up is cancelled", async () => {
  // Deno.serve aborts request.signal on a disconnect only for bodies under ~480 bytes; a real chat request
  // is larger, and its dead connection is found through the TCP table (disconnect.ts).
  const { engine, handle, logs } = serve({
    maxContext: 8192,
    delayMs: 5,
    script: () => new Array(9000).fill(97),
  });
  try {
    const controller = new AbortController();
    const content = "You are a helpful assistant. ".repeat(70);
    const body = JSON.stringify({ model: "fake", messages: [{ role: "user", content }], max_tokens: null });
    assert.ok(body.length > 2000);
    const pending = fetch(`${handle.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
      signal: controller.signal,
    }).catch((e) => e);
    await waitFor(() => engine.active.size === 1, "generation to start");
    controller.abort();
    await pending;
    await waitFor(() => engine.active.size === 0, "the engine sequence to be aborted");
    assert.deepEqual(engine.aborted, [engine.requests[0].id]);
    assert.equal(engine.kvBlocksUsed, 0);
    await waitFor(() => logs.some((l) => l.msg === "request"), "the request's log line");
    const line = logs.find((l) => l.msg === "request")!;
    assert.equal(line.status, 499);
    assert.equal(line.outcome, "cancelled");
  } finally {
    await handle.shutdown(100);
  }
});

Deno.test("signals: the handler drains, closes the listener and the engine, and exits 0", async () => {
  const { engine, handle } = serve({ delayMs: 1, script: () => new Array(30).fill(98) });
  let exitCode: number | null = null;
  const remove = handleSignals(handle, {
    signals: ["SIGUSR2"],
    exit: (code) => exitCode = code,
    graceMs: 60_000,
  });
  try {
    const inflight = fetch(`${handle.url}/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "fake", prompt: "a", max_tokens: 30 }),
    });
    await waitFor(() => engine.active.size === 1, "generation to start");
    Deno.kill(Deno.pid, "SIGUSR2");
    const body: Json = await (await inflight).json();
    assert.equal(body.choices[0].text, "b".repeat(30), "the running request finished");
    await waitFor(() => exitCode !== null, "exit");
    assert.equal(exitCode, 0);
    assert.equal(engine.closed, true);
    await handle.finished;
    await assert.rejects(fetch(`${handle.url}/models`));
  } finally {
    remove();
    await handle.shutdown(10);
  }
});
