import assert from "node:assert/strict";
import { join } from "node:path";
import {
  isQuantizedLinear,
  type ModelConfig,
  parseGenerationConfig,
  parseModelConfig,
  qtipLinearK,
} from "./model_config.ts";
import { fixturesDir, noFixtures } from "../test/support/mod.ts";

const SRC = `config.json in "models/x"`;

/** A Llama 3.1 8B-like config (dims shrunk) plus HYB quip_params. */
function base(): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 512,
    intermediate_size: 1792,
    num_hidden_layers: 3,
    num_attention_heads: 8,
    num_key_value_heads: 2,
    vocab_size: 1000,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    rope_scaling: {
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
      rope_type: "llama3",
    },
    max_position_embeddings: 131072,
    bos_token_id: 128000,
    eos_token_id: [128001, 128008, 128009],
    hidden_act: "silu",
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    some_future_field: { anything: true },
  };
}

function hyb(): Record<string, unknown> {
  return {
    codebook: "bitshift",
    codebook_version: 0,
    L: 16,
    K: 2,
    V: 2,
    tlut_bits: 9,
    decode_mode: "quantlut_sym",
    td_x: 16,
    td_y: 16,
    split_for_tp: false,
    skip_list: null,
  };
}

function withQuip(patch: Record<string, unknown>): Record<string, unknown> {
  return { ...base(), quip_params: { ...hyb(), ...patch } };
}

