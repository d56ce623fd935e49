// `deno task loadtest:server`: issue 3's load test on the real server. Starts `main.ts` (the embedded model
// unless --model is given) as a subprocess on a free port with small queue bounds, drives it with the loadtest
// library (64 concurrent streaming chat clients, 320 requests, short prompts, max_tokens 6 with ignore_eos,
// clients that honour Retry-After), and checks:
//   - every request either completed (finish_reason "length", exactly max_tokens tokens, `data: [DONE]`) or was
//     refused with 429 carrying Retry-After and an OpenAI error body; no 5xx; nothing else;
//   - no request lost: completed + refused = sent, and the server's own counters agree (successes and generated
//     tokens grew by exactly what the clients saw);
//   - the queue bounds held (sampled /metrics: running <= --max-running, and running + waiting, which counts
//     sequences handed to the engine that await prefill, <= --max-running + --max-waiting);
//   - afterwards /metrics shows 0 running, 0 waiting and KV usage 0;
//   - host memory flat: the server's RSS (/proc/<pid>/status) after warm-up, its peak during the run, and at the
//     end, with end - start under a bound;
//   - SIGTERM exits 0.
// Prints a figures table and writes JSON (default bench/results/loadtest-server-lavapipe.json). Not part of
// `deno task test`: on a 2-core lavapipe machine it takes about two minutes. Flags override the settings
// (--requests, --clients, --max-tokens, --max-running, --max-waiting, --retry-after, --model, --out, ...).

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { formatSummary, type RequestResult, runLoad, syntheticRequests } from "../../loadtest/mod.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

const { values: flags } = parseArgs({
  args: Deno.args,
  strict: true,
  options: {
    model: { type: "string" },
    requests: { type: "string", default: "320" },
    clients: { type: "string", default: "64" },
    "max-tokens": { type: "string", default: "6" },
    "prompt-len": { type: "string", default: "8" },
    "max-running": { type: "string", default: "16" },
    "max-waiting": { type: "string", default: "16" },
    "max-waiting-tokens": { type: "string", default: "2048" },
    "kv-cache-tokens": { type: "string", default: "4096" },
    "retry-after": { type: "string", default: "8" },
    "time-limit": { type: "string", default: "240" },
    "rss-growth-mb": { type: "string", default: "64" },
    out: { type: "string", default: join(ROOT, "bench/results/loadtest-server-lavapipe.json") },
  },
});

function int(name: keyof typeof flags): number {
  const raw = flags[name] as string;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`--${name}: expected a positive integer, got "${raw}"`);
  }
  return n;
}

const REQUESTS = int("requests");
const CLIENTS = int("clients");
const MAX_TOKENS = int("max-tokens");
const MAX_RUNNING = int("max-running");
const MAX_WAITING = int("max-waiting");
const TIME_LIMIT_S = int("time-limit");

// ---------------------------------------------------------------------------------------------------------
// The server subprocess.

interface Server {
  child: Deno.ChildProcess;
  pid: number;
  base: Promise<string>;
  ready: Promise<void>;
  log: string[];
}

async function readLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  let buf = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buf += text;
    const lines = buf.split(/\r?\n|\r/);
    buf = lines.pop()!;
    lines.forEach(onLine);
  }
  if (buf) onLine(buf);
}

