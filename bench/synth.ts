// Synthetic QTIP checkpoints at the exact shapes and byte counts of the published Llama 2 / Llama 3.1 models:
// random trellis codes with plausible scales, written in the official format (docs/QTIP_FORMAT.md) so
// the engine loads them like a real checkpoint. Speed does not depend on the values, so every benchmark in
// bench/ runs on these without downloading anything.
//
// Format, as the official conversion writes it (Cornell-RelaxML/qtip: lib/linear/quantized_linear.py,
// quantize_llama/hfize_llama.py) and as the fixtures show: per quantized linear `trellis` I16
// [(m/16)(n/16), 16K], `SU` F16 [n], `SV` F32 [m], `rcp` and `tp_rank` I64 scalars, and for HYB only a
// `tlut` F16 [512, 2]; norms, embeddings and lm_head F16. Uniformly random words are a valid bitstream in
// both the swizzled (HYB, has_kernel) and the plain (1MAD/3INST) word order, so one generator serves both.
// Tensors stream to disk in bounded chunks; checkpoints over `shardBytes` are split into HF-style shards
// with model.safetensors.index.json. A tokenizer of the architecture's vocabulary size and special ids is
// written beside the weights (bench/synth_tokenizer.ts), so the server can serve the checkpoint.
import { join } from "node:path";
import { type TokenizerStyle, writeSynthTokenizer } from "./synth_tokenizer.ts";

export type ArchName =
  | "llama2-7b"
  | "llama2-13b"
  | "llama2-70b"
  | "llama31-8b"
  | "llama31-70b"
  | "llama31-405b"
  | "tiny";
export type SynthCode = "HYB" | "1MAD" | "3INST";

export interface ArchSpec {
  /** Hugging Face model id the shapes come from (written as `_name_or_path`). */
  source: string;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  ropeTheta: number;
  llama3Rope: boolean;
  bosTokenId: number;
  eosTokenIds: number[];
  /** The tokenizer synth writes: Llama 2's SentencePiece-style BPE or Llama 3's byte-level BPE. */
  tokenizer: TokenizerStyle;
}

const LLAMA2 = { vocabSize: 32000, maxPositionEmbeddings: 4096, ropeTheta: 10000, llama3Rope: false };
const LLAMA2_IDS = { bosTokenId: 1, eosTokenIds: [2], tokenizer: "llama2" as const };
const LLAMA31 = { vocabSize: 128256, maxPositionEmbeddings: 131072, ropeTheta: 500000, llama3Rope: true };
const LLAMA31_IDS = {
  bosTokenId: 128000,
  eosTokenIds: [128001, 128008, 128009],
  tokenizer: "llama3" as const,
};

/** The published models' shapes (their config.json files). */
export const ARCHS: Record<ArchName, ArchSpec> = {
  "llama2-7b": {
    source: "meta-llama/Llama-2-7b-hf",
    dim: 4096,
    hiddenDim: 11008,
    nLayers: 32,
    nHeads: 32,
    nKvHeads: 32,
    ...LLAMA2,
    ...LLAMA2_IDS,
  },
  "llama2-13b": {
    source: "meta-llama/Llama-2-13b-hf",
    dim: 5120,
    hiddenDim: 13824,
    nLayers: 40,
    nHeads: 40,
    nKvHeads: 40,
    ...LLAMA2,
    ...LLAMA2_IDS,
  },
  "llama2-70b": {
    source: "meta-llama/Llama-2-70b-hf",
    dim: 8192,
    hiddenDim: 28672,
    nLayers: 80,
    nHeads: 64,
    nKvHeads: 8,
    ...LLAMA2,
    ...LLAMA2_IDS,
  },
  "llama31-8b": {
    source: "meta-llama/Llama-3.1-8B",
    dim: 4096,
    hiddenDim: 14336,
    nLayers: 32,
    nHeads: 32,
    nKvHeads: 8,
    ...LLAMA31,
    ...LLAMA31_IDS,
  },
  "llama31-70b": {
    source: "meta-llama/Llama-3.1-70B",
    dim: 8192,
    hiddenDim: 28672,
    nLayers: 80,
    nHeads: 64,
    nKvHeads: 8,
    ...LLAMA31,
    ...LLAMA31_IDS,
  },
  "llama31-405b": {
    source: "meta-llama/Llama-3.1-405B",
    dim: 16384,
    hiddenDim: 53248,
    nLayers: 126,
    nHeads: 128,
    nKvHeads: 8,
    ...LLAMA31,
    ...LLAMA31_IDS,
  },
  // Small enough for lavapipe, with the same structure: GQA, llama3 RoPE, a non-power-of-two Hadamard
  // size (896 = 28 x 32, like 14336 = 28 x 512), every dimension a multiple of 32 (the swizzled layout's unit).
  // Its ids (bos 1, eos 2) are Llama 2's, so it gets a Llama-2-style tokenizer of 1024 ids.
  tiny: {
    source: "trellis/tiny-synth",
    dim: 256,
    hiddenDim: 896,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    vocabSize: 1024,
    maxPositionEmbeddings: 2048,
    ropeTheta: 500000,
    llama3Rope: true,
    bosTokenId: 1,
    eosTokenIds: [2],
    tokenizer: "llama2",
  },
};

