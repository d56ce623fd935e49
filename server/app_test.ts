// The HTTP edge around the routes: error shapes for every status we send, auth, CORS, request ids,
// body limit, models, health, metrics, tokenize and detokenize.

import assert from "node:assert/strict";
import { CHAT, type Json, setup } from "../test/support/server.ts";
import { timingSafeEqual } from "./auth.ts";
import { byteIds, FAKE_BOS } from "../test/support/mod.ts";

async function errorOf(res: Response, status: number): Promise<Json["error"]> {
  const body: Json = await res.json();
  assert.equal(res.status, status, JSON.stringify(body));
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof body.error.message, "string");
  assert.ok(body.error.code === null || typeof body.error.code === "string");
  return body.error;
}

Deno.test("errors: unknown model is a 404 model_not_found listing the served names", async () => {
  const t = setup();
  const err = await errorOf(await t.post("/v1/chat/completions", { ...CHAT, model: "gpt-4o" }), 404);
  assert.equal(err.type, "invalid_request_error");
  assert.equal(err.code, "model_not_found");
  assert.equal(err.param, "model");
  assert.match(err.message, /"gpt-4o" does not exist.*"fake", "fake-alias"/);
  assert.equal(t.engine.requests.length, 0);
});

Deno.test("errors: acceptAnyModel serves any model name under the canonical name", async () => {
  const t = setup({}, { acceptAnyModel: true });
  const body: Json = await (await t.post("/v1/chat/completions", { ...CHAT, model: "gpt-3.5-turbo" })).json();
  assert.equal(body.model, "fake");
});

Deno.test("errors: an unknown route is a 404 unknown_url", async () => {
  const t = setup();
  const err = await errorOf(await t.get("/v1/embeddings"), 404);
  assert.equal(err.code, "unknown_url");
  assert.match(err.message, /GET \/v1\/embeddings/);
});

Deno.test("errors: a body over the limit is a 413 request_too_large", async () => {
  const t = setup({}, { maxBodyBytes: 100 });
  const err = await errorOf(await t.post("/v1/completions", { model: "fake", prompt: "x".repeat(200) }), 413);
  assert.equal(err.code, "request_too_large");
  assert.equal(err.type, "invalid_request_error");
  assert.match(err.message, /limit is 100 bytes/);
});

Deno.test("errors: 503 model_loading with Retry-After while the engine loads; /health says 503", async () => {
  const t = setup({ state: "loading" }, { retryAfterS: 2 });
  const res = await t.post("/v1/chat/completions", CHAT);
  assert.equal(res.headers.get("retry-after"), "2");
  assert.equal(res.headers.get("retry-after-ms"), "2000");
  assert.equal(res.headers.get("x-should-retry"), "true");
  const err = await errorOf(res, 503);
  assert.equal(err.type, "server_error");
  assert.equal(err.code, "model_loading");
  assert.equal((await errorOf(await t.get("/health"), 503)).code, "model_loading");
  t.engine.currentState = "ready";
  const ok = await t.get("/health");
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { status: "ok" });
});

Deno.test("errors: 503 service_unavailable when the GPU is lost", async () => {
  const t = setup({ state: "lost" });
  const err = await errorOf(await t.post("/v1/completions", { model: "fake", prompt: "a" }), 503);
  assert.equal(err.code, "service_unavailable");
  assert.match(err.message, /device was lost/);
  await errorOf(await t.get("/health"), 503);
});

