import { hadamard, HADAMARD_SOURCE, hadamardPlan, hadamardScratchBytes, hadSignBits } from "./hadamard.ts";
import { hadamardRef, hadamardRef64 } from "./hadamard_ref.ts";
import { HAD_K_SIZES, hadamardFactor, hadKMatrix } from "./had_tables.ts";
import { HAD_SHA256 } from "./_had_data.ts";
import {
  assertClose,
  assertCompilesCleanly,
  noGpu,
  randomF16,
  randomF32,
  readF32,
  run,
  scratch,
  testKernels,
  upload,
} from "../../test/support/mod.ts";

const NO_GPU = await noGpu();

function assert(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

// ---- tables -------------------------------------------------------------------------------------

Deno.test("hadKMatrix() gives Hadamard matrices: H H^T = K I", () => {
  for (const K of HAD_K_SIZES) {
    const h = hadKMatrix(K);
    assert(h.length === K * K, `had${K} has ${h.length} entries`);
    for (let a = 0; a < K; a++) {
      for (let b = 0; b < K; b++) {
        let s = 0;
        for (let i = 0; i < K; i++) s += h[a * K + i] * h[b * K + i];
        assert(s === (a === b ? K : 0), `had${K}: row ${a} . row ${b} = ${s}`);
      }
    }
  }
});

Deno.test("hadKMatrix() matches the sha256 the extraction tool took from matmul_had.py", async () => {
  for (const K of HAD_K_SIZES) {
    const h = hadKMatrix(K);
    const rows: string[] = [];
    for (let r = 0; r < K; r++) {
      rows.push(Array.from(h.subarray(r * K, (r + 1) * K), (v) => (v > 0 ? "+" : "-")).join(""));
    }
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(rows.join("\n")));
    const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    assert(hex === HAD_SHA256[K], `had${K}: sha256 ${hex}, expected ${HAD_SHA256[K]}`);
  }
});

Deno.test("hadamardFactor() splits sizes like get_hadK and rejects others", () => {
  const ok: [number, number, number][] = [
    [1, 1, 1],
    [2, 1, 2],
    [256, 1, 256],
    [32768, 1, 32768],
    [12, 12, 1],
    [896, 28, 32],
    [5504, 172, 32],
    [11008, 172, 64],
    [13824, 108, 128],
    [14336, 28, 512],
    [28672, 28, 1024],
    [5120, 20, 256],
    [53248, 52, 1024],
    [6656, 52, 128],
    [2496, 156, 16],
    [1120, 140, 8],
    [496, 124, 4],
    [232, 116, 2],
    [3840, 60, 64],
    [1152, 36, 32],
  ];
  for (const [n, K, pow2] of ok) {
    const f = hadamardFactor(n);
    assert(
      f.K === K && f.pow2 === pow2,
      `hadamardFactor(${n}) = ${JSON.stringify(f)}, expected ${K} x ${pow2}`,
    );
  }
  for (const n of [0, 3, 7, 137, 769, 5504 * 3, 172 * 3, 1.5, -4]) {
    let msg = "";
    try {
      hadamardFactor(n);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(msg.includes(`${n}`) && msg.includes("power of two"), `hadamardFactor(${n}) threw "${msg}"`);
  }
});

// ---- reference ----------------------------------------------------------------------------------

/** Dense H_n from its definition: had[i / p][j / p] * (-1)^popcount((i % p) & (j % p)) / sqrt(n). */
function denseH(n: number): Float64Array {
  const { K, pow2: p } = hadamardFactor(n);
  const h = hadKMatrix(K);
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let bits = (i % p) & (j % p), parity = 0;
      while (bits) {
        parity ^= bits & 1;
        bits >>= 1;
      }
      out[i * n + j] = h[Math.floor(i / p) * K + Math.floor(j / p)] * (parity ? -1 : 1) / Math.sqrt(n);
    }
  }
  return out;
}

