// Loopback load test with the fake engine: 64 concurrent streaming clients send a few hundred requests
// against a small admission window. Every request must either complete (role, content, finish, [DONE]) or
// be refused with 429; nothing else, nothing lost, the KV cache empty at the end, memory flat.

import assert from "node:assert/strict";
import { startServer } from "./app.ts";
import { DEFAULT_CONFIG } from "./config.ts";
import { byteCodec, byteIds, FakeEngine } from "../test/support/mod.ts";

const CLIENTS = 64;
const REQUESTS = 320;

interface Outcome {
  status: number;
  complete: boolean;
  text: string;
}

async function streamOnce(url: string, i: number): Promise<Outcome> {
  const res = await fetch(`${url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "fake",
      messages: [{ role: "user", content: `request ${i}` }],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 24,
    }),
  });
  if (res.status !== 200) {
    await res.body?.cancel();
    return { status: res.status, complete: false, text: "" };
  }
  const raw = await res.text();
  const frames = raw.split("\n\n").filter((f) => f !== "");
  const done = frames.at(-1) === "data: [DONE]";
  const chunks = frames.slice(0, -1).map((f) => JSON.parse(f.slice("data: ".length)));
  const deltas = chunks.filter((c) => c.choices.length === 1).map((c) => c.choices[0]);
  const text = deltas.map((d) => d.delta.content ?? "").join("");
  const complete = done && deltas[0]?.delta.role === "assistant" &&
    deltas.at(-1)?.finish_reason === "length" &&
    chunks.at(-1)?.usage?.completion_tokens === 24;
  return { status: res.status, complete, text };
}

async function round(url: string, count: number): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (next < count) {
      const i = next++;
      outcomes[i] = await streamOnce(url, i);
    }
  }));
  return outcomes;
}

Deno.test("load: 64 streaming clients, 320 requests: each completes or gets 429, KV empty, memory flat", async () => {
  const engine = new FakeEngine({
    delayMs: 1,
    idsPerEvent: 2,
    script: () => byteIds("abcdefghijklmnopqrstuvwxyzABCDEF"),
  });
  const handle = startServer(
    {
      ...DEFAULT_CONFIG,
      port: 0,
      servedModelNames: ["fake"],
      maxRunning: 32,
      maxWaiting: 16,
      logRequests: false,
    },
    { engine, codec: byteCodec, log: () => {} },
  );
  try {
    await round(handle.url, 64); // warm-up
    const heapBefore = Deno.memoryUsage().heapUsed;
    const started = performance.now();
    const outcomes = await round(handle.url, REQUESTS);
    const seconds = (performance.now() - started) / 1000;

    const byStatus = new Map<number, number>();
    for (const o of outcomes) byStatus.set(o.status, (byStatus.get(o.status) ?? 0) + 1);
    const ok = outcomes.filter((o) => o.status === 200);
    const refused = byStatus.get(429) ?? 0;
    console.log(
      `load: ${REQUESTS} requests from ${CLIENTS} clients in ${seconds.toFixed(2)} s: ` +
        `${ok.length} completed, ${refused} refused with 429, peak KV blocks ${engine.kvBlocksPeak}`,
    );
    assert.equal(outcomes.length, REQUESTS, "no request lost");
    assert.deepEqual([...byStatus.keys()].filter((s) => s !== 200 && s !== 429), [], "only 200 and 429");
    assert.ok(
      ok.every((o) => o.complete && o.text === "abcdefghijklmnopqrstuvwx"),
      "every accepted stream complete",
    );
    assert.ok(ok.length > 0 && refused > 0, "the window both admitted and refused work");
    assert.equal(engine.active.size, 0);
    assert.equal(engine.kvBlocksUsed, 0, "KV cache back to empty");
    assert.equal(handle.server.admission.waiting, 0);
    assert.equal(handle.server.admission.running, 0);
    assert.ok(
      engine.kvBlocksPeak <= 32 * Math.ceil((30 + 24) / 4),
      "running sequences stayed within maxRunning",
    );
    const growthMb = (Deno.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
    assert.ok(growthMb < 64, `heap grew ${growthMb.toFixed(1)} MB`);
  } finally {
    await handle.shutdown(100);
  }
});
