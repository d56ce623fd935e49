// Errors the engine raises on purpose: each message names what was wrong and what was expected, so
// callers (the CLI, the server) print it as is, without a stack trace.
export class EngineError extends Error {
  override name = "EngineError";
}
