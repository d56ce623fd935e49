import {
  attention,
  ATTENTION_SOURCES,
  attentionDecode,
  attentionPrefill,
  attentionScratchBytes,
  DECODE_MIN_PARTITION,
  decodePartitionSize,
  decodeRegKernelName,
  type DecodeRegPlan,
  decodeRegSmemBytes,
  decodeSmemBytes,
  decodeSource,
  kvWrite,
  planDecode,
  planDecodeRegs,
  planPrefill,
  PREFILL_SHAPES,
  type PrefillPlan,
  prefillPlanOf,
  prefillSmemBytes,
} from "./attention.ts";
import { attentionRef, kvWriteRef } from "./attention_ref.ts";
import { oInputKernelName, oInputSource, planOInput } from "./o_input.ts";
import { DECODE_ROUND } from "./decode.ts";
import { blockTransform, HadTable } from "../transform/transform.ts";
import { blockTransformRef } from "../transform/transform_ref.ts";
import {
  assertClose,
  assertCompilesCleanly,
  fakeKernels,
  noGpu,
  randomF16,
  randomF32,
  readBytes,
  readF32,
  run,
  scratch,
  seededRandom,
  testKernels,
  upload,
  withSubgroupKernels,
} from "../../test/support/mod.ts";
import { Kernels } from "../core.ts";

const NO_GPU = await noGpu();

// Outputs are softmax-weighted means of f16 values in [-1, 1]; the kernels differ from the reference only
// by f32 summation order and exp, so a small absolute tolerance suffices.
const ATOL = 2e-4;
const BLOCK_SIZE = 16;
const NAN_HALVES = 0x7e007e00; // unwritten cache slots hold NaN, so reading one fails the test

const HEADS = [
  { nHeads: 2, nKvHeads: 2, headDim: 128 },
  { nHeads: 4, nKvHeads: 2, headDim: 64 },
  { nHeads: 8, nKvHeads: 1, headDim: 64 },
];
const CONTEXTS = [1, 5, 16, 17, 300, 1030];
// Prefill chunk lengths per context: chunks end at the context's last position, most start after 0.
const CHUNKS = [1, 4, 7, 17, 70, 33];

type Heads = (typeof HEADS)[number];

interface Scenario {
  heads: Heads;
  contexts: number[];
  chunks: number[];
  keys: Float32Array[]; // per sequence row
  values: Float32Array[];
  tokenSeq: Uint32Array;
  tokenPos: Uint32Array;
  blockTable: Uint32Array;
  maxBlocksPerSeq: number;
  numBlocks: number;
  qkv: Float32Array; // fused (T, qkvStride)
  qkvStride: number;
  qOffset: number;
  kOffset: number;
  vOffset: number;
  q: Float32Array; // dense (T, nHeads * headDim)
  cache: { k: Uint32Array; v: Uint32Array }; // history positions filled, the rest NaN
}