Deno.test("hadamardRef() equals the dense (had_K kron H_p) / sqrt(n) and its transpose", () => {
  for (const n of [1, 8, 12, 24, 56, 40, 104]) {
    const x = randomF32(2 * n, n);
    const d = denseH(n);
    for (const transpose of [false, true]) {
      const want = new Float64Array(2 * n);
      for (let r = 0; r < 2; r++) {
        for (let i = 0; i < n; i++) {
          let s = 0;
          for (let j = 0; j < n; j++) s += (transpose ? d[j * n + i] : d[i * n + j]) * x[r * n + j];
          want[r * n + i] = s;
        }
      }
      assertClose(hadamardRef64(x, n, transpose), want, {
        atol: 1e-12,
        rtol: 1e-12,
        label: `n=${n} T=${transpose}`,
      });
    }
  }
});

Deno.test("hadamardRef() is orthogonal: H^T (H x) = x, and not symmetric for had_K", () => {
  for (const n of [28 * 4, 172, 52 * 2, 64]) {
    const x = randomF32(n, 3 * n);
    assertClose(hadamardRef64(hadamardRef64(x, n, false), n, true), x, { atol: 1e-12, label: `n=${n}` });
  }
  // had_28 and had_36 happen to be symmetric; the other factors are not, so H^T differs from H.
  const x = randomF32(172 * 2, 5);
  const a = hadamardRef64(x, 172 * 2, false), b = hadamardRef64(x, 172 * 2, true);
  assert(a.some((v, i) => Math.abs(v - b[i]) > 1e-3), "had172 transform equals its transpose");
});

// ---- kernel -------------------------------------------------------------------------------------

interface Case {
  n: number;
  rows: number;
  transpose?: boolean;
  chunk?: number;
  pre?: boolean;
  post?: boolean;
  scale?: number;
  accumulate?: boolean;
  tileLimit?: number;
}

const cases: Case[] = [
  { n: 1, rows: 3 },
  { n: 2, rows: 2, transpose: true, pre: true },
  { n: 12, rows: 7, transpose: true },
  { n: 24, rows: 5, pre: true, post: true, scale: 1 / 32 },
  { n: 256, rows: 300, transpose: true, pre: true, scale: 1 / 32 },
  { n: 232, rows: 3, post: true, accumulate: true },
  { n: 496, rows: 2, transpose: true },
  { n: 896, rows: 4, transpose: true, pre: true, scale: 1 / 32 },
  { n: 896, rows: 3, post: true, scale: 32, accumulate: true },
  { n: 1120, rows: 2, transpose: true, post: true },
  { n: 1152, rows: 2, pre: true },
  { n: 2496, rows: 2, transpose: true, accumulate: true },
  { n: 3840, rows: 2 },
  { n: 4096, rows: 3, transpose: true, pre: true, post: true, scale: 0.5 },
  { n: 5120, rows: 1, accumulate: true, post: true },
  { n: 5504, rows: 2, transpose: true, pre: true, scale: 1 / 32 },
  { n: 5504, rows: 1, post: true, scale: 32 },
  { n: 11008, rows: 2, transpose: true, pre: true, scale: 1 / 32 },
  { n: 13824, rows: 1, post: true, accumulate: true },
  { n: 14336, rows: 1, transpose: true, pre: true },
  { n: 16384, rows: 2, post: true, scale: 32, accumulate: true },
  { n: 28672, rows: 1, transpose: true, pre: true, post: true },
  { n: 32768, rows: 1, transpose: true, pre: true },
  { n: 53248, rows: 1, transpose: true, pre: true, scale: 1 / 32 },
  { n: 53248, rows: 1, post: true, accumulate: true },
  // Per-shard transforms (QTIP rcp): chunk < n.
  { n: 4096, rows: 2, chunk: 512, transpose: true, pre: true },
  { n: 896, rows: 3, chunk: 224, post: true, accumulate: true },
  { n: 53248, rows: 1, chunk: 6656, transpose: true, pre: true, scale: 1 / 32 },
  { n: 22016, rows: 1, chunk: 11008, post: true, scale: 32 },
  // Two passes forced by a small tile, including FWHT stages across segments next to a had_K mix.
  { n: 768, rows: 3, tileLimit: 32, transpose: true, pre: true },
  { n: 896, rows: 2, tileLimit: 256, post: true, accumulate: true },
  { n: 4096, rows: 2, tileLimit: 256, transpose: true, pre: true, post: true },
  { n: 5504, rows: 2, tileLimit: 512, pre: true, scale: 1 / 32 },
  { n: 28672, rows: 1, tileLimit: 256, transpose: true, pre: true, post: true, accumulate: true },
  { n: 53248, rows: 1, tileLimit: 512, chunk: 26624, post: true, scale: 32 },
];

