// Synthetic checkpoints open through the engine's own loader: the reader sees the official QTIP format
// (tensor names, dtypes, shapes, quip_params, shards + index), and the engine runs every code and bitrate
// to finite logits on whatever WebGPU adapter there is (lavapipe in CI).
import assert from "node:assert/strict";
import { join } from "node:path";
import { openCheckpoint } from "../engine/checkpoint.ts";
import { Engine } from "../engine/engine.ts";
import {
  ARCHS,
  parseSynthArgs,
  planTensors,
  shardTensors,
  SYNTH_CODES,
  synthCheckpoint,
  SynthError,
  tensorBytes,
} from "./synth.ts";
import { noGpu } from "../test/support/mod.ts";

const NO_GPU = await noGpu();

function f16(bytes: Uint8Array): Float32Array {
  return Float32Array.from(new Float16Array(bytes.slice().buffer));
}

Deno.test("planTensors() matches the published 7B shapes and byte counts", () => {
  const plans = planTensors({ arch: "llama2-7b", code: "HYB", bits: 2 });
  const byName = new Map(plans.map((p) => [p.name, p]));
  assert.deepEqual(byName.get("model.layers.31.mlp.down_proj.trellis")!.shape, [
    (4096 / 16) * (11008 / 16),
    32,
  ]);
  assert.deepEqual(byName.get("model.layers.0.self_attn.k_proj.tlut")!.shape, [512, 2]);
  assert.equal(byName.get("model.layers.0.self_attn.q_proj.SV")!.dtype, "F32");
  assert.deepEqual(byName.get("lm_head.weight")!.shape, [32000, 4096]);
  // 6.5e9 quantized weights at 2 bits: 1.62 GB of trellis, as the 1.9 GB/token (with lm_head) says.
  const trellis = plans.filter((p) => p.name.endsWith(".trellis")).reduce((s, p) => s + tensorBytes(p), 0);
  assert.equal(trellis, 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) * 2 / 8);
  // 1MAD/3INST carry no tlut (quantized_linear.py registers it only for LUT modes).
  const mad = planTensors({ arch: "llama31-8b", code: "1MAD", bits: 3, layers: 1 });
  assert.ok(!mad.some((p) => p.name.endsWith(".tlut")));
  assert.deepEqual(mad.find((p) => p.name.endsWith("k_proj.trellis"))!.shape, [
    (1024 / 16) * (4096 / 16),
    48,
  ]);
});

Deno.test("shardTensors() starts a new shard only when the next tensor would overflow", () => {
  const plans = planTensors({ arch: "tiny", code: "HYB", bits: 4 });
  const limit = 300_000;
  const shards = shardTensors(plans, limit);
  assert.ok(shards.length > 2);
  assert.deepEqual(shards.flat().map((p) => p.name), plans.map((p) => p.name));
  for (let i = 0; i < shards.length; i++) {
    const size = shards[i].reduce((s, p) => s + tensorBytes(p), 0);
    if (shards[i].length > 1) assert.ok(size <= limit, `shard ${i} holds ${size} bytes`);
    if (i + 1 < shards.length) assert.ok(size + tensorBytes(shards[i + 1][0]) > limit);
  }
});

