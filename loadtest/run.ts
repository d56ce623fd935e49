// Drives many requests: a closed loop of C clients (--concurrency), or Poisson arrivals at R requests per
// second (--rate, optionally capped by a concurrency), over synthetic prompts of about L words or prompts
// read from a JSONL file; and a sweep that repeats the run at several concurrencies.

import { type ClientOptions, type RequestSpec, sendRequest } from "./request.ts";
import { type RequestResult, summarize, type Summary } from "./stats.ts";

/** Deterministic 32-bit generator (mulberry32), uniform in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Common English words that are one token each in the Llama 2 and Llama 3 vocabularies (with their leading
// space), so a prompt of L words is close to L tokens.
const WORDS = (
  "the of and to in is was for on that with as by at from his he it an are be this which or had not but " +
  "first new one all they were has have their more also its after been two who other when time into only " +
  "she would her most there some out year about many up city can then over between during made world if " +
  "them used later part may him three where before while under both state people being through well such " +
  "school until known work since area game day life house water music war name left small"
).split(" ");

export interface SyntheticOptions {
  count: number;
  /** Prompt length in words (about tokens). */
  promptLen: number;
  /** max_tokens. */
  outputLen: number;
  /** Lengths uniform in [len * (1 - r), len * (1 + r)]; 0 keeps them fixed (vLLM's --random-range-ratio). */
  rangeRatio?: number;
  seed?: number;
}

function around(len: number, ratio: number, next: () => number): number {
  const lo = Math.max(1, Math.round(len * (1 - ratio)));
  const hi = Math.max(lo, Math.round(len * (1 + ratio)));
  return lo + Math.floor(next() * (hi - lo + 1));
}

/** Random prompts; each starts with its index so that no two share a long prefix (no prefix-cache shortcut). */
export function syntheticRequests(opts: SyntheticOptions): RequestSpec[] {
  const ratio = opts.rangeRatio ?? 0;
  for (
    const [name, v] of [["count", opts.count], ["promptLen", opts.promptLen], ["outputLen", opts.outputLen]]
  ) {
    if (!Number.isSafeInteger(v) || (v as number) < 1) {
      throw new RangeError(`synthetic prompts: expected ${name} to be a positive integer, got ${v}`);
    }
  }
  if (!(ratio >= 0 && ratio < 1)) {
    throw new RangeError(`synthetic prompts: expected rangeRatio in [0, 1), got ${ratio}`);
  }
  const next = rng(opts.seed ?? 0);
  return Array.from({ length: opts.count }, (_, i) => {
    const len = around(opts.promptLen, ratio, next);
    const words = [String(i)];
    while (words.length < len) words.push(WORDS[Math.floor(next() * WORDS.length)]);
    return {
      prompt: words.join(" "),
      maxTokens: around(opts.outputLen, ratio, next),
      promptTokensEstimate: len,
    };
  });
}

/**
 * Requests from JSONL text: each line `{"prompt": "..."}` or `{"messages": [{"role", "content"}, ...]}`,
 * with an optional `"max_tokens"` (else `defaultMaxTokens`). Lines repeat in order until `count` requests.
 */
export function parsePromptsJsonl(
  text: string,
  count: number,
  defaultMaxTokens: number,
  source = "prompts",
): RequestSpec[] {
  const specs: RequestSpec[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    const where = `${source} line ${i + 1}`;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new Error(`${where}: not JSON (${e instanceof Error ? e.message : e})`);
    }
    if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
      throw new Error(`${where}: expected a JSON object`);
    }
    const maxTokens = obj.max_tokens ?? defaultMaxTokens;
    if (!Number.isSafeInteger(maxTokens) || (maxTokens as number) < 1) {
      throw new Error(
        `${where}: expected "max_tokens" to be a positive integer, got ${JSON.stringify(obj.max_tokens)}`,
      );
    }
    if (typeof obj.prompt === "string") {
      specs.push({
        prompt: obj.prompt,
        maxTokens: maxTokens as number,
        promptTokensEstimate: words(obj.prompt),
      });
    } else if (
      Array.isArray(obj.messages) && obj.messages.length > 0 &&
      obj.messages.every((m) => typeof m?.role === "string" && typeof m?.content === "string")
    ) {
      const all = obj.messages.map((m) => m.content).join(" ");
      specs.push({
        messages: obj.messages,
        maxTokens: maxTokens as number,
        promptTokensEstimate: words(all),
      });
    } else {
      throw new Error(
        `${where}: expected "prompt" (a string) or "messages" (a non-empty list of {role, content} strings)`,
      );
    }
  });
  if (specs.length === 0) throw new Error(`${source}: no prompts (expected one JSON object per line)`);
  return Array.from({ length: count }, (_, i) => specs[i % specs.length]);
}

