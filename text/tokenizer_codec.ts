// The TextCodec the server runs on: tokenizer.ts, detokenizer.ts and chat_template.ts behind the small
// interface the routes use.

import { chatFamily, renderChat, type TemplateMessage } from "./chat_template.ts";
import { IncrementalDetokenizer } from "./detokenizer.ts";
import { Tokenizer } from "./tokenizer.ts";
import { loadTokenizer, type TokenizerDirOptions } from "./tokenizer_dir.ts";
import type { ChatMessage, TextCodec, ToolDefinition, Vocabulary } from "./codec.ts";

/** Llama 3 marks turns with header tokens and <|eot_id|>; Llama 2 has neither. */
const LLAMA3_END_OF_TURN = ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"];

/** GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the rest for U+0100 upward. */
function byteLevelTable(): Map<string, number> {
  const table = new Map<string, number>();
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    if (printable(b)) table.set(String.fromCharCode(b), b);
    else table.set(String.fromCharCode(256 + next++), b);
  }
  return table;
}

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
const ENCODER = new TextEncoder();

export class TokenizerCodec implements TextCodec {
  readonly tokenizer: Tokenizer;
  readonly family: "llama2" | "llama3";
  readonly vocabSize: number;
  readonly eosIds: readonly number[];
  readonly endOfTurnIds: readonly number[];
  readonly #byteLevel: Map<string, number> | null;

  constructor(tokenizer: Tokenizer) {
    this.tokenizer = tokenizer;
    this.vocabSize = tokenizer.vocabSize;
    this.eosIds = [...tokenizer.eosIds];
    const endOfTurn = LLAMA3_END_OF_TURN.map((t) => tokenizer.tokenToId(t)).filter((id) => id !== undefined);
    this.family = chatFamily(tokenizer);
    this.endOfTurnIds = endOfTurn;
    this.#byteLevel = tokenizer.decoderSteps.some((s) => s.type === "ByteLevel") ? byteLevelTable() : null;
  }

  /** Loads tokenizer.json (and tokenizer_config.json, generation_config.json) from `dir`. */
  static async fromDir(dir: string): Promise<TokenizerCodec> {
    return new TokenizerCodec(await Tokenizer.fromDir(dir));
  }

  /** Finds the model's tokenizer (see `resolveTokenizerDir`) and loads it. */
  static async forModel(options: TokenizerDirOptions): Promise<TokenizerCodec> {
    return new TokenizerCodec(await loadTokenizer(options));
  }

  encode(text: string, opts: { addSpecialTokens: boolean }): number[] {
    return this.tokenizer.encode(text, { addSpecial: opts.addSpecialTokens, parseSpecial: true });
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.tokenizer.decode([...ids], { skipSpecial: opts.skipSpecialTokens ?? false });
  }

  renderChat(
    messages: readonly ChatMessage[],
    opts: { addGenerationPrompt: boolean; tools?: readonly ToolDefinition[] },
  ): string {
    return renderChat(this.tokenizer.chatTemplate, this.family, messages as TemplateMessage[], {
      addGenerationPrompt: opts.addGenerationPrompt,
      tools: opts.tools,
      bosToken: this.tokenizer.bosToken ?? "",
      eosToken: this.tokenizer.eosToken ?? "",
    });
  }

  newDetokenizer(promptIds: readonly number[], opts: { skipSpecialTokens?: boolean } = {}) {
    return new IncrementalDetokenizer(this.tokenizer, [...promptIds], {
      skipSpecial: opts.skipSpecialTokens ?? true,
    });
  }

  tokenText(id: number): string {
    const token = this.tokenizer.idToToken(id) ?? "";
    if (BYTE_TOKEN.test(token)) return token;
    const bytes = this.tokenBytes(id);
    const text = new TextDecoder("utf-8", { fatal: false }).decode(new Uint8Array(bytes));
    return text;
  }

  vocabulary(): Vocabulary {
    const tokens = Array.from(
      { length: this.vocabSize },
      (_, id) => this.tokenizer.isSpecial(id) ? "" : this.tokenizer.idToToken(id) ?? "",
    );
    return { tokens, encoding: this.#byteLevel ? "byte_level" : "byte_fallback" };
  }

  tokenBytes(id: number): number[] {
    const token = this.tokenizer.idToToken(id) ?? "";
    const byte = BYTE_TOKEN.exec(token);
    if (byte && !this.#byteLevel) return [parseInt(byte[1], 16)];
    if (this.#byteLevel && !this.tokenizer.isSpecial(id)) {
      const out: number[] = [];
      for (const ch of token) {
        const b = this.#byteLevel.get(ch);
        if (b === undefined) return [...ENCODER.encode(token)];
        out.push(b);
      }
      return out;
    }
    // SentencePiece-style: U+2581 stands for a space.
    return [...ENCODER.encode(this.tokenizer.isSpecial(id) ? token : token.replaceAll("\u2581", " "))];
  }
}
