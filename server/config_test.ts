import assert from "node:assert/strict";
import { configHelp, DEFAULT_CONFIG, ENV_NAMES, parseConfig } from "./config.ts";

Deno.test("config: vLLM's serve conventions: MODEL positionally, --max-model-len, --max-num-seqs, --max-num-batched-tokens", () => {
  const c = parseConfig([
    "/models/llama",
    "--max-model-len",
    "2048",
    "--max-num-seqs=12",
    "--max-num-batched-tokens",
    "512",
    "--served-model-name",
    "m",
  ], {});
  assert.equal(c.modelDir, "/models/llama");
  assert.equal(c.maxContext, 2048);
  assert.equal(c.maxRunning, 12);
  assert.equal(c.maxBatchTokens, 512);
  assert.deepEqual(c.servedModelNames, ["m"]);
  // The positional wins over TRELLIS_MODEL, like a flag; the same model twice is fine, two are not.
  assert.equal(parseConfig(["/a"], { TRELLIS_MODEL: "/b" }).modelDir, "/a");
  assert.equal(parseConfig(["/a", "--model", "/a"], {}).modelDir, "/a");
  assert.throws(() => parseConfig(["/a", "--model", "/b"], {}), /Model given twice: "\/a" and --model "\/b"/);
  assert.throws(() => parseConfig(["/a", "/b"], {}), /Unexpected arguments "\/b": only MODEL/);
  assert.throws(() => parseConfig(["--max-num-seqs", "0"], {}), /maxRunning: expected at least 1/);
  assert.throws(() => parseConfig(["--max-num-batched-tokens=0"], {}), /maxBatchTokens: expected at least 1/);
  assert.match(
    configHelp(),
    /--max-model-len \(--max-context\), --max-num-seqs \(--max-running\), --max-num-batched-tokens \(--max-batch-tokens\)/,
  );
  assert.match(configHelp(), /--host defaults to 127.0.0.1/);
});

Deno.test("config: no flags and no environment give the defaults", () => {
  assert.deepEqual(parseConfig([], {}), DEFAULT_CONFIG);
});

Deno.test("config: flags set every kind of value", () => {
  const c = parseConfig([
    "--model",
    "/m",
    "--tokenizer=/t",
    "--served-model-name",
    "a,b",
    "--served-model-name",
    "c",
    "--host",
    "0.0.0.0",
    "--port",
    "9001",
    "--api-key",
    "k1",
    "--cors-origins",
    "*",
    "--max-waiting",
    "10",
    "--max-waiting-tokens",
    "5000",
    "--max-running",
    "3",
    "--kv-cache-tokens",
    "4096",
    "--max-batch-tokens",
    "1024",
    "--max-n",
    "2",
    "--retry-after",
    "0.5",
    "--accept-any-model",
    "--no-log-requests",
  ], {});
  assert.equal(c.modelDir, "/m");
  assert.equal(c.tokenizerDir, "/t");
  assert.deepEqual(c.servedModelNames, ["a", "b", "c"]);
  assert.equal(c.host, "0.0.0.0");
  assert.equal(c.port, 9001);
  assert.deepEqual(c.apiKeys, ["k1"]);
  assert.deepEqual(c.corsOrigins, ["*"]);
  assert.equal(c.maxWaiting, 10);
  assert.equal(c.maxWaitingTokens, 5000);
  assert.equal(c.maxRunning, 3);
  assert.equal(c.kvCacheTokens, 4096);
  assert.equal(c.maxBatchTokens, 1024);
  assert.equal(c.maxN, 2);
  assert.equal(c.retryAfterS, 0.5);
  assert.equal(c.acceptAnyModel, true);
  assert.equal(c.logRequests, false);
});

Deno.test("config: environment variables apply and flags win over them", () => {
  const env = {
    TRELLIS_PORT: "7000",
    TRELLIS_API_KEY: "x, y",
    TRELLIS_LOG_REQUESTS: "off",
    TRELLIS_MODEL: "/env",
  };
  const fromEnv = parseConfig([], env);
  assert.equal(fromEnv.port, 7000);
  assert.deepEqual(fromEnv.apiKeys, ["x", "y"]);
  assert.equal(fromEnv.logRequests, false);
  assert.equal(fromEnv.modelDir, "/env");
  const both = parseConfig(["--port", "7001", "--log-requests"], env);
  assert.equal(both.port, 7001);
  assert.equal(both.logRequests, true);
  assert.ok(ENV_NAMES.includes("TRELLIS_KV_CACHE_TOKENS"));
});

Deno.test("config: malformed values and unknown flags are errors that name the setting", () => {
  assert.throws(
    () => parseConfig(["--port", "eighty"], {}),
    /--port: expected a non-negative integer, got "eighty"/,
  );
  assert.throws(() => parseConfig(["--port", "70000"], {}), /port: expected at most 65535/);
  assert.throws(() => parseConfig([], { TRELLIS_MAX_WAITING: "-1" }), /TRELLIS_MAX_WAITING/);
  assert.throws(() => parseConfig([], { TRELLIS_LOG_REQUESTS: "maybe" }), /expected true or false/);
  assert.throws(() => parseConfig(["--max-running", "0"], {}), /maxRunning: expected at least 1/);
  assert.throws(() => parseConfig(["--frobnicate"], {}), /frobnicate/);
});

Deno.test("config: help lists every flag with its environment variable", () => {
  const help = configHelp();
  for (const env of ENV_NAMES) assert.match(help, new RegExp(env));
  assert.match(help, /--\[no-\]log-requests/);
  assert.match(help, /--port VALUE\s+TRELLIS_PORT\s+default 8000/);
});