export const ARCH_NAMES = Object.keys(ARCHS) as ArchName[];
export const SYNTH_CODES: SynthCode[] = ["HYB", "1MAD", "3INST"];

const DECODE_MODE: Record<SynthCode, string> = { HYB: "quantlut_sym", "1MAD": "1mad", "3INST": "3inst" };
/** Standard deviation of the decoded trellis values of each code over all 2^16 states (HYB: of the tlut). */
const CODE_STD: Record<SynthCode, number> = { HYB: 0.968, "1MAD": 1.0, "3INST": 1.244 };
const TLUT_BITS = 9;
/** Hugging Face's default max_shard_size ("5GB"). */
export const DEFAULT_SHARD_BYTES = 5e9;
const CHUNK_BYTES = 16 << 20;

export const LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

type Dtype = "I64" | "F32" | "F16" | "I16";
const DTYPE_BYTES: Record<Dtype, number> = { I64: 8, F32: 4, F16: 2, I16: 2 };
/** safetensors orders a file's tensors by dtype (its enum order, descending), then by name. */
const DTYPE_RANK: Record<Dtype, number> = { I64: 4, F32: 3, F16: 2, I16: 1 };

/** How a tensor's bytes are made. */
type Fill =
  | { kind: "words" } // uniform random 16-bit words (trellis)
  | { kind: "normal"; mean: number; std: number } // f16
  | { kind: "signs"; scale: number; jitter: number } // f16 or f32: +-scale * (1 + jitter * N(0, 1))
  | { kind: "int"; value: number }; // i64 scalar

export interface TensorPlan {
  name: string;
  dtype: Dtype;
  shape: number[];
  fill: Fill;
  /** Seed of this tensor's generator (distinct per tensor). */
  seed: number;
}

export interface SynthOptions {
  arch: ArchName;
  code: SynthCode;
  bits: 2 | 3 | 4;
  out: string;
  /** Keep only the first N layers (quick runs); default: the architecture's depth. */
  layers?: number;
  seed?: number;
  /** Largest shard in bytes; a checkpoint that fits is one model.safetensors. */
  shardBytes?: number;
  /** Replace safetensors files already in `out`. */
  force?: boolean;
  /** Called after each chunk with bytes written so far and the total. */
  onProgress?: (written: number, total: number) => void;
}

export interface SynthResult {
  dir: string;
  /** Shard file names in order. */
  files: string[];
  /** Sum of tensor bytes (the index's total_size). */
  totalBytes: number;
  tensors: number;
  /** Bytes of every quantized linear's trellis: what a decode step must stream. */
  trellisBytes: number;
  /** The tokenizer files written beside the weights. */
  tokenizerFiles: string[];
}

export class SynthError extends Error {
  override name = "SynthError";
}

