// The load generator against a tiny fake OpenAI server on loopback (Deno.serve on port 0). The fake picks
// its behaviour from the number that starts each synthetic prompt (the request's index), so every outcome
// the generator classifies appears a known number of times.

import assert from "node:assert/strict";
import { join } from "node:path";
import { firstModel, resolveUrls, runLoad, sendRequest, syntheticRequests } from "./mod.ts";
import { main, parseCliArgs, progressLine } from "./cli.ts";
import { niceStep, sweepSvg } from "./plot.ts";
import { parsePromptsJsonl, rng, type SweepPoint } from "./run.ts";

const DELAY_MS = 15;

interface Fake {
  url: string;
  maxInFlight: number;
  arrivals: number[];
  bodies: Record<string, unknown>[];
  close(): Promise<void>;
}

function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * index % 10: 3 -> 429 with Retry-After and an OpenAI error body; 5 -> 500 with a plain-text body; 7 -> the
 * stream stops before [DONE]; 8 -> an in-stream error event; otherwise max_tokens text chunks DELAY_MS apart
 * (frames cut mid-way and with CRLF line ends), a usage chunk, then [DONE]. `plain: true` streams everything.
 */
function fakeServer(opts: { plain?: boolean; retryAfterMs?: number } = {}): Fake {
  let inFlight = 0;
  const fake: Fake = { url: "", maxInFlight: 0, arrivals: [], bodies: [], close: () => server.shutdown() };
  const t0 = performance.now();
  const encoder = new TextEncoder();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/v1/models") {
      return Response.json({ object: "list", data: [{ id: "fake-model", object: "model" }] });
    }
    const body = await req.json();
    fake.bodies.push(body);
    fake.arrivals.push(performance.now() - t0);
    const chat = path === "/v1/chat/completions";
    const prompt: string = chat ? body.messages[0].content : body.prompt;
    const kind = opts.plain ? 0 : Number(prompt.split(" ")[0]) % 10;
    if (kind === 3) {
      const headers = {
        "retry-after": "1",
        ...(opts.retryAfterMs ? { "retry-after-ms": String(opts.retryAfterMs) } : {}),
      };
      return Response.json({
        error: { message: "queue full", type: "rate_limit_error", param: null, code: "rate_limit_exceeded" },
      }, { status: 429, headers });
    }
    if (kind === 5) return new Response("boom", { status: 500 });
    inFlight++;
    fake.maxInFlight = Math.max(fake.maxInFlight, inFlight);
    const n: number = body.max_tokens;
    const stream = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (text: string) => controller.enqueue(encoder.encode(text));
        const frame = (obj: unknown) => `data: ${JSON.stringify(obj)}\r\n\r\n`;
        try {
          for (let i = 0; i < n; i++) {
            await sleep(DELAY_MS);
            const choice = chat
              ? {
                index: 0,
                delta: i === 0 ? { role: "assistant", content: "tok" } : { content: "tok" },
                finish_reason: null,
              }
              : { index: 0, text: "tok", finish_reason: null };
            const f = frame({ object: "chunk", choices: [choice] });
            send(f.slice(0, 9));
            send(f.slice(9));
            if (kind === 8 && i === 1) {
              send(
                frame({
                  error: { message: "engine fell over", type: "server_error", param: null, code: null },
                }),
              );
              send("data: [DONE]\n\n");
              return;
            }
          }
          const last = chat
            ? { index: 0, delta: {}, finish_reason: "length" }
            : { index: 0, text: "", finish_reason: "length" };
          send(frame({ object: "chunk", choices: [last] }));
          if (kind === 7) return;
          send(": keep-alive\n\n");
          send(
            frame({
              object: "chunk",
              choices: [],
              usage: { prompt_tokens: prompt.split(" ").length, completion_tokens: n },
            }),
          );
          send("data: [DONE]\n\n");
        } finally {
          inFlight--;
          controller.close();
        }
      },
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream" } });
  });
  fake.url = `http://127.0.0.1:${server.addr.port}`;
  return fake;
}