function shuffle(n: number, seed: number): number[] {
  const r = seededRandom(seed);
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Sequences with `contexts` total positions whose last `chunks` positions form the batch. */
function scenario(heads: Heads, contexts: number[], chunks: number[], seed: number): Scenario {
  const { nHeads, nKvHeads, headDim } = heads;
  const kvDim = nKvHeads * headDim;
  const S = contexts.length;
  const keys = contexts.map((c, s) => randomF16(c * kvDim, seed + 10 * s + 1).values);
  const values = contexts.map((c, s) => randomF16(c * kvDim, seed + 10 * s + 2).values);
  // Physical blocks: shuffled over all sequences, with a few never used.
  const maxBlocksPerSeq = Math.ceil(Math.max(...contexts) / BLOCK_SIZE) + 1;
  const need = contexts.reduce((a, c) => a + Math.ceil(c / BLOCK_SIZE), 0);
  const numBlocks = need + 3;
  const perm = shuffle(numBlocks, seed + 3);
  const blockTable = new Uint32Array(S * maxBlocksPerSeq).fill(0xffffffff);
  let next = 0;
  for (let s = 0; s < S; s++) {
    for (let b = 0; b < Math.ceil(contexts[s] / BLOCK_SIZE); b++) {
      blockTable[s * maxBlocksPerSeq + b] = perm[next++];
    }
  }
  // History: positions before each chunk are already in the cache.
  const halves = numBlocks * kvDim * BLOCK_SIZE;
  const kBits = new Uint16Array(new Uint32Array(halves / 2).fill(NAN_HALVES).buffer);
  const vBits = new Uint16Array(new Uint32Array(halves / 2).fill(NAN_HALVES).buffer);
  const hist = { seq: [] as number[], pos: [] as number[] };
  const histK: number[] = [], histV: number[] = [];
  for (let s = 0; s < S; s++) {
    for (let p = 0; p < contexts[s] - chunks[s]; p++) {
      hist.seq.push(s);
      hist.pos.push(p);
      for (let i = 0; i < kvDim; i++) {
        histK.push(keys[s][p * kvDim + i]);
        histV.push(values[s][p * kvDim + i]);
      }
    }
  }
  const common = {
    tokenSeq: hist.seq,
    tokenPos: hist.pos,
    blockTable,
    maxBlocksPerSeq,
    nKvHeads,
    headDim,
    blockSize: BLOCK_SIZE,
  };
  kvWriteRef({ ...common, cache: kBits, rows: Float32Array.from(histK) });
  kvWriteRef({ ...common, cache: vBits, rows: Float32Array.from(histV) });
  // The batch: sequences in a scrambled order, each chunk contiguous.
  const order = shuffle(S, seed + 4);
  const seqs: number[] = [], poss: number[] = [];
  for (const s of order) {
    for (let p = contexts[s] - chunks[s]; p < contexts[s]; p++) {
      seqs.push(s);
      poss.push(p);
    }
  }
  const T = seqs.length;
  const qDim = nHeads * headDim;
  const qOffset = 3, kOffset = qOffset + qDim + 1, vOffset = kOffset + kvDim + 2;
  const qkvStride = vOffset + kvDim + 5;
  const q = randomF32(T * qDim, seed + 5, -2, 2);
  const qkv = randomF32(T * qkvStride, seed + 6, -9, 9); // junk around the used columns
  for (let t = 0; t < T; t++) {
    const s = seqs[t], p = poss[t];
    qkv.set(q.subarray(t * qDim, (t + 1) * qDim), t * qkvStride + qOffset);
    qkv.set(keys[s].subarray(p * kvDim, (p + 1) * kvDim), t * qkvStride + kOffset);
    qkv.set(values[s].subarray(p * kvDim, (p + 1) * kvDim), t * qkvStride + vOffset);
  }
  return {
    heads,
    contexts,
    chunks,
    keys,
    values,
    tokenSeq: Uint32Array.from(seqs),
    tokenPos: Uint32Array.from(poss),
    blockTable,
    maxBlocksPerSeq,
    numBlocks,
    qkv,
    qkvStride,
    qOffset,
    kOffset,
    vOffset,
    q,
    cache: { k: new Uint32Array(kBits.buffer), v: new Uint32Array(vBits.buffer) },
  };
}

type Kernel = "decode" | "prefill" | "auto";

interface RunOptions {
  scale?: number;
  maxWorkgroupStorage?: number;
  partitionSize?: number;
  prefillPlan?: PrefillPlan;
  decodePlan?: DecodeRegPlan;
}

/** Writes the batch's K/V with kvWrite, runs one attention kernel, and returns (T, nHeads * headDim). */
async function runScenario(
  k: Kernels,
  sc: Scenario,
  kernel: Kernel,
  ro: RunOptions = {},
): Promise<Float32Array> {
  const { nHeads, nKvHeads, headDim } = sc.heads;
  const T = sc.tokenSeq.length;
  const qDim = nHeads * headDim;
  const outStride = qDim + 5, outOffset = 2;
  const maxContext = Math.max(...sc.contexts);
  const out = scratch(k, (outOffset + T * outStride) * 4);
  const qkv = upload(k, sc.qkv);
  const paged = {
    kCache: upload(k, sc.cache.k),
    vCache: upload(k, sc.cache.v),
    tokenSeq: upload(k, sc.tokenSeq),
    tokenPos: upload(k, sc.tokenPos),
    blockTable: upload(k, sc.blockTable),
    T,
    nKvHeads,
    headDim,
    blockSize: BLOCK_SIZE,
    maxBlocksPerSeq: sc.maxBlocksPerSeq,
  };
  const att = {
    ...paged,
    q: qkv,
    qStride: sc.qkvStride,
    qOffset: sc.qOffset,
    out,
    outStride,
    outOffset,
    nHeads,
    maxContext,
    scratch: scratch(
      k,
      attentionScratchBytes({ T, nHeads, headDim, maxContext, partitionSize: ro.partitionSize }),
    ),
    maxQueryTokens: Math.max(...sc.chunks),
    ...ro,
  };
  await run(k, (pass) => {
    kvWrite(k, pass, {
      ...paged,
      k: qkv,
      v: qkv,
      kStride: sc.qkvStride,
      vStride: sc.qkvStride,
      kOffset: sc.kOffset,
      vOffset: sc.vOffset,
    });
    if (kernel === "decode") attentionDecode(k, pass, att);
    else if (kernel === "prefill") attentionPrefill(k, pass, att);
    else attention(k, pass, att);
  });
  const got = await readF32(k, out, outOffset + T * outStride);
  const dense = new Float32Array(T * qDim);
  for (let t = 0; t < T; t++) {
    dense.set(got.subarray(outOffset + t * outStride, outOffset + t * outStride + qDim), t * qDim);
    // The padding columns between rows stay untouched (zero).
    for (let i = qDim; i < outStride && outOffset + t * outStride + i < got.length; i++) {
      if (got[outOffset + t * outStride + i] !== 0) {
        throw new Error(`Token ${t} wrote past its row at column ${i}`);
      }
    }
  }
  return dense;
}

function reference(sc: Scenario, scale?: number): Float32Array {
  return attentionRef({
    ...sc.heads,
    q: sc.q,
    keys: sc.keys,
    values: sc.values,
    tokenSeq: sc.tokenSeq,
    tokenPos: sc.tokenPos,
    scale,
  });
}

function label(h: Heads): string {
  return `nHeads=${h.nHeads} nKvHeads=${h.nKvHeads} headDim=${h.headDim}`;
}

Deno.test("attention kernels compile cleanly", { ignore: NO_GPU }, async () => {
  const k = await testKernels();
  for (const [name, source] of Object.entries(ATTENTION_SOURCES)) {
    await assertCompilesCleanly(k, name, source);
  }
});

Deno.test("kvWrite() puts f16-rounded rows into their shuffled blocks and leaves other slots alone", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  const nKvHeads = 2, headDim = 6, kvDim = nKvHeads * headDim, maxBlocksPerSeq = 4, numBlocks = 9;
  const blockTable = Uint32Array.from([7, 2, 0xffffffff, 0xffffffff, 5, 0, 8, 1]);
  const tokenSeq = Uint32Array.from([1, 1, 0, 1, 0]);
  const tokenPos = Uint32Array.from([16, 47, 3, 0, 17]);
  const T = tokenSeq.length, stride = 2 * kvDim + 3;
  const fused = randomF32(T * stride, 21, -70000, 70000); // also overflows f16 to infinity
  for (let i = 0; i < 8; i++) fused[i * 3] = 1 + i * 2 ** -12; // ties and near-ties of rounding
  const rowsOf = (off: number) => {
    const r = new Float32Array(T * kvDim);
    for (let t = 0; t < T; t++) r.set(fused.subarray(t * stride + off, t * stride + off + kvDim), t * kvDim);
    return r;
  };
  const words = numBlocks * kvDim * 16 / 2;
  const initial = new Uint32Array(words).fill(0x12345678);
  const kCache = upload(k, initial), vCache = upload(k, initial);
  await run(k, (pass) =>
    kvWrite(k, pass, {
      k: upload(k, fused),
      v: upload(k, fused),
      kStride: stride,
      vStride: stride,
      kOffset: 0,
      vOffset: kvDim + 3,
      kCache,
      vCache,
      tokenSeq: upload(k, tokenSeq),
      tokenPos: upload(k, tokenPos),
      blockTable: upload(k, blockTable),
      T,
      nKvHeads,
      headDim,
      blockSize: 16,
      maxBlocksPerSeq,
    }));
  for (const [name, buf, off] of [["k", kCache, 0], ["v", vCache, kvDim + 3]] as const) {
    const want = new Uint16Array(initial.slice().buffer);
    kvWriteRef({
      cache: want,
      rows: rowsOf(off),
      tokenSeq,
      tokenPos,
      blockTable,
      maxBlocksPerSeq,
      nKvHeads,
      headDim,
      blockSize: 16,
    });
    const got = new Uint16Array(await readBytes(k, buf, words * 4));
    for (let i = 0; i < got.length; i++) {
      // WGSL lets pack2x16float round either way for inexact values: allow one unit in the last place.
      if (Math.abs(got[i] - want[i]) > 1 || (got[i] !== want[i] && (want[i] & 0x7fff) >= 0x7c00)) {
        throw new Error(
          `${name} cache half ${i}: got 0x${got[i].toString(16)}, expected 0x${want[i].toString(16)}`,
        );
      }
    }
  }
});