/** The config.json of a synthetic checkpoint (the fixtures' layout plus a `_trellis_synth` provenance block). */
export function synthConfig(o: Pick<SynthOptions, "arch" | "code" | "bits" | "layers" | "seed">) {
  const a = ARCHS[o.arch];
  return {
    _name_or_path: a.source,
    architectures: ["LlamaForCausalLM"],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: a.bosTokenId,
    eos_token_id: a.eosTokenIds.length === 1 ? a.eosTokenIds[0] : a.eosTokenIds,
    head_dim: a.dim / a.nHeads,
    hidden_act: "silu",
    hidden_size: a.dim,
    initializer_range: 0.02,
    intermediate_size: a.hiddenDim,
    max_position_embeddings: a.maxPositionEmbeddings,
    mlp_bias: false,
    model_type: "llama",
    num_attention_heads: a.nHeads,
    num_hidden_layers: o.layers ?? a.nLayers,
    num_key_value_heads: a.nKvHeads,
    pretraining_tp: 1,
    quip_params: {
      codebook: "bitshift",
      codebook_version: 0,
      L: 16,
      K: o.bits,
      V: o.code === "HYB" ? 2 : 1,
      tlut_bits: o.code === "HYB" ? TLUT_BITS : 0,
      decode_mode: DECODE_MODE[o.code],
      td_x: 16,
      td_y: 16,
      split_for_tp: false,
      skip_list: [],
    },
    rms_norm_eps: 1e-5,
    rope_scaling: a.llama3Rope
      ? {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
        rope_type: "llama3",
      }
      : null,
    rope_theta: a.ropeTheta,
    tie_word_embeddings: false,
    torch_dtype: "float16",
    use_cache: true,
    vocab_size: a.vocabSize,
    _trellis_synth: {
      arch: o.arch,
      code: o.code,
      bits: o.bits,
      seed: o.seed ?? 0,
      full_layers: a.nLayers,
      note: "random trellis codes and scales: for speed benchmarks only, the outputs are meaningless",
    },
  };
}

/** Every tensor of the checkpoint in state-dict order (embeddings, layers, final norm, lm_head). */
export function planTensors(
  o: Pick<SynthOptions, "arch" | "code" | "bits" | "layers" | "seed">,
): TensorPlan[] {
  const a = ARCHS[o.arch];
  const nLayers = o.layers ?? a.nLayers;
  const headDim = a.dim / a.nHeads;
  const qDim = a.nHeads * headDim, kvDim = a.nKvHeads * headDim;
  const shapes: Record<(typeof LINEARS)[number], [number, number]> = {
    q_proj: [qDim, a.dim],
    k_proj: [kvDim, a.dim],
    v_proj: [kvDim, a.dim],
    o_proj: [a.dim, qDim],
    gate_proj: [a.hiddenDim, a.dim],
    up_proj: [a.hiddenDim, a.dim],
    down_proj: [a.dim, a.hiddenDim],
  };
  const base = (o.seed ?? 0) * 0x9e3779b1;
  const plans: TensorPlan[] = [];
  const add = (name: string, dtype: Dtype, shape: number[], fill: Fill) =>
    plans.push({ name, dtype, shape, fill, seed: (base + plans.length * 0x85ebca6b + 1) >>> 0 });
  // Real Llama embeddings and output heads have std ~0.02; norms sit near 1.
  add("model.embed_tokens.weight", "F16", [a.vocabSize, a.dim], { kind: "normal", mean: 0, std: 0.02 });
  for (let l = 0; l < nLayers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, "F16", [a.dim], { kind: "normal", mean: 1, std: 0.05 });
    add(`${p}.post_attention_layernorm.weight`, "F16", [a.dim], { kind: "normal", mean: 1, std: 0.05 });
    for (const lin of LINEARS) {
      const [m, n] = shapes[lin];
      const q = `${p}.${
        lin.startsWith("gate") || lin.startsWith("up") || lin.startsWith("down") ? "mlp" : "self_attn"
      }.${lin}`;
      add(`${q}.trellis`, "I16", [(m / 16) * (n / 16), 16 * o.bits], { kind: "words" });
      // The effective weight is SV ⊙ H hatW H^T ⊙ SU with orthonormal H, so its std is |SV| * std(hatW):
      // SV = 1/(std(hatW) sqrt(n)) keeps activations at unit scale, like a trained layer.
      add(`${q}.SU`, "F16", [n], { kind: "signs", scale: 1, jitter: 0.01 });
      add(`${q}.SV`, "F32", [m], {
        kind: "signs",
        scale: 1 / (CODE_STD[o.code] * Math.sqrt(n)),
        jitter: 0.1,
      });
      if (o.code === "HYB") {
        add(`${q}.tlut`, "F16", [1 << TLUT_BITS, 2], { kind: "normal", mean: 0, std: CODE_STD.HYB });
      }
      add(`${q}.rcp`, "I64", [], { kind: "int", value: 0 });
      // quantized_linear.py registers tp_rank = 8 (unused while rcp = 0).
      add(`${q}.tp_rank`, "I64", [], { kind: "int", value: 8 });
    }
  }
  add("model.norm.weight", "F16", [a.dim], { kind: "normal", mean: 1, std: 0.05 });
  add("lm_head.weight", "F16", [a.vocabSize, a.dim], { kind: "normal", mean: 0, std: 0.02 });
  return plans;
}

