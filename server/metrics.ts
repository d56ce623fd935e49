// Prometheus metrics under vLLM's names (so existing dashboards and load tools read them), each with a
// model_name label; rendered in the text exposition format by GET /metrics.

// Bucket bounds in seconds, as vLLM's v1 loggers define them (vllm/v1/metrics/loggers.py).
const TTFT_BUCKETS = [
  0.001,
  0.005,
  0.01,
  0.02,
  0.04,
  0.06,
  0.08,
  0.1,
  0.25,
  0.5,
  0.75,
  1.0,
  2.5,
  5.0,
  7.5,
  10.0,
  20.0,
  40.0,
  80.0,
  160.0,
  640.0,
  2560.0,
];
const ITL_BUCKETS = [
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.15,
  0.2,
  0.3,
  0.4,
  0.5,
  0.75,
  1.0,
  2.5,
  5.0,
  7.5,
  10.0,
  20.0,
  40.0,
  80.0,
];
const E2E_BUCKETS = [
  0.3,
  0.5,
  0.8,
  1.0,
  1.5,
  2.0,
  2.5,
  5.0,
  10.0,
  15.0,
  20.0,
  30.0,
  40.0,
  50.0,
  60.0,
  120.0,
  240.0,
  480.0,
  960.0,
  1920.0,
  7680.0,
];

export type FinishedReason = "stop" | "length" | "abort" | "error";

export interface GaugeValues {
  running: number;
  waiting: number;
  /** 0..1 */
  kvUsage: number;
  /** The engine's own counters (EngineStats), sampled at scrape time. */
  prefixCacheQueries: number;
  prefixCacheHits: number;
  preemptions: number;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function formatNumber(v: number): string {
  if (v === Infinity) return "+Inf";
  return String(v);
}

class Histogram {
  readonly bounds: readonly number[];
  /** Non-cumulative count per bound; the last slot is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array(bounds.length + 1).fill(0);
  }

  observe(v: number): void {
    let i = this.bounds.findIndex((b) => v <= b);
    if (i === -1) i = this.bounds.length;
    this.counts[i]++;
    this.sum += v;
    this.count++;
  }

  lines(name: string, labels: string): string[] {
    const out: string[] = [];
    let cumulative = 0;
    [...this.bounds, Infinity].forEach((b, i) => {
      cumulative += this.counts[i];
      out.push(`${name}_bucket{${labels},le="${formatNumber(b)}"} ${cumulative}`);
    });
    out.push(`${name}_sum{${labels}} ${this.sum}`);
    out.push(`${name}_count{${labels}} ${this.count}`);
    return out;
  }
}

export class Metrics {
  readonly #label: string;
  #promptTokens = 0;
  #generationTokens = 0;
  readonly #finished = new Map<FinishedReason, number>([["stop", 0], ["length", 0], ["abort", 0], [
    "error",
    0,
  ]]);
  readonly #ttft = new Histogram(TTFT_BUCKETS);
  readonly #itl = new Histogram(ITL_BUCKETS);
  readonly #e2e = new Histogram(E2E_BUCKETS);
  // vLLM uses its request-latency buckets for queue time too.
  readonly #queue = new Histogram(E2E_BUCKETS);

  constructor(modelName: string) {
    this.#label = `model_name="${escapeLabel(modelName)}"`;
  }

  addPromptTokens(n: number): void {
    this.#promptTokens += n;
  }

  addGenerationTokens(n: number): void {
    this.#generationTokens += n;
  }

  countFinished(reason: FinishedReason): void {
    this.#finished.set(reason, (this.#finished.get(reason) ?? 0) + 1);
  }

  observeTtft(seconds: number): void {
    this.#ttft.observe(seconds);
  }

  observeItl(seconds: number): void {
    this.#itl.observe(seconds);
  }

  observeE2e(seconds: number): void {
    this.#e2e.observe(seconds);
  }

  /** Time a sequence waited (for a running slot here, then for KV blocks in the engine) before it ran. */
  observeQueueTime(seconds: number): void {
    this.#queue.observe(seconds);
  }

  /** Prometheus text exposition format 0.0.4. */
  render(gauges: GaugeValues): string {
    const l = this.#label;
    const out: string[] = [];
    const family = (name: string, type: string, help: string, lines: string[]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    };
    family("vllm:num_requests_running", "gauge", "Number of sequences the engine is running.", [
      `vllm:num_requests_running{${l}} ${gauges.running}`,
    ]);
    family("vllm:num_requests_waiting", "gauge", "Number of sequences waiting to be run.", [
      `vllm:num_requests_waiting{${l}} ${gauges.waiting}`,
    ]);
    family("vllm:kv_cache_usage_perc", "gauge", "KV cache usage; 1 means 100 percent.", [
      `vllm:kv_cache_usage_perc{${l}} ${gauges.kvUsage}`,
    ]);
    family("vllm:prompt_tokens_total", "counter", "Prompt tokens processed.", [
      `vllm:prompt_tokens_total{${l}} ${this.#promptTokens}`,
    ]);
    family("vllm:generation_tokens_total", "counter", "Generated tokens.", [
      `vllm:generation_tokens_total{${l}} ${this.#generationTokens}`,
    ]);
    family(
      "vllm:request_success_total",
      "counter",
      "Finished sequences by finish reason.",
      [...this.#finished].map(([reason, n]) =>
        `vllm:request_success_total{${l},finished_reason="${reason}"} ${n}`
      ),
    );
    family(
      "vllm:time_to_first_token_seconds",
      "histogram",
      "Time to first token in seconds.",
      this.#ttft.lines("vllm:time_to_first_token_seconds", l),
    );
    family(
      "vllm:inter_token_latency_seconds",
      "histogram",
      "Time between engine outputs of one sequence in seconds.",
      this.#itl.lines("vllm:inter_token_latency_seconds", l),
    );
    family(
      "vllm:time_per_output_token_seconds",
      "histogram",
      "Older name of vllm:inter_token_latency_seconds.",
      this.#itl.lines("vllm:time_per_output_token_seconds", l),
    );
    family(
      "vllm:e2e_request_latency_seconds",
      "histogram",
      "End-to-end request latency in seconds.",
      this.#e2e.lines("vllm:e2e_request_latency_seconds", l),
    );
    family(
      "vllm:request_queue_time_seconds",
      "histogram",
      "Time a sequence waited before it started running, in seconds.",
      this.#queue.lines("vllm:request_queue_time_seconds", l),
    );
    family("vllm:prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", [
      `vllm:prefix_cache_queries_total{${l}} ${gauges.prefixCacheQueries}`,
    ]);
    family("vllm:prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", [
      `vllm:prefix_cache_hits_total{${l}} ${gauges.prefixCacheHits}`,
    ]);
    family("vllm:num_preemptions_total", "counter", "Sequences preempted because the KV cache was full.", [
      `vllm:num_preemptions_total{${l}} ${gauges.preemptions}`,
    ]);
    return out.join("\n") + "\n";
  }
}
