import assert from "node:assert/strict";
import { ApiError } from "./errors.ts";
import { sseResponse } from "./sse.ts";
import { settles } from "../test/support/server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("sse: compact data lines, [DONE] at the end, the stream headers, onClose once", async () => {
  const closed: string[] = [];
  async function* events() {
    yield { a: 1, b: "x y" };
    yield { c: [1, 2] };
  }
  const res = sseResponse(events(), {
    onCancel: () => {},
    onClose: (o) => closed.push(o),
    headers: { "x-request-id": "r" },
  });
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  assert.equal(res.headers.get("x-request-id"), "r");
  assert.equal(res.headers.get("content-length"), null);
  assert.equal(await res.text(), 'data: {"a":1,"b":"x y"}\n\ndata: {"c":[1,2]}\n\ndata: [DONE]\n\n');
  assert.deepEqual(closed, ["done"]);
});

Deno.test("sse: a comment line keeps a silent stream alive, only after the keep-alive interval", async () => {
  let speak!: () => void;
  const spoken = new Promise<void>((r) => speak = r);
  async function* events() {
    await spoken;
    yield { late: true };
  }
  const res = sseResponse(events(), { onCancel: () => {}, keepAliveMs: 20 });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  // While the producer is silent, only keep-alive comments arrive, one per interval.
  for (let i = 0; i < 2; i++) {
    assert.equal(decoder.decode((await reader.read()).value), ": keep-alive\n\n");
  }
  speak();
  let rest = "";
  for (let r = await reader.read(); !r.done; r = await reader.read()) rest += decoder.decode(r.value);
  // Keep-alives may still have been sent before the event; the event and [DONE] come last.
  const frames = rest.split("\n\n").filter((f) => f !== "");
  assert.ok(frames.slice(0, -2).every((f) => f === ": keep-alive"), JSON.stringify(frames));
  assert.deepEqual(frames.slice(-2), ['data: {"late":true}', "data: [DONE]"]);
});

Deno.test("sse: an error after the first event is one error event, then [DONE]", async () => {
  const closed: string[] = [];
  async function* events() {
    yield { ok: 1 };
    throw new ApiError("unavailable", "Engine is gone");
  }
  const res = sseResponse(events(), { onCancel: () => {}, onClose: (o) => closed.push(o) });
  const frames = (await res.text()).split("\n\n").filter((f) => f !== "");
  assert.equal(frames.length, 3);
  assert.deepEqual(JSON.parse(frames[1].slice(6)), {
    error: { message: "Engine is gone", type: "server_error", param: null, code: "service_unavailable" },
  });
  assert.equal(frames[2], "data: [DONE]");
  assert.deepEqual(closed, ["error"]);
});

Deno.test("sse: a client that cancels the body triggers onCancel and stops the producer", async () => {
  let cancelled = 0;
  let finalized!: () => void;
  const producerStopped = new Promise<void>((r) => finalized = r);
  async function* events() {
    try {
      for (let i = 0;; i++) {
        yield { i };
        await sleep(1);
      }
    } finally {
      finalized();
    }
  }
  const closed: string[] = [];
  const res = sseResponse(events(), { onCancel: () => cancelled++, onClose: (o) => closed.push(o) });
  const reader = res.body!.getReader();
  await reader.read();
  await reader.read();
  await reader.cancel();
  assert.equal(cancelled, 1);
  assert.deepEqual(closed, ["cancelled"]);
  // The generator's finally runs once its pending step ends: an event, not a sleep, says when.
  await settles(producerStopped, "the producer to stop");
});
