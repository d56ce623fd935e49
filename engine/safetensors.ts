// Safetensors files: header parsing with strict validation, and bounded-memory tensor reads.
// Sits under engine/checkpoint.ts; knows nothing about models or tensor names.
//
// Layout (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian u64 N,
// then N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?},
// then the data section; offsets are relative to the start of the data section.

/** Bytes per element of every dtype we recognize. */
export const DTYPE_BYTES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
} as const;

export type Dtype = keyof typeof DTYPE_BYTES;

/** Largest header we accept; the reference implementation uses the same bound. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  /** Row-major, outermost first; [] is a scalar. */
  shape: number[];
  byteLength: number;
  /** Absolute byte position of the first element in the file. */
  fileOffset: number;
}

export interface TensorChunk {
  /** Byte offset of `bytes` within the tensor. */
  offset: number;
  /** A view of a reused buffer: valid only until the iterator is advanced. */
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  readonly path: string;
  /** File size in bytes. */
  readonly size: number;
  /** The optional "__metadata__" string map. */
  readonly metadata: Record<string, string>;
  readonly tensors: Map<string, TensorInfo>;
  /** Reads a whole tensor into a fresh array; meant for small tensors (norms, scales). */
  read(name: string): Promise<Uint8Array<ArrayBuffer>>;
  /**
   * Reads a tensor in pieces of `chunkBytes` (the last may be shorter) into one reused buffer,
   * so host memory stays at `chunkBytes` however large the tensor is.
   */
  readChunks(name: string, chunkBytes: number): AsyncIterable<TensorChunk>;
  close(): void;
}

export function isDtype(s: string): s is Dtype {
  return Object.hasOwn(DTYPE_BYTES, s);
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Opens a safetensors file and parses its header; tensor data is read on demand. */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    const fail = (detail: string) => new Error(`Cannot read "${path}": ${detail}`);
    if (size < 8) {
      throw fail(`the file is ${size} bytes, expected at least 8 (the header length)`);
    }
    const lenBytes = new Uint8Array(8);
    await readFully(file, lenBytes, 0, path);
    const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) {
      throw fail(`header length is ${headerLen} bytes, expected at most ${MAX_HEADER_BYTES}`);
    }
    const n = Number(headerLen);
    if (8 + n > size) {
      throw fail(`header length is ${n} bytes but only ${size - 8} bytes follow the length field`);
    }
    const headerBytes = new Uint8Array(n);
    await readFully(file, headerBytes, 8, path);
    const { tensors, metadata } = parseHeader(headerBytes, path, size);
    return new SafetensorsReader(path, file, size, tensors, metadata);
  } catch (e) {
    file.close();
    throw e;
  }
}

/** Validates a header and returns its tensors with absolute file offsets. */
function parseHeader(bytes: Uint8Array, path: string, fileSize: number) {
  const fail = (detail: string) => new Error(`Cannot read "${path}": ${detail}`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw fail("the header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw fail(`the header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(json)) throw fail(`the header must be a JSON object, got ${describe(json)}`);

  const dataStart = 8 + bytes.byteLength;
  const dataBytes = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const spans: { name: string; begin: number; end: number }[] = [];

  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (!isObject(entry)) throw fail(`"__metadata__" must be an object, got ${describe(entry)}`);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") {
          throw fail(`"__metadata__" value "${k}" must be a string, got ${describe(v)}`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const bad = (detail: string) => fail(`tensor "${name}" ${detail}`);
    if (!isObject(entry)) throw bad(`must be an object, got ${describe(entry)}`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== "string" || !isDtype(dtype)) {
      throw bad(`has dtype ${describe(dtype)}, expected one of ${Object.keys(DTYPE_BYTES).join(", ")}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(`has shape ${describe(shape)}, expected an array of non-negative integers`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      throw bad(`has data_offsets ${describe(offsets)}, expected [begin, end] non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw bad(`has data_offsets [${begin}, ${end}], expected begin <= end`);
    if (end > dataBytes) {
      throw bad(
        `has data_offsets [${begin}, ${end}] past the end of the data section, which holds ${dataBytes} bytes`,
      );
    }
    const need = shapeSize(shape) * DTYPE_BYTES[dtype];
    if (end - begin !== need) {
      throw bad(
        `needs ${need} bytes for ${dtype} ${formatShape(shape)}, its data_offsets span ${end - begin}`,
      );
    }
    tensors.set(name, { name, dtype, shape: [...shape], byteLength: need, fileOffset: dataStart + begin });
    spans.push({ name, begin, end });
  }

  // Zero-length tensors occupy no bytes and may share an offset with anything.
  const sorted = spans.filter((s) => s.end > s.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1], cur = sorted[i];
    if (cur.begin < prev.end) {
      throw fail(
        `tensor "${cur.name}" data_offsets [${cur.begin}, ${cur.end}] overlap tensor "${prev.name}" ` +
          `[${prev.begin}, ${prev.end}], expected disjoint ranges`,
      );
    }
  }
  return { tensors, metadata };
}

class SafetensorsReader implements SafetensorsFile {
  readonly path: string;
  readonly size: number;
  readonly metadata: Record<string, string>;
  readonly tensors: Map<string, TensorInfo>;
  #file: Deno.FsFile | null;
  // seek + read pairs on the one handle are serialized through this chain, so interleaved
  // readers (two readChunks iterators, a read during a readChunks) never see each other's seeks.
  #lock: Promise<unknown> = Promise.resolve();

  constructor(
    path: string,
    file: Deno.FsFile,
    size: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
  ) {
    this.path = path;
    this.#file = file;
    this.size = size;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  #info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) {
      throw new Error(`Cannot read tensor "${name}" from "${this.path}": no such tensor in the file`);
    }
    return info;
  }

  #readAt(dst: Uint8Array, position: number): Promise<void> {
    const run = async () => {
      const file = this.#file;
      if (!file) throw new Error(`Cannot read "${this.path}": the file is closed`);
      await readFully(file, dst, position, this.path);
    };
    const p = this.#lock.then(run, run);
    this.#lock = p.catch(() => {});
    return p;
  }

  async read(name: string): Promise<Uint8Array<ArrayBuffer>> {
    const info = this.#info(name);
    const out = new Uint8Array(info.byteLength);
    if (info.byteLength > 0) await this.#readAt(out, info.fileOffset);
    return out;
  }

  async *readChunks(name: string, chunkBytes: number): AsyncIterable<TensorChunk> {
    const info = this.#info(name);
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) {
      throw new Error(
        `Cannot read tensor "${name}": chunkBytes must be a positive integer, got ${chunkBytes}`,
      );
    }
    const buffer = new Uint8Array(Math.min(chunkBytes, info.byteLength));
    for (let offset = 0; offset < info.byteLength; offset += chunkBytes) {
      const bytes = buffer.subarray(0, Math.min(chunkBytes, info.byteLength - offset));
      await this.#readAt(bytes, info.fileOffset + offset);
      yield { offset, bytes };
    }
  }

  close(): void {
    this.#file?.close();
    this.#file = null;
  }
}

