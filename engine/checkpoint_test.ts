import assert from "node:assert/strict";
import { join } from "node:path";
import { expectTensor, openCheckpoint } from "./checkpoint.ts";
import { resolveTokenizerDir } from "../text/mod.ts";
import { fixturesDir, noFixtures } from "../test/support/mod.ts";

const CONFIG = {
  architectures: ["LlamaForCausalLM"],
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  vocab_size: 8,
  rms_norm_eps: 1e-5,
};

type Spec = Record<string, { dtype: string; shape: number[] }>;
const BYTES: Record<string, number> = { F16: 2, F32: 4, I16: 2 };

/** A valid safetensors file holding `spec`'s tensors back to back, filled with a ramp. */
function safetensors(spec: Spec): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, { dtype, shape }] of Object.entries(spec)) {
    const n = shape.reduce((a, b) => a * b, 1) * BYTES[dtype];
    header[name] = { dtype, shape, data_offsets: [off, off + n] };
    off += n;
  }
  const text = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + text.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  for (let i = 0; i < off; i++) out[8 + text.length + i] = (i * 13) & 255;
  return out;
}

/** Writes a checkpoint directory (name -> text or bytes) and runs `fn` on it. */
async function withDir(files: Record<string, string | Uint8Array>, fn: (dir: string) => Promise<void>) {
  const root = await Deno.makeTempDir();
  try {
    const dir = join(root, "model");
    await Deno.mkdir(dir);
    for (const [name, content] of Object.entries(files)) {
      if (typeof content === "string") await Deno.writeTextFile(join(dir, name), content);
      else await Deno.writeFile(join(dir, name), content);
    }
    await fn(dir);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

const config = JSON.stringify(CONFIG);
const shardA = {
  "model.embed_tokens.weight": { dtype: "F16", shape: [8, 16] },
  "model.norm.weight": { dtype: "F16", shape: [16] },
};
const shardB = { "lm_head.weight": { dtype: "F32", shape: [16, 8] } };

Deno.test("openCheckpoint() merges several *.safetensors files into one index", async () => {
  await withDir({
    "config.json": config,
    "a.safetensors": safetensors(shardA),
    "b.safetensors": safetensors(shardB),
  }, async (dir) => {
    const ckpt = await openCheckpoint(dir);
    try {
      assert.equal(ckpt.files.length, 2);
      assert.deepEqual(ckpt.names(), ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"]);
      assert.equal(ckpt.totalBytes, 8 * 16 * 2 + 16 * 2 + 16 * 8 * 4);
      assert.equal(ckpt.generation, undefined);
      assert.ok(ckpt.tensor("lm_head.weight").file.path.endsWith("b.safetensors"));
      assert.ok(ckpt.has("model.norm.weight") && !ckpt.has("nope"));
      const bytes = await ckpt.readTensor("model.norm.weight");
      // norm follows the 256-byte embedding in a.safetensors; the ramp is (i * 13) & 255.
      assert.deepEqual([...bytes.subarray(0, 3)], [(256 * 13) & 255, (257 * 13) & 255, (258 * 13) & 255]);
      let n = 0;
      for await (const { bytes: b } of ckpt.readChunks("lm_head.weight", 100)) n += b.byteLength;
      assert.equal(n, 512);
      assert.throws(
        () => ckpt.tensor("nope"),
        /Cannot load tensor "nope": checkpoint ".*model" has no such tensor \(3 tensors in 2 files\)/,
      );
    } finally {
      ckpt.close();
    }
  });
});

Deno.test("expectTensor() names the tensor with the expected and the found dtype and shape", async () => {
  await withDir(
    { "config.json": config, "model.safetensors": safetensors({ ...shardA, ...shardB }) },
    async (dir) => {
      const ckpt = await openCheckpoint(dir);
      try {
        assert.equal(ckpt.expectTensor("lm_head.weight", ["F16", "F32"], [16, 8]).dtype, "F32");
        assert.throws(
          () => ckpt.expectTensor("lm_head.weight", ["F16"], [8, 16]),
          /^Error: Cannot load tensor "lm_head.weight": expected F16 \[8, 16\], got F32 \[16, 8\]$/,
        );
        assert.throws(
          () => ckpt.expectTensor("model.norm.weight", ["F16"], [1, 16]),
          /expected F16 \[1, 16\], got F16 \[16\]$/,
        );
        assert.throws(
          () => expectTensor(ckpt.tensor("model.norm.weight"), ["BF16", "F32"], [16]),
          /expected BF16 or F32 \[16\], got F16 \[16\]/,
        );
      } finally {
        ckpt.close();
      }
    },
  );
});

function index(map: Record<string, string>): string {
  return JSON.stringify({ metadata: { total_size: 0 }, weight_map: map });
}

const broken: { what: string; files: Record<string, string | Uint8Array>; message: RegExp }[] = [
  {
    what: "a directory without config.json",
    files: { "model.safetensors": safetensors(shardB) },
    message: /Cannot open checkpoint ".*model": config.json is missing/,
  },
  {
    what: "a config.json that is not JSON",
    files: { "config.json": "{hidden_size: 1", "model.safetensors": safetensors(shardB) },
    message: /Cannot parse ".*model\/config.json": invalid JSON/,
  },
  {
    what: "an unsupported config",
    files: {
      "config.json": JSON.stringify({ ...CONFIG, hidden_act: "gelu" }),
      "model.safetensors": safetensors(shardB),
    },
    message: /Cannot load config.json in ".*model": "hidden_act" must be "silu", got "gelu"/,
  },
  {
    what: "a directory without weights",
    files: { "config.json": config, "pytorch_model.bin": "x" },
    message:
      /no \*.safetensors files and no model.safetensors.index.json \(pytorch_model.bin is there: convert it/,
  },
  {
    what: "an index naming a missing shard",
    files: {
      "config.json": config,
      "model-00001-of-00002.safetensors": safetensors(shardA),
      "model.safetensors.index.json": index({
        "model.norm.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors",
      }),
    },
    message:
      /shard "model-00002-of-00002.safetensors" named by model.safetensors.index.json is missing \(1 tensors map to it\)/,
  },
  {
    what: "an index mapping a tensor to the wrong shard",
    files: {
      "config.json": config,
      "a.safetensors": safetensors(shardA),
      "b.safetensors": safetensors(shardB),
      "model.safetensors.index.json": index({ "lm_head.weight": "a.safetensors" }),
    },
    message: /maps tensor "lm_head.weight" to "a.safetensors", which does not contain it/,
  },
  {
    what: "an index without weight_map",
    files: { "config.json": config, "model.safetensors.index.json": "{}" },
    message: /model.safetensors.index.json must hold "weight_map"/,
  },
  {
    what: "the same tensor in two files",
    files: {
      "config.json": config,
      "a.safetensors": safetensors(shardB),
      "b.safetensors": safetensors(shardB),
    },
    message: /tensor "lm_head.weight" is in both "a.safetensors" and "b.safetensors"/,
  },
  {
    what: "a truncated shard",
    files: { "config.json": config, "model.safetensors": safetensors(shardA).subarray(0, 200) },
    message: /Cannot read ".*model.safetensors": tensor "model.*" has data_offsets \[\d+, \d+\] past the end/,
  },
  {
    what: "a shard with a bad JSON header",
    files: {
      "config.json": config,
      "model.safetensors": new Uint8Array([3, 0, 0, 0, 0, 0, 0, 0, 123, 123, 125]),
    },
    message: /Cannot read ".*model.safetensors": the header is not valid JSON/,
  },
];

for (const b of broken) {
  Deno.test(`openCheckpoint() rejects ${b.what}`, async () => {
    await withDir(b.files, async (dir) => {
      await assert.rejects(() => openCheckpoint(dir), b.message);
    });
  });
}

Deno.test("openCheckpoint() rejects a missing directory and a file path", async () => {
  await assert.rejects(
    () => openCheckpoint("/nonexistent/trellis-model"),
    /^Error: Cannot open checkpoint "\/nonexistent\/trellis-model": the directory does not exist$/,
  );
  await withDir({ "config.json": config }, async (dir) => {
    await assert.rejects(
      () => openCheckpoint(join(dir, "config.json")),
      /expected a directory, found a file/,
    );
  });
});

Deno.test("openCheckpoint() opens the sharded llama2-style fixture through its index", {
  ignore: noFixtures(),
}, async () => {
  const fx = fixturesDir()!;
  const dir = join(fx, "llama2-style-fp16");
  const ckpt = await openCheckpoint(dir);
  try {
    const idx = JSON.parse(await Deno.readTextFile(join(dir, "model.safetensors.index.json")));
    assert.equal(ckpt.files.length, 3);
    assert.equal(ckpt.names().length, Object.keys(idx.weight_map).length);
    assert.equal(ckpt.totalBytes, idx.metadata.total_size);
    assert.equal(ckpt.config.nLayers, 4);
    assert.deepEqual(ckpt.generation?.eosTokenIds, [2]);
    assert.equal(ckpt.generation?.temperature, 0.6);
    for (const [name, shard] of Object.entries(idx.weight_map)) {
      assert.ok(ckpt.tensor(name).file.path.endsWith(shard as string), name);
    }
    const c = ckpt.config;
    ckpt.expectTensor("lm_head.weight", ["F16"], [c.vocabSize, c.dim]);
    ckpt.expectTensor("model.layers.3.mlp.down_proj.weight", ["F16"], [c.dim, c.hiddenDim]);
    // sha256 of lm_head.weight as computed by a separate Python reader.
    const bytes = await ckpt.readTensor("lm_head.weight");
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    assert.equal(
      [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
      "c05ed11dbd8ef4547f8217b09a2facdcd836774fc5d6c7e6b4e665972668aa4c",
    );
    assert.equal(await resolveTokenizerDir({ modelDir: dir, nameOrPath: c.nameOrPath }), dir);
  } finally {
    ckpt.close();
  }
});

Deno.test("openCheckpoint() opens the single-file and QTIP fixtures; QTIP ones find their fp16 tokenizer", {
  ignore: noFixtures(),
}, async () => {
  const fx = fixturesDir()!;
  const fp16 = await openCheckpoint(join(fx, "llama31-style-fp16"));
  try {
    assert.equal(fp16.files.length, 1);
    assert.equal(fp16.names().length, 2 + 1 + 6 * 9);
    assert.deepEqual(fp16.generation?.eosTokenIds, [7937, 7944, 7945]);
  } finally {
    fp16.close();
  }
  for (const style of ["llama2-style", "llama31-style"]) {
    const dir = join(fx, `${style}-qtip-2bit-hyb`);
    const q = await openCheckpoint(dir);
    try {
      const c = q.config;
      assert.equal(c.quant?.decodeMode, "quantlut_sym");
      const m = c.nKvHeads * c.headDim, n = c.dim;
      q.expectTensor("model.layers.0.self_attn.k_proj.trellis", ["I16"], [
        (m / 16) * (n / 16),
        (256 * c.quant!.K) / 16,
      ]);
      q.expectTensor("model.layers.0.self_attn.k_proj.tlut", ["F16"], [512, 2]);
      // README: rcp = 0 (no tensor-parallel split) and one tlut shared by every linear.
      assert.deepEqual(
        [...new BigInt64Array((await q.readTensor("model.layers.0.mlp.up_proj.rcp")).buffer)],
        [0n],
      );
      assert.deepEqual(
        await q.readTensor("model.layers.0.self_attn.q_proj.tlut"),
        await q.readTensor(`model.layers.${c.nLayers - 1}.mlp.down_proj.tlut`),
      );
      assert.equal(
        await resolveTokenizerDir({ modelDir: dir, nameOrPath: c.nameOrPath }),
        join(fx, `${style}-fp16`),
      );
    } finally {
      q.close();
    }
  }
});