export function tensorBytes(t: Pick<TensorPlan, "dtype" | "shape">): number {
  return t.shape.reduce((x, y) => x * y, 1) * DTYPE_BYTES[t.dtype];
}

/** Splits tensors into shards the way transformers does: in order, a new shard when the next would overflow. */
export function shardTensors(plans: TensorPlan[], shardBytes: number): TensorPlan[][] {
  const shards: TensorPlan[][] = [[]];
  let size = 0;
  for (const t of plans) {
    const b = tensorBytes(t);
    if (size > 0 && size + b > shardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += b;
  }
  return shards;
}

/** splitmix32: small, fast, good enough for random bits. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** 4096 standard normal samples (Box-Muller), indexed by 12 random bits: fast fp16 noise. */
const NORMAL_TABLE = (() => {
  const r = rng(12345);
  const t = new Float64Array(4096);
  for (let i = 0; i < 4096; i += 2) {
    const u1 = (r() + 1) / 4294967297, u2 = r() / 4294967296;
    const rad = Math.sqrt(-2 * Math.log(u1));
    t[i] = rad * Math.cos(2 * Math.PI * u2);
    t[i + 1] = rad * Math.sin(2 * Math.PI * u2);
  }
  return t;
})();

const f16Tables = new Map<string, Uint16Array>();

/** NORMAL_TABLE scaled to mean + std * z, as fp16 bit patterns (cached per distribution). */
function normalF16Table(mean: number, std: number): Uint16Array {
  const key = `${mean}:${std}`;
  let t = f16Tables.get(key);
  if (!t) {
    t = new Uint16Array(Float16Array.from(NORMAL_TABLE, (z) => mean + std * z).buffer);
    f16Tables.set(key, t);
  }
  return t;
}

/** Fills `out` (the tensor's bytes [offset, offset + out.length)) for one chunk. Offsets are element-aligned. */
function fillChunk(t: TensorPlan, next: () => number, out: Uint8Array): void {
  const f = t.fill;
  if (f.kind === "words") {
    const u32 = new Uint32Array(out.buffer, out.byteOffset, out.byteLength >> 2);
    for (let i = 0; i < u32.length; i++) u32[i] = next();
    return;
  }
  if (f.kind === "int") {
    new DataView(out.buffer, out.byteOffset, 8).setBigInt64(0, BigInt(f.value), true);
    return;
  }
  const n = out.byteLength / DTYPE_BYTES[t.dtype];
  if (f.kind === "normal" && t.dtype === "F16") {
    // Embeddings and lm_head are GBs: look up pre-converted fp16 bit patterns, two per random word.
    const table = normalF16Table(f.mean, f.std);
    const u16 = new Uint16Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i += 2) {
      const r = next();
      u16[i] = table[r & 4095];
      if (i + 1 < n) u16[i + 1] = table[(r >>> 12) & 4095];
    }
    return;
  }
  const vals = t.dtype === "F32"
    ? new Float32Array(out.buffer, out.byteOffset, n)
    : new Float16Array(out.buffer, out.byteOffset, n);
  for (let i = 0; i < n; i += 2) {
    const r = next();
    const a = NORMAL_TABLE[r & 4095], b = NORMAL_TABLE[(r >>> 12) & 4095];
    if (f.kind === "normal") {
      vals[i] = f.mean + f.std * a;
      if (i + 1 < n) vals[i + 1] = f.mean + f.std * b;
    } else {
      vals[i] = (r & 0x1000000 ? -1 : 1) * f.scale * (1 + f.jitter * a);
      if (i + 1 < n) vals[i + 1] = (r & 0x2000000 ? -1 : 1) * f.scale * (1 + f.jitter * b);
    }
  }
}