for (const heads of HEADS) {
  Deno.test(`attentionDecode() matches attentionRef, one token per sequence, ${label(heads)}`, {
    ignore: NO_GPU,
  }, async () => {
    const k = await testKernels();
    const sc = scenario(heads, CONTEXTS, CONTEXTS.map(() => 1), heads.headDim + heads.nHeads);
    const want = reference(sc);
    assertClose(await runScenario(k, sc, "decode"), want, { atol: ATOL, rtol: 0, label: "decode" });
    assertClose(await runScenario(k, sc, "auto"), want, { atol: ATOL, rtol: 0, label: "attention()" });
  });

  Deno.test(
    `attentionPrefill() matches attentionRef on mixed chunks, ${label(heads)}`,
    { ignore: NO_GPU },
    async () => {
      const k = await testKernels();
      const sc = scenario(heads, CONTEXTS, CHUNKS, 7 * heads.headDim + heads.nKvHeads);
      const want = reference(sc);
      assertClose(await runScenario(k, sc, "prefill"), want, { atol: ATOL, rtol: 0, label: "prefill" });
      assertClose(await runScenario(k, sc, "auto"), want, { atol: ATOL, rtol: 0, label: "attention()" });
      // The decode kernel serves any batch too (several tokens per sequence).
      assertClose(await runScenario(k, sc, "decode"), want, { atol: ATOL, rtol: 0, label: "decode" });
    },
  );
}

Deno.test("attentionDecode() writes directly when the context fits one partition, with a custom scale", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  const heads = HEADS[1];
  const contexts = [1, 5, 16, 17, 200];
  const sc = scenario(heads, contexts, [1, 2, 1, 3, 1], 77);
  assertClose(await runScenario(k, sc, "decode", { scale: 0.4 }), reference(sc, 0.4), {
    atol: ATOL,
    rtol: 0,
  });
});

Deno.test("attention kernels match attentionRef with small partitions and 16 KiB of workgroup memory", {
  ignore: NO_GPU,
}, async () => {
  const gpu = await testKernels();
  // A CPU adapter's decode plan scores each position with one invocation, a GPU's with several.
  for (const k of [gpu, new Kernels(gpu.device, { ...gpu.features, cpuAdapter: true })]) {
    for (
      const heads of [HEADS[0], { nHeads: 6, nKvHeads: 2, headDim: 256 }, {
        nHeads: 12,
        nKvHeads: 1,
        headDim: 40,
      }]
    ) {
      const sc = scenario(heads, [3, 40, 129], [3, 21, 1], heads.headDim + 5);
      const want = reference(sc);
      const ro = { maxWorkgroupStorage: 16384, partitionSize: 48 };
      assertClose(await runScenario(k, sc, "decode", ro), want, {
        atol: ATOL,
        rtol: 0,
        label: `decode ${label(heads)}`,
      });
      // One position per partition: 129 partitions, more than the reduce's workgroup holds at once.
      assertClose(await runScenario(k, sc, "decode", { partitionSize: 1 }), want, {
        atol: ATOL,
        rtol: 0,
        label: `decode, 1-position partitions, ${label(heads)}`,
      });
      if (heads.headDim <= 128) {
        assertClose(await runScenario(k, sc, "prefill", ro), want, {
          atol: ATOL,
          rtol: 0,
          label: `prefill ${label(heads)}`,
        });
      }
      assertClose(await runScenario(k, sc, "prefill"), want, {
        atol: ATOL,
        rtol: 0,
        label: `prefill ${label(heads)}`,
      });
    }
  }
});

