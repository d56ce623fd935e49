// The benchmark driver: flag parsing and its errors, the table printer, and a tiny kernels run through both
// timers on whatever WebGPU adapter there is (speed is not asserted, only that the figures are sane).
import assert from "node:assert/strict";
import { parseBenchArgs, table } from "./bench.ts";
import { runKernelsBench } from "./kernels_bench.ts";
import { openGpu } from "../engine/gpu.ts";
import { noGpu, REQUIRE_GPU } from "../test/support/mod.ts";

const NO_GPU = await noGpu();
/** The timestamp timer needs the adapter's timestamp-query feature (ignored without it, unless required). */
const NO_TIMESTAMPS = !REQUIRE_GPU &&
  (NO_GPU || !(await navigator.gpu.requestAdapter())?.features.has("timestamp-query"));

Deno.test("parseBenchArgs() picks quick defaults and parses lists", () => {
  const q = parseBenchArgs(["decode", "--quick"]);
  assert.deepEqual(q.benches, ["decode"]);
  assert.deepEqual(q.archs, ["tiny"]);
  assert.deepEqual(q.sequences, [1, 4, 8]);
  const a = parseBenchArgs([
    "all",
    "--arch",
    "llama2-7b,llama31-8b",
    "--code=hyb,f16",
    "--shapes",
    "4096x4096",
  ]);
  assert.deepEqual(a.benches, ["kernels", "decode", "prefill", "batch"]);
  assert.deepEqual(a.archs, ["llama2-7b", "llama31-8b"]);
  assert.deepEqual(a.codes, ["HYB", "F16"]);
  assert.deepEqual(a.shapes, [[4096, 4096]]);
  assert.deepEqual(a.lengths, [512, 2048, 8192]);
});

Deno.test("parseBenchArgs() names the bad flag and what it expected", () => {
  const cases: [string[], RegExp][] = [
    [["speed"], /Unknown benchmark "speed": expected kernels, decode, prefill, batch or all/],
    [["kernels", "--shapes", "100x4096"], /Bad --shapes value "100x4096": expected MxN .*multiples of 16/],
    [["decode", "--arch", "gpt2"], /Bad --arch value "gpt2": expected llama2-7b/],
    [["kernels", "--bits", "8"], /Bad --bits value "8": expected 2, 3 or 4/],
    [["kernels", "--timer", "cpu"], /Bad --timer "cpu": expected timestamp or wall/],
    [["batch", "--sequences", "0"], /Bad --sequences value "0"/],
    [["batch", "--warp"], /Unknown flag "--warp"/],
  ];
  for (const [args, re] of cases) assert.throws(() => parseBenchArgs(args), re);
});

Deno.test("table() right-aligns every column to its widest cell", () => {
  const t = table([{ a: "x", b: 1.5 }, { a: "long", b: 22 }], [["a", "name", String], [
    "b",
    "v",
    (x) => String(x),
  ]]);
  assert.equal(t, "name    v\n----  ---\n   x  1.5\nlong   22");
});

for (const timer of ["timestamp", "wall"] as const) {
  Deno.test({
    name: `runKernelsBench() times a QTIP and an fp16 matvec with the ${timer} timer`,
    ignore: timer === "timestamp" ? NO_TIMESTAMPS : NO_GPU,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const gpu = await openGpu();
      try {
        if (timer === "timestamp") {
          assert.ok(gpu.device.features.has("timestamp-query"), "the device lacks timestamp-query");
        }
        const r = await runKernelsBench(gpu.kernels, {
          codes: ["HYB", "F16"],
          bits: [2],
          shapes: [[256, 512]],
          tokens: [1, 2],
          tunes: [{ wg: 128, repShift: 2, unroll: 1, subgroups: false }],
          rotateBytes: 1 << 20,
          streamBytes: 4 << 20,
          targetMs: 5,
          warmupMs: 0,
          timer,
        });
        assert.equal(r.timer, timer);
        assert.ok(
          Number.isFinite(r.streamReadGBps) && r.streamReadGBps > 0,
          `stream ${r.streamReadGBps} GB/s`,
        );
        assert.deepEqual(r.rows.map((x) => [x.code, x.bits, x.m, x.n, x.tokens, x.tune]), [
          ["HYB", 2, 256, 512, 1, "wg128 rep2 u1 nosg"],
          ["HYB", 2, 256, 512, 2, "wg128 rep2 u1 nosg"],
          ["F16", 16, 256, 512, 1, "default"],
          ["F16", 16, 256, 512, 2, "default"],
        ]);
        assert.deepEqual(r.rows.map((x) => x.weightBytes), [
          64 * 512,
          64 * 512,
          256 * 512 * 2,
          256 * 512 * 2,
        ]);
        for (const row of r.rows) {
          assert.ok(row.us > 0 && Number.isFinite(row.us), `${row.code}: ${row.us} us`);
          assert.ok(row.copies >= 2);
          assert.ok(Math.abs(row.gbps - row.weightBytes / (row.us * 1e-6) / 1e9) < 1e-9 * row.gbps + 1e-12);
          const flops = (2 * row.tokens * row.m * row.n) / (row.us * 1e-6) / 1e12;
          assert.ok(Math.abs(row.tflops - flops) < 1e-9 * flops + 1e-12);
        }
      } finally {
        gpu.device.destroy();
      }
    },
  });
}
