// The tokenizer vocabulary as the grammar engine needs it: each id's spelling in tokenizer.json and how
// spellings map to bytes. text/ produces it (TextCodec.vocabulary()); this layer imports nothing of ours,
// so the shape is declared here and matched structurally.

export interface Vocabulary {
  /** Each id's token as tokenizer.json spells it ("▁the", "<0x0A>", "Ġthe"); "" for special tokens,
   * which a grammar never allows (stop tokens are named separately). */
  tokens: readonly string[];
  /** SentencePiece with byte fallback (Llama 2: "▁" is a space, "<0xNN>" a byte) or GPT-2 byte-level
   * (Llama 3). */
  encoding: "byte_fallback" | "byte_level";
}