function describe(c: Case): string {
  const opts = ["transpose", "pre", "post", "accumulate"].filter((k) => c[k as keyof Case]);
  if (c.scale !== undefined) opts.push(`scale=${c.scale}`);
  if (c.chunk !== undefined) opts.push(`chunk=${c.chunk}`);
  if (c.tileLimit !== undefined) opts.push(`tile<=${c.tileLimit}`);
  return `n=${c.n} rows=${c.rows}${opts.length ? " " + opts.join(" ") : ""}`;
}

/** What hadamard() should write, from hadamardRef64 chunk by chunk, and a tolerance scale for it. */
function expected(
  c: Case,
  x: Float32Array,
  pre: Float32Array | undefined,
  post: Float32Array | undefined,
  prior: Float32Array | undefined,
): Float64Array {
  const { n, rows } = c;
  const chunk = c.chunk ?? n;
  const out = new Float64Array(rows * n);
  const v = new Float64Array(chunk);
  for (let r = 0; r < rows; r++) {
    for (let c0 = 0; c0 < n; c0 += chunk) {
      for (let i = 0; i < chunk; i++) v[i] = x[r * n + c0 + i] * (pre ? pre[c0 + i] : 1);
      const y = hadamardRef64(v, chunk, c.transpose ?? false);
      for (let i = 0; i < chunk; i++) {
        const o = r * n + c0 + i;
        out[o] = y[i] * (c.scale ?? 1) * (post ? post[c0 + i] : 1) + (prior ? prior[o] : 0);
      }
    }
  }
  return out;
}

Deno.test("hadamard() compiles cleanly", { ignore: NO_GPU }, async () => {
  await assertCompilesCleanly(await testKernels(), "hadamard", HADAMARD_SOURCE);
});

Deno.test("hadSignBits() stores had_K and had_K^T as set bits for -1", () => {
  const K = 36, words = 2;
  const h = hadKMatrix(K), bits = hadSignBits(K);
  assert(bits.length === 2 * K * words, `hadSignBits(36) has ${bits.length} words`);
  for (let j = 0; j < K; j++) {
    for (let i = 0; i < K; i++) {
      const b = (bits[j * words + (i >> 5)] >>> (i & 31)) & 1;
      const t = (bits[(K + i) * words + (j >> 5)] >>> (j & 31)) & 1;
      assert(b === (h[j * K + i] < 0 ? 1 : 0) && t === b, `hadSignBits(36) wrong at [${j}][${i}]`);
    }
  }
});