Deno.test("loadtest: 40 requests at concurrency 8 against the fake: every outcome classified, counts add up", async () => {
  const fake = fakeServer();
  try {
    const { endpointUrl } = resolveUrls(fake.url, "chat");
    const requests = syntheticRequests({ count: 40, promptLen: 6, outputLen: 5 });
    const seen: number[] = [];
    const run = await runLoad({
      endpointUrl,
      endpoint: "chat",
      model: "fake-model",
      ignoreEos: true,
      requests,
      concurrency: 8,
      onResult: (_r, c) => seen.push(c.finished),
    });
    const s = run.summary;
    assert.equal(s.requests, 40);
    assert.deepEqual(seen, Array.from({ length: 40 }, (_, i) => i + 1), "onResult once per request");
    assert.deepEqual(s.failures, { http_429: 4, http_500: 4, incomplete: 4, stream_error: 4 });
    assert.equal(s.completed, 24);
    assert.equal(s.refused429, 4);
    assert.ok(fake.maxInFlight <= 8, `at most 8 in flight, saw ${fake.maxInFlight}`);
    assert.equal(fake.bodies[0].ignore_eos, true);
    assert.deepEqual(fake.bodies[0].stream_options, { include_usage: true });
    for (const r of run.results) {
      if (r.index % 10 === 3) {
        assert.equal(r.retryAfterS, 1);
        assert.equal(r.errorBodyOk, true);
        assert.equal(r.error, "queue full");
      }
      if (r.index % 10 === 5) assert.equal(r.errorBodyOk, false);
      if (r.index % 10 === 8) assert.match(r.error ?? "", /engine fell over/);
      if (!r.ok) continue;
      assert.equal(r.outputTokens, 5, "tokens from the usage chunk");
      assert.equal(r.promptTokens, 6);
      assert.equal(r.usageReported, true);
      assert.equal(r.itlMs.length, 4, "one gap between each pair of text chunks");
      assert.ok(r.ttftMs! >= DELAY_MS - 1, `TTFT ${r.ttftMs} at least the fake's first delay`);
      const streamed = r.ttftMs! + r.itlMs.reduce((a, b) => a + b, 0);
      assert.ok(streamed <= r.e2eMs + 1e-6, "TTFT plus gaps fit inside E2E");
      assert.ok(r.e2eMs >= 5 * DELAY_MS - 1);
    }
    assert.ok(s.itlMs.median >= DELAY_MS * 0.5, `median ITL ${s.itlMs.median} ms vs ${DELAY_MS} ms sent`);
    assert.equal(s.totalOutputTokens, 24 * 5);
    assert.ok(s.tpotMs.count === 24 && s.tpotMs.mean >= DELAY_MS * 0.5);
  } finally {
    await fake.close();
  }
});

