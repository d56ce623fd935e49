// config.json -> ModelConfig and generation_config.json -> GenerationConfig, validated once at load
// time so nothing downstream re-checks shapes. Only Llama (LlamaForCausalLM) is supported, fp16 or
// QTIP-quantized (`quip_params`, as written by Cornell-RelaxML/qtip:quantize_llama/hfize_llama.py).
import { codeV, type QtipCode } from "../kernels/mod.ts";

export interface RopeScaling {
  /** Llama 3.1's frequency-dependent scaling (transformers `_compute_llama3_parameters`). */
  type: "llama3";
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/**
 * The checkpoint's `decode_mode` names of the QTIP codes we run, and our name for each (kernels/qtip's
 * QtipCode, used everywhere past this file). docs/QTIP_FORMAT.md describes the codes.
 */
export const QTIP_DECODE_MODES = { quantlut_sym: "hyb", "1mad": "1mad", "3inst": "3inst" } as const;
export type QtipDecodeMode = keyof typeof QTIP_DECODE_MODES;

/** The code of a QTIP checkpoint, in our vocabulary. */
export function qtipCode(quant: Pick<QtipConfig, "decodeMode">): QtipCode {
  return QTIP_DECODE_MODES[quant.decodeMode];
}

/** `quip_params`: the bitshift trellis code of every quantized linear (QTIP paper, section 3). */
export interface QtipConfig {
  codebook: "bitshift";
  codebookVersion: number;
  /** Trellis state bits; only 16 is supported. */
  L: number;
  /**
   * Bits per weight. The published checkpoints use 2..4; 1..8 is accepted (the code format allows
   * it) with a warning outside 2..4.
   */
  K: number;
  /** Bits per weight of v_proj (`K_v_proj`; defaults to K). */
  kVProj: number;
  /** Weights decoded per trellis state: 2 for quantlut_sym (HYB), 1 for 1mad and 3inst. */
  V: number;
  /** LUT index bits of quantlut_sym (its tlut is [2^tlutBits, V]); unused by 1mad/3inst. */
  tlutBits: number;
  /** The checkpoint's name of the code; `qtipCode()` gives ours. */
  decodeMode: QtipDecodeMode;
  /** Tile of one trellis sequence: tdX x tdY = 16 x 16. */
  tdX: number;
  tdY: number;
  splitForTp: boolean;
  /**
   * Linears left in fp16, written by the official code as `${layer}_${short}` with short one of
   * q, k, v, o, up, gate, down (e.g. "0_q"); see `isQuantizedLinear`.
   */
  skipList: string[];
}

export interface ModelConfig {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  normEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  attentionBias: false;
  mlpBias: false;
  hiddenAct: "silu";
  architectures: string[];
  modelType: string | null;
  torchDtype: string | null;
  /** `_name_or_path`: for QTIP checkpoints, the model whose tokenizer they use. */
  nameOrPath: string | null;
  quant: QtipConfig | null;
  /** Things that were odd but not fatal (unknown quip_params fields, unusual K, ...). */
  warnings: string[];
}

export interface GenerationConfig {
  bosTokenId?: number;
  /** Empty when the file names none. */
  eosTokenIds: number[];
  padTokenId?: number;
  doSample?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  maxLength?: number;
  maxNewTokens?: number;
}

export type LinearName = "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj";

const SKIP_SHORT: Record<LinearName, string> = {
  q_proj: "q",
  k_proj: "k",
  v_proj: "v",
  o_proj: "o",
  gate_proj: "gate",
  up_proj: "up",
  down_proj: "down",
};

const SKIP_ENTRY = /^(\d+)_(q|k|v|o|gate|up|down)$/;

const KNOWN_QUIP_FIELDS = new Set([
  "codebook",
  "codebook_version",
  "L",
  "K",
  "K_v_proj",
  "V",
  "tlut_bits",
  "decode_mode",
  "td_x",
  "td_y",
  "split_for_tp",
  "skip_list",
  "fused",
]);

/** Whether a layer's linear is stored QTIP-quantized (false for fp16 models and skip_list entries). */
export function isQuantizedLinear(config: ModelConfig, layer: number, linear: LinearName): boolean {
  return config.quant !== null && !config.quant.skipList.includes(`${layer}_${SKIP_SHORT[linear]}`);
}

/** Bits per weight of one quantized linear (v_proj may differ). */
export function qtipLinearK(quant: QtipConfig, linear: LinearName): number {
  return linear === "v_proj" ? quant.kVProj : quant.K;
}

/** Reads typed fields of one JSON object, each failure naming the file, the field, expected and found. */
class Fields {
  readonly #obj: Record<string, unknown>;
  readonly #source: string;
  readonly #prefix: string;

