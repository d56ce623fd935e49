// What the server needs from the tokenizer, the incremental detokenizer and the chat template, as one
// small interface: TokenizerCodec (tokenizer_codec.ts) implements it on the real tokenizer; tests use the
// byte-level codec in test/support/fake_engine.ts.

/** One chat message as the template sees it (Hugging Face template field names). */
export interface ChatMessage {
  /** `developer` is mapped to `system` before the template runs. */
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  name?: string;
  /** Assistant messages that called tools; `arguments` is a JSON string. */
  tool_calls?: { id: string; type: "function"; function: { name: string; arguments: string } }[];
  /** Tool messages: the call this message answers. */
  tool_call_id?: string;
}

/** A function the model may call (OpenAI's `tools` entry). */
export interface ToolDefinition {
  type: "function";
  function: { name: string; description?: string; parameters?: unknown };
}

/** Turns token ids into text one id at a time, holding back bytes of an unfinished UTF-8 character. */
export interface TextDetokenizer {
  /** Text that became final with this id; "" while a character is still incomplete. */
  push(id: number): string;
  /** Whatever is still held back (incomplete bytes become U+FFFD). */
  flush(): string;
}

/** The vocabulary as a grammar engine reads it (grammar/vocabulary.ts has the same shape). */
export interface Vocabulary {
  /** Each id's token as tokenizer.json spells it; "" for special tokens. */
  tokens: readonly string[];
  /** SentencePiece with byte fallback (Llama 2) or GPT-2 byte-level (Llama 3). */
  encoding: "byte_fallback" | "byte_level";
}

export interface TextCodec {
  readonly vocabSize: number;
  /** The tokenizer's end-of-sequence ids. */
  readonly eosIds: readonly number[];
  /** The chat template's end-of-turn ids (Llama 3.1: <|eot_id|>, <|eom_id|>); may be empty. */
  readonly endOfTurnIds: readonly number[];
  /**
   * Text to ids. `addSpecialTokens` adds BOS where the tokenizer wants it (plain prompts);
   * special-token text inside `text` (e.g. "<|eot_id|>" from a rendered template) is always
   * parsed to its id, so a rendered chat is encoded with `addSpecialTokens: false`.
   */
  encode(text: string, opts: { addSpecialTokens: boolean }): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  /**
   * Messages to prompt text with the checkpoint's chat template (BOS included as text); `tools` are the
   * functions the model may call, rendered by the template or by the Llama 3.1 JSON tool-calling
   * convention when the template has no tool format (chat_template.ts).
   */
  renderChat(
    messages: readonly ChatMessage[],
    opts: { addGenerationPrompt: boolean; tools?: readonly ToolDefinition[] },
  ): string;
  /**
   * A detokenizer for the completion of `promptIds`: the prompt gives it context (Llama 2 strips the
   * leading space of the first word of a text, not of a continuation).
   */
  newDetokenizer(
    promptIds: readonly number[],
    opts?: { skipSpecialTokens?: boolean },
  ): TextDetokenizer;
  /** The token's text on its own, for logprobs (byte-fallback tokens may not be valid text). */
  tokenText(id: number): string;
  /** The token's UTF-8 bytes, for logprobs `bytes`. */
  tokenBytes(id: number): number[];
  /** Every token's spelling, for compiling grammars over this vocabulary. */
  vocabulary(): Vocabulary;
}
