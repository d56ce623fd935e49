// `deno task generate` as a user runs it: the embedded model's greedy ids with --json, and one clear
// error line with a non-zero exit for bad input.
import assert from "node:assert/strict";
import { DEFAULT_MODEL_DIR } from "../engine/mod.ts";
import { noGpu } from "../test/support/mod.ts";

const CLI = new URL("./generate.ts", import.meta.url).pathname;
const NO_GPU = await noGpu();

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({
  name: "generate --prompt-ids --json prints the reference greedy ids, the text and timings",
  ignore: NO_GPU,
  async fn() {
    const ref = JSON.parse(await Deno.readTextFile(`${DEFAULT_MODEL_DIR}/reference.json`));
    const ids: number[] = ref.prompts.p0_genesis.ids;
    const r = await cli(["--prompt-ids", ids.join(","), "--max-tokens", "10", "--ignore-eos", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.prompt_ids, ids);
    assert.deepEqual(out.token_ids, ref.fp32_runtime.greedy_32.p0_genesis.slice(0, 10));
    assert.equal(out.finish_reason, "length");
    assert.equal(typeof out.text, "string");
    assert.ok(out.text.length > 0);
    for (const k of ["load_ms", "prefill_ms", "prefill_tokens_per_s", "decode_tokens_per_s"]) {
      assert.equal(typeof out.timings[k], "number", k);
    }
  },
});

Deno.test("generate: bad input is one clear error line and a non-zero exit", async () => {
  const missing = await cli(["--model", "/nonexistent/model", "--json"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Cannot open checkpoint "\/nonexistent\/model": the directory does not exist/);
  const badFlag = await cli(["--max-tokens", "zero"]);
  assert.equal(badFlag.code, 1);
  assert.match(badFlag.stderr, /Invalid --max-tokens "zero": expected an integer >= 1/);
  const both = await cli(["--prompt", "x", "--prompt-ids", "1"]);
  assert.equal(both.code, 1);
  assert.match(both.stderr, /either --prompt or --prompt-ids/);
  const tok = await cli(["--tokenizer", "/nonexistent/tok"]);
  assert.equal(tok.code, 1);
  assert.match(tok.stderr, /tokenizer\.json" does not exist/);
  for (const r of [missing, badFlag, both, tok]) assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
});
