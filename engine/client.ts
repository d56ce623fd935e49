// EngineHandle over a Worker: the serving thread's view of the engine. Requests go out as messages,
// token events come back in batches and are handed to per-request async iterators.
import type { EngineOptions } from "./engine.ts";
import type { FromWorker, ToWorker } from "./_protocol.ts";
import type {
  EngineHandle,
  EngineState,
  EngineStats,
  GenerateRequest,
  ModelInfo,
  TokenEvent,
} from "./types.ts";

class EventQueue {
  #items: TokenEvent[] = [];
  #waiter: (() => void) | null = null;
  done = false;

  push(ev: TokenEvent): void {
    this.#items.push(ev);
    if (ev.finishReason) this.done = true;
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  async *drain(): AsyncGenerator<TokenEvent> {
    while (true) {
      while (this.#items.length) {
        const ev = this.#items.shift()!;
        yield ev;
        if (ev.finishReason) return;
      }
      await new Promise<void>((r) => (this.#waiter = r));
    }
  }
}

const EMPTY_STATS: EngineStats = {
  running: 0,
  waiting: 0,
  kvUsage: 0,
  kvBlocksTotal: 0,
  kvBlocksUsed: 0,
  promptTokens: 0,
  generationTokens: 0,
  prefixCacheQueries: 0,
  prefixCacheHits: 0,
  preemptions: 0,
};

export class EngineClient implements EngineHandle {
  #worker: Worker;
  #state: EngineState = "loading";
  #info: ModelInfo | null = null;
  #stats: EngineStats = EMPTY_STATS;
  #queues = new Map<string, EventQueue>();
  #ready: Promise<void>;
  #closed: Promise<void>;
  #onClosed!: () => void;
  /** The Worker's OS thread (Linux), or null. */
  #thread: number | null = null;
  lostReason: string | null = null;

  constructor(opts: EngineOptions) {
    this.#worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    let ready!: () => void;
    let failed!: (e: Error) => void;
    this.#ready = new Promise((res, rej) => ((ready = res), (failed = rej)));
    this.#closed = new Promise((res) => (this.#onClosed = res));
    this.#worker.onmessage = (e: MessageEvent<FromWorker>) => {
      const m = e.data;
      switch (m.type) {
        case "ready":
          this.#info = m.info;
          this.#state = "ready";
          ready();
          break;
        case "event":
          this.#queues.get(m.id)?.push(m.ev);
          if (m.ev.finishReason) this.#queues.delete(m.id);
          break;
        case "stats":
          if (m.stats) this.#stats = m.stats;
          break;
        case "lost":
        case "fatal":
          this.#state = "lost";
          this.lostReason = m.message;
          failed(new Error(m.message));
          for (const [id, q] of this.#queues) {
            q.push({ ids: [], finishReason: "error", error: m.message });
            this.#queues.delete(id);
          }
          break;
        case "thread":
          this.#thread = m.id;
          break;
        case "closed":
          this.#worker.terminate();
          this.#onClosed();
          break;
      }
    };
    this.#worker.onerror = (e) => {
      e.preventDefault();
      this.#state = "lost";
      this.lostReason = e.message;
      failed(new Error(e.message));
    };
    this.#send({ type: "load", opts });
  }

  /** Resolves once the model is on the GPU; rejects with the loader's message. */
  ready(): Promise<void> {
    return this.#ready;
  }

  get info(): ModelInfo {
    if (!this.#info) throw new Error("Model is still loading");
    return this.#info;
  }

  state(): EngineState {
    return this.#state;
  }

  stats(): EngineStats {
    return this.#stats;
  }

  #send(m: ToWorker, transfer: Transferable[] = []): void {
    this.#worker.postMessage(m, transfer);
  }

  generate(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<TokenEvent> {
    const q = new EventQueue();
    if (this.#state !== "ready") {
      q.push({ ids: [], finishReason: "error", error: this.lostReason ?? "Model is not ready" });
      return q.drain();
    }
    this.#queues.set(req.id, q);
    const onAbort = () => this.#send({ type: "cancel", id: req.id });
    // A constrained request's matcher port moves to the Worker, which talks to the matcher directly.
    this.#send({ type: "generate", req }, req.constraint ? [req.constraint] : []);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    const stopEarly = () => {
      // A consumer that stops early (client gone) cancels the sequence.
      if (!q.done) {
        this.#send({ type: "cancel", id: req.id });
        this.#queues.delete(req.id);
      }
    };
    return (async function* () {
      try {
        yield* q.drain();
      } finally {
        signal?.removeEventListener("abort", onAbort);
        stopEarly();
      }
    })();
  }

  /**
   * Stops the engine and resolves once the Worker's thread has ended. terminate() only starts the end:
   * the thread then tears its isolate down, and with it the WebGPU instance, which unloads the Vulkan
   * driver (vkDestroyInstance, dlclose). A process that exits meanwhile runs its exit handlers while
   * those libraries are being unmapped, and dies with SIGSEGV (seen as exit code 139 of `deno task ok`
   * when server/real_engine_test.ts finished last, and the same race awaits main.ts after SIGTERM).
   */
  async close(): Promise<void> {
    if (this.#state !== "lost") {
      this.#send({ type: "close" });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((r) => timer = setTimeout(r, THREAD_END_MS));
      await Promise.race([this.#closed, timeout]);
      clearTimeout(timer);
    }
    this.#worker.terminate();
    await threadEnded(this.#thread);
  }
}

/** How long close() waits for the Worker to finish its work, and then for its thread to end. */
const THREAD_END_MS = 10_000;

/** Resolves when OS thread `id` of this process has ended (Linux /proc), or after THREAD_END_MS. */
async function threadEnded(id: number | null): Promise<void> {
  if (id === null) return;
  const deadline = Date.now() + THREAD_END_MS;
  while (Date.now() < deadline) {
    try {
      Deno.statSync(`/proc/self/task/${id}`);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}
