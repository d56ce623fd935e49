// The engine's Worker: loads the model, runs the Runner loop, and talks to the EngineClient on the
// serving thread by messages. Everything that waits on the GPU (mapAsync blocks its thread) happens
// here, so HTTP handling never stalls behind a decode round.
/// <reference lib="deno.worker" />
import { Engine, type EngineOptions } from "./engine.ts";
import { Runner } from "./runner.ts";
import type { ToWorker } from "./_protocol.ts";
import { post } from "./_protocol.ts";

let runner: Runner | null = null;

async function load(opts: EngineOptions): Promise<void> {
  try {
    const engine = await Engine.load({ ...opts, progress: opts.progress ?? true });
    const loseDevice = deviceLossAfter(engine);
    let failed = false;
    runner = new Runner(engine, (id, ev) => {
      // A loop that died (a GPU error, a lost device) takes the engine down: say so before the requests'
      // errors, so the server answers them as "engine unavailable" (503), not as a bug of its own (500).
      if (runner?.fatal && !failed) {
        failed = true;
        post({ type: "fatal", message: runner.fatal });
      }
      post({ type: "event", id, ev });
      loseDevice?.(ev.ids.length);
    });
    post({
      type: "ready",
      info: {
        source: opts.modelDir,
        vocabSize: engine.cfg.vocabSize,
        maxContext: engine.maxContext,
        bosId: engine.cfg.bosTokenId ?? null,
        eosIds: engine.cfg.eosTokenIds,
        quantization: engine.weights.quantization,
      },
    });
    engine.gpu.lost.then((info) =>
      post({ type: "lost", message: `GPU device lost: ${info.message || info.reason}` })
    );
    const stats = setInterval(() => runner && post({ type: "stats", stats: runner.stats() }), 250);
    try {
      await runner.run();
    } finally {
      clearInterval(stats);
    }
    engine.destroy();
    post({ type: "closed" });
  } catch (e) {
    post({ type: "fatal", message: e instanceof Error ? e.message : String(e) });
  }
}

/**
 * Fault injection for the process tests (test/process_test.ts): with TRELLIS_TEST_LOSE_DEVICE_AFTER_TOKENS=N
 * the device is destroyed once N tokens have been reported, as a driver reset or a GPU fault would lose it
 * mid-stream. Unset (always, outside those tests), nothing happens.
 */
function deviceLossAfter(engine: Engine): ((tokens: number) => void) | null {
  const after = Number(Deno.env.get("TRELLIS_TEST_LOSE_DEVICE_AFTER_TOKENS") ?? "0");
  if (!(after > 0)) return null;
  let reported = 0;
  return (tokens) => {
    reported += tokens;
    if (reported >= after && reported - tokens < after) engine.gpu.device.destroy();
  };
}

/** This thread's id from /proc/thread-self ("PID/task/TID"); null where there is no /proc. */
function threadId(): number | null {
  try {
    return Number(Deno.readLinkSync("/proc/thread-self").split("/").at(-1)) || null;
  } catch {
    return null;
  }
}

post({ type: "thread", id: threadId() });

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  switch (m.type) {
    case "load":
      load(m.opts);
      break;
    case "generate":
      if (!runner) {
        post({
          type: "event",
          id: m.req.id,
          ev: { ids: [], finishReason: "error", error: "Model is not loaded" },
        });
      } else runner.submit(m.req);
      post({ type: "stats", stats: runner?.stats() ?? null });
      break;
    case "cancel":
      runner?.cancel(m.id);
      break;
    case "close":
      if (runner) runner.close();
      else post({ type: "closed" });
      break;
  }
};
