// Messages between the EngineClient (serving thread) and the engine Worker.
/// <reference lib="deno.worker" />
import type { EngineOptions } from "./engine.ts";
import type { EngineStats, GenerateRequest, ModelInfo, TokenEvent } from "./types.ts";

export type ToWorker =
  | { type: "load"; opts: EngineOptions }
  | { type: "generate"; req: GenerateRequest }
  | { type: "cancel"; id: string }
  | { type: "close" };

export type FromWorker =
  /** First message: the Worker's OS thread id (Linux), so close() can wait for the thread to end. */
  | { type: "thread"; id: number | null }
  | { type: "ready"; info: ModelInfo }
  | { type: "event"; id: string; ev: TokenEvent }
  | { type: "stats"; stats: EngineStats | null }
  | { type: "lost"; message: string }
  | { type: "fatal"; message: string }
  | { type: "closed" };

export function post(m: FromWorker): void {
  (self as unknown as { postMessage(m: FromWorker): void }).postMessage(m);
}
