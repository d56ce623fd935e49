// Checks the plain-TS QTIP decode (qtip_ref.ts) against goldens made by the official Cornell-RelaxML/qtip decode
// functions (bench/official_goldens.py writes goldens/official_decode.safetensors): HYB, 1MAD and 3INST at
// K = 2, 3, 4, every decoded value, trellis state and value-table hash bit for bit.
import {
  codeV,
  decodeHatW,
  expandLut,
  f16FromBits,
  type QtipCode,
  type TrellisLayout,
  unpackTrellisPlain,
} from "./qtip_ref.ts";
import { type RawTensor, readSafetensors } from "./_fixtures.ts";
import { seededRandom } from "../../test/support/mod.ts";

const GOLDENS_FILE = new URL("./goldens/official_decode.safetensors", import.meta.url).pathname;
const CODES: QtipCode[] = ["hyb", "1mad", "3inst"];
const BITS = [2, 3, 4];

/** One case of the goldens' `cases` metadata (written by bench/official_goldens.py). */
export interface GoldenCase {
  name: string;
  code: QtipCode;
  K: number;
  L: number;
  V: number;
  tlut_bits: number;
  m: number;
  n: number;
  layout: TrellisLayout;
  /** The official value table's dtype ("float16" for HYB, "float32" otherwise) and the sha256 of its bytes. */
  lut_dtype: string;
  lut_sha256: string;
}

function fail(message: string): never {
  throw new Error(message);
}

function tensor(tensors: Map<string, RawTensor>, name: string, dtype: string, shape: number[]): RawTensor {
  const t = tensors.get(name) ?? fail(`Cannot find golden tensor "${name}"`);
  if (t.dtype !== dtype || t.shape.join() !== shape.join()) {
    fail(`Golden tensor "${name}": expected ${dtype} [${shape}], got ${t.dtype} [${t.shape}]`);
  }
  return t;
}

/** The `__metadata__` of a safetensors file (string values). */
function readMetadata(path: string): Record<string, string> {
  const file = Deno.readFileSync(path);
  const headerLen = Number(new DataView(file.buffer, file.byteOffset, file.byteLength).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerLen))).__metadata__ ?? {};
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Our expanded (65536, V) value table in the official table's dtype, as little-endian bytes. */
function lutBytes(c: GoldenCase, tlut: Uint16Array | undefined): Uint8Array<ArrayBuffer> {
  const lut = expandLut(c.code, tlut, c.tlut_bits);
  if (c.lut_dtype === "float32") return new Uint8Array(Float32Array.from(lut).buffer);
  if (c.lut_dtype === "float16") return new Uint8Array(Float16Array.from(lut).buffer);
  fail(`Golden case "${c.name}": unknown lut_dtype "${c.lut_dtype}"`);
}

/** Compares our hatW (f32 values) with the golden's F16 or F32 bits; our values must be exact in its dtype. */
function compareHatW(c: GoldenCase, ours: Float32Array, golden: RawTensor): void {
  const where = (i: number) => `row ${Math.floor(i / c.n)} column ${i % c.n}`;
  if (golden.dtype === "F16") {
    const bits = new Uint16Array(golden.bytes.buffer);
    const oursF16 = Float16Array.from(ours);
    const oursBits = new Uint16Array(oursF16.buffer);
    for (let i = 0; i < bits.length; i++) {
      if (oursF16[i] !== ours[i] || oursBits[i] !== bits[i]) {
        fail(
          `Golden case "${c.name}": hatW differs at ${where(i)}: got ${ours[i]}, expected ${
            f16FromBits(bits[i])
          }`,
        );
      }
    }
    return;
  }
  const bits = new Uint32Array(golden.bytes.buffer);
  const oursBits = new Uint32Array(ours.buffer, ours.byteOffset, ours.length);
  for (let i = 0; i < bits.length; i++) {
    if (oursBits[i] !== bits[i]) {
      const expected = new Float32Array(golden.bytes.buffer)[i];
      fail(`Golden case "${c.name}": hatW differs at ${where(i)}: got ${ours[i]}, expected ${expected}`);
    }
  }
}