function startServer(): Server {
  const args = [
    "run",
    "-A",
    "main.ts",
    ...["--host", "127.0.0.1", "--port", "0", "--max-context", "128"],
    ...["--max-running", String(MAX_RUNNING), "--max-waiting", String(MAX_WAITING)],
    ...["--max-waiting-tokens", flags["max-waiting-tokens"]!, "--kv-cache-tokens", flags["kv-cache-tokens"]!],
    ...["--retry-after", flags["retry-after"]!, "--no-log-requests", "--shutdown-grace-ms", "10000"],
    ...(flags.model ? ["--model", flags.model] : []),
  ];
  const env = { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", NO_COLOR: "1" };
  const child = new Deno.Command(Deno.execPath(), { args, cwd: ROOT, env, stdout: "piped", stderr: "piped" })
    .spawn();
  const log: string[] = [];
  const keep = (line: string) => {
    log.push(line);
    if (log.length > 200) log.shift();
  };
  let setBase!: (url: string) => void;
  let setReady!: () => void;
  const base = new Promise<string>((r) => setBase = r);
  const ready = new Promise<void>((r) => setReady = r);
  const urlOf = (line: string) => line.match(/(http:\/\/[^\s"]+\/v1)/)?.[1];
  readLines(child.stdout, (line) => {
    keep(line);
    const url = urlOf(line);
    if (url) setBase(url);
  }).catch(() => {});
  readLines(child.stderr, (line) => {
    keep(line);
    if (line.startsWith("Trellis ready")) {
      const url = urlOf(line);
      if (url) setBase(url);
      setReady();
    }
  }).catch(() => {});
  return { child, pid: child.pid, base, ready, log };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

async function waitHealthy(origin: string, exited: Promise<Deno.CommandStatus>): Promise<void> {
  let gone = false;
  exited.then(() => gone = true);
  const deadline = performance.now() + 180_000;
  while (performance.now() < deadline) {
    if (gone) throw new Error("the server exited before /health answered 200");
    try {
      const res = await fetch(`${origin}/health`, { signal: AbortSignal.timeout(5000) });
      await res.body?.cancel();
      if (res.status === 200) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error("/health did not answer 200 within 180 s");
}

// ---------------------------------------------------------------------------------------------------------
// Observations: RSS from /proc and gauges from /metrics.

function rssKiB(pid: number): { rss: number; hwm: number } | null {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const field = (name: string) =>
      Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"))?.[1] ?? NaN);
    return { rss: field("VmRSS"), hwm: field("VmHWM") };
  } catch {
    return null;
  }
}

type Metrics = Map<string, number>;

async function metrics(origin: string): Promise<Metrics> {
  const text = await (await fetch(`${origin}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  const out: Metrics = new Map();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const m = line.match(/^([^\s{]+)(\{[^}]*\})?\s+(\S+)$/);
    if (!m) continue;
    // Drop the model_name label; keep others (finished_reason) in the key.
    const labels = (m[2] ?? "").replace(/model_name="[^"]*",?/, "").replace(/,\}$/, "}").replace("{}", "");
    out.set(m[1] + labels, Number(m[3]));
  }
  return out;
}

const RUNNING = "vllm:num_requests_running";
const WAITING = "vllm:num_requests_waiting";
const KV = "vllm:kv_cache_usage_perc";
const SUCCESS_LENGTH = 'vllm:request_success_total{finished_reason="length"}';
const GEN_TOKENS = "vllm:generation_tokens_total";

// ---------------------------------------------------------------------------------------------------------

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

const checks: Check[] = [];
function check(name: string, ok: boolean, detail = ""): void {
  checks.push({ name, ok, detail });
}

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

async function main(): Promise<number> {
  const server = startServer();
  const exited = server.child.status;
  let exitStatus: Deno.CommandStatus | null = null;
  const report: Record<string, unknown> = {
    loadAverageAtStart: loadAverage(),
    cpus: navigator.hardwareConcurrency,
  };
  try {
    const base = await withTimeout(Promise.race([server.base, exited.then(() => "")]), 60_000, "server URL");
    if (!base) throw new Error("the server exited before printing its URL");
    const origin = new URL(base).origin;
    const tLoad = performance.now();
    await withTimeout(Promise.race([server.ready, exited.then(() => {})]), 180_000, "model load");
    await waitHealthy(origin, exited);
    const loadS = (performance.now() - tLoad) / 1000;
    console.error(`server pid ${server.pid} ready at ${base} (${loadS.toFixed(1)} s after listening)`);

    // Warm-up: compile pipelines and fill allocator pools for the batch sizes the run will see.
    const client = {
      endpointUrl: `${base}/chat/completions`,
      endpoint: "chat" as const,
      model: "",
      ignoreEos: true,
    };
    client.model = (await (await fetch(`${base}/models`)).json()).data[0].id;
    const warm = await runLoad({
      ...client,
      requests: syntheticRequests({
        count: MAX_RUNNING,
        promptLen: int("prompt-len"),
        outputLen: 2,
        seed: 99,
      }),
      concurrency: MAX_RUNNING,
    });
    check("warm-up completes", warm.summary.completed === MAX_RUNNING, JSON.stringify(warm.summary.failures));

    const before = await metrics(origin);
    const rssStart = rssKiB(server.pid)!;
    let rssPeak = rssStart.rss;
    const rssSamples: [number, number][] = [];
    let peakRunning = 0;
    let peakWaiting = 0;
    let peakAdmitted = 0;
    let peakKv = 0;
    const t0 = performance.now();
    const sampler = setInterval(() => {
      const r = rssKiB(server.pid);
      if (r) {
        rssPeak = Math.max(rssPeak, r.rss);
        rssSamples.push([Math.round(performance.now() - t0), r.rss]);
      }
    }, 250);
    let polling = true;
    const poller = (async () => {
      while (polling) {
        try {
          const m = await metrics(origin);
          peakRunning = Math.max(peakRunning, m.get(RUNNING) ?? 0);
          peakWaiting = Math.max(peakWaiting, m.get(WAITING) ?? 0);
          peakAdmitted = Math.max(peakAdmitted, (m.get(RUNNING) ?? 0) + (m.get(WAITING) ?? 0));
          peakKv = Math.max(peakKv, m.get(KV) ?? 0);
        } catch { /* a slow answer under load is not a failure of the run */ }
        await new Promise((r) => setTimeout(r, 500));
      }
    })();

    const requests = syntheticRequests({
      count: REQUESTS,
      promptLen: int("prompt-len"),
      outputLen: MAX_TOKENS,
      rangeRatio: 0.5,
      seed: 1,
    }).map((r) => ({ ...r, maxTokens: MAX_TOKENS }));
    const abort = new AbortController();
    const limit = setTimeout(() => abort.abort(), TIME_LIMIT_S * 1000);
    let lastTenth = -1;
    const run = await runLoad({
      ...client,
      requests,
      concurrency: CLIENTS,
      honorRetryAfter: true,
      signal: abort.signal,
      onResult(_r, c) {
        const tenth = Math.floor((c.finished * 10) / c.total);
        if (tenth === lastTenth) return;
        lastTenth = tenth;
        console.error(
          `  ${c.finished}/${c.total}: ${c.completed} completed, ${c.refused429} refused, ${c.failed} failed ` +
            `(${((performance.now() - t0) / 1000).toFixed(1)} s)`,
        );
      },
    });
    clearTimeout(limit);
    polling = false;
    await poller;
    clearInterval(sampler);
    check(
      `finished within the ${TIME_LIMIT_S} s limit`,
      !abort.signal.aborted,
      `${run.durationS.toFixed(1)} s`,
    );

    // Every request accounted for, each one either complete or a clean 429.
    const s = run.summary;
    const results = run.results;
    const byStatus: Record<string, number> = {};
    for (const r of results) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    const completed = results.filter((r) => r.ok);
    const refused = results.filter((r) => r.status === 429);
    const bad = (rs: RequestResult[]) =>
      rs.slice(0, 3).map((r) => `#${r.index} ${r.status} ${r.failure} ${r.error}`).join("; ");
    check(
      "no request lost",
      results.length === REQUESTS && completed.length + refused.length === REQUESTS,
      `${results.length} results for ${REQUESTS} sent: ${completed.length} completed + ${refused.length} refused`,
    );
    check("no 5xx", results.every((r) => r.status < 500), JSON.stringify(byStatus));
    check(
      "only 200 and 429",
      Object.keys(byStatus).every((k) => k === "200" || k === "429"),
      JSON.stringify(byStatus),
    );
    const incomplete = results.filter((r) =>
      r.status === 200 && !(r.ok && r.sawDone && r.finishReason === "length" &&
        r.outputTokens === MAX_TOKENS && r.usageReported && r.ttftMs !== undefined)
    );
    check(
      `every accepted stream complete (finish_reason length, ${MAX_TOKENS} tokens, [DONE])`,
      incomplete.length === 0,
      bad(incomplete),
    );
    const unclean = refused.filter((r) =>
      !(r.retryAfterS !== undefined && r.retryAfterS > 0 && r.errorBodyOk)
    );
    check("every 429 has Retry-After and an OpenAI error body", unclean.length === 0, bad(unclean));
    check(
      "the bounds both admitted and refused work",
      completed.length > 0 && refused.length > 0,
      `${completed.length} completed, ${refused.length} refused`,
    );
    check(
      `running stayed <= --max-running ${MAX_RUNNING}`,
      peakRunning <= MAX_RUNNING,
      `peak ${peakRunning}`,
    );
    // The gauge's waiting counts the server's queue plus sequences handed to the engine that still await
    // prefill or KV blocks, so the admission bound is on running + waiting.
    check(
      `running + waiting stayed <= --max-running + --max-waiting (${MAX_RUNNING + MAX_WAITING})`,
      peakAdmitted <= MAX_RUNNING + MAX_WAITING,
      `peak ${peakAdmitted} (waiting alone peaked at ${peakWaiting})`,
    );

    // The server's counters agree with what the clients saw, and the engine is idle and empty.
    let after = await metrics(origin);
    for (let i = 0; i < 20 && ((after.get(RUNNING) ?? 1) !== 0 || (after.get(KV) ?? 1) !== 0); i++) {
      await new Promise((r) => setTimeout(r, 250));
      after = await metrics(origin);
    }
    const delta = (k: string) => (after.get(k) ?? NaN) - (before.get(k) ?? NaN);
    check(
      "server counted every completion",
      delta(SUCCESS_LENGTH) === completed.length,
      `request_success_total{length} +${delta(SUCCESS_LENGTH)} vs ${completed.length}`,
    );
    check(
      "server generated exactly the tokens streamed",
      delta(GEN_TOKENS) === s.totalOutputTokens,
      `generation_tokens_total +${delta(GEN_TOKENS)} vs ${s.totalOutputTokens}`,
    );
    check("afterwards 0 running", after.get(RUNNING) === 0, `${after.get(RUNNING)}`);
    check("afterwards 0 waiting", after.get(WAITING) === 0, `${after.get(WAITING)}`);
    check("afterwards KV usage 0", after.get(KV) === 0, `${after.get(KV)}`);

    const rssEnd = rssKiB(server.pid)!;
    const growthMiB = (rssEnd.rss - rssStart.rss) / 1024;
    const allowed = Number(flags["rss-growth-mb"]);
    check(
      `host memory flat (RSS end - start < ${allowed} MiB)`,
      growthMiB < allowed,
      `start ${mib(rssStart.rss)} MiB, peak ${mib(rssPeak)} MiB, end ${mib(rssEnd.rss)} MiB (${
        growthMiB.toFixed(1)
      } MiB)`,
    );

    // SIGTERM: drain and exit 0.
    const tStop = performance.now();
    server.child.kill("SIGTERM");
    exitStatus = await withTimeout(exited, 60_000, "exit after SIGTERM");
    const stopS = (performance.now() - tStop) / 1000;
    check(
      "SIGTERM exits 0",
      exitStatus.success && exitStatus.code === 0,
      `code ${exitStatus.code} after ${stopS.toFixed(2)} s`,
    );

    console.log(formatSummary(s, "Trellis load test (embedded model, lavapipe)"));
    const figures: [string, string][] = [
      ["requests sent / clients", `${REQUESTS} / ${CLIENTS}`],
      [
        "completed / refused 429 / other",
        `${completed.length} / ${refused.length} / ${REQUESTS - completed.length - refused.length}`,
      ],
      [
        "bounds: max-running / max-waiting",
        `${MAX_RUNNING} / ${MAX_WAITING}, Retry-After ${flags["retry-after"]} s`,
      ],
      [
        "peak running / waiting / sum / KV usage",
        `${peakRunning} / ${peakWaiting} / ${peakAdmitted} / ${(peakKv * 100).toFixed(1)} %`,
      ],
      ["wall time (s)", run.durationS.toFixed(1)],
      ["output tokens/s (completed)", s.outputThroughput.toFixed(2)],
      ["TTFT p50 / p99 (ms)", `${s.ttftMs.median.toFixed(0)} / ${s.ttftMs.p99.toFixed(0)}`],
      ["ITL p50 / p99 (ms)", `${s.itlMs.median.toFixed(0)} / ${s.itlMs.p99.toFixed(0)}`],
      ["E2E p50 / p99 (ms)", `${s.e2elMs.median.toFixed(0)} / ${s.e2elMs.p99.toFixed(0)}`],
      ["server RSS start / peak / end (MiB)", `${mib(rssStart.rss)} / ${mib(rssPeak)} / ${mib(rssEnd.rss)}`],
      ["after: running / waiting / KV", `${after.get(RUNNING)} / ${after.get(WAITING)} / ${after.get(KV)}`],
      ["SIGTERM", `exit ${exitStatus.code} in ${stopS.toFixed(2)} s`],
    ];
    console.log("\nFigures");
    for (const [k, v] of figures) console.log(`  ${k.padEnd(40)} ${v}`);
    Object.assign(report, {
      settings: {
        requests: REQUESTS,
        clients: CLIENTS,
        maxTokens: MAX_TOKENS,
        promptLenWords: int("prompt-len"),
        maxRunning: MAX_RUNNING,
        maxWaiting: MAX_WAITING,
        maxWaitingTokens: Number(flags["max-waiting-tokens"]),
        kvCacheTokens: Number(flags["kv-cache-tokens"]),
        retryAfterS: Number(flags["retry-after"]),
        maxContext: 128,
        model: client.model,
      },
      modelLoadS: loadS,
      summary: s,
      byStatus,
      peaks: {
        running: peakRunning,
        waiting: peakWaiting,
        runningPlusWaiting: peakAdmitted,
        kvUsage: peakKv,
      },
      after: { running: after.get(RUNNING), waiting: after.get(WAITING), kvUsage: after.get(KV) },
      serverCounters: { successLength: delta(SUCCESS_LENGTH), generationTokens: delta(GEN_TOKENS) },
      rssMiB: {
        start: rssStart.rss / 1024,
        peak: rssPeak / 1024,
        end: rssEnd.rss / 1024,
        kernelHighWater: rssEnd.hwm / 1024,
        // One sample a second: [milliseconds into the run, MiB].
        samples: rssSamples.filter((_, i) => i % 4 === 0).map(([t, kib]) => [t, +(kib / 1024).toFixed(1)]),
      },
      shutdown: { code: exitStatus.code, seconds: stopS },
      loadAverageAtEnd: loadAverage(),
    });
  } catch (e) {
    check("run", false, e instanceof Error ? e.message : String(e));
  } finally {
    if (exitStatus === null) {
      try {
        server.child.kill("SIGKILL");
      } catch { /* already gone */ }
      await exited;
    }
  }

  console.log("\nChecks");
  for (const c of checks) {
    console.log(`  ${c.ok ? "PASS" : "FAIL"}  ${c.name}${c.detail ? `: ${c.detail}` : ""}`);
  }
  const failed = checks.filter((c) => !c.ok);
  if (failed.length) {
    console.log("\nLast server output:\n" + server.log.slice(-40).map((l) => `  | ${l}`).join("\n"));
  }
  const commit = new TextDecoder().decode(
    (await new Deno.Command("git", {
      args: ["rev-parse", "--short", "HEAD"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "null",
    })
      .output().catch(() => ({ stdout: new Uint8Array() }))).stdout,
  ).trim();
  const out = flags.out!;
  await Deno.mkdir(dirname(out), { recursive: true });
  await Deno.writeTextFile(
    out,
    JSON.stringify(
      { test: "loadtest-server", date: new Date().toISOString(), commit, checks, ...report },
      null,
      2,
    ) + "\n",
  );
  console.log(`\n${failed.length ? `${failed.length} check(s) FAILED` : "all checks passed"}; wrote ${out}`);
  return failed.length ? 1 : 0;
}

Deno.exit(await main());