Deno.test("attentionPrefill() matches attentionRef with every tile shape that fits the device", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  const limit = k.device.limits.maxComputeWorkgroupStorageSize;
  let runs = 0;
  for (
    const heads of [
      { nHeads: 8, nKvHeads: 2, headDim: 128 }, // 4 query heads per kv head (Llama 3.1 8B's group)
      { nHeads: 3, nKvHeads: 3, headDim: 64 },
      { nHeads: 6, nKvHeads: 2, headDim: 6 }, // rows of 3 words: one-word cache reads, zero padding
    ]
  ) {
    // A prompt chunk mid-sequence (T not a multiple of any tile), a whole prompt, a short chunk.
    const sc = scenario(heads, [211, 75, 9], [134, 75, 4], heads.headDim + 11);
    const want = reference(sc);
    for (const shape of PREFILL_SHAPES) {
      const plan = prefillPlanOf(shape, heads.headDim, heads.nHeads / heads.nKvHeads);
      if (prefillSmemBytes(plan) > limit) continue;
      assertClose(await runScenario(k, sc, "prefill", { prefillPlan: plan }), want, {
        atol: ATOL,
        rtol: 0,
        label: `prefill ${label(heads)} plan ${JSON.stringify(plan)}`,
      });
      runs++;
    }
  }
  if (runs < 12) throw new Error(`only ${runs} plans fit ${limit} bytes`);
});

Deno.test(
  "attentionPrefill() matches attentionRef on one long chunk after a cached prefix (GQA 4, 128 dims)",
  {
    ignore: NO_GPU,
  },
  async () => {
    const k = await testKernels();
    const heads = { nHeads: 8, nKvHeads: 2, headDim: 128 };
    const sc = scenario(heads, [301], [203], 5);
    assertClose(await runScenario(k, sc, "prefill"), reference(sc), { atol: ATOL, rtol: 0 });
  },
);

Deno.test("planDecode() and planPrefill() fit the workgroup memory and cover every query head", () => {
  for (const headDim of [2, 40, 64, 128, 256]) {
    for (const group of [1, 3, 4, 8, 12, 32]) {
      for (const budget of [16384, 32768, 49152]) {
        const d = planDecode(headDim, group, budget);
        if (d.HG * d.headChunks < group || d.HG > 8) {
          throw new Error(`decode plan ${JSON.stringify(d)} for group ${group}`);
        }
        if (decodeSmemBytes(d) > budget || d.WG < headDim / 2) {
          throw new Error(`decode plan ${JSON.stringify(d)} exceeds ${budget} bytes or has no whole group`);
        }
        if (headDim === 256 && budget === 16384) continue;
        const p = planPrefill(headDim, group, budget);
        if (p.HG * p.headChunks < group || p.BQ < 1 || p.BQ * p.HG > p.R || p.R > p.TX * p.TY) {
          throw new Error(`prefill plan ${JSON.stringify(p)} for group ${group}`);
        }
        if (prefillSmemBytes(p) > budget) {
          throw new Error(`prefill plan ${JSON.stringify(p)} exceeds ${budget} bytes`);
        }
      }
    }
  }
  // The H100's 48 KiB: 32 rows x 32 keys a step for Llama heads, 8 tokens x 4 heads with GQA 4.
  const llama = planPrefill(128, 4, 49152);
  if (llama.R !== 32 || llama.BK !== 32 || llama.BQ !== 8 || llama.TX * llama.TY !== 128) {
    throw new Error(`prefill plan ${JSON.stringify(llama)}`);
  }
});

// The split attention's combine fused with o_proj's input transform (o_input.ts): attentionDecode() with
// oInput against attentionRef then blockTransformRef (SU, then the input-side transform), on the portable
// path, with subgroup shuffles, and on the legacy plan (reduce, then blockTransform).

/** What the fused kernel is checked on; partitionSize sets how many partitions each context spans. */
interface OInputCase {
  heads: Heads;
  contexts: number[];
  chunks: number[];
  partitionSize?: number;
  chunk?: number; // the transform's chunk (tensor-parallel groups); default the whole row
}

const O_INPUT_CASES: OInputCase[] = [
  // n = 256, K = 1: contexts of 1 to 5 partitions, several tokens per sequence.
  { heads: HEADS[0], contexts: [1, 5, 16, 17, 300], chunks: [1, 1, 2, 1, 3], partitionSize: 64 },
  // GQA 4, one position per partition: 129 partitions, past the straight-line loads (the loop's tail).
  { heads: HEADS[1], contexts: [3, 40, 129], chunks: [3, 1, 4], partitionSize: 1 },
  // The default partitions: one covers these contexts, so the fused kernel combines a single partial; the
  // transform in two tensor-parallel chunks of 128.
  { heads: { nHeads: 4, nKvHeads: 4, headDim: 64 }, contexts: [50, 7], chunks: [2, 1], chunk: 128 },
  // had_20 x 16 (n = 320, GQA 5), had_12 x 32 (n = 384), had_172 x 8 (n = 1376: six sign words per row).
  {
    heads: { nHeads: 5, nKvHeads: 1, headDim: 64 },
    contexts: [1, 33, 100],
    chunks: [1, 2, 1],
    partitionSize: 16,
  },
  { heads: { nHeads: 3, nKvHeads: 3, headDim: 128 }, contexts: [1, 2], chunks: [1, 2], partitionSize: 1 },
  { heads: { nHeads: 43, nKvHeads: 1, headDim: 32 }, contexts: [2, 20], chunks: [1, 1], partitionSize: 8 },
  // Llama 2 7B's row (1024 threads, one vec4 each), 13B's (had_20 x 256: a second, partial vec4 slot) and
  // 70B's (two vec4s, the slot bit's FWHT level in registers; lavapipe's 32 KiB hold it unpadded).
  { heads: { nHeads: 32, nKvHeads: 32, headDim: 128 }, contexts: [300], chunks: [1], partitionSize: 32 },
  { heads: { nHeads: 40, nKvHeads: 40, headDim: 128 }, contexts: [90], chunks: [1], partitionSize: 32 },
  { heads: { nHeads: 64, nKvHeads: 8, headDim: 128 }, contexts: [70, 10], chunks: [1, 2], partitionSize: 16 },
];

