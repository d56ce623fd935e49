// RoundClock: the idle-fraction arithmetic, and timestamped decode rounds on the embedded model (tokens
// unchanged, spans in submission order on the GPU's clock).
import assert from "node:assert/strict";
import { idleFraction } from "./round_clock.ts";
import { Engine } from "./engine.ts";
import { DEFAULT_MODEL_DIR } from "./defaults.ts";
import type { SamplingParams } from "./types.ts";
import { noGpu } from "../test/support/mod.ts";

const NO_GPU = await noGpu();
const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 0 };

Deno.test("idleFraction() is the window's share outside the rounds' spans", () => {
  // Busy 10 + 10 of a 25 ns window.
  const f = idleFraction([{ startNs: 100, endNs: 110 }, { startNs: 115, endNs: 125 }]);
  assert.ok(f !== null && Math.abs(f - 0.2) < 1e-12, `idle ${f}`);
  // Back to back: no idle time; out of order in the list: the same window.
  assert.equal(idleFraction([{ startNs: 20, endNs: 30 }, { startNs: 10, endNs: 20 }]), 0);
  assert.equal(idleFraction([{ startNs: 0, endNs: 10 }]), null);
  assert.equal(idleFraction([{ startNs: 5, endNs: 5 }, { startNs: 5, endNs: 5 }]), null);
});

Deno.test({
  name: "timestamped decode rounds give the reference tokens and ordered GPU spans",
  ignore: NO_GPU,
  async fn() {
    const ref = JSON.parse(await Deno.readTextFile(`${DEFAULT_MODEL_DIR}/reference.json`));
    const eng = await Engine.load({
      modelDir: DEFAULT_MODEL_DIR,
      maxSeqs: 1,
      maxContext: 64,
      progress: false,
      roundTimestamps: true,
    });
    try {
      if (!eng.gpu.device.features.has("timestamp-query")) {
        throw new Error("the adapter lacks timestamp-query: cannot test timestamped rounds");
      }
      const want: number[] = ref.fp32_runtime.greedy_32.p0_genesis.slice(0, 13);
      eng.addSequence({
        request: { id: "s", promptIds: ref.prompts.p0_genesis.ids, maxTokens: 16, sampling: GREEDY },
      });
      const ids = [...(await eng.prefill(["s"])).get("s")!.ids];
      // Two rounds in flight, as the Runner keeps them: the second submitted while the first is collected.
      const a = eng.prepareRound(["s"], 4);
      eng.submitRound(a);
      const b = eng.prepareRound(["s"], 8);
      const ra = await eng.collectRound(a, b);
      const rb = await eng.collectRound(b);
      ids.push(...ra.tokens.get("s")!.ids, ...rb.tokens.get("s")!.ids);
      assert.deepEqual(ids, want);
      const [sa, sb] = [ra.gpuSpan, rb.gpuSpan];
      assert.ok(sa && sb, "no GPU span");
      assert.ok(sa.endNs > sa.startNs && sb.endNs > sb.startNs, JSON.stringify([sa, sb]));
      assert.ok(sb.startNs >= sa.endNs, `rounds overlap: ${JSON.stringify([sa, sb])}`);
      const f = idleFraction([sa, sb]);
      assert.ok(f !== null && f >= 0 && f < 1, `idle ${f}`);
      eng.removeSequence("s");
    } finally {
      eng.destroy();
    }
  },
});
