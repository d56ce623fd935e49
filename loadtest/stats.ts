// Statistics over per-request results, with the names and definitions of vLLM's serving benchmark
// (benchmarks/benchmark_serving.py, `calculate_metrics`): TTFT is the time to the first streamed token, TPOT
// the mean time per output token after the first ((e2e - ttft) / (output - 1)), ITL every gap between two
// streamed chunks that carried text, E2EL the whole request. Percentiles interpolate linearly between the
// two nearest ranks, like numpy.percentile's default.

/** One request as the load generator saw it. Times are milliseconds from the request's start. */
export interface RequestResult {
  /** Index in the request list. */
  index: number;
  /** HTTP status; 0 when no response arrived (connection refused, reset, timeout). */
  status: number;
  /** Completed: 200, at least one choice with a finish_reason, and `data: [DONE]` seen. */
  ok: boolean;
  /** Why a request failed: "http_429", "http_500", "network", "timeout", "aborted",
   * "stream_error" (an error event in the stream), "bad_stream" (a chunk that is not JSON), "incomplete" (no
   * finish_reason or no `data: [DONE]`). */
  failure?: string;
  /** Error message (the OpenAI error body's message when there was one). */
  error?: string;
  /** The Retry-After header of a 429 or 503, in seconds, when present and numeric. */
  retryAfterS?: number;
  /** The non-200 body parsed as an OpenAI error object `{error: {message, type, ...}}`. */
  errorBodyOk?: boolean;
  /** Start, milliseconds on the run's clock (performance.now() relative to the run's start). */
  startMs: number;
  ttftMs?: number;
  e2eMs: number;
  /** Gaps between successive text-bearing chunks. */
  itlMs: number[];
  promptTokens: number;
  outputTokens: number;
  /** Whether token counts came from the server's usage chunk (else: text-bearing chunks were counted). */
  usageReported: boolean;
  finishReason?: string;
  sawDone: boolean;
}

export interface Distribution {
  count: number;
  mean: number;
  std: number;
  min: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
}

export interface Summary {
  requests: number;
  completed: number;
  failed: number;
  /** Requests refused with 429 (also counted in failed and failures.http_429). */
  refused429: number;
  /** Failure reason -> count. */
  failures: Record<string, number>;
  durationS: number;
  totalInputTokens: number;
  totalOutputTokens: number;
  /** Completed requests per second. */
  requestThroughput: number;
  /** Output tokens of completed requests per second. */
  outputThroughput: number;
  /** Prompt plus output tokens of completed requests per second. */
  totalTokenThroughput: number;
  ttftMs: Distribution;
  tpotMs: Distribution;
  itlMs: Distribution;
  e2elMs: Distribution;
}

/** The p-th percentile (0..100) of ascending `sorted`, interpolating linearly; NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile: expected p in [0, 100], got ${p}`);
  if (sorted.length === 0) return NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

/** Count, mean, population standard deviation, min, median, p90, p99, max; NaN fields when empty. */
export function describe(values: readonly number[]): Distribution {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  const n = sorted.length;
  let sum = 0;
  for (const v of sorted) sum += v;
  const mean = n ? sum / n : NaN;
  let sq = 0;
  for (const v of sorted) sq += (v - mean) ** 2;
  return {
    count: n,
    mean,
    std: n ? Math.sqrt(sq / n) : NaN,
    min: n ? sorted[0] : NaN,
    median: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: n ? sorted[n - 1] : NaN,
  };
}

/** Aggregates results of a run that took `durationS` seconds of wall time. */
export function summarize(results: readonly RequestResult[], durationS: number): Summary {
  if (!(durationS > 0)) throw new RangeError(`summarize: expected a positive duration, got ${durationS}`);
  const done = results.filter((r) => r.ok);
  const failures: Record<string, number> = {};
  for (const r of results) {
    if (!r.ok) failures[r.failure ?? "unknown"] = (failures[r.failure ?? "unknown"] ?? 0) + 1;
  }
  let input = 0;
  let output = 0;
  const tpot: number[] = [];
  const itl: number[] = [];
  for (const r of done) {
    input += r.promptTokens;
    output += r.outputTokens;
    if (r.outputTokens > 1 && r.ttftMs !== undefined) tpot.push((r.e2eMs - r.ttftMs) / (r.outputTokens - 1));
    for (const gap of r.itlMs) itl.push(gap);
  }
  return {
    requests: results.length,
    completed: done.length,
    failed: results.length - done.length,
    refused429: failures.http_429 ?? 0,
    failures,
    durationS,
    totalInputTokens: input,
    totalOutputTokens: output,
    requestThroughput: done.length / durationS,
    outputThroughput: output / durationS,
    totalTokenThroughput: (input + output) / durationS,
    ttftMs: describe(done.flatMap((r) => r.ttftMs === undefined ? [] : [r.ttftMs])),
    tpotMs: describe(tpot),
    itlMs: describe(itl),
    e2elMs: describe(done.map((r) => r.e2eMs)),
  };
}

function fmt(v: number, digits = 2): string {
  return Number.isFinite(v) ? v.toFixed(digits) : "-";
}

/** The summary as a plain-text table in the layout of vLLM's benchmark report. */
export function formatSummary(s: Summary, title = "Serving Benchmark Result"): string {
  const width = 52;
  const rows: string[] = [];
  const line = (label: string, value: string) =>
    rows.push(`${label.padEnd(width - 12)}${value.padStart(12)}`);
  const head = (text: string) =>
    rows.push(` ${text} `.padStart((width + text.length + 2) / 2, "-").padEnd(width, "-"));
  rows.push(` ${title} `.padStart((width + title.length + 2) / 2, "=").padEnd(width, "="));
  line("Requests:", String(s.requests));
  line("Successful requests:", String(s.completed));
  line("Failed requests:", String(s.failed));
  line("  of which refused with 429:", String(s.refused429));
  for (const [reason, n] of Object.entries(s.failures).sort()) {
    if (reason !== "http_429") line(`  ${reason}:`, String(n));
  }
  line("Benchmark duration (s):", fmt(s.durationS));
  line("Total input tokens:", String(s.totalInputTokens));
  line("Total generated tokens:", String(s.totalOutputTokens));
  line("Request throughput (req/s):", fmt(s.requestThroughput));
  line("Output token throughput (tok/s):", fmt(s.outputThroughput));
  line("Total token throughput (tok/s):", fmt(s.totalTokenThroughput));
  const block = (name: string, d: Distribution) => {
    head(name);
    line(`Mean ${name.split(" ")[0]} (ms):`, fmt(d.mean));
    line(`Median ${name.split(" ")[0]} (ms):`, fmt(d.median));
    line(`P90 ${name.split(" ")[0]} (ms):`, fmt(d.p90));
    line(`P99 ${name.split(" ")[0]} (ms):`, fmt(d.p99));
  };
  block("TTFT (time to first token)", s.ttftMs);
  block("TPOT (time per output token, excl. 1st)", s.tpotMs);
  block("ITL (inter-token latency)", s.itlMs);
  block("E2EL (end-to-end latency)", s.e2elMs);
  rows.push("=".repeat(width));
  return rows.join("\n");
}