const SU_OFFSET = 5; // SU sits at an odd offset of the side vectors

/**
 * Runs kvWrite and attentionDecode with oInput (then blockTransform when the call returns false, as forward.ts
 * does); returns the transformed rows (T, n), whether the fused kernel ran, and the dispatches recorded.
 */
async function runOInput(
  k: Kernels,
  sc: Scenario,
  c: OInputCase,
  su: Float32Array,
): Promise<{ out: Float32Array; fused: boolean; dispatches: number }> {
  const { nHeads, nKvHeads, headDim } = sc.heads;
  const n = nHeads * headDim;
  const T = sc.tokenSeq.length;
  const maxContext = Math.max(...sc.contexts);
  const had = new HadTable(k.device, [c.chunk ?? n]);
  const spec = had.spec(n, true, c.chunk ?? n);
  const side = new Float32Array(SU_OFFSET + n + 3).fill(7);
  side.set(su, SU_OFFSET);
  const vec = upload(k, side);
  const outStride = n + 3, outOffset = 1;
  const out = scratch(k, (outOffset + T * outStride) * 4);
  const att = scratch(k, T * n * 4);
  const qkv = upload(k, sc.qkv);
  const paged = {
    kCache: upload(k, sc.cache.k),
    vCache: upload(k, sc.cache.v),
    tokenSeq: upload(k, sc.tokenSeq),
    tokenPos: upload(k, sc.tokenPos),
    blockTable: upload(k, sc.blockTable),
    T,
    nKvHeads,
    headDim,
    blockSize: BLOCK_SIZE,
    maxBlocksPerSeq: sc.maxBlocksPerSeq,
  };
  let fused = false, dispatches = 0;
  await run(k, (pass) => {
    kvWrite(k, pass, {
      ...paged,
      k: qkv,
      v: qkv,
      kStride: sc.qkvStride,
      vStride: sc.qkvStride,
      kOffset: sc.kOffset,
      vOffset: sc.vOffset,
    });
    const before = k.dispatches;
    fused = attention(k, pass, {
      ...paged,
      q: qkv,
      qStride: sc.qkvStride,
      qOffset: sc.qOffset,
      out: att,
      nHeads,
      maxContext,
      maxQueryTokens: Math.max(...sc.chunks),
      partitionSize: c.partitionSize,
      scratch: scratch(
        k,
        attentionScratchBytes({ T, nHeads, headDim, maxContext, partitionSize: c.partitionSize }),
      ),
      oInput: { vec, had, spec, su: SU_OFFSET, out, outStride, outOffset },
    });
    if (!fused) {
      blockTransform(k, pass, {
        x: att,
        vec,
        had,
        out,
        T,
        n,
        gated: false,
        spec,
        su: SU_OFFSET,
        outStride,
        outOffset,
      });
    }
    dispatches = k.dispatches - before;
  });
  const got = await readF32(k, out, outOffset + T * outStride);
  had.destroy();
  if (got[0] !== 0) throw new Error("wrote before outOffset");
  const dense = new Float32Array(T * n);
  for (let t = 0; t < T; t++) {
    const row = outOffset + t * outStride;
    dense.set(got.subarray(row, row + n), t * n);
    for (let i = n; i < outStride && row + i < got.length; i++) {
      if (got[row + i] !== 0) throw new Error(`Token ${t} wrote past its row at column ${i}`);
    }
  }
  return { out: dense, fused, dispatches };
}

/** att = attentionRef, then out = scale * H^T(att * SU) (blockTransformRef's input job), per token. */
function oInputReference(sc: Scenario, c: OInputCase, su: Float32Array): Float32Array {
  const n = sc.heads.nHeads * sc.heads.headDim;
  return blockTransformRef({
    x: reference(sc),
    T: sc.tokenSeq.length,
    n,
    gated: false,
    had: { chunk: c.chunk ?? n },
    su,
  });
}

// The kernels differ from the references by f32 rounding, summation order and exp (lavapipe: at most 3e-7,
// legacy plan included); the transform is orthonormal, so it does not grow them. Outputs are ~0.1 to 1.4,
// and a wrong weight, sign, element or head moves them by that much.
const O_INPUT_ATOL = 1e-5;