  constructor(obj: Record<string, unknown>, source: string, prefix = "") {
    this.#obj = obj;
    this.#source = source;
    this.#prefix = prefix;
  }

  raw(key: string): unknown {
    return this.#obj[key];
  }

  has(key: string): boolean {
    return this.#obj[key] !== undefined && this.#obj[key] !== null;
  }

  fail(key: string, expected: string, got: unknown = this.#obj[key]): Error {
    return new Error(
      `Cannot load ${this.#source}: "${this.#prefix}${key}" must be ${expected}, got ${describe(got)}`,
    );
  }

  error(detail: string): Error {
    return new Error(`Cannot load ${this.#source}: ${detail}`);
  }

  int(key: string, min: number, fallback?: number): number {
    const v = this.#obj[key];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
      throw this.fail(key, min === 1 ? "a positive integer" : `an integer >= ${min}`);
    }
    return v;
  }

  intIn(key: string, lo: number, hi: number, fallback?: number): number {
    const v = this.int(key, lo, fallback);
    if (v > hi) throw this.fail(key, `an integer in ${lo}..${hi}`);
    return v;
  }

  num(key: string, check: (v: number) => boolean, expected: string, fallback?: number): number {
    const v = this.#obj[key];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || !check(v)) throw this.fail(key, expected);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.#obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "boolean") throw this.fail(key, "true or false");
    return v;
  }

  str(key: string): string | null {
    const v = this.#obj[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== "string") throw this.fail(key, "a string");
    return v;
  }

  /** A token id or a list of them, as HF writes eos_token_id. */
  ids(key: string): number[] {
    const v = this.#obj[key];
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) {
      throw this.fail(key, "a token id or a list of token ids");
    }
    return list as number[];
  }

  nested(key: string): Fields | null {
    const v = this.#obj[key];
    if (v === undefined || v === null) return null;
    if (!isObject(v)) throw this.fail(key, "an object");
    return new Fields(v, this.#source, `${this.#prefix}${key}.`);
  }

  keys(): string[] {
    return Object.keys(this.#obj);
  }
}

/**
 * Parses a Hugging Face Llama config.json. `source` names the file in messages, e.g.
 * `config.json in "models/llama"`. Unknown top-level fields are ignored.
 */
export function parseModelConfig(json: unknown, source: string): ModelConfig {
  if (!isObject(json)) {
    throw new Error(`Cannot load ${source}: expected a JSON object, got ${describe(json)}`);
  }
  const f = new Fields(json, source);
  const warnings: string[] = [];

  const architectures = f.raw("architectures") ?? [];
  if (!Array.isArray(architectures) || !architectures.every((a) => typeof a === "string")) {
    throw f.fail("architectures", "a list of class names");
  }
  const modelType = f.str("model_type");
  const isLlama = architectures.includes("LlamaForCausalLM") ||
    (architectures.length === 0 && modelType === "llama");
  if (!isLlama) {
    throw new Error(
      `Unsupported architecture in ${source}: expected LlamaForCausalLM (or model_type "llama"), ` +
        `got architectures ${describe(architectures)}, model_type ${describe(modelType)}`,
    );
  }

  const dim = f.int("hidden_size", 1);
  const hiddenDim = f.int("intermediate_size", 1);
  const nLayers = f.int("num_hidden_layers", 1);
  const nHeads = f.int("num_attention_heads", 1);
  const nKvHeads = f.int("num_key_value_heads", 1, nHeads);
  if (nHeads % nKvHeads !== 0) {
    throw f.fail("num_key_value_heads", `a divisor of num_attention_heads (${nHeads})`);
  }
  if (!f.has("head_dim") && dim % nHeads !== 0) {
    throw f.error(
      `"hidden_size" (${dim}) must be divisible by "num_attention_heads" (${nHeads}) when head_dim is absent`,
    );
  }
  const headDim = f.int("head_dim", 1, dim / nHeads);
  if (headDim % 2 !== 0) throw f.fail("head_dim", "even (RoPE rotates pairs)", headDim);

  const hiddenAct = f.str("hidden_act") ?? "silu";
  if (hiddenAct !== "silu") throw f.fail("hidden_act", `"silu"`);
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (f.bool(key, false)) throw f.fail(key, "false (Llama linears have no bias)");
  }

  const { ropeTheta, ropeScaling } = parseRope(f);
  const config: ModelConfig = {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    headDim,
    vocabSize: f.int("vocab_size", 1),
    // Defaults are transformers' LlamaConfig defaults.
    normEps: f.num("rms_norm_eps", (v) => v > 0, "a positive number", 1e-6),
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: f.int("max_position_embeddings", 1, 2048),
    tieWordEmbeddings: f.bool("tie_word_embeddings", false),
    bosTokenId: f.has("bos_token_id") ? f.int("bos_token_id", 0) : null,
    eosTokenIds: f.ids("eos_token_id"),
    attentionBias: false,
    mlpBias: false,
    hiddenAct: "silu",
    architectures: architectures as string[],
    modelType,
    torchDtype: f.str("torch_dtype") ?? f.str("dtype"),
    nameOrPath: f.str("_name_or_path"),
    quant: null,
    warnings,
  };
  const quip = f.nested("quip_params");
  if (quip) config.quant = parseQtip(quip, config, warnings);
  return config;
}

