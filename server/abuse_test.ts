// Hostile and careless input against the app over the fake engine: each case is refused with a clear 4xx
// before anything expensive (encoding, sequences, engine work) happens, and leaves the server answering.

import assert from "node:assert/strict";
import { CHAT, type Json, setup, waitFor } from "../test/support/server.ts";
import { byteCodec, EMBEDDED_MODEL_DIR, FakeEngine } from "../test/support/mod.ts";
import { createApp } from "./app.ts";
import { parseConfig } from "./config.ts";
import type { TextCodec } from "../text/mod.ts";
import { TokenizerCodec } from "../text/mod.ts";

/** The byte codec, counting how many characters it was asked to encode. */
function countingCodec(): TextCodec & { encodedChars: number } {
  const codec = {
    ...byteCodec,
    encodedChars: 0,
    encode(text: string, opts: { addSpecialTokens: boolean }) {
      codec.encodedChars += text.length;
      return byteCodec.encode(text, opts);
    },
  };
  return codec;
}

function appWith(codec: TextCodec, config = {}) {
  const engine = new FakeEngine();
  const logs: Record<string, unknown>[] = [];
  const server = createApp({
    engine,
    codec,
    config: { servedModelNames: ["fake"], ...config },
    log: (r) => logs.push(r),
  });
  const post = (path: string, body: unknown) =>
    server.app.fetch(
      new Request(`http://localhost${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    );
  return { engine, server, logs, post };
}

Deno.test("a million one-token prompts with n = 8: a 400 naming the limit, before any prompt is encoded", async () => {
  const codec = countingCodec();
  const t = appWith(codec);
  const huge = await t.post("/v1/completions", {
    model: "fake",
    prompt: Array.from({ length: 1_000_000 }, () => [65]),
    n: 8,
  });
  assert.equal(huge.status, 400);
  const body: Json = await huge.json();
  assert.equal(body.error.param, "prompt");
  assert.match(body.error.message, /expected at most 2048 prompts, got 1000000/);

  // Within OpenAI's 2048 but beyond what the server admits at once (maxRunning + maxWaiting = 320).
  const many = await t.post("/v1/completions", {
    model: "fake",
    prompt: Array.from({ length: 2000 }, () => "a"),
    n: 8,
  });
  assert.equal(many.status, 400);
  assert.match(((await many.json()) as Json).error.message, /needs 16000 sequences .* \(320\)/);
  assert.equal(codec.encodedChars, 0, "nothing was encoded");
  assert.equal(t.engine.requests.length, 0, "nothing reached the engine");
});

Deno.test("a prompt longer than the context could ever hold is a 400 before it is encoded", async () => {
  const codec = countingCodec();
  const t = appWith(codec);
  // The fake engine's context is 256 tokens; the byte codec's longest token text is "<|eot|>" (7).
  const text = "\n".repeat(1 << 20);
  for (
    const [path, body, param] of [
      ["/v1/completions", { model: "fake", prompt: text }, "prompt"],
      ["/v1/completions", { model: "fake", prompt: ["ok", text] }, "prompt[1]"],
      ["/v1/chat/completions", { ...CHAT, messages: [{ role: "user", content: text }] }, "messages"],
    ] as const
  ) {
    const res = await t.post(path, body);
    assert.equal(res.status, 400, path);
    const err: Json = (await res.json()).error;
    assert.equal(err.code, "context_length_exceeded");
    assert.equal(err.param, param);
    assert.match(err.message, /more than the 256-token context can hold/);
  }
  assert.equal(codec.encodedChars, "ok".length, "only the short prompt was encoded");
  // Just under the bound is encoded and then refused on its token count, as before.
  const limit = 256 * 7;
  const res = await t.post("/v1/completions", { model: "fake", prompt: "a".repeat(limit) });
  assert.equal(res.status, 400);
  assert.match(((await res.json()) as Json).error.message, /context/);
  assert.equal(codec.encodedChars, 2 + limit);
});

Deno.test("a conversation that renders to an empty prompt is a 400, not a 500", async () => {
  const codec = await TokenizerCodec.fromDir(EMBEDDED_MODEL_DIR);
  const t = appWith(codec);
  const res = await t.post("/v1/chat/completions", {
    model: "fake",
    messages: [{ role: "system", content: "Be brief." }],
  });
  assert.equal(res.status, 400);
  const err: Json = (await res.json()).error;
  assert.equal(err.type, "invalid_request_error");
  assert.equal(err.param, "messages");
  assert.match(err.message, /render to an empty prompt/);
  assert.equal(t.engine.requests.length, 0);
});

Deno.test("a body not declared as JSON is a 415, whatever it contains", async () => {
  const t = setup();
  const json = JSON.stringify(CHAT);
  for (
    const type of [
      "text/plain",
      "text/plain;charset=UTF-8",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      null,
    ]
  ) {
    const headers: Record<string, string> = type === null ? {} : { "content-type": type };
    const res = await t.server.app.fetch(
      new Request("http://localhost/v1/chat/completions", {
        method: "POST",
        headers,
        body: type === null ? new Blob([json]) : json,
      }),
    );
    assert.equal(res.status, 415, `${type}`);
    const err: Json = (await res.json()).error;
    assert.equal(err.code, "unsupported_media_type");
    assert.match(err.message, /expected Content-Type "application\/json"/);
  }
  for (const type of ["application/json; charset=utf-8", "application/vnd.api+json", "Application/JSON"]) {
    const res = await t.post("/v1/chat/completions", CHAT, { headers: { "content-type": type } });
    assert.equal(res.status, 200, type);
    await res.body?.cancel();
  }
  assert.equal(t.engine.requests.length, 3);
});

Deno.test("error messages quote at most 80 characters of what the client sent", async () => {
  const t = setup();
  const model = "m".repeat(1 << 20);
  const res = await t.post("/v1/chat/completions", { ...CHAT, model });
  assert.equal(res.status, 404);
  const message: string = ((await res.json()) as Json).error.message;
  assert.ok(message.length < 300, `${message.length} characters`);
  assert.match(
    message,
    /^Model "m{80}\.\.\." \(1048576 characters\) does not exist: this server serves "fake"/,
  );
  const stop = await t.post("/v1/completions", { model: "fake", prompt: "a", suffix: "s".repeat(100_000) });
  assert.equal(stop.status, 400);
  assert.ok(((await stop.json()) as Json).error.message.length < 300);
});

Deno.test("--max-context below 2 is refused at startup, naming the setting", () => {
  for (const v of ["0", "1"]) {
    assert.throws(() => parseConfig(["--max-context", v], {}), /maxContext: expected at least 2 tokens, got/);
    assert.throws(() => parseConfig([], { TRELLIS_MAX_CONTEXT: v }), /maxContext: expected at least 2/);
  }
  assert.equal(parseConfig(["--max-context", "2"], {}).maxContext, 2);
});

Deno.test("a client that hangs up on a non-streaming request is logged as 499 cancelled, not 503", async () => {
  const t = setup({ delayMs: 5, script: () => new Array(1000).fill(97) });
  const controller = new AbortController();
  const pending = t.post("/v1/completions", { model: "fake", prompt: "a" }, { signal: controller.signal });
  await waitFor(() => t.engine.active.size === 1, "generation to start");
  controller.abort();
  await pending.then((r) => r.body?.cancel()).catch(() => {});
  const line = t.logs.find((l) => l.msg === "request")!;
  assert.equal(line.status, 499);
  assert.equal(line.outcome, "cancelled");
  assert.equal(line.level, "info");
});