Deno.test(
  "attentionDecode() with oInput matches attentionRef then blockTransformRef: fused, or legacy and CPU plans",
  {
    ignore: NO_GPU,
  },
  async () => {
    const k = await testKernels();
    const legacy = new Kernels(k.device, { ...k.features, legacy: new Set(["attn-o"]) });
    // The legacy decode kernel writes the same partials for the fused combine.
    const legacyDecode = new Kernels(k.device, { ...k.features, legacy: new Set(["attn-decode"]) });
    // Every partition's loads in one trip (call 22's plan).
    const oneTrip = new Kernels(k.device, { ...k.features, legacy: new Set(["o-group"]) });
    const cpu = new Kernels(k.device, { ...k.features, cpuAdapter: true });
    await withSubgroupKernels(async (sg) => {
      if (typeof sg === "string") console.warn(`oInput: not testing the subgroup path: ${sg}`);
      for (const [i, c] of O_INPUT_CASES.entries()) {
        const sc = scenario(c.heads, c.contexts, c.chunks, 31 + i);
        const n = c.heads.nHeads * c.heads.headDim;
        const su = randomF32(n, 40 + i, -1.2, 1.2);
        const want = oInputReference(sc, c, su);
        const runs: [string, Kernels, boolean][] = [
          ["portable", k, true],
          ["legacy", legacy, false],
          ["legacy decode", legacyDecode, true],
          ["one trip", oneTrip, true],
          ["cpu adapter", cpu, false],
        ];
        if (typeof sg !== "string") runs.push(["subgroups", sg, true]);
        for (const [name, kk, fusedWanted] of runs) {
          const got = await runOInput(kk, sc, c, su);
          const what = `${name} ${label(c.heads)} contexts ${c.contexts}`;
          if (got.fused !== fusedWanted) throw new Error(`${what}: fused ${got.fused}`);
          // Fused: the split kernel and the combine + transform; legacy: split (or direct), reduce, transform.
          if (fusedWanted && got.dispatches !== 2) throw new Error(`${what}: ${got.dispatches} dispatches`);
          assertClose(got.out, want, { atol: O_INPUT_ATOL, rtol: 0, label: what });
        }
      }
    });
  },
);

Deno.test("attention_o_input modules compile cleanly, with and without subgroup shuffles", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  await withSubgroupKernels(async (sg) => {
    for (const kk of typeof sg === "string" ? [k] : [k, sg]) {
      const had = new HadTable(kk.device, [4096, 5120]);
      for (
        const [nHeads, nParts, chunk] of [[32, 16, 4096], [32, 40, 2048], [40, 3, 5120], [64, 1, 8192]]
      ) {
        const spec = nHeads === 64
          ? { ...had.spec(4096, true), groups: 2 }
          : had.spec(nHeads * 128, true, chunk);
        const plan = planOInput(kk, {
          nHeads,
          headDim: 128,
          nParts,
          spec,
          su: nParts % 2 === 0 ? 0 : undefined,
        });
        if (!plan) throw new Error(`no plan for ${nHeads} heads`);
        if (kk === sg && plan.SG === 0) throw new Error(`no shuffles for ${nHeads} heads`);
        await assertCompilesCleanly(kk, oInputKernelName(plan), oInputSource(plan));
      }
      had.destroy();
    }
  });
});

Deno.test("attentionDecode() keeps the reduce and writes `out` when planOInput() cannot serve the row", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  // headDim 6: a vec4 would straddle two heads; n = 12 = had_12 x 1 has no block of 4 either.
  const heads = { nHeads: 2, nKvHeads: 1, headDim: 6 };
  const sc = scenario(heads, [3, 40], [1, 2], 3);
  const c = { heads, contexts: sc.contexts, chunks: sc.chunks, partitionSize: 16 };
  const su = randomF32(12, 4, -1.2, 1.2);
  const got = await runOInput(k, sc, c, su);
  if (got.fused) throw new Error("the fused kernel ran for headDim 6");
  assertClose(got.out, oInputReference(sc, c, su), { atol: O_INPUT_ATOL, rtol: 0 });
});

Deno.test("planOInput() plans Llama's rows in one workgroup and declines rows it cannot hold", () => {
  const fake = (invocations: number, storage: number, subgroupSize: number) =>
    fakeKernels({ invocations, storage, subgroupSize });
  const spec = (n: number, K = 1) => ({
    K,
    p: n / K,
    groups: 1,
    rows: 0,
    words: Math.ceil(K / 32),
    scale: 1,
  });
  const h100 = fake(1024, 49152, 32);
  const plan = (k: Kernels, nHeads: number, nParts: number, K = 1) =>
    planOInput(k, { nHeads, headDim: 128, nParts, spec: spec(nHeads * 128, K), su: 0 });
  const llama7 = plan(h100, 32, 10);
  if (
    !llama7 || llama7.WG !== 1024 || llama7.V !== 1 || llama7.PARTS !== 16 || llama7.GROUP !== 4 ||
    llama7.SG !== 32 || !llama7.PAD
  ) {
    throw new Error(`7B: ${JSON.stringify(llama7)}`);
  }
  const llama70 = plan(h100, 64, 3);
  // Four vec4 slots' worth of partitions a trip: two for 70B's two slots.
  if (!llama70 || llama70.V !== 2 || llama70.PARTS !== 4 || llama70.GROUP !== 2 || !llama70.PAD) {
    throw new Error(`70B: ${JSON.stringify(llama70)}`);
  }
  const llama13 = plan(h100, 40, 1, 20);
  if (!llama13 || llama13.V !== 2 || llama13.K !== 20 || llama13.PARTS !== 1 || llama13.GROUP !== 1) {
    throw new Error(`13B: ${JSON.stringify(llama13)}`);
  }
  // Without subgroups of a known size: no shuffles. 32 KiB: 8192 unpadded, 16384 not at all.
  if (plan(fake(1024, 49152, 0), 32, 2)?.SG !== 0) throw new Error("shuffles without a subgroup size");
  if (plan(fake(1024, 32768, 8), 64, 2)?.PAD !== false) throw new Error("8192 padded in 32 KiB");
  if (plan(fake(1024, 32768, 8), 128, 2) !== null) throw new Error("16384 planned in 32 KiB");
  // 256 invocations hold 4096 (4 vec4s a thread), not 8192.
  if (plan(fake(256, 49152, 32), 32, 2)?.V !== 4 || plan(fake(256, 49152, 32), 64, 2) !== null) {
    throw new Error("256 invocations");
  }
  if (planOInput(h100, { nHeads: 2, headDim: 6, nParts: 2, spec: spec(12, 12) }) !== null) {
    throw new Error("headDim 6 planned");
  }
  for (const p of [llama7, llama70, llama13]) {
    if (!/^attention_o_input_/.test(oInputKernelName(p)) || oInputSource(p).includes("{{")) {
      throw new Error(`source of ${oInputKernelName(p)}`);
    }
  }
});