function parseRope(f: Fields): { ropeTheta: number; ropeScaling: RopeScaling | null } {
  // transformers 5 may write everything under rope_parameters instead of rope_theta + rope_scaling.
  const params = f.nested("rope_parameters");
  const thetaFrom = f.has("rope_theta") || !params?.has("rope_theta") ? f : params;
  const ropeTheta = thetaFrom.num("rope_theta", (v) => v > 0, "a positive number", 10000);
  const r = f.nested("rope_scaling") ?? params;
  if (!r) return { ropeTheta, ropeScaling: null };
  const key = r.has("rope_type") || !r.has("type") ? "rope_type" : "type";
  const type = r.raw(key);
  if (type === "default" || (r === params && type === undefined)) return { ropeTheta, ropeScaling: null };
  if (type !== "llama3") {
    throw r.fail(key, `"llama3" (the only supported rope scaling; or no rope_scaling at all)`);
  }
  const factor = r.num("factor", (v) => v >= 1, "a number >= 1");
  const lowFreqFactor = r.num("low_freq_factor", (v) => v > 0, "a positive number");
  const highFreqFactor = r.num(
    "high_freq_factor",
    (v) => v > lowFreqFactor,
    `a number > low_freq_factor (${lowFreqFactor})`,
  );
  const originalMaxPositionEmbeddings = r.int("original_max_position_embeddings", 1);
  return {
    ropeTheta,
    ropeScaling: { type: "llama3", factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings },
  };
}

