// Admission and lifetime: the bounded waiting queue (429 + Retry-After), client disconnects that free the
// engine's KV blocks, queued requests dropped without prefill, and graceful shutdown.

import assert from "node:assert/strict";
import { CHAT, type Json, readSse, setup, waitFor } from "../test/support/server.ts";

function gated() {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  return { gate, release };
}

Deno.test("queue: beyond maxRunning + maxWaiting sequences a request gets 429 with Retry-After", async () => {
  const { gate, release } = gated();
  const t = setup({ gate }, { maxRunning: 2, maxWaiting: 2, retryAfterS: 3 });
  const accepted = [1, 2, 3, 4].map(() => t.post("/v1/chat/completions", CHAT));
  await waitFor(() => t.server.admission.waiting === 2, "two waiting");
  assert.equal(t.server.admission.running, 2);
  assert.equal(t.engine.requests.length, 2, "waiting sequences have not reached the engine");

  const res = await t.post("/v1/chat/completions", CHAT);
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("retry-after"), "3");
  assert.equal(res.headers.get("retry-after-ms"), "3000");
  assert.equal(res.headers.get("x-should-retry"), "true");
  const body: Json = await res.json();
  assert.deepEqual(body.error, {
    message: body.error.message,
    type: "rate_limit_error",
    param: null,
    code: "rate_limit_exceeded",
  });
  assert.match(body.error.message, /waiting queue is full \(2 of 2 sequences/);

  const metrics = await (await t.get("/metrics")).text();
  assert.match(metrics, /vllm:num_requests_waiting\{model_name="fake"\} 2/);

  release();
  for (const r of await Promise.all(accepted)) assert.equal(r.status, 200);
  assert.equal(t.engine.requests.length, 4);
  assert.equal(t.server.admission.waiting, 0);
  assert.equal(t.server.admission.waitingTokens, 0);
});

Deno.test("queue: the prompt-token bound refuses a long prompt while short ones still fit", async () => {
  const { gate, release } = gated();
  const t = setup({ gate }, { maxRunning: 1, maxWaiting: 10, maxWaitingTokens: 30 });
  const first = t.post("/v1/completions", { model: "fake", prompt: "a" });
  await waitFor(() => t.server.admission.running === 1);
  const long = await t.post("/v1/completions", { model: "fake", prompt: "x".repeat(40) });
  assert.equal(long.status, 429);
  assert.match(((await long.json()) as Json).error.message, /0 of 30 prompt tokens/);
  const short = t.post("/v1/completions", { model: "fake", prompt: "y".repeat(20) });
  await waitFor(() => t.server.admission.waiting === 1);
  assert.equal(t.server.admission.waitingTokens, 21);
  release();
  assert.equal((await first).status, 200);
  assert.equal((await short).status, 200);
});

Deno.test("queue: n choices are admitted all or nothing", async () => {
  const { gate, release } = gated();
  const t = setup({ gate }, { maxRunning: 1, maxWaiting: 2 });
  const a = t.post("/v1/chat/completions", { ...CHAT, n: 2 });
  await waitFor(() => t.server.admission.waiting === 1);
  const b = await t.post("/v1/chat/completions", { ...CHAT, n: 2 });
  assert.equal(b.status, 429);
  assert.equal(t.server.admission.waiting, 1, "nothing of the refused request was queued");
  const tooMany = await t.post("/v1/chat/completions", { ...CHAT, n: 4 });
  assert.equal(tooMany.status, 400, "more sequences than the server ever admits is not retryable");
  assert.equal(((await tooMany.json()) as Json).error.param, "n");
  release();
  assert.equal((await a).status, 200);
});