// The register plan of the decode kernel (decode.ts) against attentionRef: on the portable path (no
// subgroups: a team's dot products meet in workgroup memory, each team keeps its own max), with subgroups
// (lavapipe: 8 lanes, so 128-dim rows take 8 lanes of 2 words and 32-dim rows 4 lanes, whose teams then add
// up by shuffles), and the legacy kernel it replaces (KernelFeatures.legacy "attn-decode").

interface DecodeCase {
  what: string;
  heads: Heads;
  contexts: number[];
  chunks: number[]; // tokens of each sequence, at its last positions
  partitionSize?: number;
  entry: "split" | "direct";
  /** A plan other than planDecodeRegs()'s, for a subgroup size (0: none). */
  plan?: (sg: number) => DecodeRegPlan;
}

const DECODE_CASES: DecodeCase[] = [
  {
    what: "7B heads, one token a sequence, 1 to 11 partitions of 64 (the default at these shapes)",
    heads: { nHeads: 4, nKvHeads: 4, headDim: 128 },
    contexts: [1, 2, 63, 64, 65, 129, 700],
    chunks: [1, 1, 1, 1, 1, 1, 1],
    entry: "split",
  },
  {
    what: "one partition (direct), several tokens a sequence",
    heads: { nHeads: 4, nKvHeads: 4, headDim: 128 },
    contexts: [1, 5, 37, 64],
    chunks: [1, 2, 1, 3],
    entry: "direct",
  },
  {
    what: "GQA 4, tokens at different positions",
    heads: { nHeads: 8, nKvHeads: 2, headDim: 128 },
    contexts: [3, 77, 300],
    chunks: [3, 4, 2],
    entry: "split",
  },
  {
    what: "GQA 3, 64 dims, 200-position partitions (four rounds, the last partial)",
    heads: { nHeads: 6, nKvHeads: 2, headDim: 64 },
    contexts: [201, 450, 17],
    chunks: [1, 2, 1],
    partitionSize: 200,
    entry: "split",
  },
  {
    what: "one position a partition",
    heads: { nHeads: 2, nKvHeads: 1, headDim: 128 },
    contexts: [3, 40],
    chunks: [2, 1],
    partitionSize: 1,
    entry: "split",
  },
  {
    what: "32 dims (teams of 4), 48-position partitions",
    heads: { nHeads: 4, nKvHeads: 2, headDim: 32 },
    contexts: [97, 10],
    chunks: [1, 3],
    partitionSize: 48,
    entry: "split",
  },
  {
    what: "256 dims, GQA 3",
    heads: { nHeads: 3, nKvHeads: 1, headDim: 256 },
    contexts: [70, 150],
    chunks: [1, 2],
    entry: "split",
  },
  {
    what: "16 dims (teams of 2, two positions a lane)",
    heads: { nHeads: 4, nKvHeads: 4, headDim: 16 },
    contexts: [130, 6],
    chunks: [2, 1],
    entry: "split",
  },
  {
    what: "128 dims in teams of 4 lanes of 4 words, 2 heads a workgroup",
    heads: { nHeads: 4, nKvHeads: 1, headDim: 128 },
    contexts: [150, 3],
    chunks: [1, 2],
    entry: "split",
    plan: (sg) => ({ HEAD_DIM: 128, HG: 2, L: 4, VPT: 4, NP: 4, WG: 64, SG: sg, headChunks: 2 }),
  },
  {
    what: "64 dims, one lane a position",
    heads: { nHeads: 2, nKvHeads: 2, headDim: 64 },
    contexts: [90, 20],
    chunks: [1, 1],
    entry: "split",
    plan: (sg) => ({ HEAD_DIM: 64, HG: 1, L: 1, VPT: 8, NP: 1, WG: 64, SG: sg, headChunks: 1 }),
  },
];

/** runScenario's decode run, with the labels of the decode dispatches it recorded. */
async function runDecode(
  k: Kernels,
  sc: Scenario,
  ro: RunOptions,
): Promise<{ out: Float32Array; labels: string[] }> {
  k.tap = [];
  try {
    const out = await runScenario(k, sc, "decode", ro);
    const labels = k.tap.map((d) => d.pipeline.label).filter((l) => l.startsWith("attention_decode"));
    return { out, labels };
  } finally {
    k.tap = null;
  }
}

