// Checks qtip_linear_ref.ts on its own and against the fixtures made by the official QTIP code
// (W_effective_fp32, hatW_decoded of layer 0's down_proj and k_proj), then runs the GPU Hadamard kernel
// around a dense hatW product on the same layers. Fixture tests are ignored when the fixtures are absent.
import { hadamard, hadamardRef64, hadamardScratchBytes, type Kernels } from "../kernels/mod.ts";
import { qtipEffectiveWeight, qtipLinearRef, type QtipLinearRefWeights } from "./qtip_linear_ref.ts";
import {
  fixturesDir,
  noFixtures,
  noGpu,
  randomF32 as random,
  readF32,
  run,
  scratch,
  testKernels,
  upload,
} from "../test/support/mod.ts";

const FIXTURES = fixturesDir() ?? "";
const NO_FIXTURES = noFixtures();
const NO_GPU = await noGpu();

function assert(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** y (rows, m) = x (rows, n) W^T for W (m, n), in doubles. */
function applyW(
  x: ArrayLike<number>,
  rows: number,
  W: ArrayLike<number>,
  m: number,
  n: number,
): Float64Array {
  const y = new Float64Array(rows * m);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < m; o++) {
      let s = 0;
      for (let c = 0; c < n; c++) s += W[o * n + c] * x[r * n + c];
      y[r * m + o] = s;
    }
  }
  return y;
}

/** Largest |a - b| divided by the largest |b|. */
function relMaxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert(a.length === b.length, `length mismatch: ${a.length} vs ${b.length}`);
  let err = 0, peak = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    peak = Math.max(peak, Math.abs(b[i]));
  }
  return err / peak;
}

// ---- the reference on its own --------------------------------------------------------------------

const synthetic: { m: number; n: number; rcp: number; tpRank: number }[] = [
  { m: 24, n: 56, rcp: 0, tpRank: 8 },
  { m: 48, n: 104, rcp: 1, tpRank: 2 },
  { m: 96, n: 40, rcp: 2, tpRank: 4 },
  { m: 344, n: 16, rcp: 2, tpRank: 2 },
];

for (const s of synthetic) {
  Deno.test(`qtipLinearRef() equals x W^T with W = qtipEffectiveWeight() at m=${s.m} n=${s.n} rcp=${s.rcp}`, () => {
    const w: QtipLinearRefWeights = {
      ...s,
      hatW: random(s.m * s.n, 1),
      su: random(s.n, 2),
      sv: random(s.m, 3, 0.5, 2),
    };
    const rows = 3;
    const x = random(rows * s.n, 4);
    const err = relMaxErr(qtipLinearRef(x, rows, w), applyW(x, rows, qtipEffectiveWeight(w), s.m, s.n));
    assert(err < 1e-6, `relative error ${err}`);
    if (s.rcp !== 0) {
      // The split is real: without it the layer computes something else.
      const whole = qtipEffectiveWeight({ ...w, rcp: 0 });
      assert(relMaxErr(whole, qtipEffectiveWeight(w)) > 0.1, "rcp split made no difference");
    }
  });
}

Deno.test("qtipEffectiveWeight() rejects a tp_rank that does not divide the split side", () => {
  let msg = "";
  try {
    qtipEffectiveWeight({ m: 24, n: 56, hatW: new Float32Array(24 * 56), su: [], sv: [], rcp: 1, tpRank: 3 });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("tp_rank 3"), `got "${msg}"`);
});

// ---- fixtures -----------------------------------------------------------------------------------

interface Tensor {
  dtype: string;
  shape: number[];
  values: Float32Array | BigInt64Array;
  bytes: Uint8Array;
}

/** Minimal safetensors reader: u64 header length, JSON header, data section. */
async function readSafetensors(path: string): Promise<(name: string) => Tensor> {
  const file = await Deno.readFile(path);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerLen)));
  const base = 8 + headerLen;
  return (name: string) => {
    const h = header[name];
    if (!h) throw new Error(`Cannot find tensor "${name}" in ${path}`);
    const [begin, end] = h.data_offsets as [number, number];
    const bytes = file.slice(base + begin, base + end);
    let values: Float32Array | BigInt64Array;
    if (h.dtype === "F32") values = new Float32Array(bytes.buffer);
    else if (h.dtype === "F16") values = Float32Array.from(new Float16Array(bytes.buffer));
    else if (h.dtype === "I64") values = new BigInt64Array(bytes.buffer);
    else throw new Error(`Cannot read tensor "${name}": unsupported dtype ${h.dtype}`);
    return { dtype: h.dtype, shape: h.shape, values, bytes };
  };
}

interface FixtureLayer extends QtipLinearRefWeights {
  suBits: Uint8Array; // SU as stored, f16
  wEffective: Float32Array; // (m, n)
}

async function loadLayer(model: string, layer: string): Promise<FixtureLayer> {
  const ref = await readSafetensors(`${FIXTURES}references/${model}.safetensors`);
  const ckpt = await readSafetensors(`${FIXTURES}${model}/model.safetensors`);
  const prefix = `model.layers.0.${layer}`;
  const hatW = ref(`${prefix}.hatW_decoded`);
  const [m, n] = hatW.shape;
  const su = ckpt(`${prefix}.SU`);
  return {
    m,
    n,
    hatW: hatW.values as Float32Array,
    su: su.values as Float32Array,
    suBits: su.bytes,
    sv: ckpt(`${prefix}.SV`).values as Float32Array,
    rcp: Number((ckpt(`${prefix}.rcp`).values as BigInt64Array)[0]),
    tpRank: Number((ckpt(`${prefix}.tp_rank`).values as BigInt64Array)[0]),
    wEffective: ref(`${prefix}.W_effective_fp32`).values as Float32Array,
  };
}

