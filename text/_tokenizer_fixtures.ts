// Test data for tokenizer_test.ts and detokenizer_test.ts: the fixture checkpoints' tokenizers (when the
// fixtures are there, see test/support/fixtures.ts) and a table of awkward strings.

import { Tokenizer } from "./tokenizer.ts";
import { fixturesDir, noFixtures } from "../test/support/mod.ts";

export interface FixtureTokenizer {
  name: "llama2-style" | "llama31-style";
  tokenizer: Tokenizer;
}

/** For Deno.test's `ignore`: true when the fixtures are absent. */
export const NO_FIXTURES: boolean = noFixtures();

let loaded: Promise<FixtureTokenizer[]> | undefined;

/** Both fixture tokenizers (loaded once); only call from tests ignored when NO_FIXTURES. */
export function fixtureTokenizers(): Promise<FixtureTokenizer[]> {
  const dir = fixturesDir();
  if (dir === null) throw new Error("Cannot load the fixture tokenizers: the fixtures folder is absent");
  loaded ??= (async () => [
    { name: "llama2-style", tokenizer: await Tokenizer.fromDir(`${dir}llama2-style-fp16`) },
    { name: "llama31-style", tokenizer: await Tokenizer.fromDir(`${dir}llama31-style-fp16`) },
  ])();
  return loaded;
}

/** The text decode(encode(text)) gives back: SentencePiece-style decoders turn "\u2581" into a space. */
export function roundTripText(tokenizer: Tokenizer, text: string): string {
  return tokenizer.decoderSteps.some((s) =>
      s.type === "Replace" && s.pattern === "\u2581" && s.content === " "
    )
    ? text.replaceAll("\u2581", " ")
    : text;
}

/** Strings that stress normalization, byte fallback, pre-tokenization and decoding. */
export const AWKWARD_STRINGS: string[] = [
  "",
  "a",
  "\u00e9",
  "e\u0301 n\u0303 a\u0308\u0301",
  "caf\u00e9 na\u00efve fa\u00e7ade",
  "\u{1F600}",
  "\u{1F469}\u200D\u{1F469}\u200D\u{1F467}\u200D\u{1F466} family",
  "\u{1F44D}\u{1F3FD} \u{1F44B}\u{1F3FF}\u{1F3FF}",
  "\u{1F1EF}\u{1F1F5}\u{1F1FA}\u{1F1F8}",
  "\u4e2d\u6587\u5b57\u7b26\u3002\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
  "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
  "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
  "   leading spaces",
  " one leading space",
  "trailing spaces   ",
  "a    b     c",
  "\ttab\t\tthen\ttabs",
  "line\nbreaks\n\n\nand\r\nCRLF\r\n",
  "\n\nstarts with newlines",
  " \n \t \u00a0 \u3000 mixed whitespace",
  "12345678901234567890 3.14159 1,000,000",
  "It's we'll I'M THEY'RE you'VE",
  "<s> </s> <unk> text with llama2 specials",
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
  "almost special <|eot_id| and <s",
  "\u0000 control \u0007 chars \u007f",
  "\ufeffbom and \u0085 next line",
  "math \u2211 \u222b \u221e \u2260 \u2264",
  "In the beginning God created the heaven and the earth.",
  "\n",
  "\t",
  "\r\n",
  " ",
  "\n\n",
  "x\ny",
  "end\t",
  "\u0301 lone combining mark",
  "\u0915\u094d\u0937 \u1100\u1161\u11a8 \u0e01\u0e34\u0e4a",
  "zero\u200bwidth\u200cjoin\u200d",
  "\u2581 is SentencePiece's space, \u0120 is byte-level's",
  "<0x41> looks like a byte token",
  "\u{10ffff}\ufffd\u{1d49c}",
  "don't stop\n\n\n\n  \t  \n",
];
