// `deno run -A bench/grammar_bench.ts [--tokenizer DIR]...`: the grammar side of constrained decoding, per
// vocabulary: how long a grammar Worker takes to start (xgrammar loaded, vocabulary indexed), how long
// schemas take to compile, and the round trip of one token's mask as the engine sees it (TokenConstraint:
// post the accepted token, receive the next mask), over a seeded walk through each grammar.
// --vocab-size N pads a vocabulary with made-up words to N tokens (the fixtures' Llama 3.1 tokenizer has
// 8192; a real one 128256): mask and compile costs grow with the vocabulary.

import { parseArgs } from "node:util";
import { z } from "zod";
import { DEFAULT_MODEL_DIR, maskAllows, TokenConstraint } from "../engine/mod.ts";
import { GrammarPool, type GrammarSpec } from "../grammar/mod.ts";
import { TokenizerCodec } from "../text/mod.ts";
import { median, percentile } from "./_timing.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    tokenizer: { type: "string", multiple: true },
    steps: { type: "string", default: "64" },
    "vocab-size": { type: "string" },
  },
});
const dirs = values.tokenizer ?? [DEFAULT_MODEL_DIR];
const STEPS = Number(values.steps);

const ITEM = z.object({
  title: z.string().max(20),
  qty: z.number().int().min(1).max(99),
  kind: z.enum(["book", "tool", "food"]),
  tags: z.array(z.string().max(8)).max(3),
  note: z.string().nullable(),
});
const SPECS: [string, GrammarSpec][] = [
  ["json_object", { type: "json_object" }],
  ["zod object (5 fields)", { type: "json_schema", schema: { schema: z.toJSONSchema(ITEM), param: "s" } }],
  ["date-time pattern", {
    type: "json_schema",
    schema: { schema: z.toJSONSchema(z.object({ at: z.iso.datetime() })), param: "s" },
  }],
  ["2 tools, required", {
    type: "tool_calls",
    parallel: true,
    functions: [
      {
        name: "get_weather",
        parameters: {
          schema: z.toJSONSchema(z.object({ city: z.string(), unit: z.enum(["c", "f"]) })),
          param: "t",
        },
      },
      {
        name: "search",
        parameters: {
          schema: z.toJSONSchema(z.object({ query: z.string(), limit: z.number().int() })),
          param: "t",
        },
      },
    ],
  }],
  ["enum of 5000 strings", {
    type: "json_schema",
    schema: { schema: { enum: Array.from({ length: 5000 }, (_, i) => `item-${i}`) }, param: "s" },
  }],
];

for (const dir of dirs) {
  const codec = await TokenizerCodec.fromDir(dir);
  const vocabulary = codec.vocabulary();
  const tokens = [...vocabulary.tokens];
  const target = Number(values["vocab-size"] ?? tokens.length);
  // Made-up words, spelled as the encoding spells a leading space ("▁" or "Ġ"), seeded.
  let seed = 7;
  const space = vocabulary.encoding === "byte_level" ? "\u0120" : "\u2581";
  while (tokens.length < target) {
    let word = tokens.length % 3 === 0 ? "" : space;
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    for (let n = 2 + (seed % 9); n > 0; n--) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      word += String.fromCharCode(97 + ((seed >>> 8) % 26));
    }
    tokens.push(word);
  }
  const vocabSize = tokens.length;
  const pool = new GrammarPool({ vocabulary: { ...vocabulary, tokens }, vocabSize });
  console.log(
    `\n${dir}: vocabulary ${vocabSize} (${vocabulary.encoding}${
      vocabSize > codec.vocabSize ? `, ${vocabSize - codec.vocabSize} made up` : ""
    })`,
  );
  // The first compile also waits for the Worker's start; a trivial grammar first isolates that.
  let t0 = performance.now();
  await pool.compile({ type: "json_schema", schema: { schema: { type: "boolean" }, param: "s" } });
  console.log(
    `  first grammar (Worker start + xgrammar load + vocabulary index + compile): ${
      (performance.now() - t0).toFixed(0)
    } ms`,
  );
  console.log("  | grammar | compile ms | mask round trip p50 ms | p99 ms | steps |");
  console.log("  | --- | --- | --- | --- | --- |");
  for (const [name, spec] of SPECS) {
    await new Promise((r) => setTimeout(r, 300)); // let the next spare Worker start
    t0 = performance.now();
    const grammar = await pool.compile(spec);
    const wall = performance.now() - t0;
    const handle = grammar.matcher(codec.eosIds);
    const c = new TokenConstraint(handle.port);
    let mask = await c.mask();
    const times: number[] = [];
    let s = 12345;
    for (let i = 0; i < STEPS; i++) {
      const allowed: number[] = [];
      for (let t = 0; t < vocabSize; t++) if (maskAllows(mask, t)) allowed.push(t);
      const choices = allowed.filter((t) => !codec.eosIds.includes(t));
      if (choices.length === 0) break;
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      const pick = choices[s % choices.length];
      const t1 = performance.now();
      c.advance([pick]);
      mask = await c.mask();
      times.push(performance.now() - t1);
    }
    c.close();
    handle.release();
    console.log(
      `  | ${name} | ${grammar.compileMs.toFixed(0)} (${wall.toFixed(0)} with messages) | ` +
        `${median(times).toFixed(3)} | ${percentile(times, 99).toFixed(3)} | ${times.length} |`,
    );
  }
  await pool.close();
}
