// resolveTokenizerDir(): the explicit directory, then the model directory, then `_name_or_path` (as a sibling
// of the model directory and as a path), with an error that lists every place tried.
import assert from "node:assert/strict";
import { join } from "node:path";
import { resolveTokenizerDir } from "./tokenizer_dir.ts";

Deno.test("resolveTokenizerDir() prefers the explicit dir, then the model dir, then _name_or_path", async () => {
  const root = await Deno.makeTempDir();
  try {
    for (const d of ["quant", "fp16", "tok", "empty"]) await Deno.mkdir(join(root, d));
    await Deno.writeTextFile(join(root, "fp16", "tokenizer.json"), "{}");
    await Deno.writeTextFile(join(root, "tok", "tokenizer.json"), "{}");
    const quant = join(root, "quant");

    assert.equal(
      await resolveTokenizerDir({
        modelDir: quant,
        tokenizerDir: join(root, "tok"),
        nameOrPath: "x/fp16",
      }),
      join(root, "tok"),
    );
    await assert.rejects(
      () =>
        resolveTokenizerDir({
          modelDir: join(root, "fp16"),
          tokenizerDir: join(root, "empty"),
          nameOrPath: null,
        }),
      /Cannot load the tokenizer: ".*empty\/tokenizer.json" does not exist \(the tokenizer directory was given explicitly\)/,
    );
    assert.equal(
      await resolveTokenizerDir({ modelDir: join(root, "fp16"), nameOrPath: null }),
      join(root, "fp16"),
    );
    // A hub id's last part, found as a sibling of the model directory.
    assert.equal(
      await resolveTokenizerDir({ modelDir: quant, nameOrPath: "org/fp16" }),
      join(root, "fp16"),
    );
    // An absolute path elsewhere.
    const other = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(join(other, "tokenizer.json"), "{}");
      assert.equal(await resolveTokenizerDir({ modelDir: quant, nameOrPath: other }), other);
    } finally {
      await Deno.remove(other, { recursive: true });
    }
    await assert.rejects(
      () => resolveTokenizerDir({ modelDir: quant, nameOrPath: "/abs/missing-model" }),
      (e: Error) => {
        assert.match(e.message, /^Cannot find tokenizer.json for model ".*quant": tried /);
        for (
          const p of [
            join(quant, "tokenizer.json"),
            join(root, "missing-model", "tokenizer.json"),
            "/abs/missing-model/tokenizer.json",
          ]
        ) {
          assert.ok(e.message.includes(`"${p}"`), `${p} not listed in: ${e.message}`);
        }
        return true;
      },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