async function readFully(file: Deno.FsFile, dst: Uint8Array, position: number, path: string) {
  await file.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < dst.byteLength) {
    const n = await file.read(dst.subarray(got));
    if (n === null) {
      throw new Error(
        `Cannot read "${path}": the file ended at byte ${position + got}, expected ${
          dst.byteLength - got
        } more`,
      );
    }
    got += n;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  const s = JSON.stringify(v);
  return s.length > 80 ? s.slice(0, 77) + "..." : s;
}

// ---- Conversion to f16 ----

/** Rounds one f32 (given as its u32 bit pattern) to f16 bits, to nearest even; overflow gives ±inf. */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf, quiet NaN
  const e = exp - 127 + 15; // f16 biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // f16 subnormal: value = m * 2^-24 with m = (1.mant * 2^23) >> (14 - e).
    if (e < -10) return sign; // below half the smallest subnormal
    const full = mant | 0x800000;
    const shift = 14 - e;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (m & 1))) m++;
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // a carry may reach the exponent, up to inf
  return sign | h;
}

let bf16Table: Uint16Array | null = null;

/** BF16 bits -> F16 bits for all 65536 inputs (bf16 is the top half of an f32). */
function bf16ToF16Table(): Uint16Array {
  if (!bf16Table) {
    bf16Table = new Uint16Array(65536);
    for (let b = 0; b < 65536; b++) bf16Table[b] = f32BitsToF16(b << 16);
  }
  return bf16Table;
}

/**
 * How many finite values of `bytes` (BF16 or F32) `convertToF16` turned into ±inf, and the largest
 * magnitude among them: weights beyond f16's range (±65504) that an f16 engine cannot hold.
 */
export function f16Overflows(
  dtype: string,
  bytes: Uint8Array,
  f16: Uint16Array,
): { count: number; max: number } {
  let count = 0;
  let max = 0;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < f16.length; i++) {
    if ((f16[i] & 0x7fff) !== 0x7c00) continue;
    const v = dtype === "BF16"
      ? new Float32Array(new Uint32Array([dv.getUint16(2 * i, true) << 16]).buffer)[0]
      : dtype === "F32"
      ? dv.getFloat32(4 * i, true)
      : Infinity;
    if (!Number.isFinite(v)) continue;
    count++;
    max = Math.max(max, Math.abs(v));
  }
  return { count, max };
}

/**
 * Converts little-endian F16, BF16 or F32 tensor bytes to f16 bit patterns, rounding to nearest
 * even. Values beyond f16's range become ±inf, as torch's `.half()` does.
 */
export function convertToF16(dtype: string, bytes: Uint8Array): Uint16Array<ArrayBuffer> {
  if (dtype !== "F16" && dtype !== "BF16" && dtype !== "F32") {
    throw new Error(`Cannot convert ${dtype} to F16: expected F16, BF16 or F32`);
  }
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new Error(
      `Cannot convert ${dtype} to F16: ${bytes.byteLength} bytes is not a multiple of ${size}`,
    );
  }
  // Copying also aligns the data for the typed-array views below (the host is little-endian).
  const aligned = new Uint8Array(bytes).buffer;
  if (dtype === "F16") return new Uint16Array(aligned);
  if (dtype === "BF16") {
    const src = new Uint16Array(aligned);
    const table = bf16ToF16Table();
    for (let i = 0; i < src.length; i++) src[i] = table[src[i]];
    return src;
  }
  const src = new Uint32Array(aligned);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16(src[i]);
  return out;
}
