// Text <-> token ids from a Hugging Face tokenizer.json (BPE model), with tokenizer_config.json and
// generation_config.json for BOS/EOS, add_bos_token, special flags and the chat template.
// Data path: chat template -> Tokenizer.encode -> engine; generated ids -> detokenizer.ts -> text.
//
// Two families are exercised against reference token streams: Llama 2 (SentencePiece-style BPE with byte
// fallback: Prepend/Replace normalizer, ByteFallback/Fuse/Strip decoder) and Llama 3 (byte-level BPE: Split
// with Llama 3's regex, ByteLevel, TemplateProcessing adding <|begin_of_text|>). Added tokens are cut out
// of the text first and each span between them is normalized, pre-tokenized and merged on its own.

import { BpeModel } from "./_tokenizer_bpe.ts";
import {
  type DecoderStep,
  type Normalizer,
  parseDecoder,
  parseNormalizer,
  parsePreTokenizer,
  type PreTokenizer,
  runDecoder,
} from "./_tokenizer_pipeline.ts";

export type { DecoderStep } from "./_tokenizer_pipeline.ts";

export interface EncodeOptions {
  /** Add BOS/EOS as the post_processor (or tokenizer_config's add_bos_token/add_eos_token) says. Default true. */
  addSpecial?: boolean;
  /** Text of special tokens ("<s>", "<|eot_id|>") becomes their ids; else it is encoded as plain text,
   * so user text cannot forge chat headers. Non-special added tokens always match. Default false: set it
   * for text rendered by a chat template. */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, headers) from the text. Default false. */
  skipSpecial?: boolean;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

type Json = Record<string, unknown>;

/** Special tokens that end a turn or a text in Llama 2 and Llama 3.x vocabularies; any the vocabulary has
 * join eosIds, so a base model's tokenizer still stops an instruct-style <|eot_id|> turn. */
const END_TOKENS = ["</s>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"];

export class Tokenizer {
  /** One past the largest id of the vocabulary and added tokens. */
  readonly vocabSize: number;
  readonly bosId: number | null;
  /** Ids that end generation: tokenizer_config's eos_token first, then generation_config's eos_token_id,
   * then the known end tokens the vocabulary has as special tokens (END_TOKENS). */
  readonly eosIds: number[];
  /** tokenizer_config's bos_token, else the token the post_processor puts first, else null. */
  readonly bosToken: string | null;
  /** tokenizer_config's eos_token, else the token of eosIds[0], else null. */
  readonly eosToken: string | null;
  /** tokenizer_config.json's chat_template (the "default" one when it lists several), else null. */
  readonly chatTemplate: string | null;
  /** The decoder chain flattened to steps; IncrementalDetokenizer streams through it. */
  readonly decoderSteps: readonly DecoderStep[];

  #model: BpeModel;
  #normalizer: Normalizer | null;
  #preTokenizer: PreTokenizer | null;
  #vocab = new Map<string, number>();
  #tokens: (string | undefined)[] = [];
  #added = new Map<string, AddedToken>();
  #specialIds = new Set<number>();
  #splitAll: RegExp | null;
  #splitNonSpecial: RegExp | null;
  #prefixIds: number[];
  #suffixIds: number[];

  /** Reads tokenizer.json, and tokenizer_config.json and generation_config.json when present. Errors
   * name the file. */
  static async fromDir(dir: string): Promise<Tokenizer> {
    const base = dir.replace(/\/+$/, "") || "/";
    const path = `${base}/tokenizer.json`;
    let tokenizerJson: unknown;
    try {
      tokenizerJson = JSON.parse(await Deno.readTextFile(path));
    } catch (err) {
      throw new Error(`Cannot load tokenizer "${path}": ${message(err)}`);
    }
    const configPath = `${base}/tokenizer_config.json`;
    const config = await readOptionalJson(configPath);
    const generationConfig = await readOptionalJson(`${base}/generation_config.json`);
    try {
      return new Tokenizer(tokenizerJson, config, generationConfig);
    } catch (err) {
      throw new Error(`Cannot load tokenizer "${path}" (with "${configPath}"): ${message(err)}`);
    }
  }

  static fromJson(tokenizerJson: unknown, tokenizerConfig?: unknown, generationConfig?: unknown): Tokenizer {
    return new Tokenizer(tokenizerJson, tokenizerConfig, generationConfig);
  }

  constructor(tokenizerJson: unknown, tokenizerConfig?: unknown, generationConfig?: unknown) {
    if (tokenizerJson === null || typeof tokenizerJson !== "object" || Array.isArray(tokenizerJson)) {
      throw new Error(
        `Cannot load tokenizer: expected a tokenizer.json object, found ${typeof tokenizerJson}`,
      );
    }
    const tj = tokenizerJson as Json;
    const config = (tokenizerConfig ?? {}) as Json;
    const model = tj.model as Json | undefined;
    if (model === undefined || model === null || (model.type !== undefined && model.type !== "BPE")) {
      throw new Error(`Cannot load tokenizer model: expected type "BPE", found "${model?.type}"`);
    }
    for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
      if (model[key] !== null && model[key] !== undefined && model[key] !== "") {
        throw new Error(`Cannot load BPE model: ${key} "${model[key]}" is not supported`);
      }
    }
    if (typeof model.dropout === "number" && model.dropout > 0) {
      throw new Error(`Cannot load BPE model: dropout ${model.dropout} is not supported`);
    }

