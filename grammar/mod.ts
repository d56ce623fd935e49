// Constrained decoding, the grammar/ layer's public surface: the JSON Schema subset Trellis enforces
// (schema.ts), and GrammarPool, which compiles grammars with xgrammar in Workers and gives each
// constrained sequence a matcher the engine asks for token masks. Runs on the serving thread (its Workers
// beside it); imports nothing else of ours.
export {
  checkSchema,
  DEFAULT_SCHEMA_LIMITS,
  SchemaError,
  type SchemaLimits,
  SUPPORTED_FORMATS,
} from "./schema.ts";
export {
  Grammar,
  GrammarError,
  GrammarPool,
  type GrammarPoolOptions,
  type GrammarSpec,
  type MatcherHandle,
  type SchemaSource,
} from "./pool.ts";
export { JSON_SEPARATORS, TOOL_CALL_SEPARATOR, toolCallPrefix } from "./_protocol.ts";
export type { MatcherReply, MatcherRequest } from "./_protocol.ts";
export type { Vocabulary } from "./vocabulary.ts";
