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
