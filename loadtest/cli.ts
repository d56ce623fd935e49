// `deno task loadtest --url URL [options]`: streams requests at an OpenAI-compatible server and reports
// vLLM's serving-benchmark metrics as a table, optionally as JSON and as an SVG of a concurrency sweep.

import { parseArgs } from "node:util";
import {
  type Counts,
  firstModel,
  formatSummary,
  type LoadOptions,
  parsePromptsJsonl,
  type RequestResult,
  type RequestSpec,
  resolveUrls,
  runLoad,
  runSweep,
  type Summary,
  type SweepPoint,
  sweepSvg,
  syntheticRequests,
} from "./mod.ts";

export const USAGE = `Usage: deno task loadtest --url URL [options]

  --url URL               server base (http://host:8000 or .../v1) or the full endpoint URL (required)
  --model NAME            model to request (default: the first one GET /v1/models lists)
  --endpoint chat|completions   /v1/chat/completions (default) or /v1/completions
  --num-requests N        requests to send (default 100; per concurrency level with --sweep)
  --concurrency C         clients in a closed loop, or the cap on requests in flight with --rate (default 1)
  --rate R                Poisson arrivals at R requests/s
  --sweep 1,4,16,64       run once per concurrency level (closed loop) and plot latency against throughput
  --prompt-len L          synthetic prompt length in words, about tokens (default 128)
  --output-len O          max_tokens (default 128)
  --range-ratio F         lengths uniform in [x(1-F), x(1+F)]; 0 keeps them fixed (default 0)
  --prompts-file FILE     JSONL, one {"prompt": ...} or {"messages": [...]} per line, optional "max_tokens"
  --ignore-eos            send ignore_eos: true so every request generates max_tokens tokens
  --temperature T         sampling temperature (default: the server's)
  --api-key K             Bearer key (default: $OPENAI_API_KEY when set)
  --honor-retry-after     after a 429/503 a client waits the server's Retry-After before its next request
  --timeout S             per-request limit in seconds (default 600)
  --seed N                seeds prompts and arrival times (default 0)
  --json OUT.json         write the configuration, the summary (or sweep) and, with --detailed, every request
  --detailed              include per-request results in the JSON
  --svg OUT.svg           write the latency/throughput plot (needs --sweep)
  --quiet                 no progress display
`;

export interface CliOptions {
  url: string;
  model?: string;
  endpoint: "chat" | "completions";
  numRequests: number;
  concurrency?: number;
  rate?: number;
  sweep?: number[];
  promptLen: number;
  outputLen: number;
  rangeRatio: number;
  promptsFile?: string;
  ignoreEos: boolean;
  temperature?: number;
  apiKey?: string;
  honorRetryAfter: boolean;
  timeoutS: number;
  seed: number;
  json?: string;
  detailed: boolean;
  svg?: string;
  quiet: boolean;
}

function positiveInt(flag: string, raw: string | undefined, fallback?: number): number {
  if (raw === undefined) {
    if (fallback === undefined) throw new Error(`--${flag}: missing`);
    return fallback;
  }
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`--${flag}: expected a positive integer, got "${raw}"`);
  }
  return n;
}

function nonNegative(flag: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || n < 0) {
    throw new Error(`--${flag}: expected a non-negative number, got "${raw}"`);
  }
  return n;
}

