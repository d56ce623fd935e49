// The load generator's public surface: a streaming client for any OpenAI-compatible server, runs at a
// concurrency or a Poisson rate, vLLM-style statistics, and an SVG of a concurrency sweep. A top-level tool:
// it talks HTTP only and imports nothing from main.ts, server/, engine/ or kernels/.

export { type SseEvent, SseParser } from "./sse.ts";
export {
  type ChatMessage,
  type ClientOptions,
  type Endpoint,
  requestBody,
  type RequestSpec,
  sendRequest,
} from "./request.ts";
export {
  type Counts,
  type LoadOptions,
  type LoadRun,
  parsePromptsJsonl,
  rng,
  runLoad,
  runSweep,
  type SweepPoint,
  type SyntheticOptions,
  syntheticRequests,
} from "./run.ts";
export {
  describe,
  type Distribution,
  formatSummary,
  percentile,
  type RequestResult,
  summarize,
  type Summary,
} from "./stats.ts";
export { niceStep, sweepSvg } from "./plot.ts";

/**
 * The /v1 base and the request URL for `endpoint` from what a user types: `http://host:8000`,
 * `http://host:8000/v1`, or the full `.../v1/chat/completions` or `.../v1/completions` URL.
 */
export function resolveUrls(
  url: string,
  endpoint: "chat" | "completions",
): { base: string; endpointUrl: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`--url: expected an http(s) URL such as http://127.0.0.1:8000/v1, got "${url}"`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new Error(`--url: expected an http or https URL, got "${url}"`);
  }
  let path = parsed.pathname.replace(/\/+$/, "");
  const tail = endpoint === "chat" ? "/chat/completions" : "/completions";
  if (path.endsWith("/chat/completions")) path = path.slice(0, -"/chat/completions".length);
  else if (path.endsWith("/completions")) path = path.slice(0, -"/completions".length);
  else if (!path.endsWith("/v1")) path += "/v1";
  const base = `${parsed.origin}${path}`;
  return { base, endpointUrl: `${base}${tail}` };
}

/** The first model id that GET {base}/models lists. */
export async function firstModel(base: string, apiKey?: string): Promise<string> {
  const headers: Record<string, string> = apiKey ? { authorization: `Bearer ${apiKey}` } : {};
  let res: Response;
  try {
    res = await fetch(`${base}/models`, { headers, signal: AbortSignal.timeout(30_000) });
  } catch (e) {
    throw new Error(
      `cannot reach ${base}/models to find a model name (${
        e instanceof Error ? e.message : e
      }); pass --model`,
    );
  }
  const text = await res.text();
  if (res.status !== 200) {
    throw new Error(`GET ${base}/models answered ${res.status}: ${text.slice(0, 200)}; pass --model`);
  }
  const id = (() => {
    try {
      return JSON.parse(text)?.data?.[0]?.id;
    } catch {
      return undefined;
    }
  })();
  if (typeof id !== "string") {
    throw new Error(`GET ${base}/models listed no model ({"data": [{"id": ...}]}); pass --model`);
  }
  return id;
}
