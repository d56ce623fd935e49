// The tokenizers synth writes load with the project's Tokenizer at the architecture's vocabulary size and
// special ids, their merges are consistent, any text round-trips, the chat template renders, and the load
// generator's prompt words are one token each. The 32,000 and 128,256-id tokenizers are made without a
// checkpoint (writeSynthTokenizer alone).
import assert from "node:assert/strict";
import { join } from "node:path";
import { type ArchName, ARCHS } from "./synth.ts";
import { synthTokenizer, SynthTokenizerError, writeSynthTokenizer } from "./synth_tokenizer.ts";
import { type ChatMessage, Tokenizer, TokenizerCodec } from "../text/mod.ts";
import { AWKWARD_STRINGS, roundTripText } from "../text/_tokenizer_fixtures.ts";
import { syntheticRequests } from "../loadtest/mod.ts";

/** One tokenizer per style and size: tiny (1024, llama2-style), Llama 2 (32,000), Llama 3.1 (128,256). */
const CASES: ArchName[] = ["tiny", "llama2-7b", "llama31-8b"];

const loaded = new Map<ArchName, Promise<{ tok: Tokenizer; json: TokenizerJson }>>();

interface TokenizerJson {
  added_tokens: { id: number; content: string }[];
  model: { vocab: Record<string, number>; merges: string[] };
}