// Tolerance: |got - want| <= 2e-7 * sqrt(log2(chunk) + K) * max|want| + 1e-6 * |want|: f32 butterflies
// and a K-term sum against a double reference (the worst case measured on lavapipe is under a quarter of it).
for (const c of cases) {
  Deno.test(`hadamard() matches hadamardRef at ${describe(c)}`, { ignore: NO_GPU }, async () => {
    const k = await testKernels();
    const { n, rows } = c;
    const x = randomF32(rows * n, n + rows, -2, 2);
    const pre = c.pre ? randomF16(n, n + 1, -1.5, 1.5) : undefined;
    const post = c.post ? randomF32(n, n + 2, -3, 3) : undefined;
    const prior = c.accumulate ? randomF32(rows * n, n + 3) : undefined;
    const out = prior ? upload(k, prior) : scratch(k, rows * n * 4);
    const need = hadamardScratchBytes(k, { rows, n, chunk: c.chunk, tileLimit: c.tileLimit });
    await run(k, (pass) =>
      hadamard(k, pass, {
        x: upload(k, x),
        out,
        rows,
        n,
        transpose: c.transpose,
        chunk: c.chunk,
        pre: pre && upload(k, pre.bits),
        post: post && upload(k, post),
        scale: c.scale,
        accumulate: c.accumulate,
        scratch: need ? scratch(k, need) : undefined,
        tileLimit: c.tileLimit,
      }));
    const got = await readF32(k, out, rows * n);
    const want = expected(c, x, pre?.values, post, prior);
    const { K } = hadamardFactor(c.chunk ?? n);
    const peak = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const atol = 2e-7 * Math.sqrt(Math.log2(c.chunk ?? n) + K) * peak;
    assertClose(got, want, { atol, rtol: 1e-6, label: describe(c) });
  });
}

Deno.test("hadamard() honours strides and offsets of x, out, pre and post", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  const rows = 3, n = 896, xStride = 1000, xOffset = 13, outStride = 901, outOffset = 5;
  const preOffset = 3, postOffset = 7;
  const x = randomF32(xOffset + rows * xStride, 21);
  const pre = randomF16(preOffset + n, 22);
  const post = randomF32(postOffset + n, 23);
  const prior = randomF32(outOffset + rows * outStride, 24);
  const out = upload(k, prior);
  await run(k, (pass) =>
    hadamard(k, pass, {
      x: upload(k, x),
      out,
      rows,
      n,
      transpose: true,
      pre: upload(k, pre.bits),
      post: upload(k, post),
      accumulate: true,
      xStride,
      xOffset,
      outStride,
      outOffset,
      preOffset,
      postOffset,
    }));
  const got = await readF32(k, out, outOffset + rows * outStride);
  for (let r = 0; r < rows; r++) {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = x[xOffset + r * xStride + i] * pre.values[preOffset + i];
    const y = hadamardRef(v, n, true);
    const want = new Float32Array(n);
    for (let i = 0; i < n; i++) want[i] = y[i] * post[postOffset + i] + prior[outOffset + r * outStride + i];
    const base = outOffset + r * outStride;
    assertClose(got.subarray(base, base + n), want, { atol: 2e-5, rtol: 1e-5, label: `row ${r}` });
    // Padding between rows is left alone.
    for (let i = base + n; i < base + outStride && i < got.length; i++) {
      assert(got[i] === prior[i], `row ${r}: padding at ${i} changed`);
    }
  }
});

Deno.test(
  "hadamard() asks for scratch only when a chunk outgrows workgroup memory",
  { ignore: NO_GPU },
  async () => {
    const k = await testKernels();
    const limit = Math.floor(k.device.limits.maxComputeWorkgroupStorageSize / 4);
    assert(hadamardScratchBytes(k, { rows: 4, n: 4096 }) === 0, "n=4096 should take one dispatch");
    assert(
      hadamardScratchBytes(k, { rows: 4, n: 53248, chunk: 6656 }) === 0,
      "chunk 6656 should take one dispatch",
    );
    assert(hadamardScratchBytes(k, { rows: 4, n: 53248 }) === 4 * 53248 * 4, "n=53248 needs scratch");
    assert(hadamardPlan(limit, limit).passes === 1, `a chunk of ${limit} should fit`);
    const x = scratch(k, 53248 * 4);
    let msg = "";
    try {
      await run(k, (pass) => hadamard(k, pass, { x, out: scratch(k, 53248 * 4), rows: 1, n: 53248 }));
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(msg.includes("scratch"), `missing scratch gave "${msg}"`);
  },
);
