// Checkpoint tensor names -> typed per-layer GPU weights. Tensors stream from disk to the GPU in
// bounded chunks, so host memory stays flat whatever the checkpoint's size; QTIP trellises are
// re-laid out for the kernel one tensor at a time.
import type { Checkpoint } from "./checkpoint.ts";
import { convertToF16 } from "./safetensors.ts";
import {
  isQuantizedLinear,
  type LinearName,
  type ModelConfig,
  qtipCode,
  qtipLinearK,
} from "./model_config.ts";
import { F16Linear, type Linear, type LinearScratch, QtipLinear, type RowPart } from "./linear.ts";
import type { LoadProgress } from "./progress.ts";
import { toGpuLayout } from "../kernels/mod.ts";

export class WeightsError extends Error {
  override name = "WeightsError";
}

export interface LayerWeights {
  attnNorm: GPUBuffer; // f16 (dim)
  ffnNorm: GPUBuffer; // f16 (dim)
  q: Linear; // (nHeads * headDim, dim)
  k: Linear; // (nKvHeads * headDim, dim)
  v: Linear; // (nKvHeads * headDim, dim)
  o: Linear; // (dim, nHeads * headDim)
  gate: Linear; // (hiddenDim, dim)
  up: Linear; // (hiddenDim, dim)
  down: Linear; // (dim, hiddenDim)
}

