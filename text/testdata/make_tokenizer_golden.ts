// Writes tokenizer_golden.json: the ids Hugging Face's own tokenizers library (its Rust core, through the
// npm "tokenizers" Node binding) gives AWKWARD_STRINGS with both fixture tokenizers, and its decode of
// them. tokenizer_test.ts holds text/tokenizer.ts to this table.
//
//   deno run -A --no-lock text/testdata/make_tokenizer_golden.ts [FIXTURES_DIR]
//
// The Llama 2 fixture sets legacy: false (no "\u2581" after an added token), which the Rust core alone
// does not do, so strings naming <s>, </s> or <unk> are left out of its table; prompts.json covers them.

// A one-off oracle, not a dependency of Trellis: kept out of deno.json and deno.lock (run it with --no-lock).
// deno-lint-ignore no-import-prefix
import { Tokenizer as HfTokenizer } from "npm:tokenizers@0.23.2";
import { AWKWARD_STRINGS } from "../_tokenizer_fixtures.ts";
import { fixturesDir } from "../../test/support/mod.ts";

const fixtures = Deno.args[0] ?? fixturesDir();
if (fixtures === null) throw new Error("Cannot find the fixtures: pass FIXTURES_DIR or set TRELLIS_FIXTURES");
const out: Record<string, unknown> = {
  _doc: "Made by make_tokenizer_golden.ts with npm tokenizers@0.23.2 (HF tokenizers' Rust core): " +
    "encode(text, add_special_tokens=False) ids and decode(ids) text for each fixture tokenizer.",
};
for (const name of ["llama2-style", "llama31-style"]) {
  const hf = HfTokenizer.fromFile(`${fixtures}/${name}-fp16/tokenizer.json`);
  const rows = [];
  for (const text of AWKWARD_STRINGS) {
    if (name === "llama2-style" && /<s>|<\/s>|<unk>/.test(text)) continue;
    const encoding = await hf.encode(text, null, { addSpecialTokens: false });
    const ids = Array.from(encoding.getIds());
    rows.push({ text, ids, decoded: await hf.decode(ids, false) });
  }
  out[name] = rows;
}
const path = new URL("./tokenizer_golden.json", import.meta.url);
await Deno.writeTextFile(path, JSON.stringify(out, null, 1) + "\n");
console.log(`Wrote ${path.pathname}`);
