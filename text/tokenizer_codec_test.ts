// TokenizerCodec over the real tokenizers: the embedded Llama 2 style model's (in the repository) and the
// Llama 3.1 style fixture's (ignored when ../shared/fixtures is absent).

import assert from "node:assert/strict";
import { TokenizerCodec } from "./tokenizer_codec.ts";
import { EMBEDDED_MODEL_DIR, fixturesDir, noFixtures } from "../test/support/mod.ts";

const EMBEDDED = EMBEDDED_MODEL_DIR;
const LLAMA31 = `${fixturesDir()}llama31-style-fp16`;

/** Streams `ids` through a detokenizer primed with `promptIds`; returns the pieces and their join. */
function stream(codec: TokenizerCodec, promptIds: number[], ids: number[]): string[] {
  const detok = codec.newDetokenizer(promptIds);
  return [...ids.map((id) => detok.push(id)), detok.flush()];
}

Deno.test("TokenizerCodec (Llama 2 style): template, BOS, stop ids and streamed text", async () => {
  const codec = await TokenizerCodec.fromDir(EMBEDDED);
  assert.equal(codec.family, "llama2");
  assert.deepEqual(codec.eosIds, [2]);
  assert.deepEqual(codec.endOfTurnIds, []);
  const prompt = codec.renderChat([{ role: "system", content: "S" }, { role: "user", content: "Q" }], {
    addGenerationPrompt: true,
  });
  assert.equal(prompt, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ [/INST]");
  const promptIds = codec.encode(prompt, { addSpecialTokens: false });
  assert.equal(promptIds[0], 1, "the template's <s> text becomes the BOS id");
  assert.equal(promptIds.filter((id) => id === 1).length, 1, "no second BOS");
  assert.deepEqual(codec.encode("Hi", { addSpecialTokens: true }).slice(0, 1), [1]);

  // SentencePiece encodes "Hello" as "▁Hello": after a prompt it continues the text as " Hello".
  const ids = codec.encode("Hello wörld 🙂", { addSpecialTokens: false });
  const pieces = stream(codec, promptIds, ids);
  assert.equal(pieces.join(""), " Hello wörld 🙂");
  assert.ok(!pieces.some((p) => p.includes("\ufffd")), "byte-fallback runs are merged before emitting");
  const bytes = ids.flatMap((id) => codec.tokenBytes(id));
  assert.deepEqual(
    bytes,
    [...new TextEncoder().encode(" Hello wörld 🙂")],
    "token bytes make up the UTF-8 text",
  );
  assert.equal(
    codec.decode([1, ...codec.encode("ok", { addSpecialTokens: false })], { skipSpecialTokens: true }),
    "ok",
  );
});

Deno.test({
  name: "TokenizerCodec (Llama 3.1 style): header template, end-of-turn ids, byte-level tokens",
  ignore: noFixtures(),
  fn: async () => {
    const codec = await TokenizerCodec.fromDir(LLAMA31);
    assert.equal(codec.family, "llama3");
    const eot = codec.tokenizer.tokenToId("<|eot_id|>")!;
    assert.ok(codec.endOfTurnIds.includes(eot));
    const prompt = codec.renderChat([{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
    assert.ok(prompt.startsWith("<|begin_of_text|><|start_header_id|>"));
    assert.ok(prompt.endsWith("<|start_header_id|>assistant<|end_header_id|>\n\n"));
    const promptIds = codec.encode(prompt, { addSpecialTokens: false });
    assert.equal(promptIds.filter((id) => id === codec.tokenizer.tokenToId("<|begin_of_text|>")).length, 1);

    const text = "Hello wörld 🙂";
    const ids = codec.encode(text, { addSpecialTokens: false });
    assert.equal(stream(codec, promptIds, ids).join(""), text);
    assert.deepEqual(ids.flatMap((id) => codec.tokenBytes(id)), [...new TextEncoder().encode(text)]);
    assert.equal(codec.tokenText(ids[0]), codec.decode([ids[0]]));
    assert.ok(text.startsWith(codec.tokenText(ids[0])));
  },
});