function words(text: string): number {
  return text.split(/\s+/).filter((w) => w !== "").length;
}

export interface Counts {
  started: number;
  finished: number;
  completed: number;
  refused429: number;
  failed: number;
  total: number;
}

export interface LoadOptions extends ClientOptions {
  requests: readonly RequestSpec[];
  /** Most requests in flight; with no rate, that many clients in a closed loop. Default: 1 without a rate, unbounded with one. */
  concurrency?: number;
  /** Poisson arrivals, requests per second. */
  rate?: number;
  /** Seeds the arrival times. */
  seed?: number;
  /** After a 429 or 503 with Retry-After, the client (its concurrency slot) waits that long before its next request. */
  honorRetryAfter?: boolean;
  onResult?(result: RequestResult, counts: Counts): void;
}

export interface LoadRun {
  results: RequestResult[];
  durationS: number;
  summary: Summary;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Runs every request once and returns what each did, the wall time, and the summary. */
export async function runLoad(opts: LoadOptions): Promise<LoadRun> {
  const total = opts.requests.length;
  if (total === 0) throw new RangeError("runLoad: no requests");
  if (opts.rate !== undefined && !(opts.rate > 0)) {
    throw new RangeError(`runLoad: expected rate > 0, got ${opts.rate}`);
  }
  const limit = opts.concurrency ?? (opts.rate === undefined ? 1 : Infinity);
  if (!(limit >= 1)) throw new RangeError(`runLoad: expected concurrency >= 1, got ${opts.concurrency}`);
  const random = rng(opts.seed ?? 0);
  const counts: Counts = { started: 0, finished: 0, completed: 0, refused429: 0, failed: 0, total };
  const results: RequestResult[] = new Array(total);
  let free = limit;
  const waiters: (() => void)[] = [];
  const acquire = () => free > 0 ? (free--, Promise.resolve()) : new Promise<void>((r) => waiters.push(r));
  const release = () => {
    const next = waiters.shift();
    if (next) next();
    else free++;
  };
  const zero = performance.now();
  let arrival = 0;
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < total && !opts.signal?.aborted; i++) {
    if (opts.rate !== undefined) {
      arrival += (-Math.log(1 - random()) / opts.rate) * 1000;
      await sleep(zero + arrival - performance.now(), opts.signal);
    }
    await acquire();
    counts.started++;
    inFlight.push((async () => {
      const r = await sendRequest(opts, opts.requests[i], i, zero);
      results[i] = r;
      counts.finished++;
      if (r.ok) counts.completed++;
      else if (r.status === 429) counts.refused429++;
      else counts.failed++;
      opts.onResult?.(r, { ...counts });
      if (opts.honorRetryAfter && (r.status === 429 || r.status === 503) && r.retryAfterS !== undefined) {
        await sleep(r.retryAfterS * 1000, opts.signal);
      }
      release();
    })());
  }
  await Promise.all(inFlight);
  const durationS = (performance.now() - zero) / 1000;
  const done = results.filter((r) => r !== undefined);
  return { results: done, durationS, summary: summarize(done, durationS) };
}

export interface SweepPoint {
  concurrency: number;
  summary: Summary;
}

/** runLoad at each concurrency in turn (same requests each time), closed loop. */
export async function runSweep(
  opts: Omit<LoadOptions, "concurrency">,
  concurrencies: readonly number[],
  onPoint?: (point: SweepPoint) => void,
): Promise<SweepPoint[]> {
  const points: SweepPoint[] = [];
  for (const concurrency of concurrencies) {
    if (opts.signal?.aborted) break;
    const { summary } = await runLoad({ ...opts, concurrency });
    const point = { concurrency, summary };
    points.push(point);
    onPoint?.(point);
  }
  return points;
}
