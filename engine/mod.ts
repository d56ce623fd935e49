// The engine's public surface: the only module server/ and main.ts import. Typed requests in,
// token events out; tokenizers and chat templates for turning text into prompts.
export type {
  EngineHandle,
  EngineState,
  EngineStats,
  FinishReason,
  GenerateRequest,
  ModelInfo,
  SamplingParams,
  TokenEvent,
} from "./types.ts";
export { MAX_LOGIT_BIAS } from "./types.ts";
export { EngineClient } from "./client.ts";
export type { EngineOptions } from "./engine.ts";
export { EngineError } from "./errors.ts";
export { DEFAULT_MODEL_DIR } from "./defaults.ts";
export { openCheckpoint, resolveTokenizerDir } from "./checkpoint.ts";
export { type DecodeOptions, type EncodeOptions, Tokenizer } from "./tokenizer.ts";
export { type DetokenizerOptions, IncrementalDetokenizer } from "./detokenizer.ts";
export {
  type ChatFamily,
  chatFamily,
  type ChatMessage,
  renderChat,
  type RenderChatOptions,
} from "./chat_template.ts";
export { loadTokenizer } from "./load_tokenizer.ts";
