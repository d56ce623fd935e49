// IncrementalDetokenizer tests: push() outputs + flush() must equal the full decode minus the prompt's
// decode, with no chunk carrying half a character, on hand-made tokenizers, the embedded model's and both
// fixture tokenizers (random id sequences and encodings of awkward strings, cut at random prompt lengths).

import assert from "node:assert/strict";
import { IncrementalDetokenizer } from "./detokenizer.ts";
import { Tokenizer } from "./tokenizer.ts";
import { BYTE_TO_CHAR } from "./_tokenizer_pipeline.ts";
import { AWKWARD_STRINGS, fixtureTokenizers, NO_FIXTURES, roundTripText } from "./_tokenizer_fixtures.ts";
import { EMBEDDED_MODEL_DIR, seededRandom } from "../test/support/mod.ts";

/** Llama-2-like: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258, \u2581 259, a 260, \u2581a 261. */
function sentencePieceStyle(): Tokenizer {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  Object.assign(vocab, { "\u2581": 259, "a": 260, "\u2581a": 261 });
  return Tokenizer.fromJson({
    added_tokens: ["<unk>", "<s>", "</s>"].map((content, id) => ({ id, content, special: true })),
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: { type: "BPE", unk_token: "<unk>", byte_fallback: true, vocab, merges: ["\u2581 a"] },
  });
}

/** Byte-level: the 256 byte chars are ids 0..255, <|eot|> is 256 (special). */
function byteLevelStyle(): Tokenizer {
  const vocab = Object.fromEntries(BYTE_TO_CHAR.map((c, b) => [c, b]));
  return Tokenizer.fromJson({
    added_tokens: [{ id: 256, content: "<|eot|>", special: true }],
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: false },
    decoder: { type: "ByteLevel" },
    model: { type: "BPE", vocab, merges: [] },
  });
}

function run(t: Tokenizer, prompt: number[], generated: number[], skipSpecial = true): string[] {
  const d = new IncrementalDetokenizer(t, prompt, { skipSpecial });
  const chunks = generated.map((id) => d.push(id));
  chunks.push(d.flush());
  return chunks;
}

