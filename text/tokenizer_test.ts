// Tokenizer tests: BPE merge order, byte fallback, added tokens, normalizer/pre-tokenizer/decoder blocks on
// small hand-made tokenizer.json files (expected ids worked out by hand); then the real tokenizers: the
// embedded model's, and the fixtures' (prompts.json ids, the corpus token streams, ids from HF tokenizers
// for awkward text in testdata/tokenizer_golden.json, and decode(encode(s)) round trips).

import assert from "node:assert/strict";
import { Tokenizer } from "./tokenizer.ts";
import { BYTE_TO_CHAR, parsePreTokenizer, runDecoder, toJsRegex } from "./_tokenizer_pipeline.ts";
import { renderChat } from "./chat_template.ts";
import { AWKWARD_STRINGS, fixtureTokenizers, NO_FIXTURES, roundTripText } from "./_tokenizer_fixtures.ts";
import { EMBEDDED_MODEL_DIR, fixturesDir } from "../test/support/mod.ts";
import golden from "./testdata/tokenizer_golden.json" with { type: "json" };

/** Llama 3's pre-tokenizer pattern, as its tokenizer.json writes it. */
const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Ids: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258, then `pieces` from 259 on. */
function sentencePieceStyle(
  pieces: string[],
  merges: string[],
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  pieces.forEach((p, i) => vocab[p] = 259 + i);
  return {
    added_tokens: ["<unk>", "<s>", "</s>"].map((content, id) => ({ id, content, special: true })),
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: { type: "BPE", unk_token: "<unk>", fuse_unk: true, byte_fallback: true, vocab, merges },
    ...extra,
  };
}

const PREPEND_NORMALIZER = {
  type: "Sequence",
  normalizers: [
    { type: "Prepend", prepend: "\u2581" },
    { type: "Replace", pattern: { String: " " }, content: "\u2581" },
  ],
};

const BOS_TEMPLATE = {
  type: "TemplateProcessing",
  single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
  special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
};

Deno.test("encode() merges the lowest-ranked pair first", () => {
  // a 259, b 260, c 261, ab 262, bc 263
  const pieces = ["a", "b", "c", "ab", "bc"];
  const bcFirst = Tokenizer.fromJson(sentencePieceStyle(pieces, ["b c", "a b"]));
  assert.deepEqual(bcFirst.encode("abc", { addSpecial: false }), [259, 263]);
  const abFirst = Tokenizer.fromJson(sentencePieceStyle(pieces, ["a b", "b c"]));
  assert.deepEqual(abFirst.encode("abc", { addSpecial: false }), [262, 261]);
});

Deno.test("encode() breaks rank ties leftmost first and keeps merging merged symbols", () => {
  // a 259, aa 260, aaaa 261
  const t = Tokenizer.fromJson(sentencePieceStyle(["a", "aa", "aaaa"], ["a a", "aa aa"]));
  assert.deepEqual(t.encode("aaa", { addSpecial: false }), [260, 259]);
  assert.deepEqual(t.encode("aaaaa", { addSpecial: false }), [261, 259]);
  assert.deepEqual(t.encode("aaaaaaa", { addSpecial: false }), [261, 260, 259]);
});

Deno.test("encode() takes a word found whole in the vocabulary as one token only with ignore_merges", () => {
  // a 259, b 260, c 261, ab 262, abc 263: no merge makes "abc" from "ab" + "c".
  const json = sentencePieceStyle(["a", "b", "c", "ab", "abc"], ["a b"]);
  assert.deepEqual(Tokenizer.fromJson(json).encode("abc", { addSpecial: false }), [262, 261]);
  (json.model as Record<string, unknown>).ignore_merges = true;
  assert.deepEqual(Tokenizer.fromJson(json).encode("abc", { addSpecial: false }), [263]);
  assert.deepEqual(Tokenizer.fromJson(json).encode("abcc", { addSpecial: false }), [262, 261, 261]);
});

