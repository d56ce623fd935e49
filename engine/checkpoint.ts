// A checkpoint directory on disk: config.json (+ generation_config.json) and one or more safetensors
// files, behind one tensor-name index with streaming reads. Read by engine/weights.ts at load time.

import { basename, join } from "node:path";
import {
  formatShape,
  openSafetensors,
  type SafetensorsFile,
  type TensorChunk,
  type TensorInfo,
} from "./safetensors.ts";
import {
  type GenerationConfig,
  type ModelConfig,
  parseGenerationConfig,
  parseModelConfig,
} from "./model_config.ts";

export const INDEX_FILE = "model.safetensors.index.json";

export interface CheckpointTensor extends TensorInfo {
  file: SafetensorsFile;
}

export interface Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  /** From generation_config.json when the directory has one. */
  readonly generation?: GenerationConfig;
  readonly files: SafetensorsFile[];
  /** Sum of every tensor's byte length. */
  readonly totalBytes: number;
  /** Throws naming the tensor and the checkpoint when it is absent. */
  tensor(name: string): CheckpointTensor;
  has(name: string): boolean;
  /** Tensor names, sorted. */
  names(): string[];
  readTensor(name: string): Promise<Uint8Array<ArrayBuffer>>;
  /** Bounded-memory read; see SafetensorsFile.readChunks. */
  readChunks(name: string, chunkBytes: number): AsyncIterable<TensorChunk>;
  /** Looks a tensor up and checks its dtype and shape; see `expectTensor`. */
  expectTensor(name: string, dtypes: readonly string[], shape: readonly number[]): CheckpointTensor;
  close(): void;
}

/**
 * Checks a tensor's dtype (one of `dtypes`) and shape, throwing e.g.
 * `Cannot load tensor "lm_head.weight": expected F16 [4032, 256], got F32 [256, 4032]`.
 */
export function expectTensor<T extends TensorInfo>(
  info: T,
  dtypes: readonly string[],
  shape: readonly number[],
): T {
  const sameShape = info.shape.length === shape.length && info.shape.every((d, i) => d === shape[i]);
  if (!dtypes.includes(info.dtype) || !sameShape) {
    throw new Error(
      `Cannot load tensor "${info.name}": expected ${dtypes.join(" or ")} ${formatShape(shape)}, ` +
        `got ${info.dtype} ${formatShape(info.shape)}`,
    );
  }
  return info;
}

/** Opens a Hugging Face checkpoint directory: single file, several files, or a sharded index. */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const fail = (detail: string) => new Error(`Cannot open checkpoint "${dir}": ${detail}`);
  const stat = await statOrNull(dir);
  if (!stat) throw fail("the directory does not exist");
  if (!stat.isDirectory) throw fail("expected a directory, found a file");

  const configJson = await readJson(join(dir, "config.json"));
  if (configJson === undefined) throw fail("config.json is missing");
  const config = parseModelConfig(configJson, `config.json in "${dir}"`);
  const generationJson = await readJson(join(dir, "generation_config.json"));
  const generation = generationJson === undefined
    ? undefined
    : parseGenerationConfig(generationJson, `generation_config.json in "${dir}"`);

  const files: SafetensorsFile[] = [];
  try {
    const map = new Map<string, CheckpointTensor>();
    const indexJson = await readJson(join(dir, INDEX_FILE));
    if (indexJson !== undefined) {
      await loadIndexed(dir, indexJson, files, map);
    } else {
      const names = await safetensorsNames(dir);
      if (names.length === 0) {
        const bin = (await statOrNull(join(dir, "pytorch_model.bin")))
          ? " (pytorch_model.bin is there: convert it to safetensors)"
          : "";
        throw fail(`no *.safetensors files and no ${INDEX_FILE}${bin}`);
      }
      for (const name of names) {
        const file = await openSafetensors(join(dir, name));
        files.push(file);
        for (const info of file.tensors.values()) {
          const prev = map.get(info.name);
          if (prev) {
            throw fail(`tensor "${info.name}" is in both "${basename(prev.file.path)}" and "${name}"`);
          }
          map.set(info.name, { ...info, file });
        }
      }
    }
    return new DirCheckpoint(dir, config, generation, files, map);
  } catch (e) {
    for (const f of files) f.close();
    throw e;
  }
}

/** The parsed config.json of a checkpoint directory, after the same checks as `openCheckpoint`. */
export async function checkpointConfig(dir: string): Promise<ModelConfig> {
  const ckpt = await openCheckpoint(dir);
  ckpt.close();
  return ckpt.config;
}

async function loadIndexed(
  dir: string,
  indexJson: unknown,
  files: SafetensorsFile[],
  map: Map<string, CheckpointTensor>,
) {
  const fail = (detail: string) => new Error(`Cannot open checkpoint "${dir}": ${detail}`);
  const weightMap = isObject(indexJson) ? indexJson.weight_map : undefined;
  if (!isObject(weightMap) || !Object.values(weightMap).every((v) => typeof v === "string")) {
    throw fail(`${INDEX_FILE} must hold "weight_map": {tensor name: file name}`);
  }
  const byShard = new Map<string, string[]>();
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, string>)) {
    if (!byShard.has(shard)) byShard.set(shard, []);
    byShard.get(shard)!.push(tensor);
  }
  for (const [shard, tensors] of byShard) {
    const path = join(dir, shard);
    if (!(await statOrNull(path))) {
      throw fail(`shard "${shard}" named by ${INDEX_FILE} is missing (${tensors.length} tensors map to it)`);
    }
    const file = await openSafetensors(path);
    files.push(file);
    for (const name of tensors) {
      const info = file.tensors.get(name);
      if (!info) throw fail(`${INDEX_FILE} maps tensor "${name}" to "${shard}", which does not contain it`);
      map.set(name, { ...info, file });
    }
  }
}

class DirCheckpoint implements Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly generation?: GenerationConfig;
  readonly files: SafetensorsFile[];
  readonly totalBytes: number;
  #map: Map<string, CheckpointTensor>;

  constructor(
    dir: string,
    config: ModelConfig,
    generation: GenerationConfig | undefined,
    files: SafetensorsFile[],
    map: Map<string, CheckpointTensor>,
  ) {
    this.dir = dir;
    this.config = config;
    if (generation) this.generation = generation;
    this.files = files;
    this.#map = map;
    let total = 0;
    for (const t of map.values()) total += t.byteLength;
    this.totalBytes = total;
  }

  tensor(name: string): CheckpointTensor {
    const t = this.#map.get(name);
    if (!t) {
      throw new Error(
        `Cannot load tensor "${name}": checkpoint "${this.dir}" has no such tensor ` +
          `(${this.#map.size} tensors in ${this.files.length} files)`,
      );
    }
    return t;
  }

  has(name: string): boolean {
    return this.#map.has(name);
  }

  names(): string[] {
    return [...this.#map.keys()].sort();
  }

  readTensor(name: string): Promise<Uint8Array<ArrayBuffer>> {
    return this.tensor(name).file.read(name);
  }

  readChunks(name: string, chunkBytes: number): AsyncIterable<TensorChunk> {
    return this.tensor(name).file.readChunks(name, chunkBytes);
  }

  expectTensor(name: string, dtypes: readonly string[], shape: readonly number[]): CheckpointTensor {
    return expectTensor(this.tensor(name), dtypes, shape);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

async function safetensorsNames(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.endsWith(".safetensors") && !entry.isDirectory) names.push(entry.name);
  }
  return names.sort();
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Parsed JSON, or undefined when the file does not exist. */
async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`Cannot parse "${path}": invalid JSON: ${(e as Error).message}`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