/** decode(all) after its longest common prefix (in code points) with decode(prompt). */
function expectedText(t: Tokenizer, prompt: number[], generated: number[], skipSpecial: boolean): string {
  const before = [...t.decode(prompt, { skipSpecial })];
  const after = [...t.decode([...prompt, ...generated], { skipSpecial })];
  let i = 0;
  while (i < before.length && i < after.length && before[i] === after[i]) i++;
  return after.slice(i).join("");
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkStream(
  t: Tokenizer,
  prompt: number[],
  generated: number[],
  skipSpecial: boolean,
  label: string,
) {
  const chunks = run(t, prompt, generated, skipSpecial);
  assert.equal(chunks.join(""), expectedText(t, prompt, generated, skipSpecial), label);
  const full = t.decode([...prompt, ...generated], { skipSpecial });
  for (const chunk of chunks) {
    assert.ok(!LONE_SURROGATE.test(chunk), `${label}: lone surrogate in ${JSON.stringify(chunk)}`);
    if (chunk.includes("\ufffd")) {
      assert.ok(full.includes("\ufffd"), `${label}: U+FFFD in ${JSON.stringify(chunk)}`);
    }
  }
}

Deno.test("push() gives the leading space of a word after prior text, not at the very start", () => {
  const t = sentencePieceStyle();
  assert.deepEqual(run(t, [1, 261], [261, 261]), [" a", " a", ""]);
  assert.deepEqual(run(t, [1], [261, 261]), ["a", " a", ""]);
  assert.deepEqual(run(t, [], [261]), ["a", ""]);
  assert.deepEqual(run(t, [1], [261], false), [" a", ""]); // "<s>" is text now, so nothing is stripped
});

Deno.test("push() holds a <0xXX> run until a non-byte token ends it", () => {
  const t = sentencePieceStyle();
  const zhong = [0xe4, 0xb8, 0xad].map((b) => 3 + b);
  assert.deepEqual(run(t, [1, 261], [...zhong, 261]), ["", "", "", "\u4e2d a", ""]);
  // A run that never completes is one U+FFFD per byte, on flush, as decode() gives it.
  assert.deepEqual(run(t, [1, 261], zhong.slice(0, 2)), ["", "", "\ufffd\ufffd"]);
  // The run may start in the prompt: only the new part of its text comes out.
  assert.deepEqual(run(t, [260, 3 + 0x0a], [3 + 0x0a, 260]), ["", "\na", ""]);
});

Deno.test("push() emits a byte-level character once its last byte arrives", () => {
  const t = byteLevelStyle();
  const smile = [0xf0, 0x9f, 0x98, 0x80];
  assert.deepEqual(run(t, [], [...smile, 0x21]), ["", "", "", "\u{1F600}", "!", ""]);
  assert.deepEqual(run(t, [], [0xe4, 0xb8, 0x21]), ["", "", "\ufffd!", ""]);
  assert.deepEqual(run(t, [], [0xe4, 0xb8]), ["", "", "\ufffd"]);
  // The prompt ends inside a character: its completion comes out whole.
  assert.deepEqual(run(t, [0x61, 0xe4], [0xb8, 0xad]), ["", "\u4e2d", ""]);
  // decode(prompt) already showed "\ufffd" for the cut-off bytes; "!" is the only new text.
  assert.deepEqual(run(t, [0x61, 0xe4, 0xb8], [0x21]), ["!", ""]);
  assert.deepEqual(run(t, [], [256, 0x61], true), ["", "a", ""]);
  assert.deepEqual(run(t, [], [256, 0x61], false), ["<|eot|>", "a", ""]);
});

Deno.test("push() outputs equal decode(all) minus decode(prompt) on random ids, hand-made tokenizers", () => {
  const rand = seededRandom(7);
  for (
    const [t, pick] of [
      [sentencePieceStyle(), () => (rand() < 0.6 ? 3 + Math.floor(rand() * 256) : Math.floor(rand() * 262))],
      [byteLevelStyle(), () => Math.floor(rand() * 257)],
    ] as [Tokenizer, () => number][]
  ) {
    for (let trial = 0; trial < 300; trial++) {
      const ids = Array.from({ length: 1 + Math.floor(rand() * 12) }, pick);
      const cut = Math.floor(rand() * (ids.length + 1));
      checkStream(t, ids.slice(0, cut), ids.slice(cut), rand() < 0.5, `trial ${trial} ids ${ids} cut ${cut}`);
    }
  }
});

Deno.test({
  name: "push() outputs equal decode(all) minus decode(prompt) on the fixture tokenizers",
  ignore: NO_FIXTURES,
  fn: streamsOnFixtures,
});

async function streamsOnFixtures() {
  const tokenizers = await fixtureTokenizers();
  const rand = seededRandom(2024);
  for (const { name, tokenizer: t } of tokenizers) {
    const specials = Array.from({ length: t.vocabSize }, (_, id) => id).filter((id) => t.isSpecial(id));
    // Llama 2: <0xXX> at 3..258; Llama 3: the single-byte tokens are the first 256 ids.
    const byteBase = name === "llama2-style" ? 3 : 0;
    const pick = () => {
      const r = rand();
      if (r < 0.4) return byteBase + Math.floor(rand() * 256);
      if (r < 0.5) return specials[Math.floor(rand() * specials.length)];
      return Math.floor(rand() * t.vocabSize);
    };
    for (let trial = 0; trial < 300; trial++) {
      const ids = Array.from({ length: 1 + Math.floor(rand() * 24) }, pick);
      const cut = Math.floor(rand() * (ids.length + 1));
      checkStream(t, ids.slice(0, cut), ids.slice(cut), rand() < 0.5, `${name} random ${ids} cut ${cut}`);
    }
    for (const text of AWKWARD_STRINGS) {
      const ids = t.encode(text, { parseSpecial: true });
      for (const cut of [0, 1, Math.floor(ids.length / 2), ids.length]) {
        for (const skip of [true, false]) {
          checkStream(
            t,
            ids.slice(0, cut),
            ids.slice(cut),
            skip,
            `${name} ${JSON.stringify(text)} cut ${cut}`,
          );
        }
      }
      // Each text is whole once all its ids are in.
      const plain = t.encode(text, { addSpecial: false });
      assert.equal(
        run(t, [], plain, false).join(""),
        roundTripText(t, text),
        `${name} ${JSON.stringify(text)}`,
      );
    }
  }
}

Deno.test({
  name: "the first generated word after a fixture prompt keeps its leading space",
  ignore: NO_FIXTURES,
  async fn() {
    for (const { tokenizer: t } of await fixtureTokenizers()) {
      const prompt = t.encode("In the beginning");
      const the = t.encode(" The", { addSpecial: false }).at(-1)!;
      assert.equal(t.decode([the]).trim(), "The");
      assert.equal(run(t, prompt, [the]).join(""), " The");
    }
  },
});

Deno.test({
  name: "push() streams a Llama 3 chat reply whole, leaving out <|eot_id|>",
  ignore: NO_FIXTURES,
  async fn() {
    const t = (await fixtureTokenizers())[1].tokenizer;
    const prompt = t.encode("<|start_header_id|>assistant<|end_header_id|>\n\n", { parseSpecial: true });
    const reply = "\u4e2d\u6587 caf\u00e9 \u{1F600}!";
    const ids = [...t.encode(reply, { addSpecial: false }), t.tokenToId("<|eot_id|>")!];
    const chunks = run(t, prompt, ids);
    assert.equal(chunks.join(""), reply);
    assert.ok(chunks.every((c) => !c.includes("\ufffd")), JSON.stringify(chunks));
  },
});

Deno.test("push() never splits a character on the embedded model's byte-fallback tokenizer", async () => {
  const t = await Tokenizer.fromDir(EMBEDDED_MODEL_DIR);
  const prompt = t.encode("In the beginning");
  for (
    const text of [
      "\u4e2d\u6587 caf\u00e9 \u{1F600}!",
      " \u{1F469}\u200D\u{1F469}\u200D\u{1F467}",
      " x\u0301\n\t",
    ]
  ) {
    const ids = t.encode(text, { addSpecial: false });
    assert.ok(
      ids.some((id) => /^<0x[89A-F]/.test(t.idToToken(id)!)),
      `${JSON.stringify(text)} uses byte tokens`,
    );
    const chunks = run(t, prompt, ids);
    // encode() put a "\u2581" before the text, so it streams with one more leading space.
    assert.equal(chunks.join(""), " " + text);
    assert.equal(chunks.join(""), expectedText(t, prompt, ids, true));
    assert.ok(chunks.every((c) => !c.includes("\ufffd")), JSON.stringify(chunks));
  }
});

Deno.test("IncrementalDetokenizer rejects a decoder it cannot stream", () => {
  const t = Tokenizer.fromJson({
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Fuse" }, { type: "Strip", content: " ", start: 0, stop: 1 }],
    },
    model: { type: "BPE", vocab: { a: 0 }, merges: [] },
  });
  assert.throws(() => new IncrementalDetokenizer(t), /Cannot stream decoder/);
});