Deno.test("synthCheckpoint() writes shards with an index that openCheckpoint reads tensor for tensor", async () => {
  const dir = await Deno.makeTempDir({ prefix: "synth_test_" });
  try {
    const res = await synthCheckpoint({
      arch: "tiny",
      code: "3INST",
      bits: 3,
      out: dir,
      shardBytes: 1 << 20,
    });
    assert.ok(res.files.length >= 2);
    const index = JSON.parse(await Deno.readTextFile(join(dir, "model.safetensors.index.json")));
    assert.equal(index.metadata.total_size, res.totalBytes);
    const ckpt = await openCheckpoint(dir);
    try {
      const plans = planTensors({ arch: "tiny", code: "3INST", bits: 3 });
      assert.deepEqual(ckpt.names(), plans.map((p) => p.name).sort());
      for (const p of plans) ckpt.expectTensor(p.name, [p.dtype], p.shape);
      assert.equal(ckpt.totalBytes, res.totalBytes);
      assert.equal(ckpt.config.quant?.decodeMode, "3inst");
      assert.equal(ckpt.config.quant?.K, 3);
      assert.equal(ckpt.config.quant?.V, 1);
      // Plausible values: SU is +-1, SV ~ 1/(std sqrt(n)), norms near 1, trellis words not constant.
      const su = f16(await ckpt.readTensor("model.layers.1.mlp.down_proj.SU"));
      assert.ok(su.every((v) => Math.abs(Math.abs(v) - 1) < 0.1));
      assert.ok(su.some((v) => v < 0) && su.some((v) => v > 0));
      const svBytes = await ckpt.readTensor("model.layers.1.mlp.down_proj.SV");
      const sv = new Float32Array(svBytes.slice().buffer);
      const meanAbs = sv.reduce((s, v) => s + Math.abs(v), 0) / sv.length;
      const want = 1 / (1.244 * Math.sqrt(896));
      assert.ok(Math.abs(meanAbs / want - 1) < 0.1, `SV mean |v| ${meanAbs}, expected ~${want}`);
      const norm = f16(await ckpt.readTensor("model.norm.weight"));
      assert.ok(norm.every((v) => v > 0.7 && v < 1.3));
      const words = new Uint16Array(
        (await ckpt.readTensor("model.layers.0.self_attn.q_proj.trellis")).buffer,
      );
      assert.ok(new Set(words).size > words.length / 4);
    } finally {
      ckpt.close();
    }
    // Rewriting needs --force; with it, the stale shards are replaced by a single file.
    await assert.rejects(
      () => synthCheckpoint({ arch: "tiny", code: "HYB", bits: 2, out: dir }),
      /already holds .*--force/,
    );
    const again = await synthCheckpoint({ arch: "tiny", code: "HYB", bits: 2, out: dir, force: true });
    assert.deepEqual(again.files, ["model.safetensors"]);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, [
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "special_tokens_map.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    assert.deepEqual(again.tokenizerFiles.sort(), names.slice(3));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseSynthArgs() rejects bad flags with what was expected", () => {
  const ok = parseSynthArgs([
    "--arch",
    "llama2-70b",
    "--code",
    "1mad",
    "--bits=4",
    "--out",
    "/x",
    "--layers",
    "2",
  ]);
  assert.deepEqual(
    { arch: ok.arch, code: ok.code, bits: ok.bits, layers: ok.layers },
    { arch: "llama2-70b", code: "1MAD", bits: 4, layers: 2 },
  );
  const bad: [string[], RegExp][] = [
    [
      ["--arch", "llama3-8b", "--code", "HYB", "--bits", "2", "--out", "/x"],
      /Unknown --arch "llama3-8b": expected/,
    ],
    [["--arch", "tiny", "--code", "HYB", "--bits", "5", "--out", "/x"], /--bits 5: expected 2, 3 or 4/],
    [["--arch", "tiny", "--code", "LUT", "--bits", "2", "--out", "/x"], /Unknown --code "LUT"/],
    [["--arch", "tiny", "--code", "HYB", "--bits", "2"], /Missing --out/],
    [
      ["--arch", "tiny", "--code", "HYB", "--bits", "2", "--out", "/x", "--layers", "3"],
      /--layers 3: expected .*1\.\.2/,
    ],
    [
      ["--arch", "tiny", "--code", "HYB", "--bits", "2", "--out", "/x", "--depth", "3"],
      /Unknown flag "--depth"/,
    ],
  ];
  for (const [args, re] of bad) {
    assert.throws(() => parseSynthArgs(args), (e) => e instanceof SynthError && re.test(e.message));
  }
});

for (const code of SYNTH_CODES) {
  for (const bits of [2, 3, 4] as const) {
    Deno.test({
      name: `synthCheckpoint() tiny ${code} ${bits}-bit loads in the Engine and gives finite logits`,
      ignore: NO_GPU,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        const dir = await Deno.makeTempDir({ prefix: `synth_${code}_${bits}_` });
        try {
          await synthCheckpoint({ arch: "tiny", code, bits, out: dir, seed: bits });
          const eng = await Engine.load({ modelDir: dir, maxContext: 64, maxSeqs: 1, progress: false });
          try {
            assert.equal(
              eng.weights.quantization,
              `qtip-${{ HYB: "quantlut_sym", "1MAD": "1mad", "3INST": "3inst" }[code]}-${bits}bit`,
            );
            const V = ARCHS.tiny.vocabSize;
            const logits = await eng.promptLogits([1, 17, 300, 999, 5], { lastOnly: true });
            assert.equal(logits.length, V);
            assert.ok(logits.every(Number.isFinite), "every logit is finite");
            let min = Infinity, max = -Infinity;
            for (const v of logits) [min, max] = [Math.min(min, v), Math.max(max, v)];
            // Unit-scale activations into a std-0.02 head: logits spread, neither collapsed nor exploded.
            assert.ok(max - min > 1e-3 && max - min < 100, `logit range ${min}..${max}`);
          } finally {
            eng.destroy();
          }
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      },
    });
  }
}