Deno.test("encode() falls back to <0xXX> byte tokens, else to one fused <unk>", () => {
  const t = Tokenizer.fromJson(sentencePieceStyle(["a"], []));
  assert.deepEqual(t.encode("a\u00e9", { addSpecial: false }), [259, 3 + 0xc3, 3 + 0xa9]);
  assert.deepEqual(t.encode("\u{1F600}", { addSpecial: false }), [0xf0, 0x9f, 0x98, 0x80].map((b) => 3 + b));
  const json = sentencePieceStyle(["a"], []);
  (json.model as Record<string, unknown>).byte_fallback = false;
  assert.deepEqual(Tokenizer.fromJson(json).encode("\u00e9\u00e9a\u00e9", { addSpecial: false }), [
    0,
    259,
    0,
  ]);
  (json.model as Record<string, unknown>).fuse_unk = false;
  assert.deepEqual(Tokenizer.fromJson(json).encode("\u00e9\u00e9", { addSpecial: false }), [0, 0]);
});

Deno.test("encode() maps special-token text to its id only with parseSpecial", () => {
  // < 259, s 260, > 261
  const t = Tokenizer.fromJson(sentencePieceStyle(["<", "s", ">"], []));
  assert.deepEqual(t.encode("s<s>s", { addSpecial: false, parseSpecial: true }), [260, 1, 260]);
  assert.deepEqual(t.encode("<s>", { addSpecial: false, parseSpecial: false }), [259, 260, 261]);
  assert.deepEqual(t.encode("</s><s>", { addSpecial: false, parseSpecial: true }), [2, 1]);
  // Off by default: user text cannot forge special tokens.
  assert.deepEqual(t.encode("<s>", { addSpecial: false }), [259, 260, 261]);
  assert.equal(t.isSpecial(1), true);
  assert.equal(t.isSpecial(259), false);
});

Deno.test("encode() prepends \u2581 after added tokens unless tokenizer_config says legacy: false", () => {
  // \u2581 259, a 260, \u2581a 261
  const json = sentencePieceStyle(["\u2581", "a", "\u2581a"], ["\u2581 a"], {
    normalizer: PREPEND_NORMALIZER,
  });
  const legacy = Tokenizer.fromJson(json);
  assert.deepEqual(legacy.encode("a<s>a a", { addSpecial: false, parseSpecial: true }), [261, 1, 261, 261]);
  const modern = Tokenizer.fromJson(json, { legacy: false });
  assert.deepEqual(modern.encode("a<s>a a", { addSpecial: false, parseSpecial: true }), [261, 1, 260, 261]);
  assert.deepEqual(modern.encode(" a", { addSpecial: false }), [259, 261]);
  assert.equal(modern.decode([259, 261]), " a");
});

Deno.test("encode() adds BOS per the post_processor, overridden by add_bos_token/add_eos_token", () => {
  const json = sentencePieceStyle(["a"], [], { post_processor: BOS_TEMPLATE });
  assert.deepEqual(Tokenizer.fromJson(json).encode("a"), [1, 259]);
  assert.deepEqual(Tokenizer.fromJson(json).encode("a", { addSpecial: false }), [259]);
  assert.deepEqual(Tokenizer.fromJson(json, { add_bos_token: false }).encode("a"), [259]);
  const both = Tokenizer.fromJson(json, {
    bos_token: "<s>",
    eos_token: "</s>",
    add_bos_token: true,
    add_eos_token: true,
  });
  assert.deepEqual(both.encode("a"), [1, 259, 2]);
  assert.equal(both.bosId, 1);
  assert.deepEqual(both.eosIds, [2]);
  assert.equal(Tokenizer.fromJson(json).bosId, 1);
});

Deno.test("eosIds joins tokenizer_config's eos_token and generation_config's eos_token_id", () => {
  const t = Tokenizer.fromJson(sentencePieceStyle([], []), { eos_token: { content: "</s>" } }, {
    eos_token_id: [0, 2],
  });
  assert.deepEqual(t.eosIds, [2, 0]);
});

