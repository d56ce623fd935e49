import assert from "node:assert/strict";
import { describe, formatSummary, percentile, type RequestResult, summarize } from "./stats.ts";

function close(actual: number, expected: number, tol = 1e-9) {
  assert.ok(Math.abs(actual - expected) <= tol, `${actual} != ${expected}`);
}

Deno.test("percentile interpolates linearly between ranks (numpy's default)", () => {
  close(percentile([1, 2, 3, 4], 90), 3.7);
  close(percentile([15, 20, 35, 40, 50], 40), 29);
  close(percentile([15, 20, 35, 40, 50], 50), 35);
  close(percentile([15, 20, 35, 40, 50], 99), 49.6);
  close(percentile([5], 99), 5);
  close(percentile([1, 2], 0), 1);
  close(percentile([1, 2], 100), 2);
  assert.ok(Number.isNaN(percentile([], 50)));
  assert.throws(() => percentile([1], 101), /p in \[0, 100\]/);
});

Deno.test("describe: mean, population std, median, p90, p99 of unsorted input; NaN when empty", () => {
  const d = describe([4, 1, 3, 2, NaN]);
  assert.equal(d.count, 4);
  close(d.mean, 2.5);
  close(d.std, Math.sqrt(1.25));
  close(d.median, 2.5);
  close(d.p90, 3.7);
  close(d.p99, 3.97);
  assert.equal(d.min, 1);
  assert.equal(d.max, 4);
  const empty = describe([]);
  assert.equal(empty.count, 0);
  assert.ok(Number.isNaN(empty.mean) && Number.isNaN(empty.p99));
});

function result(over: Partial<RequestResult>): RequestResult {
  return {
    index: 0,
    status: 200,
    ok: true,
    startMs: 0,
    e2eMs: 0,
    itlMs: [],
    promptTokens: 0,
    outputTokens: 0,
    usageReported: true,
    sawDone: true,
    finishReason: "length",
    ...over,
  };
}

Deno.test("summarize: TPOT, ITL, throughputs over completed requests; failures by reason", () => {
  const results = [
    result({ index: 0, ttftMs: 100, e2eMs: 400, itlMs: [100, 100, 100], promptTokens: 10, outputTokens: 4 }),
    result({ index: 1, ttftMs: 200, e2eMs: 300, itlMs: [50, 50], promptTokens: 20, outputTokens: 3 }),
    // One token: no TPOT.
    result({ index: 2, ttftMs: 50, e2eMs: 50, itlMs: [], promptTokens: 5, outputTokens: 1 }),
    result({ index: 3, status: 429, ok: false, failure: "http_429", e2eMs: 2 }),
    result({ index: 4, status: 429, ok: false, failure: "http_429", e2eMs: 2 }),
    result({
      index: 5,
      status: 500,
      ok: false,
      failure: "http_500",
      e2eMs: 2,
      promptTokens: 99,
      outputTokens: 9,
    }),
    result({ index: 6, ok: false, failure: "incomplete", ttftMs: 10, e2eMs: 20, outputTokens: 2 }),
  ];
  const s = summarize(results, 2);
  assert.equal(s.requests, 7);
  assert.equal(s.completed, 3);
  assert.equal(s.failed, 4);
  assert.equal(s.refused429, 2);
  assert.deepEqual(s.failures, { http_429: 2, http_500: 1, incomplete: 1 });
  assert.equal(s.totalInputTokens, 35);
  assert.equal(s.totalOutputTokens, 8);
  close(s.requestThroughput, 1.5);
  close(s.outputThroughput, 4);
  close(s.totalTokenThroughput, 21.5);
  // TPOT: (400-100)/3 = 100 and (300-200)/2 = 50.
  assert.equal(s.tpotMs.count, 2);
  close(s.tpotMs.mean, 75);
  assert.equal(s.itlMs.count, 5);
  close(s.itlMs.mean, 80);
  close(s.itlMs.median, 100);
  assert.equal(s.ttftMs.count, 3);
  close(s.ttftMs.median, 100);
  close(s.e2elMs.mean, 250);
  assert.throws(() => summarize(results, 0), /positive duration/);
  const table = formatSummary(s);
  assert.match(table, /Successful requests:\s+3\n/);
  assert.match(table, /refused with 429:\s+2\n/);
  assert.match(table, /http_500:\s+1\n/);
  assert.match(table, /Mean TPOT \(ms\):\s+75\.00\n/);
  assert.match(table, /Median TTFT \(ms\):\s+100\.00\n/);
});
