// The register plan of normTransform and ropeKv (vector.ts) against transform_ref.ts, with and without
// subgroups, beside the workgroup-memory plan it replaces (legacy "norm" / "rope"): which plan each call
// takes (power-of-two widths the register plan, others and unaligned offsets the old one), and that both
// give the unfused steps' results at Llama widths (4096 x 1024 is Llama 3.1 8B's q x k/v).
import { HadTable, normTransform, ropeKv } from "./transform.ts";
import { normTransformRef, ropeKvRef } from "./transform_ref.ts";
import { buildRopeTable } from "../rope/rope.ts";
import { Kernels } from "../core.ts";
import {
  assertNear,
  noGpu,
  noSubgroups,
  randomF32,
  readF32,
  readU32,
  run,
  scratch,
  testKernels,
  upload,
  withSubgroupKernels,
} from "../../test/support/mod.ts";

const NO_GPU = await noGpu();
const NO_SUBGROUPS = NO_GPU ? "no WebGPU adapter" : await noSubgroups();

/** The pipelines `record` dispatches with k. */
async function labelsOf(k: Kernels, record: (pass: GPUComputePassEncoder) => void): Promise<string[]> {
  k.tap = [];
  await run(k, record);
  const labels = k.tap.map((d) => d.pipeline.label);
  k.tap = null;
  return labels;
}

/** The one dispatch's pipeline starts with `prefix`; a register-plan label (kind:sizes..:threads:subgroup:
 * flags) names the subgroup size `sg` its FWHT shuffles with (0: none). */
function expectPlan(labels: string[], prefix: string, label: string, sg?: number): void {
  if (labels.length !== 1 || !labels[0].startsWith(prefix)) {
    throw new Error(`${label}: dispatched ${labels.join(", ")}; expected ${prefix}...`);
  }
  if (sg === undefined || !prefix.endsWith("_vec:")) return;
  const fields = labels[0].split(":");
  const at = prefix === "norm_vec:" ? 3 : 5;
  if (fields[at] !== String(sg)) {
    throw new Error(`${label}: ${labels[0]} does not shuffle with subgroups of ${sg}`);
  }
}

/** The subgroup size the register plan should shuffle with on k (its one fixed size, or none). */
const sgOf = (k: Kernels) => (k.features.subgroups ? k.features.subgroupSize : 0);

type Variant = "qtip" | "plain" | "first" | "gather";

/** One normTransform call against normTransformRef; `plan` is the pipeline prefix it must take. */
async function normCase(
  k: Kernels,
  c: { dim: number; parts: number; variant: Variant; outOffset: number; plan: string },
): Promise<void> {
  const { dim, parts, variant, outOffset } = c;
  const rows = 3;
  const had = new HadTable(k.device, [dim]);
  const xIn = randomF32(rows * dim, dim + parts, -2, 2);
  const y = randomF32(rows * dim, dim + 7, -4, 4);
  const sv = randomF32(dim, 11, 0.5, 1.5);
  const gamma = randomF32(dim, 12, 0.5, 1.5);
  const su = Array.from({ length: parts }, (_, g) => randomF32(dim, 13 + g, -1.2, 1.2));
  // Side vectors at offsets that are multiples of 4: [4 spare | sv | gamma | su_0 ..].
  const vec = new Float32Array(4 + (2 + parts) * dim);
  vec.set(sv, 4);
  vec.set(gamma, 4 + dim);
  su.forEach((v, g) => vec.set(v, 4 + (2 + g) * dim));
  const qtip = variant !== "plain";
  const finish = variant !== "first";
  const gather = variant === "gather" ? [2, 0] : undefined;
  const want = normTransformRef({
    xIn,
    dim,
    eps: 1e-5,
    parts,
    rows: gather,
    finish: finish ? { y, sv: qtip ? sv : undefined, had: qtip ? {} : null } : undefined,
    gamma,
    su: qtip ? su : undefined,
    inHad: qtip ? {} : null,
  });
  const outRows = gather?.length ?? rows;
  const xOut = scratch(k, rows * dim * 4);
  const out = scratch(k, (parts * outRows * dim + outOffset) * 4);
  const meta = upload(k, new Uint32Array([7, 7, ...(gather ?? [0])]));
  const labels = await labelsOf(k, (pass) =>
    normTransform(k, pass, {
      xIn: upload(k, xIn),
      xOut,
      vec: upload(k, vec),
      had,
      out,
      rows: outRows,
      parts,
      dim,
      eps: 1e-5,
      outOffset,
      finish: finish
        ? { y: upload(k, y), sv: qtip ? 4 : undefined, had: qtip ? had.spec(dim, false) : null }
        : undefined,
      writeX: finish,
      norm: { gamma: 4 + dim },
      su: qtip ? 4 + 2 * dim : undefined,
      inHad: qtip ? had.spec(dim, true) : null,
      gather: gather ? { meta, idxOffset: 2 } : undefined,
    }));
  const label = `dim ${dim} parts ${parts} ${variant} outOffset ${outOffset}`;
  expectPlan(labels, c.plan, label, sgOf(k));
  const got = await readF32(k, out, parts * outRows * dim + outOffset);
  for (let g = 0; g < parts; g++) {
    assertNear(got.subarray(outOffset + g * outRows * dim), want.out[g], 2e-5, `${label} part ${g}`);
  }
  if (finish && !gather) assertNear(await readF32(k, xOut, rows * dim), want.xOut, 2e-6, `${label} residual`);
  had.destroy();
}