function parseQtip(q: Fields, config: ModelConfig, warnings: string[]): QtipConfig {
  for (const key of q.keys()) {
    if (!KNOWN_QUIP_FIELDS.has(key)) warnings.push(`Ignoring unknown field "quip_params.${key}"`);
  }
  if (q.raw("codebook") !== "bitshift") throw q.fail("codebook", `"bitshift" (QTIP's trellis code)`);
  const decodeMode = q.raw("decode_mode");
  if (typeof decodeMode !== "string" || !Object.hasOwn(QTIP_DECODE_MODES, decodeMode)) {
    throw q.fail("decode_mode", `one of ${Object.keys(QTIP_DECODE_MODES).map((m) => `"${m}"`).join(", ")}`);
  }
  const mode = decodeMode as QtipDecodeMode;
  const code = QTIP_DECODE_MODES[mode];
  const L = q.int("L", 1);
  if (L !== 16) throw q.fail("L", "16 (the only trellis state size supported)");
  // The trellis layout and the decode kernels take 2, 3 or 4 bits per weight (kernels/qtip/qtip_layout.ts):
  // anything else is refused here, before a weight is read.
  const kernelsK = "an integer in 2..4 (the bits per weight the QTIP kernels decode)";
  const K = q.int("K", 1);
  if (K < 2 || K > 4) throw q.fail("K", kernelsK);
  const kVProj = q.int("K_v_proj", 1, K);
  if (kVProj < 2 || kVProj > 4) throw q.fail("K_v_proj", kernelsK);
  const V = q.int("V", 1);
  const wantV = codeV(code);
  if (V !== wantV) throw q.fail("V", `${wantV} for decode_mode "${mode}"`);
  // HYB indexes the LUT with bits 15 - tlut_bits .. 14 of the state; bit 15 is the sign.
  const tlutBits = code === "hyb" ? q.intIn("tlut_bits", 1, 15) : q.int("tlut_bits", 0, 0);
  const tdX = q.int("td_x", 1);
  if (tdX !== 16) throw q.fail("td_x", "16");
  const tdY = q.int("td_y", 1);
  if (tdY !== 16) throw q.fail("td_y", "16");

  const skip = q.raw("skip_list") ?? [];
  if (!Array.isArray(skip) || !skip.every((s) => typeof s === "string")) {
    throw q.fail("skip_list", `a list of names like "0_q" or null`);
  }
  for (const s of skip as string[]) {
    const m = SKIP_ENTRY.exec(s);
    if (!m) {
      warnings.push(
        `quip_params.skip_list entry "${s}" is not "<layer>_<q|k|v|o|gate|up|down>", so it skips nothing (as in the official code)`,
      );
    } else if (Number(m[1]) >= config.nLayers) {
      warnings.push(
        `quip_params.skip_list entry "${s}" names layer ${m[1]}, but the model has ${config.nLayers} layers`,
      );
    }
  }

  const dims: [string, number][] = [
    ["hidden_size", config.dim],
    ["intermediate_size", config.hiddenDim],
    ["num_attention_heads * head_dim", config.nHeads * config.headDim],
    ["num_key_value_heads * head_dim", config.nKvHeads * config.headDim],
  ];
  for (const [name, d] of dims) {
    if (d % 16 !== 0) {
      throw q.error(`QTIP tiles are 16 x 16, so ${name} must be divisible by 16, got ${d}`);
    }
  }

  return {
    codebook: "bitshift",
    codebookVersion: q.int("codebook_version", 0, 0),
    L,
    K,
    kVProj,
    V,
    tlutBits,
    decodeMode: mode,
    tdX,
    tdY,
    splitForTp: q.bool("split_for_tp", false),
    skipList: [...skip as string[]],
  };
}

/** Parses generation_config.json; every field is optional, unknown ones are ignored. */
export function parseGenerationConfig(json: unknown, source: string): GenerationConfig {
  if (!isObject(json)) {
    throw new Error(`Cannot load ${source}: expected a JSON object, got ${describe(json)}`);
  }
  const f = new Fields(json, source);
  const out: GenerationConfig = { eosTokenIds: f.ids("eos_token_id") };
  const unit = (v: number) => v >= 0 && v <= 1;
  if (f.has("bos_token_id")) out.bosTokenId = f.int("bos_token_id", 0);
  if (f.has("pad_token_id")) out.padTokenId = f.int("pad_token_id", 0);
  if (f.has("do_sample")) out.doSample = f.bool("do_sample", false);
  if (f.has("temperature")) out.temperature = f.num("temperature", (v) => v >= 0, "a number >= 0");
  if (f.has("top_p")) out.topP = f.num("top_p", unit, "a number in 0..1");
  if (f.has("top_k")) out.topK = f.int("top_k", 0);
  if (f.has("min_p")) out.minP = f.num("min_p", unit, "a number in 0..1");
  if (f.has("repetition_penalty")) {
    out.repetitionPenalty = f.num("repetition_penalty", (v) => v > 0, "a positive number");
  }
  if (f.has("max_length")) out.maxLength = f.int("max_length", 1);
  if (f.has("max_new_tokens")) out.maxNewTokens = f.int("max_new_tokens", 1);
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  const s = JSON.stringify(v);
  return s.length > 80 ? s.slice(0, 77) + "..." : s;
}