Deno.test("the byte-level alphabet maps printable bytes to themselves and the rest above U+00FF", () => {
  assert.equal(new Set(BYTE_TO_CHAR).size, 256);
  assert.equal(BYTE_TO_CHAR[0x21], "!");
  assert.equal(BYTE_TO_CHAR[0xff], "\u00ff");
  assert.equal(BYTE_TO_CHAR[0x00], "\u0100");
  assert.equal(BYTE_TO_CHAR[0x0a], "\u010a"); // Ċ
  assert.equal(BYTE_TO_CHAR[0x20], "\u0120"); // Ġ
  assert.equal(BYTE_TO_CHAR[0xad], "\u0143"); // the last of the 68 moved bytes
});

Deno.test("Llama 3's split pattern splits like Oniguruma", () => {
  const split = parsePreTokenizer({
    type: "Split",
    pattern: { Regex: LLAMA3_PATTERN },
    behavior: "Isolated",
  })!;
  const cases: [string, string[]][] = [
    ["Hello world", ["Hello", " world"]],
    ["it's IT'S", ["it", "'s", " IT", "'S"]],
    ["'Sam 'sam", ["'S", "am", " '", "sam"]],
    // (?i:'s) also matches the long s U+017F under Unicode case folding.
    ["'\u017fam", ["'\u017f", "am"]],
    ["12345 6", ["123", "45", " ", "6"]],
    ["hi\n\n  there", ["hi", "\n\n", " ", " there"]],
    ["a...\n\nb", ["a", "...\n\n", "b"]],
    ["x  ", ["x", "  "]],
    ["a\t\tb", ["a", "\t", "\tb"]],
    // Oniguruma's \s has U+0085 and lacks U+FEFF; JavaScript's is the other way round.
    ["a\ufeff\ufeffb", ["a", "\ufeff\ufeff", "b"]],
    ["a\u0085\u0085b", ["a", "\u0085", "\u0085b"]],
  ];
  for (const [text, want] of cases) {
    assert.deepEqual(split([{ text, atStart: true }]).map((p) => p.text), want, JSON.stringify(text));
  }
});

Deno.test("toJsRegex() rejects inline flags it cannot rewrite", () => {
  assert.throws(() => toJsRegex("(?i)abc"), /inline flag groups/);
  assert.throws(() => toJsRegex("(?i:a(b))"), /only literals/);
});

Deno.test("runDecoder() turns an invalid <0xXX> run into one U+FFFD per byte", () => {
  const steps = [{ type: "ByteFallback" as const }, { type: "Fuse" as const }];
  assert.equal(runDecoder(steps, ["<0xE4>", "<0xB8>", "<0xAD>", "x"]), "\u4e2dx");
  assert.equal(runDecoder(steps, ["<0xE4>", "<0xB8>", "x", "<0xAD>"]), "\ufffd\ufffdx\ufffd");
  assert.equal(runDecoder(steps, ["<0x41>", "<0xFF>"]), "\ufffd\ufffd");
});

Deno.test("runDecoder() reads byte-level tokens as UTF-8 and other tokens as their own text", () => {
  const steps = [{ type: "ByteLevel" as const }];
  assert.equal(runDecoder(steps, ["\u0120h", "\u00c3\u00a9"]), " h\u00e9");
  assert.equal(runDecoder(steps, ["<|eot_id|>", "\u00e4\u00b8"]), "<|eot_id|>\ufffd");
  assert.equal(runDecoder(steps, ["\u4e2d"]), "\u4e2d"); // not in the alphabet: its own UTF-8
});