Deno.test("cancel: a streaming client that disconnects frees its KV blocks and engine sequence", async () => {
  const t = setup({ delayMs: 5, script: () => new Array(1000).fill(97) });
  const res = await t.post("/v1/chat/completions", { ...CHAT, stream: true });
  const reader = res.body!.getReader();
  for (let i = 0; i < 4; i++) await reader.read();
  assert.equal(t.engine.active.size, 1);
  assert.ok(t.engine.kvBlocksUsed > 0);
  await reader.cancel();
  await waitFor(() => t.engine.active.size === 0, "engine sequence to end");
  assert.equal(t.engine.kvBlocksUsed, 0);
  assert.deepEqual(t.engine.aborted, [t.engine.requests[0].id]);
  assert.ok(t.engine.requests[0].maxTokens > 100, "it was stopped long before its limit");
  await waitFor(() => t.logs.some((l) => l.outcome === "cancelled"), "request log");
  const line = t.logs.find((l) => l.outcome === "cancelled")!;
  assert.equal(line.level, "info", "a disconnect is not logged as an error");
  const metrics = await (await t.get("/metrics")).text();
  assert.match(metrics, /finished_reason="abort"\} 1/);
});

Deno.test("cancel: a non-streaming client that aborts frees its KV blocks", async () => {
  const t = setup({ delayMs: 5, script: () => new Array(1000).fill(97) });
  const controller = new AbortController();
  const pending = t.post("/v1/chat/completions", { ...CHAT, n: 2 }, { signal: controller.signal });
  await waitFor(() => t.engine.kvBlocksUsed > 12, "generation to start");
  controller.abort();
  await pending.then((r) => r.body?.cancel()).catch(() => {});
  await waitFor(() => t.engine.active.size === 0, "engine sequences to end");
  assert.equal(t.engine.kvBlocksUsed, 0);
  assert.equal(t.engine.aborted.length, 2);
});

Deno.test("cancel: a request that disconnects while queued never reaches the engine", async () => {
  const { gate, release } = gated();
  const t = setup({ gate }, { maxRunning: 1, maxWaiting: 4 });
  const running = t.post("/v1/chat/completions", CHAT);
  await waitFor(() => t.server.admission.running === 1);
  const controller = new AbortController();
  const queued = t.post("/v1/chat/completions", { ...CHAT, stream: true }, { signal: controller.signal });
  await waitFor(() => t.server.admission.waiting === 1);
  controller.abort();
  await queued.then((r) => r.body?.cancel()).catch(() => {});
  await waitFor(() => t.server.admission.waiting === 0, "queue to empty");
  assert.equal(t.server.admission.waitingTokens, 0);
  release();
  assert.equal((await running).status, 200);
  assert.equal(t.engine.requests.length, 1, "the cancelled request got no prefill");
});

Deno.test("shutdown: new requests get 503, running ones finish within the grace period", async () => {
  const t = setup({ delayMs: 2, script: () => new Array(20).fill(98) });
  const inflight = t.post("/v1/completions", { model: "fake", prompt: "a", max_tokens: 20 });
  await waitFor(() => t.engine.active.size === 1);
  // A grace period no loaded machine outlasts: the running request must finish, not be cut.
  const done = t.server.shutdown(60_000);
  const refused = await t.post("/v1/completions", { model: "fake", prompt: "a" });
  assert.equal(refused.status, 503);
  assert.match(((await refused.json()) as Json).error.message, /shutting down/);
  assert.equal((await t.get("/health")).status, 503);
  await done;
  const res = await inflight;
  assert.equal(res.status, 200);
  const body: Json = await res.json();
  assert.equal(body.choices[0].text, "b".repeat(20));
  assert.equal(t.engine.aborted.length, 0);
});

Deno.test("shutdown: what outlives the grace period is cancelled and its blocks freed", async () => {
  // 5000 tokens 5 ms apart: at least 25 s on their own, so only the drain can have ended them.
  const t = setup({ delayMs: 5, script: () => new Array(5000).fill(99) });
  const stream = t.post("/v1/chat/completions", { ...CHAT, stream: true });
  const plain = t.post("/v1/chat/completions", CHAT);
  await waitFor(() => t.engine.active.size === 2 && t.engine.kvBlocksUsed > 0);
  await t.server.shutdown(50);
  assert.equal(t.engine.active.size, 0);
  assert.equal(t.engine.kvBlocksUsed, 0);
  assert.equal(t.engine.aborted.length, 2);
  // The stream ends with one in-band error and [DONE]; the plain request gets a retryable 503.
  const events = await readSse(await stream);
  assert.equal(events.at(-1), "[DONE]");
  assert.equal((events.at(-2) as Json).error.type, "server_error");
  const res = await plain;
  assert.equal(res.status, 503);
});