Deno.test("parseModelConfig() maps HF field names and fills defaults", () => {
  const c = parseModelConfig(base(), SRC);
  assert.equal(c.dim, 512);
  assert.equal(c.hiddenDim, 1792);
  assert.equal(c.nLayers, 3);
  assert.equal(c.nHeads, 8);
  assert.equal(c.nKvHeads, 2);
  assert.equal(c.headDim, 64); // 512 / 8
  assert.equal(c.vocabSize, 1000);
  assert.equal(c.normEps, 1e-5);
  assert.equal(c.ropeTheta, 500000);
  assert.deepEqual(c.ropeScaling, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  assert.equal(c.maxPositionEmbeddings, 131072);
  assert.equal(c.bosTokenId, 128000);
  assert.deepEqual(c.eosTokenIds, [128001, 128008, 128009]);
  assert.equal(c.torchDtype, "bfloat16");
  assert.equal(c.quant, null);
  assert.deepEqual(c.warnings, []);

  const bare = base();
  for (const k of ["num_key_value_heads", "rope_theta", "rope_scaling", "eos_token_id", "bos_token_id"]) {
    delete bare[k];
  }
  const d = parseModelConfig({ ...bare, eos_token_id: 2 }, SRC);
  assert.equal(d.nKvHeads, 8);
  assert.equal(d.ropeTheta, 10000);
  assert.equal(d.ropeScaling, null);
  assert.deepEqual(d.eosTokenIds, [2]);
  assert.equal(d.bosTokenId, null);
  assert.equal(parseModelConfig({ ...base(), head_dim: 128 }, SRC).headDim, 128);
});

Deno.test("parseModelConfig() reads rope scaling from the legacy `type` key and from rope_parameters", () => {
  const legacy = base();
  legacy.rope_scaling = {
    type: "llama3",
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  assert.equal(parseModelConfig(legacy, SRC).ropeScaling?.factor, 8);

  const v5 = base();
  delete v5.rope_theta;
  delete v5.rope_scaling;
  v5.rope_parameters = {
    rope_type: "llama3",
    rope_theta: 500000,
    factor: 32,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  const c = parseModelConfig(v5, SRC);
  assert.equal(c.ropeTheta, 500000);
  assert.equal(c.ropeScaling?.factor, 32);
  v5.rope_parameters = { rope_type: "default", rope_theta: 10000 };
  assert.equal(parseModelConfig(v5, SRC).ropeScaling, null);
  assert.equal(parseModelConfig(v5, SRC).ropeTheta, 10000);
});

Deno.test("parseModelConfig() parses quip_params into QtipConfig", () => {
  const c = parseModelConfig(withQuip({ skip_list: ["0_q", "2_down"], K_v_proj: 4 }), SRC);
  assert.deepEqual(c.quant, {
    codebook: "bitshift",
    codebookVersion: 0,
    L: 16,
    K: 2,
    kVProj: 4,
    V: 2,
    tlutBits: 9,
    decodeMode: "quantlut_sym",
    tdX: 16,
    tdY: 16,
    splitForTp: false,
    skipList: ["0_q", "2_down"],
  });
  assert.deepEqual(c.warnings, []);
  assert.equal(isQuantizedLinear(c, 0, "q_proj"), false);
  assert.equal(isQuantizedLinear(c, 1, "q_proj"), true);
  assert.equal(isQuantizedLinear(c, 0, "k_proj"), true);
  assert.equal(isQuantizedLinear(c, 2, "down_proj"), false);
  assert.equal(qtipLinearK(c.quant!, "v_proj"), 4);
  assert.equal(qtipLinearK(c.quant!, "o_proj"), 2);
  assert.equal(isQuantizedLinear(parseModelConfig(base(), SRC), 0, "q_proj"), false);

  const mad = parseModelConfig(withQuip({ decode_mode: "1mad", V: 1, tlut_bits: 0, K: 3 }), SRC).quant!;
  assert.equal(mad.decodeMode, "1mad");
  assert.equal(mad.kVProj, 3);
  assert.equal(parseModelConfig(withQuip({ decode_mode: "3inst", V: 1, tlut_bits: 0 }), SRC).quant!.V, 1);
});

Deno.test("parseModelConfig() warns about unknown quip_params fields, odd K and skip_list entries", () => {
  const c = parseModelConfig(
    withQuip({ new_knob: 1, K: 3, skip_list: ["self_attn.q_proj", "7_up", "1_gate"] }),
    SRC,
  );
  assert.equal(c.quant!.K, 3);
  assert.equal(c.warnings.length, 3, c.warnings.join("\n"));
  assert.match(c.warnings[0], /unknown field "quip_params.new_knob"/);
  assert.match(
    c.warnings.join("\n"),
    /entry "self_attn.q_proj" is not "<layer>_<q\|k\|v\|o\|gate\|up\|down>"/,
  );
  assert.match(c.warnings.join("\n"), /entry "7_up" names layer 7, but the model has 3 layers/);
});

// Each broken config must fail naming the file, the field, what was expected and what was found.
const broken: { what: string; config: () => unknown; message: RegExp }[] = [
  {
    what: "a non-object",
    config: () => [1],
    message: /^Cannot load config.json in "models\/x": expected a JSON object, got \[1\]$/,
  },
  {
    what: "another architecture",
    config: () => ({ ...base(), architectures: ["MistralForCausalLM"], model_type: "mistral" }),
    message:
      /^Unsupported architecture in config.json in "models\/x": expected LlamaForCausalLM \(or model_type "llama"\), got architectures \["MistralForCausalLM"\], model_type "mistral"$/,
  },
  {
    what: "a missing hidden_size",
    config: () => ({ ...base(), hidden_size: undefined }),
    message: /"hidden_size" must be a positive integer, got nothing$/,
  },
  {
    what: "a string vocab_size",
    config: () => ({ ...base(), vocab_size: "1000" }),
    message: /"vocab_size" must be a positive integer, got "1000"$/,
  },
  {
    what: "heads not divisible by kv heads",
    config: () => ({ ...base(), num_key_value_heads: 3 }),
    message: /"num_key_value_heads" must be a divisor of num_attention_heads \(8\), got 3$/,
  },
  {
    what: "hidden_size not divisible by heads without head_dim",
    config: () => ({ ...base(), hidden_size: 500 }),
    message: /"hidden_size" \(500\) must be divisible by "num_attention_heads" \(8\) when head_dim is absent/,
  },
  {
    what: "an odd head_dim",
    config: () => ({ ...base(), head_dim: 63 }),
    message: /"head_dim" must be even \(RoPE rotates pairs\), got 63$/,
  },
  {
    what: "attention_bias",
    config: () => ({ ...base(), attention_bias: true }),
    message: /"attention_bias" must be false \(Llama linears have no bias\), got true$/,
  },
  {
    what: "mlp_bias",
    config: () => ({ ...base(), mlp_bias: true }),
    message: /"mlp_bias" must be false/,
  },
  {
    what: "another activation",
    config: () => ({ ...base(), hidden_act: "gelu" }),
    message: /"hidden_act" must be "silu", got "gelu"$/,
  },
  {
    what: "linear rope scaling",
    config: () => ({ ...base(), rope_scaling: { type: "linear", factor: 2 } }),
    message:
      /"rope_scaling.type" must be "llama3" \(the only supported rope scaling; or no rope_scaling at all\), got "linear"$/,
  },
  {
    what: "yarn rope scaling",
    config: () => ({ ...base(), rope_scaling: { rope_type: "yarn", factor: 4 } }),
    message: /"rope_scaling.rope_type" must be "llama3".*got "yarn"$/,
  },
  {
    what: "llama3 scaling without factors",
    config: () => ({ ...base(), rope_scaling: { rope_type: "llama3", factor: 8 } }),
    message: /"rope_scaling.low_freq_factor" must be a positive number, got nothing$/,
  },
  {
    what: "a non-bitshift codebook",
    config: () => withQuip({ codebook: "e8p12" }),
    message: /"quip_params.codebook" must be "bitshift" \(QTIP's trellis code\), got "e8p12"$/,
  },
  {
    what: "decode_mode lut",
    config: () => withQuip({ decode_mode: "lut" }),
    message: /"quip_params.decode_mode" must be one of "quantlut_sym", "1mad", "3inst", got "lut"$/,
  },
  {
    what: "decode_mode 2mad",
    config: () => withQuip({ decode_mode: "2mad", V: 1 }),
    message: /"quip_params.decode_mode" must be one of .*, got "2mad"$/,
  },
  {
    what: "L other than 16",
    config: () => withQuip({ L: 12 }),
    message: /"quip_params.L" must be 16 \(the only trellis state size supported\), got 12$/,
  },
  {
    what: "K above what the kernels decode",
    config: () => withQuip({ K: 6 }),
    message:
      /"quip_params.K" must be an integer in 2..4 \(the bits per weight the QTIP kernels decode\), got 6$/,
  },
  {
    what: "K of 1",
    config: () => withQuip({ K: 1 }),
    message: /"quip_params.K" must be an integer in 2..4 .*, got 1$/,
  },
  {
    what: "K_v_proj outside 2..4",
    config: () => withQuip({ K_v_proj: 5 }),
    message: /"quip_params.K_v_proj" must be an integer in 2..4 .*, got 5$/,
  },
  {
    what: "V = 1 with quantlut_sym",
    config: () => withQuip({ V: 1 }),
    message: /"quip_params.V" must be 2 for decode_mode "quantlut_sym", got 1$/,
  },
  {
    what: "V = 2 with 1mad",
    config: () => withQuip({ decode_mode: "1mad", V: 2 }),
    message: /"quip_params.V" must be 1 for decode_mode "1mad", got 2$/,
  },
  {
    what: "td_x other than 16",
    config: () => withQuip({ td_x: 32 }),
    message: /"quip_params.td_x" must be 16, got 32$/,
  },
  {
    what: "td_y other than 16",
    config: () => withQuip({ td_y: 8 }),
    message: /"quip_params.td_y" must be 16, got 8$/,
  },
  {
    what: "tlut_bits out of range for quantlut_sym",
    config: () => withQuip({ tlut_bits: 16 }),
    message: /"quip_params.tlut_bits" must be an integer in 1..15, got 16$/,
  },
  {
    what: "a skip_list that is not strings",
    config: () => withQuip({ skip_list: [0] }),
    message: /"quip_params.skip_list" must be a list of names like "0_q" or null, got \[0\]$/,
  },
  {
    what: "a quantized intermediate_size not divisible by 16",
    config: () => ({ ...withQuip({}), intermediate_size: 1800 }),
    message: /QTIP tiles are 16 x 16, so intermediate_size must be divisible by 16, got 1800$/,
  },
];

for (const b of broken) {
  Deno.test(`parseModelConfig() rejects ${b.what}`, () => {
    assert.throws(
      () => parseModelConfig(b.config(), SRC),
      (e: Error) => {
        assert.ok(e.message.includes(SRC), e.message);
        assert.match(e.message, b.message);
        return true;
      },
    );
  });
}

Deno.test("parseGenerationConfig() reads sampling defaults and validates them", () => {
  const src = `generation_config.json in "m"`;
  const g = parseGenerationConfig(
    {
      bos_token_id: 1,
      eos_token_id: [2, 3],
      pad_token_id: 0,
      do_sample: true,
      temperature: 0.6,
      top_p: 0.9,
      top_k: 50,
      max_length: 4096,
      extra: 1,
    },
    src,
  );
  assert.deepEqual(g, {
    bosTokenId: 1,
    eosTokenIds: [2, 3],
    padTokenId: 0,
    doSample: true,
    temperature: 0.6,
    topP: 0.9,
    topK: 50,
    maxLength: 4096,
  });
  assert.deepEqual(parseGenerationConfig({}, src), { eosTokenIds: [] });
  assert.throws(
    () => parseGenerationConfig({ top_p: 1.5 }, src),
    /Cannot load generation_config.json in "m": "top_p" must be a number in 0..1, got 1.5$/,
  );
  assert.throws(
    () => parseGenerationConfig({ eos_token_id: "2" }, src),
    /"eos_token_id" must be a token id or a list of token ids, got "2"$/,
  );
  assert.throws(
    () => parseGenerationConfig({ temperature: -1 }, src),
    /"temperature" must be a number >= 0, got -1$/,
  );
});

async function loadFixtureConfig(dir: string, name: string): Promise<ModelConfig> {
  const json = JSON.parse(await Deno.readTextFile(join(dir, name, "config.json")));
  return parseModelConfig(json, `config.json in "${name}"`);
}

Deno.test("parseModelConfig() reads the fixture configs as their README describes them", {
  ignore: noFixtures(),
}, async () => {
  const dir = fixturesDir()!;
  const l2 = await loadFixtureConfig(dir, "llama2-style-fp16");
  assert.deepEqual(
    [l2.dim, l2.nHeads, l2.nKvHeads, l2.headDim, l2.nLayers, l2.hiddenDim, l2.vocabSize, l2.ropeTheta],
    [256, 2, 2, 128, 4, 5504, 4032, 10000],
  );
  assert.equal(l2.ropeScaling, null);
  assert.equal(l2.tieWordEmbeddings, false);
  assert.equal(l2.quant, null);

  const l31 = await loadFixtureConfig(dir, "llama31-style-fp16");
  assert.deepEqual(
    [
      l31.dim,
      l31.nHeads,
      l31.nKvHeads,
      l31.headDim,
      l31.nLayers,
      l31.hiddenDim,
      l31.vocabSize,
      l31.ropeTheta,
    ],
    [256, 4, 2, 64, 6, 896, 8192, 500000],
  );
  assert.deepEqual(l31.ropeScaling, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  assert.equal(l31.maxPositionEmbeddings, 131072);

  for (const name of ["llama2-style-qtip-2bit-hyb", "llama31-style-qtip-2bit-hyb"]) {
    const q = await loadFixtureConfig(dir, name);
    assert.equal(q.nameOrPath, name.replace("qtip-2bit-hyb", "fp16"));
    assert.deepEqual(q.warnings, []);
    const { decodeMode, L, K, V, tlutBits, tdX, tdY, skipList } = q.quant!;
    assert.deepEqual({ decodeMode, L, K, V, tlutBits, tdX, tdY, skipList }, {
      decodeMode: "quantlut_sym",
      L: 16,
      K: 2,
      V: 2,
      tlutBits: 9,
      tdX: 16,
      tdY: 16,
      skipList: [],
    });
  }
});