export interface ModelWeights {
  embed: RowPart[]; // f16 (vocabSize, dim), in parts when larger than one storage binding
  layers: LayerWeights[];
  finalNorm: GPUBuffer; // f16 (dim)
  lmHead: Linear; // (vocabSize, dim); shares `embed` when tied
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

/** Streams a half-precision tensor (converted to f16 if stored as bf16/f32) into a new GPU buffer. */
async function loadF16(ckpt: Checkpoint, up: Uploader, name: string, shape: number[]): Promise<GPUBuffer> {
  const info = ckpt.expectTensor(name, F16_DTYPES, shape);
  const elems = shape.reduce((a, b) => a * b, 1);
  const buf = up.createBuffer(name, elems * 2);
  const elemSize = info.byteLength / elems;
  // Chunks hold whole elements so conversion never splits one.
  const chunk = Math.floor(CHUNK_BYTES / elemSize) * elemSize;
  for await (const c of ckpt.readChunks(name, chunk)) {
    const f16 = info.dtype === "F16" ? c.bytes : convertToF16(info.dtype, c.bytes);
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
    const f16 = info.dtype === "F16" ? c.bytes : convertToF16(info.dtype, c.bytes);
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

async function loadLinear(
  ckpt: Checkpoint,
  up: Uploader,
  where: { layer: number; linear: LinearName; name: string },
  outDim: number,
  inDim: number,
  scratch: LinearScratch,
): Promise<Linear> {
  const q = ckpt.config.quant;
  const name = where.name;
  if (!q || !isQuantizedLinear(ckpt.config, where.layer, where.linear)) {
    const w = await loadF16(ckpt, up, `${name}.weight`, [outDim, inDim]);
    return new F16Linear(name, inDim, outDim, [{ buffer: w, rowStart: 0, rows: outDim }]);
  }
  const code = qtipCode(q);
  const bits = qtipLinearK(q, where.linear) as 2 | 3 | 4;
  const wordsPerTile = (q.tdX * q.tdY * bits) / 16;
  const tiles = (outDim / q.tdX) * (inDim / q.tdY);
  const trellisName = `${name}.trellis`;
  ckpt.expectTensor(trellisName, ["I16", "U16"], [tiles, wordsPerTile]);
  const raw = await ckpt.readTensor(trellisName);
  const words = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
  // The official conversion writes the CUDA kernel's swizzled layout exactly when its has_kernel()
  // accepts the configuration (lib/utils/kernel_check.py); otherwise plain pack_trellis order.
  const swizzled = code === "hyb" && q.L === 16 && q.V === 2 && bits >= 2 && bits <= 4 &&
    q.tlutBits === 9 && q.tdX === 16 && q.tdY === 16;
  const gpuWords = toGpuLayout(words, {
    m: outDim,
    n: inDim,
    K: bits,
    V: q.V,
    layout: swizzled ? "swizzled" : "plain",
  });
  const trellis = up.createBuffer(trellisName, gpuWords.byteLength);
  await up.write(trellis, 0, gpuWords, raw.byteLength);

  let lut: GPUBuffer;
  if (code === "hyb") {
    const lutName = `${name}.tlut`;
    ckpt.expectTensor(lutName, ["F16", "F32"], [1 << q.tlutBits, q.V]);
    const info = ckpt.tensor(lutName);
    const bytes = await ckpt.readTensor(lutName);
    const values = info.dtype === "F32"
      ? new Float32Array(bytes.slice().buffer)
      : Float32Array.from(new Float16Array(bytes.slice().buffer));
    lut = up.createBuffer(lutName, values.byteLength);
    await up.write(lut, 0, values, bytes.byteLength);
  } else {
    lut = up.createBuffer(`${name}.lut (unused)`, 16);
  }
  const su = await loadF16(ckpt, up, `${name}.SU`, [inDim]);
  const svName = `${name}.SV`;
  ckpt.expectTensor(svName, ["F32"], [outDim]);
  const svBytes = await ckpt.readTensor(svName);
  const sv = up.createBuffer(svName, svBytes.byteLength);
  await up.write(sv, 0, svBytes, svBytes.byteLength);

  const rcp = ckpt.has(`${name}.rcp`) ? await readScalarInt(ckpt, `${name}.rcp`) : 0;
  const tpRank = ckpt.has(`${name}.tp_rank`) ? await readScalarInt(ckpt, `${name}.tp_rank`) : 1;
  if (rcp !== 0 && rcp !== 1 && rcp !== 2) {
    throw new WeightsError(`Cannot load tensor "${name}.rcp": expected 0, 1 or 2, got ${rcp}`);
  }
  const split = rcp === 1 ? inDim : outDim;
  if (rcp !== 0 && (tpRank < 1 || split % tpRank !== 0)) {
    throw new WeightsError(
      `Cannot load tensor "${name}.tp_rank": ${tpRank} does not divide ${
        rcp === 1 ? "in" : "out"
      } features ${split}`,
    );
  }
  return new QtipLinear(name, inDim, outDim, {
    trellis,
    lut,
    su,
    sv,
    code,
    bits,
    mma: swizzled,
    rcp,
    tpRank,
  }, scratch);
}

/** Loads every weight of a Llama checkpoint onto the device. */
export async function loadWeights(
  ckpt: Checkpoint,
  device: GPUDevice,
  scratch: LinearScratch,
  progress?: LoadProgress,
  opts: { maxPartBytes?: number } = {},
): Promise<ModelWeights> {
  const c: ModelConfig = ckpt.config;
  const up = new Uploader(device, progress);
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
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
    const lin = (n: string, out: number, inp: number) => {
      const linear = n.split(".")[1] as LinearName;
      return loadLinear(ckpt, up, { layer: l, linear, name: `${p}.${n}` }, out, inp, scratch);
    };
    layers.push({
      attnNorm: await loadF16(ckpt, up, `${p}.input_layernorm.weight`, [c.dim]),
      ffnNorm: await loadF16(ckpt, up, `${p}.post_attention_layernorm.weight`, [c.dim]),
      q: await lin("self_attn.q_proj", qDim, c.dim),
      k: await lin("self_attn.k_proj", kvDim, c.dim),
      v: await lin("self_attn.v_proj", kvDim, c.dim),
      o: await lin("self_attn.o_proj", c.dim, qDim),
      gate: await lin("mlp.gate_proj", c.hiddenDim, c.dim),
      up: await lin("mlp.up_proj", c.hiddenDim, c.dim),
      down: await lin("mlp.down_proj", c.dim, c.hiddenDim),
    });
  }
  const finalNorm = await loadF16(ckpt, up, "model.norm.weight", [c.dim]);
  const tied = c.tieWordEmbeddings || !ckpt.has("lm_head.weight");
  const lmHeadParts = tied
    ? embed
    : await loadF16Rows(ckpt, up, "lm_head.weight", c.vocabSize, c.dim, opts.maxPartBytes);
  const lmHead = new F16Linear("lm_head", c.dim, c.vocabSize, lmHeadParts);
  await up.finish();
  let bytesPerToken = lmHead.weightBytes;
  for (const L of layers) {
    for (const lin of [L.q, L.k, L.v, L.o, L.gate, L.up, L.down]) bytesPerToken += lin.weightBytes;
  }
  const q = c.quant;
  return {
    embed,
    layers,
    finalNorm,
    lmHead,
    bytes: up.bytes,
    bytesPerToken,
    quantization: q ? `qtip-${q.decodeMode}-${q.K}bit` : "fp16",
  };
}

export function destroyWeights(w: ModelWeights): void {
  for (const part of w.embed) part.buffer.destroy();
  w.finalNorm.destroy();
  for (const L of w.layers) {
    L.attnNorm.destroy();
    L.ffnNorm.destroy();
    for (const lin of [L.q, L.k, L.v, L.o, L.gate, L.up, L.down]) lin.destroy();
  }
  if (w.lmHead instanceof F16Linear && w.lmHead.parts !== w.embed) w.lmHead.destroy();
}