    if (model.vocab === null || typeof model.vocab !== "object" || Array.isArray(model.vocab)) {
      throw new Error("Cannot load BPE model: expected vocab to be an object of token -> id");
    }
    for (const [token, id] of Object.entries(model.vocab as Record<string, number>)) {
      this.#vocab.set(token, id);
      this.#tokens[id] = token;
    }
    const unkToken = typeof model.unk_token === "string" ? model.unk_token : null;
    this.#model = new BpeModel(this.#vocab, parseMerges(model.merges), {
      unkId: unkToken === null ? null : this.#vocab.get(unkToken) ?? null,
      fuseUnk: model.fuse_unk === true,
      byteFallback: model.byte_fallback === true,
      ignoreMerges: model.ignore_merges === true,
    });

    this.#loadAddedTokens(tj.added_tokens, config.added_tokens_decoder);
    this.#splitAll = splitRegex([...this.#added.values()]);
    this.#splitNonSpecial = splitRegex([...this.#added.values()].filter((t) => !t.special));

    this.#normalizer = parseNormalizer(tj.normalizer, { prependFirstOnly: config.legacy === false });
    this.#preTokenizer = parsePreTokenizer(tj.pre_tokenizer);
    this.decoderSteps = parseDecoder(tj.decoder);
    this.vocabSize = this.#tokens.length;

    const template = parsePostProcessor(tj.post_processor, (token) => this.tokenToId(token));
    const bosToken = tokenContent(config.bos_token);
    const eosToken = tokenContent(config.eos_token);
    this.bosId = bosToken !== null ? this.#requireId(bosToken, "bos_token") : template.prefix[0] ?? null;
    const eos = eosToken !== null ? [this.#requireId(eosToken, "eos_token")] : [];
    const genEos = (generationConfig as Json | undefined)?.eos_token_id;
    for (const id of [genEos ?? []].flat()) {
      if (!Number.isInteger(id) || this.#tokens[id as number] === undefined) {
        throw new Error(`Cannot use generation_config eos_token_id ${JSON.stringify(id)}: not a token id`);
      }
      if (!eos.includes(id as number)) eos.push(id as number);
    }
    for (const token of END_TOKENS) {
      const id = this.#added.get(token)?.id;
      if (id !== undefined && this.#specialIds.has(id) && !eos.includes(id)) eos.push(id);
    }
    this.eosIds = eos;
    this.bosToken = bosToken ?? (this.bosId !== null ? this.#tokens[this.bosId] ?? null : null);
    this.eosToken = eosToken ?? (eos.length > 0 ? this.#tokens[eos[0]] ?? null : null);

    if (typeof config.add_bos_token === "boolean" || typeof config.add_eos_token === "boolean") {
      this.#prefixIds = config.add_bos_token === true && this.bosId !== null ? [this.bosId] : [];
      this.#suffixIds = config.add_eos_token === true && eos.length > 0 ? [eos[0]] : [];
    } else {
      this.#prefixIds = template.prefix;
      this.#suffixIds = template.suffix;
    }
    this.chatTemplate = parseChatTemplate(config.chat_template);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const { addSpecial = true, parseSpecial = false } = opts;
    const ids: number[] = [...(addSpecial ? this.#prefixIds : [])];
    const split = parseSpecial ? this.#splitAll : this.#splitNonSpecial;
    let last = 0;
    if (split !== null) {
      for (const m of text.matchAll(split)) {
        this.#encodeSpan(text.slice(last, m.index), last === 0, ids);
        ids.push(this.#addedFor(m[0]).id);
        last = m.index + m[0].length;
      }
    }
    this.#encodeSpan(text.slice(last), last === 0, ids);
    if (addSpecial) ids.push(...this.#suffixIds);
    return ids;
  }

  decode(ids: number[], opts: DecodeOptions = {}): string {
    const tokens: string[] = [];
    for (const id of ids) {
      const token = this.#tokens[id];
      // Unknown ids are skipped, as HF does.
      if (token === undefined || (opts.skipSpecial === true && this.#specialIds.has(id))) continue;
      tokens.push(token);
    }
    return this.decoderSteps.length === 0 ? tokens.join(" ") : runDecoder([...this.decoderSteps], tokens);
  }

  idToToken(id: number): string | undefined {
    return this.#tokens[id];
  }

  tokenToId(token: string): number | undefined {
    return this.#added.get(token)?.id ?? this.#vocab.get(token);
  }

  /** True for added tokens flagged special (BOS, EOS, chat headers, reserved tokens). */
  isSpecial(id: number): boolean {
    return this.#specialIds.has(id);
  }

  #encodeSpan(text: string, atStart: boolean, out: number[]): void {
    if (text.length === 0) return;
    let piece = { text, atStart };
    if (this.#normalizer !== null) piece = this.#normalizer(piece);
    const pieces = this.#preTokenizer !== null ? this.#preTokenizer([piece]) : [piece];
    for (const p of pieces) {
      for (const id of this.#model.tokenize(p.text)) out.push(id);
    }
  }

  #addedFor(match: string): AddedToken {
    const token = this.#added.get(match) ?? this.#added.get(match.trimStart()) ??
      this.#added.get(match.trimEnd()) ?? this.#added.get(match.trim());
    if (token === undefined) throw new Error(`Cannot map added-token match "${match}" to a token`);
    return token;
  }

  #loadAddedTokens(list: unknown, fromConfig: unknown): void {
    const entries: Json[] = Array.isArray(list) ? list : [];
    for (const [id, t] of Object.entries((fromConfig ?? {}) as Record<string, Json>)) {
      entries.push({ ...t, id: Number(id) });
    }
    for (const t of entries) {
      const id = Number(t.id);
      const content = t.content;
      if (!Number.isInteger(id) || id < 0 || typeof content !== "string" || content === "") {
        throw new Error(
          `Cannot load added token ${
            JSON.stringify(t)
          }: expected a non-negative integer id and non-empty content`,
        );
      }
      if (t.single_word === true) {
        throw new Error(`Cannot load added token "${content}": single_word is not supported`);
      }
      const token = {
        id,
        content,
        special: t.special === true,
        lstrip: t.lstrip === true,
        rstrip: t.rstrip === true,
      };
      this.#added.set(content, token);
      this.#tokens[id] = content;
      if (token.special) this.#specialIds.add(id);
      else this.#specialIds.delete(id);
    }
  }

  #requireId(token: string, field: string): number {
    const id = this.tokenToId(token);
    if (id === undefined) throw new Error(`Cannot find ${field} "${token}" in the vocabulary`);
    return id;
  }
}

function parseMerges(merges: unknown): [string, string][] {
  if (!Array.isArray(merges)) throw new Error("Cannot load BPE model: expected merges to be an array");
  return merges.map((m, i) => {
    const parts = typeof m === "string" ? m.split(" ") : m;
    if (!Array.isArray(parts) || parts.length !== 2) {
      throw new Error(`Cannot load BPE merge ${i}: expected two parts, found ${JSON.stringify(m)}`);
    }
    return [String(parts[0]), String(parts[1])];
  });
}

/** One regex matching any of `tokens`, longest first so that the leftmost match is also the longest. */
function splitRegex(tokens: AddedToken[]): RegExp | null {
  if (tokens.length === 0) return null;
  const alternatives = [...tokens]
    .sort((a, b) => b.content.length - a.content.length)
    .map((t) =>
      (t.lstrip ? "\\s*" : "") + t.content.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&") + (t.rstrip ? "\\s*" : "")
    );
  return new RegExp(alternatives.join("|"), "gu");
}

interface Template {
  prefix: number[];
  suffix: number[];
}

/** Ids a post_processor puts around a single sequence. */
function parsePostProcessor(json: unknown, idOf: (token: string) => number | undefined): Template {
  if (json === null || json === undefined) return { prefix: [], suffix: [] };
  const p = json as Json;
  switch (p.type) {
    case "ByteLevel":
      return { prefix: [], suffix: [] }; // only adjusts offsets
    case "Sequence": {
      const parts = (p.processors as unknown[]).map((q) => parsePostProcessor(q, idOf));
      return { prefix: parts.flatMap((t) => t.prefix), suffix: parts.flatMap((t) => t.suffix) };
    }
    case "TemplateProcessing": {
      const specials = (p.special_tokens ?? {}) as Record<string, { ids: number[] }>;
      const out: Template = { prefix: [], suffix: [] };
      let seenSequence = false;
      for (const item of p.single as Json[]) {
        if ("Sequence" in item) {
          seenSequence = true;
          continue;
        }
        const name = (item.SpecialToken as { id: string }).id;
        const ids = specials[name]?.ids ?? [idOf(name)];
        if (ids.some((id) => id === undefined)) {
          throw new Error(`Cannot load TemplateProcessing: special token "${name}" has no id`);
        }
        (seenSequence ? out.suffix : out.prefix).push(...ids);
      }
      return out;
    }
    default:
      throw new Error(`Cannot load post_processor: type "${p.type}" is not supported`);
  }
}

function tokenContent(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (value !== null && typeof value === "object" && typeof (value as Json).content === "string") {
    return (value as Json).content as string;
  }
  return null;
}

function parseChatTemplate(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value as { name: string; template: string }[];
    const template = (named.find((t) => t.name === "default") ?? named[0])?.template;
    return typeof template === "string" ? template : null;
  }
  return null;
}

async function readOptionalJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`Cannot read "${path}": ${message(err)}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot parse "${path}": ${message(err)}`);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
