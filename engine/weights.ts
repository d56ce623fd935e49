// Checkpoint tensor names -> typed per-layer GPU weights. Tensors stream from disk to the GPU in
// bounded chunks, so host memory stays flat whatever the checkpoint's size; QTIP trellises are
// re-laid out for the kernel one tensor at a time.
import type { Checkpoint } from "./checkpoint.ts";
import { convertToF16, f16Overflows } from "./safetensors.ts";
import {
  isQuantizedLinear,
  type LinearName,
  type ModelConfig,
  qtipCode,
  qtipLinearK,
} from "./model_config.ts";
import { F16Stack, type LinearStack, type QtipSegment, QtipStack, type RowPart } from "./linear.ts";
import type { LoadProgress } from "./progress.ts";
import { GPU_LAYOUT_HEADER, gpuLayoutWords, type HadSpec, HadTable, toGpuLayout } from "../kernels/mod.ts";

export class WeightsError extends Error {
  override name = "WeightsError";
}

/** Offsets (in f32 elements) of a layer's side vectors in its `side` buffer. SU and SV exist for QTIP
 * stacks only; a stack's parts are side by side (SU of q, k, v: 3 x dim; SV: qDim + 2 kvDim). */
export interface SideOffsets {
  attnGamma: number;
  ffnGamma: number;
  suQkv?: number;
  svQkv?: number;
  suO?: number;
  svO?: number;
  suGu?: number;
  svGu?: number;
  suD?: number;
  svD?: number;
}

export interface LayerWeights {
  /** f32: the norm weights (rounded to f16, as the checkpoint's dtype is read), SU and SV. */
  side: GPUBuffer;
  at: SideOffsets;
  qkv: LinearStack; // q (nHeads * headDim), k, v (nKvHeads * headDim) from dim
  o: LinearStack; // dim from nHeads * headDim
  gateUp: LinearStack; // gate, up (hiddenDim each) from dim
  down: LinearStack; // dim from hiddenDim
}

export interface ModelWeights {
  embed: RowPart[]; // f16 (vocabSize, dim), in parts when larger than one storage binding
  layers: LayerWeights[];
  /** f32 (dim): the final norm's weight. */
  finalNorm: GPUBuffer;
  lmHead: F16Stack; // (vocabSize, dim); shares `embed` when tied
  /** Sign bits of every Hadamard factor the model's transforms use. */
  had: HadTable;
  /** Bytes of GPU memory the weights occupy. */
  bytes: number;
  /** Bytes one decode step reads (every linear once, plus the lm_head). */
  bytesPerToken: number;
  quantization: string;
}

const CHUNK_BYTES = 16 << 20;
/** Wait for the queue every this many uploaded bytes, so staging memory stays bounded. */
const DRAIN_BYTES = 256 << 20;

const F16_DTYPES = ["F16", "BF16", "F32"];

class Uploader {
  #device: GPUDevice;
  get device(): GPUDevice {
    return this.#device;
  }
  #progress?: LoadProgress;
  #sinceDrain = 0;
  #oom: Promise<{ label: string; loaded: number; message: string } | null>[] = [];
  bytes = 0;

  constructor(device: GPUDevice, progress?: LoadProgress) {
    this.#device = device;
    this.#progress = progress;
  }

  createBuffer(label: string, size: number): GPUBuffer {
    const max = this.#device.limits.maxStorageBufferBindingSize;
    if (size > max) {
      throw new WeightsError(
        `Cannot load tensor "${label}": it needs ${size} bytes in one GPU buffer, the device allows ${max}`,
      );
    }
    this.bytes += size;
    // Running out of GPU memory does not throw: it is reported through an error scope, checked at
    // every drain so a model too large for the device fails with its name instead of garbage output.
    this.#device.pushErrorScope("out-of-memory");
    const buf = this.#device.createBuffer({
      label,
      size: Math.max(16, Math.ceil(size / 16) * 16),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    const loaded = this.bytes;
    this.#oom.push(
      this.#device.popErrorScope().then((e) => e ? { label, loaded, message: e.message } : null),
    );
    return buf;
  }

  async #checkMemory(): Promise<void> {
    const results = await Promise.all(this.#oom.splice(0));
    const bad = results.find((r) => r !== null);
    if (bad) {
      throw new WeightsError(
        `The GPU ran out of memory allocating tensor "${bad.label}" after ${
          (bad.loaded / 2 ** 30).toFixed(2)
        } GiB of weights: the model does not fit in this device's memory (${bad.message})`,
      );
    }
  }

  async write(buf: GPUBuffer, offset: number, data: ArrayBufferView, fileBytes: number): Promise<void> {
    // writeBuffer needs a multiple of 4 bytes.
    let view = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    if (view.byteLength % 4) {
      const padded = new Uint8Array(Math.ceil(view.byteLength / 4) * 4);
      padded.set(view);
      view = padded;
    }
    this.#device.queue.writeBuffer(buf, offset, view);
    this.#progress?.advance(fileBytes);
    this.#sinceDrain += view.byteLength;
    if (this.#sinceDrain >= DRAIN_BYTES) {
      this.#sinceDrain = 0;
      this.#device.queue.submit([]);
      await this.#device.queue.onSubmittedWorkDone();
      await this.#checkMemory();
    }
  }

  async finish(): Promise<void> {
    this.#device.queue.submit([]);
    await this.#device.queue.onSubmittedWorkDone();
    await this.#checkMemory();
  }
}