Deno.test("fromJson() names unsupported block types", () => {
  const base = sentencePieceStyle([], []);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ model: { type: "Unigram", vocab: [] } }, /expected type "BPE", found "Unigram"/],
    [{ normalizer: { type: "BertNormalizer" } }, /normalizer: type "BertNormalizer"/],
    [{ pre_tokenizer: { type: "Whitespace" } }, /pre-tokenizer: type "Whitespace"/],
    [{ decoder: { type: "WordPiece" } }, /decoder: type "WordPiece"/],
    [{ post_processor: { type: "BertProcessing" } }, /post_processor: type "BertProcessing"/],
  ];
  for (const [patch, message] of cases) {
    assert.throws(() => Tokenizer.fromJson({ ...base, ...patch }), message);
  }
});

interface PromptRef {
  kind: "plain" | "chat";
  text: string;
  rendered: string;
  ids: number[];
}

/** The tokens of one split of the corpus: [BOS] + ids + [EOS] per chapter (int32 safetensors). */
function corpusTokens(path: string, split: string): number[] {
  const bytes = Deno.readFileSync(path);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const entry = header[split] as { dtype: string; data_offsets: [number, number] };
  assert.equal(entry.dtype, "I32", `${path} ${split}`);
  const [begin, end] = entry.data_offsets;
  return Array.from(new Int32Array(bytes.slice(8 + headerLength + begin, 8 + headerLength + end).buffer));
}

/** The index of the first difference of two id lists, or -1; with a window around it for messages. */
function firstDifference(got: number[], want: number[]): string | null {
  const n = Math.max(got.length, want.length);
  for (let i = 0; i < n; i++) {
    if (got[i] !== want[i]) {
      return `at ${i} of ${want.length}: want ${want.slice(i - 2, i + 4)}, got ${got.slice(i - 2, i + 4)}`;
    }
  }
  return null;
}

Deno.test("the embedded model's tokenizer encodes its reference prompts to their ids", async () => {
  const tok = await Tokenizer.fromDir(EMBEDDED_MODEL_DIR);
  const reference = JSON.parse(await Deno.readTextFile(`${EMBEDDED_MODEL_DIR}reference.json`));
  const { p0_genesis: plain, p1_chat: chat } = reference.prompts as Record<
    string,
    { text: string; ids: number[] }
  >;
  assert.deepEqual(tok.encode(plain.text), plain.ids);
  const rendered = renderChat(tok.chatTemplate, "llama2", [{ role: "user", content: chat.text }], {
    addGenerationPrompt: true,
    bosToken: tok.bosToken!,
    eosToken: tok.eosToken!,
  });
  assert.deepEqual(tok.encode(rendered, { addSpecial: false, parseSpecial: true }), chat.ids);
  assert.equal(tok.decode(chat.ids), rendered);
  assert.equal(tok.decode(plain.ids, { skipSpecial: true }), plain.text);
  for (const text of AWKWARD_STRINGS) {
    assert.equal(
      tok.decode(tok.encode(text, { addSpecial: false })),
      roundTripText(tok, text),
      JSON.stringify(text),
    );
  }
});

Deno.test("Tokenizer reads BOS, EOS, specials and the chat template from the embedded model's files", async () => {
  const tok = await Tokenizer.fromDir(EMBEDDED_MODEL_DIR);
  assert.equal(tok.vocabSize, 4032);
  assert.equal(tok.bosToken, "<s>");
  assert.equal(tok.eosToken, "</s>");
  assert.equal(tok.bosId, 1);
  assert.deepEqual(tok.eosIds, [2]);
  assert.match(tok.chatTemplate ?? "", /\[INST\]/);
  assert.equal(tok.tokenToId("<s>"), 1);
  assert.equal(tok.tokenToId("\u2581the"), 261);
  assert.equal(tok.tokenToId("no such token"), undefined);
  assert.equal(tok.idToToken(261), "\u2581the");
  assert.equal(tok.idToToken(4032), undefined);
  assert.equal(tok.isSpecial(2), true);
  assert.equal(tok.isSpecial(261), false);
});