/** Parses and checks the flags; throws an Error naming the flag and what it expects. */
export function parseCliArgs(
  args: readonly string[],
  env: Record<string, string | undefined> = {},
): CliOptions {
  const { values, positionals } = parseArgs({
    args: [...args],
    strict: true,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      model: { type: "string" },
      endpoint: { type: "string" },
      "num-requests": { type: "string" },
      concurrency: { type: "string" },
      rate: { type: "string" },
      sweep: { type: "string" },
      "prompt-len": { type: "string" },
      "output-len": { type: "string" },
      "range-ratio": { type: "string" },
      "prompts-file": { type: "string" },
      "ignore-eos": { type: "boolean" },
      temperature: { type: "string" },
      "api-key": { type: "string" },
      "honor-retry-after": { type: "boolean" },
      timeout: { type: "string" },
      seed: { type: "string" },
      json: { type: "string" },
      detailed: { type: "boolean" },
      svg: { type: "string" },
      quiet: { type: "boolean" },
    },
  });
  if (positionals.length) throw new Error(`unexpected argument "${positionals[0]}" (flags start with --)`);
  if (values.url === undefined) throw new Error("--url: required (e.g. --url http://127.0.0.1:8000/v1)");
  const endpoint = values.endpoint ?? "chat";
  if (endpoint !== "chat" && endpoint !== "completions") {
    throw new Error(`--endpoint: expected chat or completions, got "${endpoint}"`);
  }
  const sweep = values.sweep?.split(",").map((s) => positiveInt("sweep", s.trim()));
  if (sweep && (values.concurrency !== undefined || values.rate !== undefined)) {
    throw new Error("--sweep: sets the concurrency of each run; drop --concurrency and --rate");
  }
  const rate = values.rate === undefined ? undefined : nonNegative("rate", values.rate, 0);
  if (rate === 0) {
    throw new Error(`--rate: expected a positive number of requests per second, got "${values.rate}"`);
  }
  const rangeRatio = nonNegative("range-ratio", values["range-ratio"], 0);
  if (rangeRatio >= 1) throw new Error(`--range-ratio: expected a value in [0, 1), got ${rangeRatio}`);
  if (values.svg !== undefined && !sweep) throw new Error("--svg: plots a sweep; add --sweep 1,4,16,64");
  return {
    url: values.url,
    model: values.model,
    endpoint,
    numRequests: positiveInt("num-requests", values["num-requests"], 100),
    concurrency: values.concurrency === undefined
      ? undefined
      : positiveInt("concurrency", values.concurrency),
    rate,
    sweep,
    promptLen: positiveInt("prompt-len", values["prompt-len"], 128),
    outputLen: positiveInt("output-len", values["output-len"], 128),
    rangeRatio,
    promptsFile: values["prompts-file"],
    ignoreEos: values["ignore-eos"] ?? false,
    temperature: values.temperature === undefined
      ? undefined
      : nonNegative("temperature", values.temperature, 0),
    apiKey: values["api-key"] ?? (env.OPENAI_API_KEY || undefined),
    honorRetryAfter: values["honor-retry-after"] ?? false,
    timeoutS: nonNegative("timeout", values.timeout, 600),
    seed: nonNegative("seed", values.seed, 0),
    json: values.json,
    detailed: values.detailed ?? false,
    svg: values.svg,
    quiet: values.quiet ?? false,
  };
}

/** One line of progress: a bar, counts and elapsed time. */
export function progressLine(c: Counts, elapsedS: number, width = 30): string {
  const filled = Math.round((c.finished / c.total) * width);
  const bar = "#".repeat(filled) + ".".repeat(width - filled);
  return `[${bar}] ${c.finished}/${c.total}  ok ${c.completed}  429 ${c.refused429}  failed ${c.failed}  ` +
    `in flight ${c.started - c.finished}  ${elapsedS.toFixed(1)} s`;
}

function progressReporter(quiet: boolean): { onResult(r: RequestResult, c: Counts): void; finish(): void } {
  const tty = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  const started = performance.now();
  let lastDraw = 0;
  let lastTenth = 0;
  return {
    onResult(_r, c) {
      if (quiet) return;
      const now = performance.now();
      if (tty) {
        if (now - lastDraw < 100 && c.finished < c.total) return;
        lastDraw = now;
        Deno.stderr.writeSync(encoder.encode(`\r${progressLine(c, (now - started) / 1000)}\x1b[K`));
      } else {
        const tenth = Math.floor((c.finished * 10) / c.total);
        if (tenth === lastTenth) return;
        lastTenth = tenth;
        console.error(progressLine(c, (now - started) / 1000));
      }
    },
    finish() {
      if (!quiet && tty) Deno.stderr.writeSync(encoder.encode("\n"));
    },
  };
}