Deno.test("attentionDecode() register plan matches attentionRef: portable, subgroups, and the legacy plan", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  const legacy = new Kernels(k.device, { ...k.features, legacy: new Set(["attn-decode"]) });
  await withSubgroupKernels(async (sg) => {
    if (typeof sg === "string") console.warn(`decode: not testing the subgroup path: ${sg}`);
    const runs: [string, Kernels, RegExp][] = [
      ["portable", k, /^attention_decode_d\d+_.*_sg0:/],
      ["legacy", legacy, /^attention_decode_legacy:/],
    ];
    if (typeof sg !== "string") runs.push(["subgroups", sg, new RegExp(`_sg${sg.features.subgroupSize}:`)]);
    for (const [i, c] of DECODE_CASES.entries()) {
      const sc = scenario(c.heads, c.contexts, c.chunks, 300 + i);
      const want = reference(sc);
      for (const [name, kk, kernel] of runs) {
        const sgSize = kk.features.subgroups ? kk.features.subgroupSize : 0;
        const ro = { partitionSize: c.partitionSize, decodePlan: c.plan?.(sgSize) };
        const got = await runDecode(kk, sc, ro);
        const what = `${name}, ${c.what}`;
        // One decode dispatch of the expected kernel and entry (the combine is attention_reduce).
        if (
          got.labels.length !== 1 || !kernel.test(got.labels[0]) || !got.labels[0].includes(`:${c.entry}:`)
        ) {
          throw new Error(`${what}: ran ${got.labels.join(", ")}`);
        }
        if (c.plan && name !== "legacy" && !got.labels[0].startsWith(decodeRegKernelName(c.plan(sgSize)))) {
          throw new Error(`${what}: ran ${got.labels[0]}, not the given plan`);
        }
        assertClose(got.out, want, { atol: ATOL, rtol: 0, label: what });
      }
    }
  });
});

Deno.test("decode register-plan modules compile cleanly, with and without subgroups", {
  ignore: NO_GPU,
}, async () => {
  const k = await testKernels();
  await withSubgroupKernels(async (sg) => {
    for (const kk of typeof sg === "string" ? [k] : [k, sg]) {
      const sizes = kk === k ? [0] : [8, 32];
      for (const size of sizes) {
        for (const [headDim, group] of [[128, 1], [128, 4], [64, 8], [256, 1], [32, 2], [16, 1]]) {
          const plan = planDecodeRegs(headDim, group, 49152, size);
          if (!plan || plan.SG !== size) {
            throw new Error(`no plan for ${headDim} dims, group ${group}, sg ${size}`);
          }
          const { headChunks: _, ...shape } = plan;
          await assertCompilesCleanly(kk, decodeRegKernelName(shape), decodeSource(shape));
        }
      }
    }
  });
});

Deno.test("planDecodeRegs() plans a round of 64 positions in workgroup memory and declines odd heads", () => {
  for (const sg of [0, 4, 8, 32, 64]) {
    for (const headDim of [8, 16, 32, 64, 96, 128, 256]) {
      for (const group of [1, 3, 4, 8, 12]) {
        for (const budget of [16384, 32768, 49152]) {
          const p = planDecodeRegs(headDim, group, budget, sg);
          const what = `${headDim} dims, group ${group}, sg ${sg}, ${budget} bytes: ${JSON.stringify(p)}`;
          if (!p) throw new Error(`no plan for ${what}`);
          const teams = p.WG / p.L;
          if (
            p.L * p.VPT * 8 !== headDim || teams * p.NP !== DECODE_ROUND || p.HG * p.headChunks < group ||
            p.HG * (p.headChunks - 1) >= group || p.HG * p.VPT > 4 && p.HG > 1 ||
            decodeRegSmemBytes(p) > budget || (p.SG > 0 && (p.L > p.SG || p.WG % p.SG !== 0))
          ) {
            throw new Error(what);
          }
        }
      }
    }
  }
  // The H100 (subgroups of 32, 48 KiB): 7B's heads in 16 lanes of one word, 4 positions a lane, 8 subgroups;
  // Llama 3.1 8B's GQA 4 in one workgroup a kv head; 70B's GQA 8 in two.
  const h100 = (headDim: number, group: number) => planDecodeRegs(headDim, group, 49152, 32);
  const llama7 = h100(128, 1);
  if (
    llama7?.L !== 16 || llama7.VPT !== 1 || llama7.NP !== 4 || llama7.WG !== 256 || llama7.SG !== 32 ||
    llama7.HG !== 1
  ) {
    throw new Error(`7B: ${JSON.stringify(llama7)}`);
  }
  if (h100(128, 4)?.HG !== 4 || h100(128, 4)?.headChunks !== 1 || h100(128, 8)?.headChunks !== 2) {
    throw new Error(`GQA: ${JSON.stringify([h100(128, 4), h100(128, 8)])}`);
  }
  if (planDecodeRegs(128, 1, 49152, 8)?.L !== 8 || planDecodeRegs(128, 1, 49152, 0)?.SG !== 0) {
    throw new Error("lanes beyond the subgroup");
  }
  // Rows not in 8-half words, or of more than 4 a lane: the legacy kernel's.
  for (const headDim of [2, 6, 40, 120]) {
    if (planDecodeRegs(headDim, 1, 49152, 32) !== null) throw new Error(`planned ${headDim} dims`);
  }
  // The shortest partition is one round: at 7B's heads and batch 1, 640 positions are ten single-round
  // partitions; 4096 split into 16 of four rounds.
  if (DECODE_MIN_PARTITION !== DECODE_ROUND || decodePartitionSize(32, 640) !== 64) {
    throw new Error(`partitions of ${decodePartitionSize(32, 640)} at 640`);
  }
  if (decodePartitionSize(32, 4096) !== 256) throw new Error(`partitions at 4096`);
});