Deno.test("auth: /v1 routes need a matching Bearer key; /health and /metrics stay open", async () => {
  const t = setup({}, { apiKeys: ["k-one", "k-two"] });
  const missing = await errorOf(await t.post("/v1/chat/completions", CHAT), 401);
  assert.equal(missing.code, "invalid_api_key");
  assert.match(missing.message, /Authorization: Bearer/);
  const wrong = await errorOf(
    await t.post("/v1/chat/completions", CHAT, { headers: { authorization: "Bearer k-on" } }),
    401,
  );
  assert.match(wrong.message, /does not match/);
  await errorOf(await t.get("/v1/models", { authorization: "Bearer nope" }), 401);
  await errorOf(await t.post("/tokenize", { prompt: "a" }), 401);
  assert.equal(t.engine.requests.length, 0);

  for (const key of ["k-one", "k-two"]) {
    const res = await t.post("/v1/chat/completions", CHAT, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  assert.equal((await t.get("/health")).status, 200);
  assert.equal((await t.get("/metrics")).status, 200);
});

Deno.test("auth: timingSafeEqual compares whole strings of any length", () => {
  assert.equal(timingSafeEqual("abc", "abc"), true);
  assert.equal(timingSafeEqual("abc", "abd"), false);
  assert.equal(timingSafeEqual("abc", "abcd"), false);
  assert.equal(timingSafeEqual("", ""), true);
  assert.equal(timingSafeEqual("é", "e"), false);
});

Deno.test("cors: preflight allows the SDK's headers without a key; responses expose x-request-id", async () => {
  const t = setup({}, { corsOrigins: ["https://app.example"], apiKeys: ["secret"] });
  const pre = await t.server.app.fetch(
    new Request("http://localhost/v1/chat/completions", {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-stainless-os,x-stainless-retry-count",
      },
    }),
  );
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), "https://app.example");
  assert.match(pre.headers.get("access-control-allow-methods") ?? "", /POST/);
  const allowed = (pre.headers.get("access-control-allow-headers") ?? "").toLowerCase();
  for (const h of ["authorization", "content-type", "x-stainless-os"]) {
    assert.ok(allowed.includes(h), allowed);
  }

  const res = await t.post("/v1/chat/completions", CHAT, {
    headers: { origin: "https://app.example", authorization: "Bearer secret" },
  });
  assert.equal(res.headers.get("access-control-allow-origin"), "https://app.example");
  assert.match(res.headers.get("access-control-expose-headers") ?? "", /x-request-id/);
  await res.body?.cancel();

  const other = await t.get("/health", { origin: "https://evil.example" });
  assert.equal(other.headers.get("access-control-allow-origin"), null);
});