/** The safetensors header of one shard, padded with spaces to 8 bytes (as the reference writer does). */
function shardHeader(tensors: TensorPlan[]): { bytes: Uint8Array; ordered: TensorPlan[] } {
  const ordered = [...tensors].sort((x, y) =>
    DTYPE_RANK[y.dtype] - DTYPE_RANK[x.dtype] || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0)
  );
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let off = 0;
  for (const t of ordered) {
    const b = tensorBytes(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + b] };
    off += b;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((json.length + 8) % 8)) % 8);
  const body = new TextEncoder().encode(json);
  const bytes = new Uint8Array(8 + body.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(body.length), true);
  bytes.set(body, 8);
  return { bytes, ordered };
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await file.write(data.subarray(done));
}

function checkOptions(o: SynthOptions): void {
  if (!(o.arch in ARCHS)) {
    throw new SynthError(`Unknown --arch "${o.arch}": expected one of ${ARCH_NAMES.join(", ")}`);
  }
  if (!SYNTH_CODES.includes(o.code)) {
    throw new SynthError(`Unknown --code "${o.code}": expected one of ${SYNTH_CODES.join(", ")}`);
  }
  if (![2, 3, 4].includes(o.bits)) throw new SynthError(`Unsupported --bits ${o.bits}: expected 2, 3 or 4`);
  const full = ARCHS[o.arch].nLayers;
  if (o.layers !== undefined && !(Number.isInteger(o.layers) && o.layers >= 1 && o.layers <= full)) {
    throw new SynthError(`Bad --layers ${o.layers}: expected an integer in 1..${full} for ${o.arch}`);
  }
  if (o.shardBytes !== undefined && !(o.shardBytes >= 1 << 20)) {
    throw new SynthError(`Bad shard size ${o.shardBytes} bytes: expected at least 1 MiB`);
  }
}

/** Writes a synthetic checkpoint directory; host memory stays at one 16 MiB chunk whatever the model size. */
export async function synthCheckpoint(o: SynthOptions): Promise<SynthResult> {
  checkOptions(o);
  await Deno.mkdir(o.out, { recursive: true });
  const stale: string[] = [];
  for await (const e of Deno.readDir(o.out)) {
    if (e.name.endsWith(".safetensors") || e.name === "model.safetensors.index.json") stale.push(e.name);
  }
  if (stale.length && !o.force) {
    throw new SynthError(
      `Cannot write checkpoint to "${o.out}": it already holds ${stale.join(", ")} (pass --force to replace)`,
    );
  }
  for (const name of stale) await Deno.remove(join(o.out, name));

  const plans = planTensors(o);
  const shards = shardTensors(plans, o.shardBytes ?? DEFAULT_SHARD_BYTES);
  const totalBytes = plans.reduce((s, t) => s + tensorBytes(t), 0);
  const names = shards.length === 1
    ? ["model.safetensors"]
    : shards.map((_, i) =>
      `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`
    );
  const chunk = new Uint8Array(CHUNK_BYTES);
  let written = 0;
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards.length; s++) {
    const { bytes, ordered } = shardHeader(shards[s]);
    const file = await Deno.open(join(o.out, names[s]), { write: true, create: true, truncate: true });
    try {
      await writeAll(file, bytes);
      for (const t of ordered) {
        weightMap[t.name] = names[s];
        const next = rng(t.seed);
        const total = tensorBytes(t);
        for (let off = 0; off < total; off += CHUNK_BYTES) {
          const view = chunk.subarray(0, Math.min(CHUNK_BYTES, total - off));
          fillChunk(t, next, view);
          await writeAll(file, view);
          written += view.byteLength;
          o.onProgress?.(written, totalBytes);
        }
      }
    } finally {
      file.close();
    }
  }
  if (shards.length > 1) {
    const sorted = Object.fromEntries(Object.entries(weightMap).sort(([x], [y]) => (x < y ? -1 : 1)));
    await Deno.writeTextFile(
      join(o.out, "model.safetensors.index.json"),
      JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: sorted }, null, 2) + "\n",
    );
  }
  const a = ARCHS[o.arch];
  await Deno.writeTextFile(join(o.out, "config.json"), JSON.stringify(synthConfig(o), null, 2) + "\n");
  await Deno.writeTextFile(
    join(o.out, "generation_config.json"),
    JSON.stringify(
      {
        bos_token_id: a.bosTokenId,
        eos_token_id: a.eosTokenIds.length === 1 ? a.eosTokenIds[0] : a.eosTokenIds,
        do_sample: false,
      },
      null,
      2,
    ) + "\n",
  );
  const tokenizerFiles = await writeSynthTokenizer(o.out, a);
  const trellisBytes = plans.filter((t) => t.fill.kind === "words").reduce((s, t) => s + tensorBytes(t), 0);
  return { dir: o.out, files: names, totalBytes, tensors: plans.length, trellisBytes, tokenizerFiles };
}