Deno.test("Tokenizer.fromDir() names the file that is missing or broken", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => Tokenizer.fromDir(dir),
      (err: Error) => err.message.includes(`${dir}/tokenizer.json`),
    );
    await Deno.writeTextFile(`${dir}/tokenizer.json`, "{ not json");
    await assert.rejects(() => Tokenizer.fromDir(dir), /tokenizer\.json.*JSON/);
    await Deno.copyFile(`${EMBEDDED_MODEL_DIR}tokenizer.json`, `${dir}/tokenizer.json`);
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "[1,");
    await assert.rejects(() => Tokenizer.fromDir(dir), /tokenizer_config\.json/);
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ eos_token: "<|nope|>" }));
    await assert.rejects(() => Tokenizer.fromDir(dir), /tokenizer_config\.json.*eos_token "<\|nope\|>"/);
    await Deno.remove(`${dir}/tokenizer_config.json`);
    const tok = await Tokenizer.fromDir(dir);
    assert.equal(tok.chatTemplate, null);
    assert.equal(tok.bosToken, "<s>"); // from the post_processor
    assert.deepEqual(tok.eosIds, [2]); // </s> is a known end token
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "encode() gives prompts.json's ids for the fixture prompts, plain and chat-rendered",
  ignore: NO_FIXTURES,
  async fn() {
    const prompts = JSON.parse(await Deno.readTextFile(`${fixturesDir()}references/prompts.json`));
    for (const { name, tokenizer: tok } of await fixtureTokenizers()) {
      const family = name === "llama2-style" ? "llama2" : "llama3";
      for (const [key, p] of Object.entries(prompts[name] as Record<string, PromptRef>)) {
        const label = `${name} ${key}`;
        if (p.kind === "plain") {
          assert.equal(p.rendered, p.text, label);
          assert.deepEqual(tok.encode(p.text), p.ids, label);
        } else {
          const messages = [{ role: "user", content: p.text }];
          const opts = { addGenerationPrompt: true, bosToken: tok.bosToken!, eosToken: tok.eosToken! };
          assert.equal(renderChat(tok.chatTemplate, family, messages, opts), p.rendered, label);
          assert.equal(renderChat(null, family, messages, opts), p.rendered, `${label} (built-in template)`);
          assert.deepEqual(tok.encode(p.rendered, { addSpecial: false, parseSpecial: true }), p.ids, label);
        }
        // Plain prompts' ids start with BOS, which their text does not show.
        assert.equal(tok.decode(p.ids, { skipSpecial: p.kind === "plain" }), p.rendered, label);
      }
    }
  },
});

Deno.test({
  name: "encode() reproduces the corpus token streams of both fixture tokenizers",
  ignore: NO_FIXTURES,
  async fn() {
    for (const { name, tokenizer: tok } of await fixtureTokenizers()) {
      // The streams end each chapter with the end-of-text token, not the chat eos_token.
      const eos = tok.tokenToId(name === "llama2-style" ? "</s>" : "<|end_of_text|>")!;
      for (const split of ["validation", "test"]) {
        const text = await Deno.readTextFile(`${fixturesDir()}corpus/${split}.txt`);
        // Chapters are separated by a blank line; each keeps the newline that ends its last verse.
        const chapters = text.slice(0, -1).split("\n\n").map((c) => c + "\n");
        const got = chapters.flatMap((c) => [tok.bosId!, ...tok.encode(c, { addSpecial: false }), eos]);
        const want = corpusTokens(`${fixturesDir()}corpus/tokens-${name}.safetensors`, split);
        assert.equal(firstDifference(got, want), null, `${name} ${split}`);
        // Each chapter's ids decode to its text (decoded apart, as a Llama 2 decoder strips one leading space).
        const starts = want.flatMap((id, i) => (id === tok.bosId ? [i] : []));
        assert.equal(starts.length, chapters.length, `${name} ${split}: chapters`);
        starts.forEach((start, c) => {
          const ids = want.slice(start, starts[c + 1] ?? want.length);
          assert.equal(tok.decode(ids, { skipSpecial: true }), chapters[c], `${name} ${split} chapter ${c}`);
        });
      }
    }
  },
});

