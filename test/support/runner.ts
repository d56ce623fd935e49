// Driving a Runner in engine tests: submit requests, collect each one's events until all have finished.
// Imported directly by engine tests (not through mod.ts, so kernel tests never load the engine).
import type { Engine } from "../../engine/engine.ts";
import { Runner, type RunnerOptions } from "../../engine/runner.ts";
import type { GenerateRequest, TokenEvent } from "../../engine/types.ts";

/** Runs requests through a Runner on `engine` and returns each one's events, in order. */
export async function runAll(
  engine: Engine,
  reqs: GenerateRequest[],
  onEvent?: (id: string, ev: TokenEvent, runner: Runner) => void,
  runnerOpts: RunnerOptions = { roundSteps: 8 },
): Promise<Map<string, TokenEvent[]>> {
  const events = new Map<string, TokenEvent[]>(reqs.map((r) => [r.id, []]));
  let open = reqs.length;
  let runner!: Runner;
  const done = new Promise<void>((resolve) => {
    runner = new Runner(engine, (id, ev) => {
      events.get(id)!.push(ev);
      onEvent?.(id, ev, runner);
      if (ev.finishReason && --open === 0) resolve();
    }, runnerOpts);
  });
  const loop = runner.run();
  for (const r of reqs) runner.submit(r);
  await done;
  runner.close();
  await loop;
  return events;
}