Deno.test("request ids: a sane client id is echoed, otherwise one is generated; logs carry it", async () => {
  const t = setup();
  const echoed = await t.post("/v1/chat/completions", CHAT, { headers: { "x-request-id": "req-123" } });
  assert.equal(echoed.headers.get("x-request-id"), "req-123");
  await echoed.json();
  const generated = await t.get("/v1/models", { "x-request-id": "bad id with spaces" });
  assert.match(generated.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  const err = await t.get("/nope");
  assert.ok(err.headers.get("x-request-id"));
  const line = t.logs.find((l) => l.request_id === "req-123")!;
  assert.equal(line.status, 200);
  assert.equal(line.route, "/v1/chat/completions");
  assert.equal(line.completion_tokens, 11);
  assert.equal(typeof line.duration_ms, "number");
});

Deno.test("models: the list holds every name and alias; one model by id; unknown id is a 404", async () => {
  const t = setup();
  const list: Json = await (await t.get("/v1/models")).json();
  assert.equal(list.object, "list");
  assert.deepEqual(list.data.map((m: Json) => m.id), ["fake", "fake-alias"]);
  for (const m of list.data) {
    assert.equal(m.object, "model");
    assert.ok(Number.isInteger(m.created));
    assert.equal(m.owned_by, "trellis");
    assert.equal(m.max_model_len, 256);
  }
  const one: Json = await (await t.get("/v1/models/fake-alias")).json();
  assert.equal(one.id, "fake-alias");
  const err = await errorOf(await t.get("/v1/models/other"), 404);
  assert.equal(err.code, "model_not_found");
});

Deno.test("models: without served names the model directory's last component is the name", async () => {
  const t = setup({}, { servedModelNames: [] });
  const list: Json = await (await t.get("/v1/models")).json();
  assert.deepEqual(list.data.map((m: Json) => m.id), ["fake-llama"]);
});

Deno.test("metrics: vLLM names with a model_name label; counters follow requests", async () => {
  const t = setup();
  await (await t.post("/v1/chat/completions", CHAT)).json();
  const res = await t.get("/metrics");
  assert.match(res.headers.get("content-type") ?? "", /text\/plain; version=0.0.4/);
  const text = await res.text();
  const value = (name: string) => {
    const m = new RegExp(`^${name}\\{model_name="fake"[^}]*\\} (\\S+)$`, "m").exec(text);
    assert.ok(m, `${name} missing`);
    return Number(m[1]);
  };
  assert.equal(value("vllm:num_requests_running"), 0);
  assert.equal(value("vllm:num_requests_waiting"), 0);
  assert.equal(value("vllm:kv_cache_usage_perc"), 0);
  assert.equal(value("vllm:prompt_tokens_total"), 21);
  assert.equal(value("vllm:generation_tokens_total"), 11);
  assert.equal(value("vllm:time_to_first_token_seconds_count"), 1);
  assert.equal(value("vllm:inter_token_latency_seconds_count"), 10);
  assert.equal(value("vllm:e2e_request_latency_seconds_count"), 1);
  assert.equal(value("vllm:prefix_cache_queries_total"), 21);
  assert.equal(value("vllm:prefix_cache_hits_total"), 0);
  assert.equal(value("vllm:num_preemptions_total"), 0);
  assert.equal(value("vllm:request_queue_time_seconds_count"), 1);
  assert.match(text, /vllm:request_success_total\{model_name="fake",finished_reason="stop"\} 1/);
  assert.match(text, /# TYPE vllm:time_to_first_token_seconds histogram/);
  assert.match(text, /vllm:time_to_first_token_seconds_bucket\{model_name="fake",le="\+Inf"\} 1/);
});

Deno.test("tokenize and detokenize: prompt, chat messages, token ids; bad input is a 400", async () => {
  const t = setup();
  const plain: Json = await (await t.post("/tokenize", { prompt: "Hi" })).json();
  assert.deepEqual(plain, { count: 3, max_model_len: 256, tokens: [FAKE_BOS, ...byteIds("Hi")] });
  const bare: Json = await (await t.post("/tokenize", { prompt: "Hi", add_special_tokens: false })).json();
  assert.deepEqual(bare.tokens, byteIds("Hi"));
  const chat: Json = await (await t.post("/tokenize", { model: "fake", messages: CHAT.messages })).json();
  assert.equal(chat.count, 21);
  assert.equal(chat.tokens[0], FAKE_BOS);

  const text: Json = await (await t.post("/detokenize", { tokens: [FAKE_BOS, ...byteIds("Hé")] })).json();
  assert.deepEqual(text, { prompt: "<s>Hé" });

  const both = await errorOf(await t.post("/tokenize", { prompt: "a", messages: CHAT.messages }), 400);
  assert.match(both.message, /exactly one of prompt or messages/);
  const bad = await errorOf(await t.post("/detokenize", { tokens: [1, 5000] }), 400);
  assert.equal(bad.param, "tokens[1]");
  await errorOf(await t.post("/detokenize", { model: "nope", tokens: [1] }), 404);
});

Deno.test("loading: an engine whose info is unknown until loaded still gets /health, /v1/models and 503s", async () => {
  const t = setup({ state: "loading", infoAfterLoad: true }, {
    servedModelNames: [],
    modelDir: "/models/My-Model/",
  });
  assert.equal((await errorOf(await t.get("/health"), 503)).code, "model_loading");
  for (const body of [CHAT, { ...CHAT, stream: true }]) {
    assert.equal(
      (await errorOf(await t.post("/v1/chat/completions", { ...body, model: "My-Model" }), 503)).code,
      "model_loading",
    );
  }
  assert.equal(
    (await errorOf(await t.post("/v1/completions", { model: "My-Model", prompt: "a" }), 503)).code,
    "model_loading",
  );
  const list: Json = await (await t.get("/v1/models")).json();
  assert.deepEqual(list.data.map((m: Json) => [m.id, m.max_model_len]), [["My-Model", undefined]]);
  const tok: Json = await (await t.post("/tokenize", { prompt: "a" })).json();
  assert.equal(tok.max_model_len, null);

  t.engine.currentState = "ready";
  const body: Json = await (await t.post("/v1/chat/completions", { ...CHAT, model: "My-Model" })).json();
  assert.equal(body.choices[0].message.content, "Hello world");
  assert.match(body.system_fingerprint, /^fp_/);
  const ready: Json = await (await t.get("/v1/models")).json();
  assert.equal(ready.data[0].max_model_len, 256);
});