/**
 * Checks every case of a goldens file against qtip_ref.ts: hatW via decodeHatW, the plain layout's states via
 * unpackTrellisPlain, the value table's sha256 via expandLut. Throws at the first difference; returns the names
 * of the cases checked. Fails when a (code, K) of HYB/1MAD/3INST x 2/3/4 is missing.
 */
export async function checkGoldens(path: string): Promise<string[]> {
  const meta = readMetadata(path);
  const cases: GoldenCase[] = JSON.parse(meta.cases ?? fail(`Goldens "${path}" have no "cases" metadata`));
  const tensors = readSafetensors(path, () => true);
  for (const code of CODES) {
    for (const K of BITS) {
      if (!cases.some((c) => c.code === code && c.K === K)) fail(`Goldens lack code "${code}" at K=${K}`);
    }
  }
  for (const c of cases) {
    if (!CODES.includes(c.code)) fail(`Golden case "${c.name}": unknown code "${c.code}"`);
    if (c.V !== codeV(c.code) || c.L !== 16) fail(`Golden case "${c.name}": unsupported V=${c.V} L=${c.L}`);
    if (c.layout !== "plain" && c.layout !== "swizzled") {
      fail(`Golden case "${c.name}": unknown layout "${c.layout}"`);
    }
    const tiles = (c.m / 16) * (c.n / 16);
    const trellis = tensor(tensors, `${c.name}.trellis`, "I16", [tiles, 16 * c.K]);
    const words = new Uint16Array(trellis.bytes.buffer);
    let tlut: Uint16Array | undefined;
    if (c.code === "hyb") {
      tlut = new Uint16Array(tensor(tensors, `${c.name}.tlut`, "F16", [2 ** c.tlut_bits, 2]).bytes.buffer);
    }
    const hatDtype = c.code === "hyb" ? "F16" : "F32";
    const golden = tensor(tensors, `${c.name}.hatW`, hatDtype, [c.m, c.n]);
    const ours = decodeHatW(words, {
      m: c.m,
      n: c.n,
      code: c.code,
      K: c.K,
      V: c.V,
      L: c.L,
      tlutBits: c.tlut_bits,
      tlut,
      layout: c.layout,
    });
    compareHatW(c, ours, golden);
    if (c.layout === "plain") {
      const states = new Int32Array(
        tensor(tensors, `${c.name}.states`, "I32", [tiles, 256 / c.V]).bytes.buffer,
      );
      const oursStates = unpackTrellisPlain(words, c.K, c.V);
      for (let i = 0; i < states.length; i++) {
        if (oursStates[i] !== states[i]) {
          fail(`Golden case "${c.name}": state ${i} differs: got ${oursStates[i]}, expected ${states[i]}`);
        }
      }
    }
    const sha = await sha256Hex(lutBytes(c, tlut));
    if (sha !== c.lut_sha256) {
      fail(`Golden case "${c.name}": value table sha256 differs: got ${sha}, expected ${c.lut_sha256}`);
    }
  }
  return cases.map((c) => c.name);
}

// --- the self-check's stand-in: the same format, written from our own reference ---

/** Writes {name: tensor} and string metadata as safetensors (8-byte LE header length, JSON header, data). */
function writeSafetensors(
  path: string,
  tensors: Map<string, { dtype: string; shape: number[]; data: ArrayBufferView }>,
  metadata: Record<string, string>,
): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  Deno.writeFileSync(path, out);
}

/**
 * A stand-in goldens file in the official format, decoded by OUR reference (so it checks the test's reading and
 * comparing, not the decode): HYB swizzled 64x96, 1MAD/3INST plain 32x48, K = 2, 3, 4.
 */