/** A chunk of a bf16/f32 tensor as f16; values beyond f16's range are refused (they would be ±inf). */
function toF16(name: string, dtype: string, bytes: Uint8Array): Uint16Array | Uint8Array {
  if (dtype === "F16") return bytes;
  const f16 = convertToF16(dtype, bytes);
  const over = f16Overflows(dtype, bytes, f16);
  if (over.count > 0) {
    throw new WeightsError(
      `Cannot load tensor "${name}": ${over.count} ${dtype} values are beyond f16's range (±65504, the ` +
        `largest is ${
          over.max.toExponential(3)
        }); this engine keeps these weights in f16, where they would be ±inf`,
    );
  }
  return f16;
}

/** Streams a half-precision tensor (converted to f16 if stored as bf16/f32) into a new GPU buffer. */
async function loadF16(ckpt: Checkpoint, up: Uploader, name: string, shape: number[]): Promise<GPUBuffer> {
  const info = ckpt.expectTensor(name, F16_DTYPES, shape);
  const elems = shape.reduce((a, b) => a * b, 1);
  const buf = up.createBuffer(name, elems * 2);
  const elemSize = info.byteLength / elems;
  // Chunks hold whole elements so conversion never splits one.
  const chunk = Math.floor(CHUNK_BYTES / elemSize) * elemSize;
  for await (const c of ckpt.readChunks(name, chunk)) {
    const f16 = toF16(name, info.dtype, c.bytes);
    await up.write(buf, (c.offset / elemSize) * 2, f16, c.bytes.byteLength);
  }
  return buf;
}

/**
 * Streams a (rows, cols) half-precision tensor into row parts of at most `maxPartBytes` each (default:
 * the device's storage binding and buffer limits), so a table larger than one binding still loads.
 */
