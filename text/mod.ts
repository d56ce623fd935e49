// Text <-> tokens, the text/ layer's public surface: the BPE tokenizer (tokenizer.json), the incremental
// detokenizer, chat templates, the tokenizer-directory lookup, and TextCodec, the one interface the server
// uses for all of them. Runs on the serving thread (and in the CLI); imports nothing else of ours.
export { type DecodeOptions, type EncodeOptions, Tokenizer } from "./tokenizer.ts";
export { type DetokenizerOptions, IncrementalDetokenizer } from "./detokenizer.ts";
export {
  type ChatFamily,
  chatFamily,
  formatToolCall,
  renderChat,
  type RenderChatOptions,
  type TemplateMessage,
  TOOL_PROMPT,
} from "./chat_template.ts";
export { loadTokenizer, resolveTokenizerDir, type TokenizerDirOptions } from "./tokenizer_dir.ts";
export type { ChatMessage, TextCodec, TextDetokenizer, ToolDefinition, Vocabulary } from "./codec.ts";
export { TokenizerCodec } from "./tokenizer_codec.ts";
