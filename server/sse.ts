// AsyncIterable of chunk objects → a text/event-stream Response (docs/API.md §5.1): one compact `data:` line
// per chunk, a final `data: [DONE]`, one in-band error event if the iterator throws, and abort wiring when
// the client cancels the body.

import { toApiError } from "./errors.ts";

export const SSE_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/event-stream",
  "cache-control": "no-cache",
  "connection": "keep-alive",
  "x-accel-buffering": "no",
};

/** Comment line sent only after this long without any event (llmperf parses every data line). */
export const KEEP_ALIVE_MS = 15_000;

export interface SseOptions {
  headers?: Record<string, string>;
  /** The client cancelled the body (disconnect): stop producing. */
  onCancel(): void;
  /** Runs once when the stream ends, however it ends. */
  onClose?(outcome: "done" | "error" | "cancelled"): void;
  keepAliveMs?: number;
}

const TIMED_OUT = Symbol("timed out");

export function sseResponse(events: AsyncIterable<unknown>, opts: SseOptions): Response {
  const encoder = new TextEncoder();
  const it = events[Symbol.asyncIterator]();
  const keepAliveMs = opts.keepAliveMs ?? KEEP_ALIVE_MS;
  let pending: Promise<IteratorResult<unknown>> | null = null;
  let ended = false;
  const end = (outcome: "done" | "error" | "cancelled") => {
    if (ended) return;
    ended = true;
    opts.onClose?.(outcome);
  };

  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (ended) return;
      const send = (text: string) => controller.enqueue(encoder.encode(text));
      try {
        pending ??= it.next();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const result = await Promise.race([
          pending,
          new Promise<typeof TIMED_OUT>((resolve) =>
            timer = setTimeout(() => resolve(TIMED_OUT), keepAliveMs)
          ),
        ]);
        clearTimeout(timer);
        if (ended) return;
        if (result === TIMED_OUT) {
          send(": keep-alive\n\n");
          return;
        }
        pending = null;
        if (result.done) {
          send("data: [DONE]\n\n");
          controller.close();
          end("done");
          return;
        }
        send(`data: ${JSON.stringify(result.value)}\n\n`);
      } catch (err) {
        if (ended) return;
        // Once the 200 went out, errors travel in-band: one error event, then [DONE] (docs/API.md §5.5).
        send(`data: ${JSON.stringify(toApiError(err).body())}\n\n`);
        send("data: [DONE]\n\n");
        controller.close();
        end("error");
      }
    },
    cancel() {
      if (ended) return;
      end("cancelled");
      opts.onCancel();
      it.return?.().catch(() => {});
    },
  });

  return new Response(body, { status: 200, headers: { ...SSE_HEADERS, ...opts.headers } });
}