async function loadF16Rows(
  ckpt: Checkpoint,
  up: Uploader,
  name: string,
  rows: number,
  cols: number,
  maxPartBytes?: number,
): Promise<RowPart[]> {
  const info = ckpt.expectTensor(name, F16_DTYPES, [rows, cols]);
  const limits = up.device.limits;
  const cap = Math.min(maxPartBytes ?? Infinity, limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  // An even row count keeps every part's byte offsets 4-aligned for writeBuffer.
  const perPart = Math.max(2, Math.floor(cap / (cols * 2) / 2) * 2);
  if (perPart >= rows) {
    return [{ buffer: await loadF16(ckpt, up, name, [rows, cols]), rowStart: 0, rows }];
  }
  if (cols * 2 * 2 > cap) {
    throw new WeightsError(
      `Cannot load tensor "${name}": two rows of ${cols} fp16 values exceed ${cap} bytes`,
    );
  }
  const parts: RowPart[] = [];
  for (let r = 0; r < rows; r += perPart) {
    const n = Math.min(perPart, rows - r);
    parts.push({ buffer: up.createBuffer(`${name}[${r}:${r + n}]`, n * cols * 2), rowStart: r, rows: n });
  }
  const elemSize = info.byteLength / (rows * cols);
  const chunk = Math.floor(CHUNK_BYTES / elemSize / 2) * 2 * elemSize;
  for await (const c of ckpt.readChunks(name, chunk)) {
    const f16 = toF16(name, info.dtype, c.bytes);
    const e0 = c.offset / elemSize;
    const e1 = e0 + f16.byteLength / 2;
    for (const p of parts) {
      const p0 = p.rowStart * cols, p1 = (p.rowStart + p.rows) * cols;
      const a = Math.max(e0, p0), b = Math.min(e1, p1);
      if (a >= b) continue;
      const bytes = f16.subarray((a - e0) * 2, (b - e0) * 2);
      await up.write(p.buffer, (a - p0) * 2, bytes, (bytes.byteLength / 2) * elemSize);
    }
  }
  return parts;
}

async function readScalarInt(ckpt: Checkpoint, name: string): Promise<number> {
  const info = ckpt.expectTensor(name, ["I64", "I32"], []);
  const bytes = await ckpt.readTensor(name);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return info.dtype === "I64" ? Number(dv.getBigInt64(0, true)) : dv.getInt32(0, true);
}

/** A small vector as f32 on the host: f32 tensors as they are, others rounded to f16 first (as loadF16). */
async function readVector(
  ckpt: Checkpoint,
  name: string,
  length: number,
  dtypes = F16_DTYPES,
): Promise<Float32Array> {
  const info = ckpt.expectTensor(name, dtypes, [length]);
  const bytes = await ckpt.readTensor(name);
  if (info.dtype === "F32" && dtypes.length === 1) return new Float32Array(bytes.slice().buffer);
  return Float32Array.from(new Float16Array(convertToF16(info.dtype, bytes).buffer));
}

interface StackPart {
  linear: LinearName;
  name: string;
  outDim: number;
}

interface LoadedStack {
  stack: LinearStack;
  /** QTIP: SU of each part side by side (parts x inDim), SV side by side (outDim). */
  su?: Float32Array;
  sv?: Float32Array;
}

/**
 * Loads linears that read one input as a stack: fp16 parts as they are; QTIP parts with their trellises laid
 * out for the kernel and stacked along m (parts of different K, e.g. a v_proj at its own bitrate, become
 * separate segments), their LUTs side by side, and SU / SV returned for the layer's side buffer.
 */
async function loadStack(
  ckpt: Checkpoint,
  up: Uploader,
  had: HadTable,
  layer: number,
  label: string,
  parts: StackPart[],
  inDim: number,
): Promise<LoadedStack> {
  const c = ckpt.config;
  const quantized = parts.map((p) => isQuantizedLinear(c, layer, p.linear));
  const q = c.quant;
  if (!q || quantized.every((x) => !x)) {
    const rowParts = [];
    for (const p of parts) {
      rowParts.push([{
        buffer: await loadF16(ckpt, up, `${p.name}.weight`, [p.outDim, inDim]),
        rowStart: 0,
        rows: p.outDim,
      }]);
    }
    return { stack: new F16Stack(label, inDim, parts.map((p) => p.outDim), rowParts) };
  }
  if (quantized.some((x) => !x)) {
    throw new WeightsError(
      `Cannot load ${label}: ${parts.filter((_, i) => !quantized[i]).map((p) => p.name).join(", ")} ` +
        `is in quip_params.skip_list while ${
          parts.filter((_, i) => quantized[i]).map((p) => p.name).join(", ")
        } ` +
        `is quantized; Trellis runs linears that share an input either all quantized or all fp16`,
    );
  }
  const code = qtipCode(q);
  const V = code === "hyb" ? 2 : 1;
  const lutEntries = 1 << q.tlutBits;
  const su = new Float32Array(parts.length * inDim);
  const outDim = parts.reduce((a, p) => a + p.outDim, 0);
  const sv = new Float32Array(outDim);
  const inChunks = new Set<number>();
  const outHad: HadSpec[] = [];
  const segments: (QtipSegment & { at: number })[] = [];
  let col = 0;
  for (let g = 0; g < parts.length; g++) {
    const p = parts[g];
    const bits = qtipLinearK(q, p.linear) as 2 | 3 | 4;
    // The official conversion writes the CUDA kernel's swizzled layout exactly when its has_kernel()
    // accepts the configuration (lib/utils/kernel_check.py); otherwise plain pack_trellis order.
    const swizzled = code === "hyb" && q.L === 16 && q.V === 2 && bits >= 2 && bits <= 4 &&
      q.tlutBits === 9 && q.tdX === 16 && q.tdY === 16;
    // A new segment where the bitrate changes.
    let seg = segments[segments.length - 1];
    if (!seg || seg.bits !== bits) {
      const same = parts.slice(g).findIndex((r) => qtipLinearK(q, r.linear) !== bits);
      const members = parts.slice(g, same < 0 ? parts.length : g + same);
      const words = GPU_LAYOUT_HEADER +
        members.reduce((a, r) => a + gpuLayoutWords(r.outDim, inDim, bits) - GPU_LAYOUT_HEADER, 0);
      const segLabel = `${label}[${members.map((r) => r.linear).join("+")}]`;
      seg = {
        firstPart: g,
        parts: members.length,
        bits,
        mma: swizzled,
        trellis: up.createBuffer(`${segLabel}.trellis`, words * 4),
        lut: up.createBuffer(`${segLabel}.lut`, code === "hyb" ? members.length * lutEntries * 8 : 16),
        at: GPU_LAYOUT_HEADER,
      };
      segments.push(seg);
    }
    const wordsPerTile = (q.tdX * q.tdY * bits) / 16;
    const tiles = (p.outDim / q.tdX) * (inDim / q.tdY);
    const trellisName = `${p.name}.trellis`;
    ckpt.expectTensor(trellisName, ["I16", "U16"], [tiles, wordsPerTile]);
    const raw = await ckpt.readTensor(trellisName);
    const words = new Uint16Array(raw.slice().buffer);
    const gpuWords = toGpuLayout(words, {
      m: p.outDim,
      n: inDim,
      K: bits,
      V,
      layout: swizzled ? "swizzled" : "plain",
    });
    if (g === seg.firstPart) await up.write(seg.trellis, 0, gpuWords.subarray(0, GPU_LAYOUT_HEADER), 0);
    await up.write(seg.trellis, seg.at * 4, gpuWords.subarray(GPU_LAYOUT_HEADER), raw.byteLength);
    seg.at += gpuWords.length - GPU_LAYOUT_HEADER;
    if (code === "hyb") {
      const lutName = `${p.name}.tlut`;
      ckpt.expectTensor(lutName, ["F16", "F32"], [lutEntries, q.V]);
      const info = ckpt.tensor(lutName);
      const bytes = await ckpt.readTensor(lutName);
      const values = info.dtype === "F32"
        ? new Float32Array(bytes.slice().buffer)
        : Float32Array.from(new Float16Array(bytes.slice().buffer));
      await up.write(seg.lut, (g - seg.firstPart) * lutEntries * 8, values, bytes.byteLength);
    }
    su.set(await readVector(ckpt, `${p.name}.SU`, inDim), g * inDim);
    sv.set(await readVector(ckpt, `${p.name}.SV`, p.outDim, ["F32"]), col);
    const rcp = ckpt.has(`${p.name}.rcp`) ? await readScalarInt(ckpt, `${p.name}.rcp`) : 0;
    const tpRank = ckpt.has(`${p.name}.tp_rank`) ? await readScalarInt(ckpt, `${p.name}.tp_rank`) : 1;
    if (rcp !== 0 && rcp !== 1 && rcp !== 2) {
      throw new WeightsError(`Cannot load tensor "${p.name}.rcp": expected 0, 1 or 2, got ${rcp}`);
    }
    const split = rcp === 1 ? inDim : p.outDim;
    if (rcp !== 0 && (tpRank < 1 || split % tpRank !== 0)) {
      throw new WeightsError(
        `Cannot load tensor "${p.name}.tp_rank": ${tpRank} does not divide ${
          rcp === 1 ? "in" : "out"
        } features ${split}`,
      );
    }
    inChunks.add(rcp === 1 ? inDim / tpRank : inDim);
    outHad.push(had.spec(p.outDim, false, rcp === 2 ? p.outDim / tpRank : p.outDim));
    col += p.outDim;
  }
  if (inChunks.size !== 1) {
    throw new WeightsError(
      `Cannot load ${label}: its linears split the input transform differently (rcp / tp_rank); Trellis needs one`,
    );
  }
  const stack = new QtipStack(
    label,
    inDim,
    parts.map((p) => p.outDim),
    {
      code,
      tlutBits: q.tlutBits,
      segments: segments.map(({ at: _at, ...s }) => s),
    },
    had.spec(inDim, true, [...inChunks][0]),
    outHad,
  );
  return { stack, su, sv };
}

/** Loads every weight of a Llama checkpoint onto the device. */
export async function loadWeights(
  ckpt: Checkpoint,
  device: GPUDevice,
  progress?: LoadProgress,
  opts: { maxPartBytes?: number } = {},
): Promise<ModelWeights> {
  const c: ModelConfig = ckpt.config;
  const up = new Uploader(device, progress);
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const had = new HadTable(device, c.quant ? [c.dim, qDim, kvDim, c.hiddenDim] : []);
  const embed = await loadF16Rows(
    ckpt,
    up,
    "model.embed_tokens.weight",
    c.vocabSize,
    c.dim,
    opts.maxPartBytes,
  );
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}`;
    const part = (linear: LinearName, block: string, outDim: number): StackPart => ({
      linear,
      name: `${p}.${block}.${linear}`,
      outDim,
    });
    const qkv = await loadStack(ckpt, up, had, l, `${p}.qkv`, [
      part("q_proj", "self_attn", qDim),
      part("k_proj", "self_attn", kvDim),
      part("v_proj", "self_attn", kvDim),
    ], c.dim);
    const o = await loadStack(ckpt, up, had, l, `${p}.o`, [part("o_proj", "self_attn", c.dim)], qDim);
    const gateUp = await loadStack(ckpt, up, had, l, `${p}.gate_up`, [
      part("gate_proj", "mlp", c.hiddenDim),
      part("up_proj", "mlp", c.hiddenDim),
    ], c.dim);
    const down = await loadStack(
      ckpt,
      up,
      had,
      l,
      `${p}.down`,
      [part("down_proj", "mlp", c.dim)],
      c.hiddenDim,
    );
    // The side buffer: the norms, then each QTIP stack's SU and SV.
    const vectors: Float32Array[] = [
      await readVector(ckpt, `${p}.input_layernorm.weight`, c.dim),
      await readVector(ckpt, `${p}.post_attention_layernorm.weight`, c.dim),
    ];
    const at: SideOffsets = { attnGamma: 0, ffnGamma: c.dim };
    let end = 2 * c.dim;
    const add = (v: Float32Array | undefined): number | undefined => {
      if (!v) return undefined;
      vectors.push(v);
      end += v.length;
      return end - v.length;
    };
    at.suQkv = add(qkv.su);
    at.svQkv = add(qkv.sv);
    at.suO = add(o.su);
    at.svO = add(o.sv);
    at.suGu = add(gateUp.su);
    at.svGu = add(gateUp.sv);
    at.suD = add(down.su);
    at.svD = add(down.sv);
    const side = up.createBuffer(`${p}.side`, end * 4);
    let o0 = 0;
    for (const v of vectors) {
      await up.write(side, o0 * 4, v, 0);
      o0 += v.length;
    }
    layers.push({ side, at, qkv: qkv.stack, o: o.stack, gateUp: gateUp.stack, down: down.stack });
  }
  const finalNorm = up.createBuffer("model.norm.weight", c.dim * 4);
  await up.write(finalNorm, 0, await readVector(ckpt, "model.norm.weight", c.dim), c.dim * 2);
  const tied = c.tieWordEmbeddings || !ckpt.has("lm_head.weight");
  const lmHeadParts = tied
    ? embed
    : await loadF16Rows(ckpt, up, "lm_head.weight", c.vocabSize, c.dim, opts.maxPartBytes);
  const lmHead = new F16Stack("lm_head", c.dim, [c.vocabSize], [lmHeadParts]);
  await up.finish();
  let bytesPerToken = lmHead.weightBytes;
  for (const L of layers) {
    for (const s of [L.qkv, L.o, L.gateUp, L.down]) bytesPerToken += s.weightBytes;
  }
  const q = c.quant;
  return {
    embed,
    layers,
    finalNorm,
    lmHead,
    had,
    bytes: up.bytes,
    bytesPerToken,
    quantization: q ? `qtip-${q.decodeMode}-${q.K}bit` : "fp16",
  };
}

export function destroyWeights(w: ModelWeights): void {
  for (const part of w.embed) part.buffer.destroy();
  w.finalNorm.destroy();
  w.had.destroy();
  for (const L of w.layers) {
    L.side.destroy();
    for (const s of [L.qkv, L.o, L.gateUp, L.down]) s.destroy();
  }
  if (w.lmHead.parts[0] !== w.embed) w.lmHead.destroy();
}