const fixtureCases = [
  { model: "llama2-style-qtip-2bit-hyb", layer: "mlp.down_proj" }, // n = 5504 = 172 * 32
  { model: "llama2-style-qtip-2bit-hyb", layer: "self_attn.k_proj" },
  { model: "llama31-style-qtip-2bit-hyb", layer: "mlp.down_proj" }, // n = 896 = 28 * 32
  { model: "llama31-style-qtip-2bit-hyb", layer: "self_attn.k_proj" },
];

// W_effective_fp32 was made in fp32 from the same hatW, SU, SV; ours is in doubles rounded once, so the
// two differ by fp32 rounding of the transforms only: bound 1e-6 of the largest |W| elementwise
// (measured 1.5e-7 to 2.5e-7).
const W_TOL = 1e-6;

for (const { model, layer } of fixtureCases) {
  Deno.test(`qtipEffectiveWeight() reproduces W_effective_fp32 of ${model} ${layer}`, {
    ignore: NO_FIXTURES,
  }, async () => {
    const w = await loadLayer(model, layer);
    const err = relMaxErr(qtipEffectiveWeight(w), w.wEffective);
    assert(err < W_TOL, `relative max error ${err}, expected < ${W_TOL}`);
  });
}

Deno.test("the fixtures confirm the input side uses had_K^T (H_n^T), not had_K", {
  ignore: NO_FIXTURES,
}, async () => {
  const w = await loadLayer("llama2-style-qtip-2bit-hyb", "mlp.down_proj");
  assert(w.n === 5504 && w.rcp === 0, `unexpected layer: n=${w.n} rcp=${w.rcp}`);
  // hatW H_n (had_K on the input side) instead of hatW H_n^T: transform each row with H_n^T.
  const swapped = qtipEffectiveWeight({
    ...w,
    hatW: hadamardRef64(hadamardRef64(w.hatW, w.n, true), w.n, true),
  });
  const err = relMaxErr(swapped, w.wEffective);
  assert(err > 0.1, `the other orientation also matches (relative max error ${err})`);
});

for (const { model, layer } of fixtureCases) {
  Deno.test(
    `qtipLinearRef() matches x W_effective^T of ${model} ${layer}`,
    { ignore: NO_FIXTURES },
    async () => {
      const w = await loadLayer(model, layer);
      const rows = 2;
      const x = random(rows * w.n, 7);
      const err = relMaxErr(qtipLinearRef(x, rows, w), applyW(x, rows, w.wEffective, w.m, w.n));
      assert(err < 2e-6, `relative max error ${err}`);
    },
  );
}

// ---- GPU: hadamard() kernels around a dense hatW product -------------------------------------------

async function runAndRead(
  k: Kernels,
  record: (pass: GPUComputePassEncoder) => void,
  buf: GPUBuffer,
  n: number,
): Promise<Float32Array> {
  await run(k, record);
  return await readF32(k, buf, n);
}

// Tolerance: relative max error 1e-5 against x W_effective^T (f32 transforms and an f32 dot of length n).
for (const { model, layer } of fixtureCases) {
  Deno.test(`hadamard() on both sides of a dense hatW reproduces ${model} ${layer}`, {
    ignore: NO_GPU || NO_FIXTURES,
  }, async () => {
    const k = await testKernels();
    const w = await loadLayer(model, layer);
    const { m, n } = w;
    const rows = 3;
    const x = random(rows * n, 11, -2, 2);
    // Input side, as the official forward: x * SU, H_n^T, / 32.
    const a = scratch(k, rows * n * 4);
    const inScratch = hadamardScratchBytes(k, { rows, n });
    const x2 = await runAndRead(
      k,
      (pass) =>
        hadamard(k, pass, {
          x: upload(k, x),
          out: a,
          rows,
          n,
          transpose: true,
          pre: upload(k, w.suBits),
          scale: 1 / 32,
          chunk: w.rcp === 1 ? n / w.tpRank : undefined,
          scratch: inScratch ? scratch(k, inScratch) : undefined,
        }),
      a,
      rows * n,
    );
    // hatW x2 in f32 on the host (another engineer's kernel decodes hatW on the GPU).
    const y1 = new Float32Array(rows * m);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < m; o++) {
        let s = 0;
        for (let c = 0; c < n; c++) s += w.hatW[o * n + c] * x2[r * n + c];
        y1[r * m + o] = s;
      }
    }
    // Output side: H_m, then SV * 32.
    const out = scratch(k, rows * m * 4);
    const outScratch = hadamardScratchBytes(k, { rows, n: m });
    const y = await runAndRead(
      k,
      (pass) =>
        hadamard(k, pass, {
          x: upload(k, y1),
          out,
          rows,
          n: m,
          post: upload(k, w.sv as Float32Array),
          scale: 32,
          chunk: w.rcp === 2 ? m / w.tpRank : undefined,
          scratch: outScratch ? scratch(k, outScratch) : undefined,
        }),
      out,
      rows * m,
    );
    const err = relMaxErr(y, applyW(x, rows, w.wEffective, m, n));
    assert(err < 1e-5, `relative max error ${err}`);
  });
}
