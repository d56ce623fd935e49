// Test helper: locates the shared QTIP fixtures and reads tensors from a safetensors file (8-byte LE header
// length, JSON header {name: {dtype, shape, data_offsets}}, then the data). Private to the qtip tests.

export interface RawTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array<ArrayBuffer>;
}

export { fixturesDir, noFixtures } from "../../test/support/mod.ts";

/** Every tensor of a safetensors file whose name passes `want`. */
export function readSafetensors(path: string, want: (name: string) => boolean): Map<string, RawTensor> {
  const file = Deno.readFileSync(path);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerLen)));
  const data = 8 + headerLen;
  const out = new Map<string, RawTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__" || !want(name)) continue;
    const t = info as { dtype: string; shape: number[]; data_offsets: [number, number] };
    // Copy so typed views over the bytes are aligned.
    const bytes = file.slice(data + t.data_offsets[0], data + t.data_offsets[1]);
    out.set(name, { dtype: t.dtype, shape: t.shape, bytes });
  }
  return out;
}

export function u16Of(t: RawTensor): Uint16Array {
  return new Uint16Array(t.bytes.buffer, 0, t.bytes.byteLength / 2);
}

/** One quantized linear of a fixture checkpoint with its reference hatW (f16 bits, row-major m x n). */
export interface FixtureLinear {
  label: string;
  m: number;
  n: number;
  trellis: Uint16Array;
  tlut: Uint16Array;
  hatW: Uint16Array;
}

export const FIXTURE_CHECKPOINTS = ["llama2-style-qtip-2bit-hyb", "llama31-style-qtip-2bit-hyb"];
export const FIXTURE_LINEARS = ["model.layers.0.mlp.down_proj", "model.layers.0.self_attn.k_proj"];

export function loadFixtureLinears(dir: string): FixtureLinear[] {
  const out: FixtureLinear[] = [];
  for (const ckpt of FIXTURE_CHECKPOINTS) {
    const model = readSafetensors(
      `${dir}${ckpt}/model.safetensors`,
      (n) => FIXTURE_LINEARS.some((l) => n.startsWith(l + ".")),
    );
    const refs = readSafetensors(`${dir}references/${ckpt}.safetensors`, (n) => n.endsWith(".hatW_decoded"));
    for (const lin of FIXTURE_LINEARS) {
      const hat = refs.get(`${lin}.hatW_decoded`)!;
      const [m, n] = hat.shape;
      out.push({
        label: `${ckpt} ${lin}`,
        m,
        n,
        trellis: u16Of(model.get(`${lin}.trellis`)!),
        tlut: u16Of(model.get(`${lin}.tlut`)!),
        hatW: u16Of(hat),
      });
    }
  }
  return out;
}