function sweepTable(points: readonly SweepPoint[]): string {
  const head = [
    "conc",
    "ok",
    "429",
    "fail",
    "req/s",
    "out tok/s",
    "TTFT p50",
    "TTFT p99",
    "ITL p50",
    "ITL p99",
    "TPOT",
    "E2EL p50",
  ];
  const f = (v: number) => Number.isFinite(v) ? v.toFixed(1) : "-";
  const rows = points.map(({ concurrency: c, summary: s }) => [
    String(c),
    String(s.completed),
    String(s.refused429),
    String(s.failed - s.refused429),
    s.requestThroughput.toFixed(2),
    f(s.outputThroughput),
    f(s.ttftMs.median),
    f(s.ttftMs.p99),
    f(s.itlMs.median),
    f(s.itlMs.p99),
    f(s.tpotMs.mean),
    f(s.e2elMs.median),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((v, i) => v.padStart(widths[i])).join("  ");
  return [fmt(head), ...rows.map(fmt), "(latencies in ms)"].join("\n");
}

async function loadRequests(o: CliOptions): Promise<RequestSpec[]> {
  if (o.promptsFile === undefined) {
    return syntheticRequests({
      count: o.numRequests,
      promptLen: o.promptLen,
      outputLen: o.outputLen,
      rangeRatio: o.rangeRatio,
      seed: o.seed,
    });
  }
  let text: string;
  try {
    text = await Deno.readTextFile(o.promptsFile);
  } catch (e) {
    throw new Error(`--prompts-file: cannot read "${o.promptsFile}" (${e instanceof Error ? e.message : e})`);
  }
  return parsePromptsJsonl(text, o.numRequests, o.outputLen, o.promptsFile);
}

/** Runs the CLI; returns the exit code (0 when every request completed or was refused with 429). */
export async function main(args: readonly string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  const o = parseCliArgs(args, Deno.env.toObject());
  const { base, endpointUrl } = resolveUrls(o.url, o.endpoint);
  const model = o.model ?? await firstModel(base, o.apiKey);
  const requests = await loadRequests(o);
  if (o.endpoint === "completions" && requests.some((r) => r.prompt === undefined)) {
    throw new Error('--prompts-file: the completions endpoint needs "prompt" lines, not "messages"');
  }
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  Deno.addSignalListener("SIGINT", onSigint);
  const load: Omit<LoadOptions, "concurrency"> = {
    endpointUrl,
    endpoint: o.endpoint,
    model,
    apiKey: o.apiKey,
    ignoreEos: o.ignoreEos,
    temperature: o.temperature,
    timeoutMs: o.timeoutS * 1000,
    requests,
    rate: o.rate,
    seed: o.seed,
    honorRetryAfter: o.honorRetryAfter,
    signal: abort.signal,
  };
  const config = { ...o, endpointUrl, apiKey: o.apiKey ? "(set)" : undefined, model };
  const summaries: Summary[] = [];
  let report: Record<string, unknown>;
  try {
    if (o.sweep) {
      console.error(
        `loadtest: ${endpointUrl} model "${model}", sweep ${
          o.sweep.join(",")
        }, ${o.numRequests} requests each`,
      );
      const points = await runSweep(load, o.sweep, (p) => {
        summaries.push(p.summary);
        console.error(
          `concurrency ${p.concurrency}: ${p.summary.completed}/${p.summary.requests} completed, ` +
            `${p.summary.outputThroughput.toFixed(1)} output tok/s`,
        );
      });
      for (const p of points) console.log(formatSummary(p.summary, `concurrency ${p.concurrency}`) + "\n");
      console.log(sweepTable(points));
      if (o.svg) await Deno.writeTextFile(o.svg, sweepSvg(points, `${model} at ${endpointUrl}`));
      report = { config, sweep: points };
    } else {
      const progress = progressReporter(o.quiet);
      const mode = o.rate
        ? `rate ${o.rate}/s${o.concurrency ? ` capped at ${o.concurrency}` : ""}`
        : `concurrency ${o.concurrency ?? 1}`;
      console.error(`loadtest: ${endpointUrl} model "${model}", ${o.numRequests} requests, ${mode}`);
      const run = await runLoad({ ...load, concurrency: o.concurrency, onResult: progress.onResult });
      progress.finish();
      summaries.push(run.summary);
      console.log(formatSummary(run.summary));
      report = { config, summary: run.summary, ...(o.detailed ? { results: run.results } : {}) };
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSigint);
  }
  if (o.json) {
    await Deno.writeTextFile(
      o.json,
      JSON.stringify({ tool: "trellis-loadtest", date: new Date().toISOString(), ...report }, null, 2) + "\n",
    );
  }
  return summaries.every((s) => s.failed === s.refused429) ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(2);
  }
}