/** The arch's tokenizer files in a temporary directory, loaded through Tokenizer.fromDir (once per arch). */
function load(arch: ArchName) {
  let p = loaded.get(arch);
  if (!p) {
    p = (async () => {
      const dir = await Deno.makeTempDir({ prefix: `synth_tok_${arch}_` });
      try {
        const names = await writeSynthTokenizer(dir, ARCHS[arch]);
        assert.deepEqual(names.sort(), [
          "special_tokens_map.json",
          "tokenizer.json",
          "tokenizer_config.json",
        ]);
        const json = JSON.parse(await Deno.readTextFile(join(dir, "tokenizer.json"))) as TokenizerJson;
        return { tok: await Tokenizer.fromDir(dir), json };
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    })();
    loaded.set(arch, p);
  }
  return p;
}

for (const arch of CASES) {
  const a = ARCHS[arch];

  Deno.test(`writeSynthTokenizer() ${arch}: ${a.vocabSize} ids, the config's BOS/EOS, every id a token`, async () => {
    const { tok } = await load(arch);
    assert.equal(tok.vocabSize, a.vocabSize);
    for (let id = 0; id < a.vocabSize; id++) {
      assert.ok(tok.idToToken(id) !== undefined, `id ${id} has a token`);
    }
    assert.equal(tok.bosId, a.bosTokenId);
    assert.deepEqual([...tok.eosIds].sort(), [...a.eosTokenIds].sort());
    for (const id of [a.bosTokenId, ...a.eosTokenIds]) assert.ok(tok.isSpecial(id), `id ${id} is special`);
    if (a.tokenizer === "llama3") {
      const base = a.vocabSize - 256;
      const at = (t: string) => tok.tokenToId(t);
      assert.deepEqual(
        [at("<|begin_of_text|>"), at("<|end_of_text|>"), at("<|start_header_id|>"), at("<|end_header_id|>")],
        [base, base + 1, base + 6, base + 7],
      );
      assert.deepEqual([at("<|eom_id|>"), at("<|eot_id|>")], [base + 8, base + 9]);
      assert.equal(tok.idToToken(base + 2), "<|reserved_special_token_0|>");
      assert.equal(tok.idToToken(a.vocabSize - 1), "<|reserved_special_token_247|>");
      for (let id = base; id < a.vocabSize; id++) assert.ok(tok.isSpecial(id));
    } else {
      assert.deepEqual([0, 1, 2].map((id) => tok.idToToken(id)), ["<unk>", "<s>", "</s>"]);
      assert.equal(tok.idToToken(3), "<0x00>");
      assert.equal(tok.idToToken(258), "<0xFF>");
    }
  });

  Deno.test(`writeSynthTokenizer() ${arch}: each merge makes a new token from two earlier ones, in id order`, async () => {
    const { json } = await load(arch);
    const { vocab, merges } = json.model;
    let last = -1;
    for (const [i, m] of merges.entries()) {
      const [left, right, extra] = m.split(" ");
      assert.equal(extra, undefined, `merge ${i} "${m}" has two parts`);
      const [l, r, merged] = [vocab[left], vocab[right], vocab[left + right]];
      assert.ok(
        l !== undefined && r !== undefined && merged !== undefined,
        `merge ${i} "${m}" is in the vocab`,
      );
      assert.ok(l < merged && r < merged && merged > last, `merge ${i} "${m}": ids ${l} + ${r} -> ${merged}`);
      last = merged;
    }
    // Everything after the alphabet (bytes, the space mark, printable ASCII) comes from exactly one merge.
    const alphabet = a.tokenizer === "llama3" ? 256 : 3 + 256 + 1 + 94;
    assert.equal(merges.length, Object.keys(vocab).length - alphabet);
    assert.equal(Object.keys(vocab).length + (a.tokenizer === "llama3" ? 256 : 0), a.vocabSize);
  });

  Deno.test(`writeSynthTokenizer() ${arch}: awkward strings round-trip through encode and decode`, async () => {
    const { tok } = await load(arch);
    for (const text of AWKWARD_STRINGS) {
      const want = roundTripText(tok, text);
      for (const parseSpecial of [false, true]) {
        const ids = tok.encode(text, { addSpecial: false, parseSpecial });
        assert.ok(ids.every((id) => id >= 0 && id < a.vocabSize));
        assert.equal(tok.decode(ids), want, `${JSON.stringify(text)} (parseSpecial ${parseSpecial})`);
        assert.deepEqual(tok.encode(text, { parseSpecial }), [a.bosTokenId, ...ids]);
      }
    }
  });

  Deno.test(`writeSynthTokenizer() ${arch}: the chat template renders and encodes with its header tokens`, async () => {
    const { tok } = await load(arch);
    const codec = new TokenizerCodec(tok);
    const messages: ChatMessage[] = [
      { role: "system", content: "Answer briefly." },
      { role: "user", content: "Who was the father of Enos?" },
      { role: "assistant", content: "Seth." },
      { role: "user", content: "And his son? \u{1F914}" },
    ];
    const text = codec.renderChat(messages, { addGenerationPrompt: true });
    const ids = codec.encode(text, { addSpecialTokens: false });
    assert.equal(codec.decode(ids), text);
    assert.equal(ids[0], a.bosTokenId);
    if (a.tokenizer === "llama3") {
      assert.equal(codec.family, "llama3");
      assert.ok(text.startsWith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"), text);
      assert.ok(text.endsWith("<|start_header_id|>assistant<|end_header_id|>\n\n"), text);
      const header = tok.tokenToId("<|start_header_id|>")!;
      assert.equal(ids.filter((id) => id === header).length, 5);
      assert.equal(ids.filter((id) => id === tok.tokenToId("<|eot_id|>")).length, 4);
    } else {
      assert.equal(codec.family, "llama2");
      assert.ok(text.startsWith("<s>[INST] <<SYS>>\nAnswer briefly.\n<</SYS>>\n\nWho was"), text);
      assert.ok(text.endsWith(" Seth. </s><s>[INST] And his son? \u{1F914} [/INST]"), text);
      assert.deepEqual(ids.filter((id) => id === a.bosTokenId || id === a.eosTokenIds[0]), [1, 2, 1]);
    }
  });
}

for (const arch of ["llama2-7b", "llama31-8b"] as const) {
  Deno.test(`writeSynthTokenizer() ${arch}: a load-test prompt of N words is about N tokens`, async () => {
    const { tok } = await load(arch);
    for (const spec of syntheticRequests({ count: 4, promptLen: 128, outputLen: 1, seed: 7 })) {
      const n = tok.encode(spec.prompt!, { addSpecial: false }).length;
      // The words are one token each; the leading index is a digit (Llama 2 spells "▁" and "0" apart).
      assert.ok(n >= 128 && n <= 129, `${n} tokens for 128 words`);
    }
  });
}

Deno.test("synthTokenizer() is deterministic and refuses ids its layout cannot give", () => {
  assert.deepEqual(synthTokenizer(ARCHS.tiny), synthTokenizer(ARCHS.tiny));
  const bad = [
    { ...ARCHS.tiny, bosTokenId: 0 },
    { ...ARCHS["llama31-8b"], eosTokenIds: [128002] },
    { ...ARCHS["llama31-8b"], vocabSize: 128000 },
    { ...ARCHS.tiny, vocabSize: 300 },
  ];
  for (const spec of bad) assert.throws(() => synthTokenizer(spec), SynthTokenizerError);
});
