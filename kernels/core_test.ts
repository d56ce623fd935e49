// The kernel core's capture/replay: a captured list recorded into later passes does exactly what the direct
// dispatches do, and an encoder that touches the pass itself during capture fails loudly.
import assert from "node:assert/strict";
import { rmsnorm } from "./rmsnorm/rmsnorm.ts";
import { rmsnormRef } from "./rmsnorm/rmsnorm_ref.ts";
import {
  noGpu,
  randomF16,
  randomF32,
  readF32,
  run,
  scratch,
  testKernels,
  upload,
} from "../test/support/mod.ts";
import { KernelError } from "./core.ts";

const NO_GPU = await noGpu();

Deno.test({
  name: "capture() + replay() give the direct dispatches' results, replayed any number of times",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    const dim = 96, rows = 3;
    const x = randomF32(rows * dim, 1);
    const w = randomF16(dim, 2, 0.5, 1.5);
    const xb = upload(k, x), wb = upload(k, w.bits);
    const mid = scratch(k, rows * dim * 4), out = scratch(k, rows * dim * 4);
    // Two chained steps: mid = rmsnorm(x), out = rmsnorm(mid).
    const before = k.dispatches;
    const list = k.capture((pass) => {
      rmsnorm(k, pass, { x: xb, weight: wb, out: mid, rows, dim, eps: 1e-5 });
      rmsnorm(k, pass, { x: mid, weight: wb, out, rows, dim, eps: 1e-5 });
    });
    assert.equal(list.length, 2);
    assert.equal(k.dispatches, before, "capture records nothing by itself");
    const want = rmsnormRef(rmsnormRef(x, w.values, rows, dim, 1e-5), w.values, rows, dim, 1e-5);
    for (let i = 0; i < 2; i++) {
      await run(k, (pass) => k.replay(pass, list));
      const got = await readF32(k, out, rows * dim);
      for (let j = 0; j < want.length; j++) {
        assert.ok(
          Math.abs(got[j] - want[j]) < 1e-4 * (1 + Math.abs(want[j])),
          `replay ${i}: [${j}] ${got[j]} vs ${want[j]}`,
        );
      }
    }
    assert.equal(k.dispatches, before + 4);
  },
});

Deno.test({
  name: "capture() refuses an encoder that uses the pass directly, and does not nest",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    assert.throws(() => k.capture((pass) => pass.end()), KernelError);
    assert.throws(() => k.capture(() => k.capture(() => {})), /does not nest/);
  },
});