Deno.test("loadtest: completions endpoint, Poisson rate, Retry-After honoured, network failure", async () => {
  const fake = fakeServer({ retryAfterMs: 300 });
  try {
    const { endpointUrl } = resolveUrls(`${fake.url}/v1/`, "completions");
    assert.equal(endpointUrl, `${fake.url}/v1/completions`);
    // Requests 0..7 but 3 at 50/s: arrivals spread out, mean gap 20 ms.
    const poisson = await runLoad({
      endpointUrl,
      endpoint: "completions",
      model: "m",
      requests: syntheticRequests({ count: 8, promptLen: 3, outputLen: 2 }).filter((_, i) => i !== 3),
      rate: 50,
      seed: 3,
    });
    assert.equal(poisson.summary.completed, 5);
    assert.deepEqual(poisson.summary.failures, { http_500: 1, incomplete: 1 });
    const gaps = fake.arrivals.slice(1).map((t, i) => t - fake.arrivals[i]);
    assert.ok(gaps.some((g) => g > 2), `arrivals not all at once: ${gaps.map((g) => g.toFixed(1))}`);
    assert.match(fake.bodies[0].prompt as string, /^0 \w+ \w+$/);
    assert.equal(fake.bodies[0].model, "m");

    // One client: request 3 gets 429 with retry-after-ms 300, so request 4 starts at least 300 ms later.
    fake.arrivals.length = 0;
    const requests = syntheticRequests({ count: 5, promptLen: 3, outputLen: 1 }).slice(3);
    const run = await runLoad({
      endpointUrl,
      endpoint: "completions",
      model: "m",
      requests,
      honorRetryAfter: true,
    });
    assert.equal(run.results[0].status, 429);
    assert.equal(run.results[0].retryAfterS, 0.3);
    assert.ok(fake.arrivals[1] - fake.arrivals[0] >= 295, `waited ${fake.arrivals[1] - fake.arrivals[0]} ms`);
  } finally {
    await fake.close();
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const r = await sendRequest(
    { endpointUrl: `http://127.0.0.1:${port}/v1/chat/completions`, endpoint: "chat", model: "m" },
    { prompt: "hi", maxTokens: 1, promptTokensEstimate: 1 },
    0,
  );
  assert.equal(r.status, 0);
  assert.equal(r.failure, "network");
  assert.equal(r.ok, false);
});

Deno.test("loadtest CLI: sweep writes JSON and an SVG with one point per level; model from /v1/models", async () => {
  const fake = fakeServer({ plain: true });
  const dir = await Deno.makeTempDir({ prefix: "loadtest_" });
  try {
    assert.equal(await firstModel(`${fake.url}/v1`), "fake-model");
    const json = join(dir, "out.json");
    const svg = join(dir, "out.svg");
    const log = console.log;
    const err = console.error;
    const printed: string[] = [];
    console.log = (...a: unknown[]) => printed.push(a.join(" "));
    console.error = () => {};
    let code: number;
    try {
      code = await main([
        ...[
          "--url",
          fake.url,
          "--sweep",
          "1,4",
          "--num-requests",
          "8",
          "--prompt-len",
          "4",
          "--output-len",
          "3",
        ],
        ...["--range-ratio", "0.5", "--json", json, "--svg", svg, "--quiet"],
      ]);
    } finally {
      console.log = log;
      console.error = err;
    }
    assert.equal(code, 0);
    const report = JSON.parse(await Deno.readTextFile(json));
    assert.equal(report.config.model, "fake-model");
    assert.deepEqual(report.sweep.map((p: { concurrency: number }) => p.concurrency), [1, 4]);
    for (const p of report.sweep) {
      assert.equal(p.summary.completed, 8);
      assert.ok(p.summary.outputThroughput > 0);
    }
    assert.ok(fake.maxInFlight === 4, `the 4-client level ran 4 at once (saw ${fake.maxInFlight})`);
    const lengths = fake.bodies.map((b) => b.max_tokens as number);
    assert.ok(lengths.every((n) => n >= 2 && n <= 5) && new Set(lengths).size > 1, `max_tokens ${lengths}`);
    const text = await Deno.readTextFile(svg);
    assert.ok(text.startsWith("<svg") && text.trimEnd().endsWith("</svg>"));
    assert.equal(text.match(/<circle /g)?.length, 2 * 2 * 2, "2 levels x (median, p99) x (TTFT, ITL)");
    assert.match(text, />c=4</);
    assert.match(printed.join("\n"), /conc\s+ok\s+429/);
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadtest CLI: flags are checked with messages naming the flag", () => {
  assert.throws(() => parseCliArgs([]), /--url: required/);
  assert.throws(
    () => parseCliArgs(["--url", "http://x", "--endpoint", "embeddings"]),
    /--endpoint: expected chat or completions/,
  );
  assert.throws(
    () => parseCliArgs(["--url", "http://x", "--num-requests", "1.5"]),
    /--num-requests: expected a positive integer/,
  );
  assert.throws(
    () => parseCliArgs(["--url", "http://x", "--rate", "0"]),
    /--rate: expected a positive number/,
  );
  assert.throws(() => parseCliArgs(["--url", "http://x", "--svg", "a.svg"]), /--svg: plots a sweep/);
  assert.throws(
    () => parseCliArgs(["--url", "http://x", "--sweep", "1,x"]),
    /--sweep: expected a positive integer, got "x"/,
  );
  assert.throws(
    () => parseCliArgs(["--url", "http://x", "--sweep", "1", "--concurrency", "2"]),
    /--sweep: sets/,
  );
  assert.throws(() => parseCliArgs(["--url", "http://x", "--range-ratio", "1"]), /--range-ratio/);
  assert.throws(() => parseCliArgs(["--url", "http://x", "--bogus"]), /bogus/);
  const o = parseCliArgs(["--url", "http://x", "--rate", "2.5", "--concurrency", "3", "--ignore-eos"], {
    OPENAI_API_KEY: "k",
  });
  assert.equal(o.rate, 2.5);
  assert.equal(o.concurrency, 3);
  assert.equal(o.ignoreEos, true);
  assert.equal(o.apiKey, "k");
  assert.equal(o.endpoint, "chat");
  assert.throws(() => resolveUrls("localhost:8000", "chat"), /--url: expected an http/);
  assert.deepEqual(resolveUrls("http://h:1/v1/chat/completions", "chat"), {
    base: "http://h:1/v1",
    endpointUrl: "http://h:1/v1/chat/completions",
  });
  assert.equal(resolveUrls("https://h/api/v1", "completions").endpointUrl, "https://h/api/v1/completions");
  assert.equal(
    progressLine({ started: 5, finished: 3, completed: 2, refused429: 1, failed: 0, total: 6 }, 1.25),
    `[${"#".repeat(15)}${".".repeat(15)}] 3/6  ok 2  429 1  failed 0  in flight 2  1.3 s`,
  );
});

Deno.test("loadtest: synthetic and JSONL prompts", () => {
  const a = syntheticRequests({ count: 50, promptLen: 10, outputLen: 20, rangeRatio: 0.5, seed: 1 });
  assert.deepEqual(
    a,
    syntheticRequests({ count: 50, promptLen: 10, outputLen: 20, rangeRatio: 0.5, seed: 1 }),
  );
  for (const r of a) {
    assert.ok(r.promptTokensEstimate >= 5 && r.promptTokensEstimate <= 15);
    assert.equal(r.prompt!.split(" ").length, r.promptTokensEstimate);
    assert.ok(r.maxTokens >= 10 && r.maxTokens <= 30);
  }
  assert.ok(new Set(a.map((r) => r.maxTokens)).size > 3, "lengths vary");
  const fixed = syntheticRequests({ count: 5, promptLen: 7, outputLen: 9 });
  assert.ok(fixed.every((r) => r.promptTokensEstimate === 7 && r.maxTokens === 9));
  assert.throws(
    () => syntheticRequests({ count: 0, promptLen: 1, outputLen: 1 }),
    /count to be a positive integer/,
  );

  const specs = parsePromptsJsonl(
    '{"prompt": "a b c"}\n\n{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}\n',
    5,
    16,
    "p.jsonl",
  );
  assert.deepEqual(specs.map((s) => s.maxTokens), [16, 3, 16, 3, 16]);
  assert.equal(specs[0].promptTokensEstimate, 3);
  assert.deepEqual(specs[1].messages, [{ role: "user", content: "hi" }]);
  assert.throws(
    () => parsePromptsJsonl('{"prompt": 1}', 1, 1, "p.jsonl"),
    /p\.jsonl line 1: expected "prompt"/,
  );
  assert.throws(() => parsePromptsJsonl("{}\nnope", 1, 1, "p.jsonl"), /p\.jsonl line 1/);
  assert.throws(
    () => parsePromptsJsonl('{"prompt": "x"}\nnope', 1, 1, "p.jsonl"),
    /p\.jsonl line 2: not JSON/,
  );
  assert.throws(
    () => parsePromptsJsonl('{"prompt": "x", "max_tokens": 0}', 1, 1, "f"),
    /"max_tokens" to be a positive integer/,
  );
  assert.throws(() => parsePromptsJsonl("\n", 1, 1, "f"), /no prompts/);
  const r = rng(9);
  const xs = Array.from({ length: 1000 }, r);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  assert.ok(Math.abs(xs.reduce((a, b) => a + b) / 1000 - 0.5) < 0.05);
});

Deno.test("plot: nice ticks and points placed by throughput", () => {
  assert.equal(niceStep(100), 20);
  assert.equal(niceStep(7), 2);
  assert.equal(niceStep(0.33), 0.1);
  assert.equal(niceStep(0), 1);
  const summary = (tput: number, ms: number) => ({
    outputThroughput: tput,
    ttftMs: { median: ms, p99: 2 * ms },
    itlMs: { median: ms / 10, p99: ms / 5 },
  });
  const pts = [{ concurrency: 1, summary: summary(50, 100) }, {
    concurrency: 8,
    summary: summary(200, 400),
  }] as unknown as SweepPoint[];
  const svg = sweepSvg(pts, "a <b> & c");
  assert.match(svg, /a &#60;b&#62; &#38; c/);
  const xs = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].map((m) => Number(m[1]));
  assert.equal(xs.length, 8);
  // Left panel: plot area from x=64 to x=404; 200 tok/s plus 5% headroom rounds up to 250 (ticks of 50), so
  // 50 tok/s sits at 64 + 340 / 5 = 132 and 200 tok/s at 64 + 340 * 0.8 = 336.
  assert.equal(xs[0], 132);
  assert.equal(xs[1], 336);
  assert.match(svg, />250</);
  assert.throws(() => sweepSvg([]), /no sweep points/);
});
