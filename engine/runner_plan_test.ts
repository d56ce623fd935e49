import assert from "node:assert/strict";
import { planRoundSteps } from "./runner.ts";

const base = { maxSteps: 32, busySteps: 4, busy: false, msPerStep: null, targetMs: 50, remaining: 1000 };

Deno.test("planRoundSteps sizes a round to the target time within its caps", () => {
  assert.equal(planRoundSteps(base), 4, "no measurement yet: a short first round");
  assert.equal(planRoundSteps({ ...base, msPerStep: 1.25 }), 32, "fast GPU: capped by maxSteps");
  assert.equal(planRoundSteps({ ...base, msPerStep: 5 }), 10);
  assert.equal(planRoundSteps({ ...base, msPerStep: 400 }), 1, "slow device: one step, prompt cancels");
  assert.equal(planRoundSteps({ ...base, msPerStep: 1.25, busy: true }), 4, "others wait: the busy cap");
  assert.equal(planRoundSteps({ ...base, msPerStep: 1.25, remaining: 3 }), 3, "never past the budget");
  assert.equal(planRoundSteps({ ...base, msPerStep: 1.25, remaining: 0 }), 1);
  assert.equal(planRoundSteps({ ...base, msPerStep: 0 }), 4, "a zero measurement is ignored");
});
