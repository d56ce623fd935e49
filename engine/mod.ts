// The engine's public surface: the only module server/, cli/ and main.ts import. Typed requests in,
// token events out; nothing here knows about text, HTTP or JSON (text/ turns text into prompts).
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
export { contextOverflow, MAX_LOGIT_BIAS } from "./types.ts";
export {
  ConstraintError,
  type ConstraintReply,
  type ConstraintRequest,
  maskAllows,
  TokenConstraint,
} from "./constraint.ts";
export { EngineClient } from "./client.ts";
// The engine in this thread, for the command-line programs (cli/): the server runs it in a Worker instead.
export { Engine, type EngineOptions } from "./engine.ts";
export { Runner, type RunnerOptions } from "./runner.ts";
export { perplexity, type PerplexityResult } from "./perplexity.ts";
export { describeGpu } from "./gpu.ts";
export { openSafetensors } from "./safetensors.ts";
export { EngineError } from "./errors.ts";
export { DEFAULT_MODEL_DIR } from "./defaults.ts";
export { checkpointConfig, openCheckpoint } from "./checkpoint.ts";