export async function writeStandInGoldens(path: string): Promise<void> {
  const tensors = new Map<string, { dtype: string; shape: number[]; data: ArrayBufferView }>();
  const cases: GoldenCase[] = [];
  for (const code of CODES) {
    for (const K of BITS) {
      const hyb = code === "hyb";
      const m = hyb ? 64 : 32, n = hyb ? 96 : 48, V = codeV(code), tlutBits = hyb ? 9 : 0;
      const tiles = (m / 16) * (n / 16), name = `${code}-k${K}`;
      const r = seededRandom(K * 10 + CODES.indexOf(code));
      const words = Uint16Array.from({ length: tiles * 16 * K }, () => Math.floor(r() * 65536));
      const tlut = hyb
        ? new Uint16Array(Float16Array.from({ length: 1024 }, () => 4 * r() - 2).buffer)
        : undefined;
      const c: GoldenCase = {
        name,
        code,
        K,
        L: 16,
        V,
        tlut_bits: tlutBits,
        m,
        n,
        layout: hyb ? "swizzled" : "plain",
        lut_dtype: hyb ? "float16" : "float32",
        lut_sha256: "",
      };
      c.lut_sha256 = await sha256Hex(lutBytes(c, tlut));
      cases.push(c);
      const hat = decodeHatW(words, { m, n, code, K, tlut, tlutBits, layout: c.layout });
      tensors.set(`${name}.trellis`, { dtype: "I16", shape: [tiles, 16 * K], data: words });
      if (tlut) tensors.set(`${name}.tlut`, { dtype: "F16", shape: [1024 / 2, 2], data: tlut });
      tensors.set(`${name}.hatW`, {
        dtype: hyb ? "F16" : "F32",
        shape: [m, n],
        data: hyb ? Float16Array.from(hat) : hat,
      });
      if (!hyb) {
        const states = Int32Array.from(unpackTrellisPlain(words, K, V));
        tensors.set(`${name}.states`, { dtype: "I32", shape: [tiles, 256 / V], data: states });
      }
    }
  }
  writeSafetensors(path, tensors, { format: "trellis-qtip-decode-goldens/1", cases: JSON.stringify(cases) });
}

function goldensMissing(): boolean {
  try {
    Deno.statSync(GOLDENS_FILE);
    return false;
  } catch {
    return true;
  }
}

const MISSING = goldensMissing();

Deno.test({
  name: "decodeHatW() equals the official QTIP decode goldens for HYB, 1MAD and 3INST at K = 2, 3, 4" +
    (MISSING ? " (ignored: kernels/qtip/goldens/ is missing; make it with bench/official_goldens.py)" : ""),
  ignore: MISSING,
  async fn() {
    await checkGoldens(GOLDENS_FILE);
  },
});

Deno.test("checkGoldens() accepts a stand-in from our reference and rejects one changed bit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/official_decode.safetensors`;
    await writeStandInGoldens(path);
    const names = await checkGoldens(path);
    if (names.length !== 9) fail(`Expected 9 stand-in cases, got ${names.length}`);
    // Flip the lowest bit of one value of each hatW dtype, and of one state: each must be caught.
    const file = Deno.readFileSync(path);
    const headerLen = Number(
      new DataView(file.buffer, file.byteOffset, file.byteLength).getBigUint64(0, true),
    );
    const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerLen)));
    for (
      const [name, pattern] of [["hyb-k3.hatW", /hatW differs/], ["1mad-k2.hatW", /hatW differs/], [
        "3inst-k4.states",
        /state \d+ differs/,
      ]] as const
    ) {
      const changed = file.slice();
      changed[8 + headerLen + header[name].data_offsets[0] + 2 * 37] ^= 1;
      Deno.writeFileSync(path, changed);
      let message = "";
      try {
        await checkGoldens(path);
      } catch (e) {
        message = String(e);
      }
      if (!pattern.test(message)) fail(`A changed bit in "${name}" was not caught: "${message}"`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