Deno.test({
  name: "encode() and decode() agree with HF tokenizers on awkward text (testdata/tokenizer_golden.json)",
  ignore: NO_FIXTURES,
  async fn() {
    const table = golden as unknown as Record<string, { text: string; ids: number[]; decoded: string }[]>;
    for (const { name, tokenizer: tok } of await fixtureTokenizers()) {
      assert.ok(table[name].length >= 40, `${name}: golden rows`);
      for (const { text, ids, decoded } of table[name]) {
        assert.deepEqual(
          tok.encode(text, { addSpecial: false, parseSpecial: true }),
          ids,
          `${name} ${JSON.stringify(text)}`,
        );
        assert.equal(tok.decode(ids), decoded, `${name} ${JSON.stringify(text)}`);
      }
    }
  },
});

Deno.test({
  name: "decode(encode(s)) returns s for awkward strings on both fixture tokenizers",
  ignore: NO_FIXTURES,
  async fn() {
    for (const { name, tokenizer: tok } of await fixtureTokenizers()) {
      for (const text of AWKWARD_STRINGS) {
        const label = `${name}: ${JSON.stringify(text)}`;
        const want = roundTripText(tok, text);
        for (const parseSpecial of [false, true]) {
          const ids = tok.encode(text, { addSpecial: false, parseSpecial });
          assert.equal(tok.decode(ids), want, label);
          // BOS is a prefix only; skipping specials then gives the text back when it names none.
          const withBos = tok.encode(text, { parseSpecial });
          assert.deepEqual(withBos, [tok.bosId, ...ids], label);
          if (!ids.some((id) => tok.isSpecial(id))) {
            assert.equal(tok.decode(withBos, { skipSpecial: true }), want, label);
          }
        }
      }
    }
  },
});

Deno.test({
  name: "encode() keeps special-token text as text unless parseSpecial is set",
  ignore: NO_FIXTURES,
  async fn() {
    for (const { name, tokenizer: tok } of await fixtureTokenizers()) {
      const text = "<s><|eot_id|></s><|start_header_id|>";
      for (
        const ids of [tok.encode(text, { addSpecial: false }), tok.encode(text, { parseSpecial: false })]
      ) {
        assert.ok(ids.every((id, i) => !tok.isSpecial(id) || (i === 0 && id === tok.bosId)), name);
        assert.equal(tok.decode(ids, { skipSpecial: true }), text, name);
      }
      const parsed = tok.encode(text, { addSpecial: false, parseSpecial: true });
      const specials = parsed.filter((id) => tok.isSpecial(id)).map((id) => tok.idToToken(id));
      assert.deepEqual(
        specials,
        name === "llama2-style" ? ["<s>", "</s>"] : ["<|eot_id|>", "<|start_header_id|>"],
      );
    }
  },
});

Deno.test({
  name: "eosIds, bosToken and eosToken of the fixture tokenizers",
  ignore: NO_FIXTURES,
  async fn() {
    const [llama2, llama31] = (await fixtureTokenizers()).map((f) => f.tokenizer);
    assert.deepEqual([llama2.bosToken, llama2.eosToken, llama2.bosId, llama2.eosIds], ["<s>", "</s>", 1, [
      2,
    ]]);
    assert.equal(llama2.vocabSize, 4032);
    assert.equal(llama31.vocabSize, 8192);
    assert.deepEqual(
      [llama31.bosToken, llama31.eosToken, llama31.bosId],
      ["<|begin_of_text|>", "<|eot_id|>", 7936],
    );
    // eos_token first, then generation_config's list (<|end_of_text|>, <|eom_id|>, <|eot_id|>).
    assert.deepEqual(llama31.eosIds, [7945, 7937, 7944]);
    assert.deepEqual(llama31.eosIds.map((id) => llama31.idToToken(id)), [
      "<|eot_id|>",
      "<|end_of_text|>",
      "<|eom_id|>",
    ]);
  },
});
