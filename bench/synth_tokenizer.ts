// The tokenizer written beside a synthetic checkpoint (bench/synth.ts): tokenizer.json, tokenizer_config.json
// (with Trellis's built-in chat template) and special_tokens_map.json, with the architecture's vocabulary size
// and special ids, so `deno task serve --model <synthetic dir>` and the load generator run on a real-size model.
// Two styles, in the formats text/tokenizer.ts reads:
//   llama2: SentencePiece-style BPE with byte fallback: <unk> <s> </s>, the 256 <0xNN> pieces, "▁" for spaces
//           (Prepend/Replace normalizer, Replace/ByteFallback/Fuse/Strip decoder), as Llama 2's tokenizer.json.
//   llama3: byte-level BPE (Llama 3's Split regex, then ByteLevel; ignore_merges), 256 special tokens after the
//           base vocabulary at Llama 3.1's ids (<|begin_of_text|>, <|eot_id|>, headers, reserved ones).
// The pieces are made here, nothing is taken from a real tokenizer: whitespace runs and (llama3) numbers of up
// to three digits, then classic BPE training (Sennrich et al., 2016) on a built-in list of common English words,
// then letter strings in breadth-first order until the vocabulary is full. Each merge adds one new token, the
// concatenation of two earlier ones, so ids follow merge order and any text encodes and decodes back.
import { join } from "node:path";
import { LLAMA2_CHAT_TEMPLATE, LLAMA31_CHAT_TEMPLATE } from "../text/chat_template.ts";

export type TokenizerStyle = "llama2" | "llama3";

/** What a tokenizer is made from: the fields of bench/synth.ts's ArchSpec it needs. */
export interface SynthTokenizerSpec {
  tokenizer: TokenizerStyle;
  vocabSize: number;
  bosTokenId: number;
  eosTokenIds: number[];
  maxPositionEmbeddings: number;
}

/** The three files, as JSON values. */
export interface SynthTokenizerFiles {
  "tokenizer.json": Record<string, unknown>;
  "tokenizer_config.json": Record<string, unknown>;
  "special_tokens_map.json": Record<string, unknown>;
}

/** Common English words, most frequent first (by ear, not from any tokenizer). Each becomes one token with
 * and without its leading space when the vocabulary has room; loadtest/'s prompt words are among them. */
const WORDS = `
the of and to a in is was that for it on with he as you at by be this his from or had not but are have an
they which one were her all she there would their we him been has when who will more no if out so said what up
its about into than them can only other new some could time these two may then do first any my now such like
our over man me even most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see men work long get
here between both life being under never day same another know while last might us great old year off come since
against go came right used take three states himself few house use during without again place around however home
small found thought went say part once general high upon school every don does got united left number course war
until always away something fact though water less public put think almost hand enough far took head yet
government system better set told nothing night end why called did find going look asked later knew point next
program city business give group toward young days let room president side social present given several order
national possible rather second face per among form important often things looked early white case large become
need big four within felt along children saw best church ever least power development light thing seemed family
interest want members mind country area others done turned although open god service certain kind problem began
different door thus help sense means whole matter perhaps itself york times law human line above name example
action company hands local show whether five history gave today either act feet across taken past quite anything
having seen death experience body word half really field am car words already themselves information tell
together college shall money period held keep sure probably free seems real behind cannot miss political air
question making office brought whose special heard major problems ago became federal moment study available known
result street economic boy position reason change south board individual job areas society west close turn love
community true court force full seem wife future age voice center woman control common policy necessary following
front sometimes six girl clear further land run students provide feel party able mother music education university
child effect level stood short town total outside rate evidence art third lot low million taking boys value black
common month hundred morning read family friend game food story teacher student market water war stop create
speak allow add spend grow walk win offer remember consider appear buy wait serve die send expect build stay fall
cut reach kill remain suggest raise pass sell require report decide pull data code file input output model token
text prompt server request response error test user assistant system message answer language seven eight nine ten
`;

/** Letter strings fill the vocabulary in breadth-first order, each level in this order (English letter
 * frequency), so the short and common-looking strings come first. */
const FILL_LETTERS = "etaoinshrdlcumwfgypbvkjxqz";
const MAX_SPACE_RUN = 16;

/** Llama 3's pre-tokenizer pattern: contractions, letters with one leading non-letter, numbers of up to
 * three digits, punctuation runs, newlines, other whitespace. */