const USAGE = `Usage: deno task synth --arch ${ARCH_NAMES.join("|")} --code ${
  SYNTH_CODES.join("|")
} --bits 2|3|4
       --out DIR [--layers N] [--seed S] [--shard-gb G] [--force]`;

/** Parses the command line of `deno task synth`; throws SynthError naming the bad flag. */
export function parseSynthArgs(args: string[]): SynthOptions {
  const o: Record<string, string | boolean> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith("--")) throw new SynthError(`Unexpected argument "${a}"\n${USAGE}`);
    const [key, inline] = a.slice(2).split("=", 2);
    if (key === "force" || key === "help") {
      o[key] = true;
      continue;
    }
    if (!["arch", "code", "bits", "out", "layers", "seed", "shard-gb"].includes(key)) {
      throw new SynthError(`Unknown flag "--${key}"\n${USAGE}`);
    }
    const v = inline ?? args[++i];
    if (v === undefined) throw new SynthError(`Flag "--${key}" needs a value\n${USAGE}`);
    o[key] = v;
  }
  if (o.help) throw new SynthError(USAGE);
  for (const k of ["arch", "code", "bits", "out"]) {
    if (typeof o[k] !== "string") throw new SynthError(`Missing --${k}\n${USAGE}`);
  }
  const int = (k: string) => {
    const n = Number(o[k]);
    if (!Number.isInteger(n)) throw new SynthError(`Bad --${k} "${o[k]}": expected an integer`);
    return n;
  };
  const out: SynthOptions = {
    arch: o.arch as ArchName,
    code: String(o.code).toUpperCase() as SynthCode,
    bits: int("bits") as 2 | 3 | 4,
    out: o.out as string,
    force: o.force === true,
  };
  if (o.layers !== undefined) out.layers = int("layers");
  if (o.seed !== undefined) out.seed = int("seed");
  if (o["shard-gb"] !== undefined) {
    const g = Number(o["shard-gb"]);
    if (!(g > 0)) throw new SynthError(`Bad --shard-gb "${o["shard-gb"]}": expected a positive number`);
    out.shardBytes = g * 1e9;
  }
  checkOptions(out);
  return out;
}

if (import.meta.main) {
  try {
    const opts = parseSynthArgs(Deno.args);
    const t0 = performance.now();
    let last = 0;
    const res = await synthCheckpoint({
      ...opts,
      onProgress: (w, total) => {
        const now = performance.now();
        if (now - last > 1000 || w === total) {
          last = now;
          Deno.stderr.writeSync(
            new TextEncoder().encode(`\rwriting ${(w / 1e9).toFixed(2)} / ${(total / 1e9).toFixed(2)} GB`),
          );
        }
      },
    });
    const s = (performance.now() - t0) / 1000;
    console.error("");
    console.log(JSON.stringify({ ...res, seconds: Number(s.toFixed(2)) }));
  } catch (e) {
    if (!(e instanceof SynthError)) throw e;
    console.error(e.message);
    Deno.exit(2);
  }
}