/** The normTransform cases: the register plan at powers of two, the old plan elsewhere. */
async function normCases(k: Kernels, legacy: boolean): Promise<void> {
  const old = "norm_transform:";
  for (const dim of [128, 256, 1024, 4096]) {
    for (const parts of [1, 3]) {
      for (const variant of ["qtip", "plain", "first", "gather"] as const) {
        await normCase(k, { dim, parts, variant, outOffset: 16, plan: legacy ? old : "norm_vec:" });
      }
    }
  }
  // An output offset that is not a whole vec4, and a width that is not a power of two: the old plan.
  await normCase(k, { dim: 256, parts: 2, variant: "qtip", outOffset: 6, plan: old });
  await normCase(k, { dim: 320, parts: 1, variant: "plain", outOffset: 16, plan: old });
}

/** One ropeKv call (3 tokens of 2 sequences in a paged cache) against ropeKvRef. */
async function ropeCase(
  k: Kernels,
  c: { hd: number; nHeads: number; nKvHeads: number; qtip: boolean; plan: string },
): Promise<void> {
  const { hd, nHeads, nKvHeads, qtip } = c;
  const blockSize = 4, maxBlocksPerSeq = 3, T = 3;
  const qDim = nHeads * hd, kvDim = nKvHeads * hd, w = qDim + 2 * kvDim;
  const had = new HadTable(k.device, [qDim, kvDim]);
  const ropeMaxPos = 8;
  const rope = buildRopeTable({ headDim: hd, theta: 10000, maxPos: ropeMaxPos });
  const y = randomF32(T * w, qDim + (qtip ? 3 : 4), -2, 2);
  const sv = randomF32(w, 5, 0.5, 1.5);
  const positions = [5, 0, 10]; // the last one past the RoPE table: clamped
  const seqs = [1, 0, 1];
  const table = new Uint32Array([2, 0, 0, 4, 1, 5]); // seq 0: [2, 0, 0]; seq 1: [4, 1, 5]
  const numBlocks = 6;
  const cacheWords = numBlocks * nKvHeads * blockSize * hd / 2;
  const kCache = scratch(k, cacheWords * 4), vCache = scratch(k, cacheWords * 4);
  const qOut = scratch(k, T * qDim * 4);
  const labels = await labelsOf(k, (pass) =>
    ropeKv(k, pass, {
      y: upload(k, y),
      vec: upload(k, sv),
      had,
      rope: upload(k, rope),
      tokenSeq: upload(k, new Uint32Array(seqs)),
      tokenPos: upload(k, new Uint32Array(positions)),
      blockTable: upload(k, table),
      qOut,
      kCache,
      vCache,
      T,
      nHeads,
      nKvHeads,
      headDim: hd,
      blockSize,
      maxBlocksPerSeq,
      ropeMaxPos,
      sv: qtip ? 0 : undefined,
      hq: qtip ? had.spec(qDim, false) : null,
      hkv: qtip ? had.spec(kvDim, false) : null,
    }));
  const label = `q ${qDim} kv ${kvDim} head ${hd} qtip ${qtip}`;
  expectPlan(labels, c.plan, label, sgOf(k));
  const want = ropeKvRef({
    y,
    T,
    nHeads,
    nKvHeads,
    headDim: hd,
    positions,
    rope,
    ropeMaxPos,
    sv: qtip ? sv : undefined,
    had: qtip,
  });
  assertNear(await readF32(k, qOut, T * qDim), want.q, 2e-5, `${label}: q`);
  const kc = new Float16Array((await readU32(k, kCache, cacheWords)).buffer);
  const vc = new Float16Array((await readU32(k, vCache, cacheWords)).buffer);
  for (let t = 0; t < T; t++) {
    const pos = positions[t];
    const blk = table[seqs[t] * maxBlocksPerSeq + Math.floor(pos / blockSize)];
    for (let g = 0; g < nKvHeads; g++) {
      for (let d = 0; d < hd; d++) {
        const at = ((blk * nKvHeads + g) * blockSize + pos % blockSize) * hd + d;
        const i = t * kvDim + g * hd + d;
        assertNear(
          [kc[at], vc[at]],
          [Math.f16round(want.k[i]), Math.f16round(want.v[i])],
          1e-3,
          `${label}: kv t${t} head ${g} d${d}`,
        );
      }
    }
  }
  had.destroy();
}

async function ropeCases(k: Kernels, legacy: boolean): Promise<void> {
  // [headDim, heads, kv heads]: small GQA, Llama 3.1 8B's widths, equal widths (Llama 2's shape).
  for (const [hd, nHeads, nKvHeads] of [[64, 4, 2], [128, 32, 8], [128, 8, 8]]) {
    for (const qtip of [true, false]) {
      await ropeCase(k, { hd, nHeads, nKvHeads, qtip, plan: legacy ? "rope_kv:" : "rope_vec:" });
    }
  }
}

Deno.test({
  name: "normTransform / ropeKv register plan, without subgroups: equals the unfused steps",
  ignore: NO_GPU,
  async fn() {
    const k = await testKernels();
    await normCases(k, false);
    await ropeCases(k, false);
  },
});

Deno.test({
  name: "normTransform / ropeKv register plan, with subgroups: equals the unfused steps",
  ignore: NO_SUBGROUPS !== null,
  async fn() {
    await withSubgroupKernels(async (k) => {
      if (typeof k === "string") throw new Error(k);
      await normCases(k, false);
      await ropeCases(k, false);
    });
  },
});

Deno.test({
  name: "normTransform / ropeKv under legacy 'norm' and 'rope' keep the workgroup-memory plan",
  ignore: NO_GPU,
  async fn() {
    const base = await testKernels();
    const k = new Kernels(base.device, { ...base.features, legacy: new Set(["norm", "rope"]) });
    await normCases(k, true);
    await ropeCases(k, true);
  },
});