const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Llama 3.1's special tokens at offsets from the end of the base vocabulary; the rest are reserved. */
const LLAMA3_NAMED: Record<number, string> = {
  0: "<|begin_of_text|>",
  1: "<|end_of_text|>",
  4: "<|finetune_right_pad_id|>",
  6: "<|start_header_id|>",
  7: "<|end_header_id|>",
  8: "<|eom_id|>",
  9: "<|eot_id|>",
  10: "<|python_tag|>",
};
const LLAMA3_SPECIALS = 256;

export class SynthTokenizerError extends Error {
  override name = "SynthTokenizerError";
}

/** A vocabulary under construction: tokens get ids in the order they are added, merges in the same order. */
class Vocab {
  readonly ids = new Map<string, number>();
  readonly merges: string[] = [];
  #next: number;
  readonly #end: number;

  /** Ids [first, end) are free for pieces. */
  constructor(first: number, end: number) {
    this.#next = first;
    this.#end = end;
  }

  get full(): boolean {
    return this.#next >= this.#end;
  }

  get remaining(): number {
    return this.#end - this.#next;
  }

  /** A piece with no merge (the alphabet). */
  addBase(token: string): void {
    if (this.ids.has(token)) return;
    if (this.full) throw new SynthTokenizerError(`Cannot add base piece "${token}": the vocabulary is full`);
    this.ids.set(token, this.#next++);
  }

  /** Adds `left + right` by a merge; false when it exists already or there is no room. */
  merge(left: string, right: string): boolean {
    const token = left + right;
    if (this.ids.has(token) || this.full) return false;
    if (!this.ids.has(left) || !this.ids.has(right)) {
      throw new SynthTokenizerError(`Cannot merge "${left}" + "${right}": a part is not in the vocabulary`);
    }
    this.ids.set(token, this.#next++);
    this.merges.push(`${left} ${right}`);
    return true;
  }
}

/** Runs of `unit` up to `longest` long, each the previous run merged with one more `unit`. */
function addRuns(v: Vocab, unit: string, longest: number): void {
  for (let n = 2; n <= longest; n++) v.merge(unit.repeat(n - 1), unit);
}

/** Classic BPE training: over weighted words (arrays of pieces already in `v`), merges the heaviest adjacent
 * pair (ties: the pair seen first) until no pair is left or the vocabulary is full. Pair counts are kept
 * incrementally: a merge recounts only the words that hold the pair. */
function trainBpe(v: Vocab, words: { pieces: string[]; weight: number }[]): void {
  const counts = new Map<string, number>(); // "left right" -> summed weight
  const holders = new Map<string, Set<number>>(); // "left right" -> indexes of words holding it
  const count = (w: number, sign: 1 | -1) => {
    const { pieces, weight } = words[w];
    for (let i = 0; i + 1 < pieces.length; i++) {
      const key = `${pieces[i]} ${pieces[i + 1]}`;
      const c = (counts.get(key) ?? 0) + sign * weight;
      if (sign > 0) {
        counts.set(key, c);
        let set = holders.get(key);
        if (!set) holders.set(key, set = new Set());
        set.add(w);
      } else if (c <= 1e-9) {
        counts.delete(key);
      } else {
        counts.set(key, c);
      }
    }
  };
  words.forEach((_, w) => count(w, 1));
  while (!v.full && counts.size > 0) {
    let best = "", bestCount = -1;
    for (const [key, c] of counts) {
      if (c > bestCount) [best, bestCount] = [key, c];
    }
    const [left, right] = best.split(" ");
    v.merge(left, right);
    const merged = left + right;
    for (const w of holders.get(best) ?? []) {
      const { pieces } = words[w];
      count(w, -1);
      const out: string[] = [];
      for (let i = 0; i < pieces.length; i++) {
        if (i + 1 < pieces.length && pieces[i] === left && pieces[i + 1] === right) {
          out.push(merged);
          i++;
        } else {
          out.push(pieces[i]);
        }
      }
      words[w].pieces = out;
      count(w, 1);
    }
    holders.delete(best);
    counts.delete(best);
  }
}

/** The word list in four forms (after a space, capitalized, bare), weighted by rank, as pieces. */
function wordCorpus(space: string, piecesOf: (text: string) => string[]) {
  const words = [...new Set(WORDS.split(/\s+/).filter((w) => w !== ""))];
  return words.flatMap((w, rank) => {
    const weight = 1000 / (rank + 10);
    const cap = w[0].toUpperCase() + w.slice(1);
    return [
      { pieces: piecesOf(space + w), weight },
      { pieces: piecesOf(space + cap), weight: weight / 4 },
      { pieces: piecesOf(w), weight: weight / 8 },
      { pieces: piecesOf(cap), weight: weight / 8 },
    ];
  });
}

/** Letter strings (after `space`, and bare) in breadth-first order until the vocabulary is full. */
function fillWithLetters(v: Vocab, space: string): void {
  const queue = [space, ...FILL_LETTERS];
  const queued = new Set(queue);
  for (let head = 0; head < queue.length && !v.full; head++) {
    const prefix = queue[head];
    for (const c of FILL_LETTERS) {
      const token = prefix + c;
      if (!v.ids.has(token) && !v.merge(prefix, c)) return;
      if (!queued.has(token)) {
        queued.add(token);
        queue.push(token);
      }
    }
  }
}

function addedToken(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

function decoderEntry(content: string) {
  return { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
}

function tokenMap(content: string) {
  return { content, lstrip: false, normalized: false, rstrip: false, single_word: false };
}

function bpeModel(v: Vocab, llama2: boolean) {
  return {
    type: "BPE",
    dropout: null,
    unk_token: llama2 ? "<unk>" : null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: llama2,
    byte_fallback: llama2,
    ignore_merges: !llama2,
    vocab: Object.fromEntries(v.ids),
    merges: v.merges,
  };
}

function bosTemplate(bos: string, bosId: number) {
  const special = { SpecialToken: { id: bos, type_id: 0 } };
  return {
    type: "TemplateProcessing",
    single: [special, { Sequence: { id: "A", type_id: 0 } }],
    pair: [
      special,
      { Sequence: { id: "A", type_id: 0 } },
      { SpecialToken: { id: bos, type_id: 1 } },
      { Sequence: { id: "B", type_id: 1 } },
    ],
    special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
  };
}

function llama2Tokenizer(spec: SynthTokenizerSpec): SynthTokenizerFiles {
  if (spec.bosTokenId !== 1 || spec.eosTokenIds.length !== 1 || spec.eosTokenIds[0] !== 2) {
    throw new SynthTokenizerError(
      `Cannot make a llama2-style tokenizer for bos ${spec.bosTokenId}, eos ${spec.eosTokenIds}: ` +
        `expected bos 1 and eos 2 (<s>, </s>)`,
    );
  }
  const specials = ["<unk>", "<s>", "</s>"];
  const v = new Vocab(0, spec.vocabSize);
  for (const s of specials) v.addBase(s);
  for (let b = 0; b < 256; b++) v.addBase(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  // The alphabet: the space mark and printable ASCII. Everything else falls back to bytes.
  v.addBase("\u2581");
  for (let c = 0x21; c <= 0x7e; c++) v.addBase(String.fromCharCode(c));
  addRuns(v, "\u2581", MAX_SPACE_RUN);
  trainBpe(v, wordCorpus("\u2581", (t) => [...t]));
  fillWithLetters(v, "\u2581");
  checkFull(v, spec);
  const added = specials.map((s, id) => addedToken(id, s));
  return {
    "tokenizer.json": {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: {
        type: "Sequence",
        normalizers: [
          { type: "Prepend", prepend: "\u2581" },
          { type: "Replace", pattern: { String: " " }, content: "\u2581" },
        ],
      },
      pre_tokenizer: null,
      post_processor: bosTemplate("<s>", 1),
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "\u2581" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      },
      model: bpeModel(v, true),
    },
    "tokenizer_config.json": {
      add_bos_token: true,
      add_eos_token: false,
      added_tokens_decoder: Object.fromEntries(specials.map((s, id) => [String(id), decoderEntry(s)])),
      bos_token: "<s>",
      chat_template: LLAMA2_CHAT_TEMPLATE.trim(),
      clean_up_tokenization_spaces: false,
      eos_token: "</s>",
      legacy: false,
      model_max_length: spec.maxPositionEmbeddings,
      pad_token: null,
      tokenizer_class: "LlamaTokenizerFast",
      unk_token: "<unk>",
    },
    "special_tokens_map.json": {
      bos_token: tokenMap("<s>"),
      eos_token: tokenMap("</s>"),
      unk_token: tokenMap("<unk>"),
    },
  };
}

/** GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68 for U+0100 up,
 * in byte order. Returned in the order the bytes get ids: the printable ones first. */
function byteLevelAlphabet(): { chars: string[]; ofByte: string[] } {
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const ofByte: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) ofByte.push(String.fromCharCode(printable(b) ? b : 256 + extra++));
  const order = [...Array(256).keys()].sort((a, b) => Number(!printable(a)) - Number(!printable(b)) || a - b);
  return { chars: order.map((b) => ofByte[b]), ofByte };
}

function llama3Tokenizer(spec: SynthTokenizerSpec): SynthTokenizerFiles {
  const base = spec.vocabSize - LLAMA3_SPECIALS;
  const names: string[] = [];
  for (let i = 0, reserved = 0; i < LLAMA3_SPECIALS; i++) {
    names.push(LLAMA3_NAMED[i] ?? `<|reserved_special_token_${reserved++}|>`);
  }
  const ends = [1, 8, 9].map((i) => base + i);
  if (spec.bosTokenId !== base || !spec.eosTokenIds.every((id) => ends.includes(id))) {
    throw new SynthTokenizerError(
      `Cannot make a llama3-style tokenizer of ${spec.vocabSize} ids for bos ${spec.bosTokenId}, eos ` +
        `${spec.eosTokenIds}: expected bos ${base} and eos among ${ends.join(", ")}`,
    );
  }
  const { chars, ofByte } = byteLevelAlphabet();
  const byteLevel = (text: string) => [...new TextEncoder().encode(text)].map((b) => ofByte[b]);
  const [space, newline, tab] = [" ", "\n", "\t"].map((c) => byteLevel(c)[0]);
  const v = new Vocab(0, base);
  for (const c of chars) v.addBase(c);
  addRuns(v, space, MAX_SPACE_RUN);
  addRuns(v, newline, 4);
  addRuns(v, tab, 4);
  // Llama 3 splits numbers into groups of up to three digits: every group is one token.
  for (let n = 0; n < 1100; n++) {
    const s = n < 100 ? String(n).padStart(2, "0") : String(n - 100).padStart(3, "0");
    v.merge(s.slice(0, -1), s.slice(-1));
  }
  trainBpe(v, wordCorpus(" ", byteLevel));
  fillWithLetters(v, space);
  checkFull(v, { ...spec, vocabSize: base });
  const added = names.map((s, i) => addedToken(base + i, s));
  const eosToken = spec.eosTokenIds.includes(base + 9) ? names[9] : names[spec.eosTokenIds[0] - base];
  return {
    "tokenizer.json": {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: {
        type: "Sequence",
        pretokenizers: [
          { type: "Split", pattern: { Regex: LLAMA3_SPLIT }, behavior: "Isolated", invert: false },
          { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
      post_processor: {
        type: "Sequence",
        processors: [
          { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
          bosTemplate(names[0], base),
        ],
      },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: bpeModel(v, false),
    },
    "tokenizer_config.json": {
      added_tokens_decoder: Object.fromEntries(names.map((s, i) => [String(base + i), decoderEntry(s)])),
      bos_token: names[0],
      chat_template: LLAMA31_CHAT_TEMPLATE.trim(),
      clean_up_tokenization_spaces: false,
      eos_token: eosToken,
      model_input_names: ["input_ids", "attention_mask"],
      model_max_length: spec.maxPositionEmbeddings,
      tokenizer_class: "PreTrainedTokenizerFast",
    },
    "special_tokens_map.json": { bos_token: tokenMap(names[0]), eos_token: tokenMap(eosToken) },
  };
}

function checkFull(v: Vocab, spec: Pick<SynthTokenizerSpec, "vocabSize">): void {
  if (!v.full) {
    throw new SynthTokenizerError(
      `Cannot fill a vocabulary of ${spec.vocabSize}: ${v.remaining} ids left without pieces`,
    );
  }
}

/** The tokenizer files for `spec` (pure and deterministic: the same spec gives the same files). */
export function synthTokenizer(spec: SynthTokenizerSpec): SynthTokenizerFiles {
  if (spec.tokenizer === "llama2") return llama2Tokenizer(spec);
  if (spec.tokenizer === "llama3") return llama3Tokenizer(spec);
  throw new SynthTokenizerError(`Unknown tokenizer style "${spec.tokenizer}": expected "llama2" or "llama3"`);
}

/** Writes the tokenizer files into `dir` (replacing them); returns their names. */
export async function writeSynthTokenizer(dir: string, spec: SynthTokenizerSpec): Promise<string[]> {
  const files = synthTokenizer(spec);
  for (const [name, value] of Object.entries(files)) {
    await Deno.writeTextFile(join(dir, name), JSON.stringify(value, null, 2) + "\n");
  }
  return Object.keys(files);
}
