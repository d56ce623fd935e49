// Host side of the fused transform kernels: the steps between two linear layers, with QTIP's randomized
// Hadamard transforms folded in (transform_lib.wgsl says how a transform is computed):
//   normTransform  finish the previous linear + residual, RMSNorm, the next linears' input transforms
//   ropeKv         finish a stacked q/k/v linear, RoPE, write q and the paged K/V cache
//   blockTransform the MLP's middle (finish gate/up, silu * up, down's SU) or a linear's input transform,
//                  spread over many workgroups for long vectors (block_transform.wgsl), or for many rows
//                  each workgroup one row's tile of output blocks (block_rows.wgsl)
// normTransform and ropeKv take vector.ts's register plan where it fits (power-of-two widths: one row per
// workgroup held in registers, loads issued up front) and these workgroup-memory kernels elsewhere.
// A plain (fp16) model runs the same steps with the transforms switched off. Side vectors (norm weights, SU,
// SV) come from one f32 buffer per layer, `vec`, at offsets the caller gives; sign bits from a HadTable.
import normSource from "./norm_transform.wgsl" with { type: "text" };
import ropeKvSource from "./rope_kv.wgsl" with { type: "text" };
import blockSource from "./block_transform.wgsl" with { type: "text" };
import rowsSource from "./block_rows.wgsl" with { type: "text" };
import libSource from "./transform_lib.wgsl" with { type: "text" };
import { type BufferArg, KernelError, type Kernels, ParamWriter } from "../core.ts";
import { hadamardFactor } from "../hadamard/had_tables.ts";
import { hadSignBits } from "../hadamard/hadamard.ts";
import { normTransformVector, ropeKvVector } from "./vector.ts";
import type { HadSpec, NormTransformOptions, RopeKvOptions } from "./options.ts";

export type { HadSpec, NormTransformOptions, RopeKvOptions } from "./options.ts";
import { blockDecode } from "./block_decode.ts";

/**
 * The entry points of block_rows.wgsl's many-rows plan, one per job (gated: "g", input: "i") and rows per
 * thread (JPER 4 or 8): rows_g4, rows_g8, rows_i4, rows_i8. Generated so that each accumulator is a named
 * vec4 variable (an indexed per-thread array would live in local memory on a GPU) and each bit index of the
 * sign words a constant.
 */
function rowsEntries(): string {
  const out: string[] = [];
  for (const gated of [true, false]) {
    for (const jper of [4, 8]) {
      const js = Array.from({ length: jper }, (_, j) => j);
      const vs = gated ? ["g", "u"] : ["g"];
      const lines: string[] = [];
      const add = (s: string) => lines.push(s);
      add(`@compute @workgroup_size(RT)`);
      add(`fn rows_${gated ? "g" : "i"}${jper}(`);
      add(`  @builtin(workgroup_id) wid: vec3<u32>,`);
      add(`  @builtin(local_invocation_index) tid: u32,`);
      add(`) {`);
      add(`  let jt = ${jper}u * (RT / RCOL);`);
      add(`  let tl = rowsTile(wid, jt);`);
      add(`  rowsSigns(tl, jt, tid);`);
      add(`  let col = tid & (RCOL - 1u);`);
      add(`  let jr = (tid / RCOL) * ${jper}u;`);
      for (const v of vs) for (const j of js) add(`  var ${v}${j} = vec4<f32>(0.0);`);
      add(`  for (var c = 0u; c < tl.kq; c += RC) {`);
      add(`    workgroupBarrier();`);
      add(
        `    rowsStage(tl, c, ${gated}, ${gated ? "false" : "(params.flags & F_SU) != 0u"}, tid);`,
      );
      add(`    workgroupBarrier();`);
      add(`    let w = c >> 5u;`);
      for (const j of js) add(`    let m${j} = rs[(jr + ${j}u) * tl.wn + w];`);
      add(`    let end = min(RC, tl.kq - c);`);
      add(`    for (var a = 0u; a < end; a += 4u) {`);
      for (const j of js) add(`      let s${j} = m${j} >> a;`);
      for (let kk = 0; kk < 4; kk++) {
        add(`      {`);
        add(`        let xg = rv[(a + ${kk}u) * RCOL + col];`);
        if (gated) add(`        let xu = rv[(RC + a + ${kk}u) * RCOL + col];`);
        for (const j of js) {
          add(`        let f${j} = rowsSign(s${j}, ${kk}u);`);
          add(`        g${j} = fma(f${j}, xg, g${j});`);
          if (gated) add(`        u${j} = fma(f${j}, xu, u${j});`);
        }
        add(`      }`);
      }
      add(`    }`);
      add(`  }`);
      add(`  workgroupBarrier();`);
      for (const j of js) add(`  rv[(jr + ${j}u) * RCOL + col] = rowsFwht4(g${j});`);
      if (gated) { for (const j of js) add(`  rv[(jt + jr + ${j}u) * RCOL + col] = rowsFwht4(u${j});`); }
      add(`  workgroupBarrier();`);
      add(`  rowsFwhtCols(${gated ? "2u * jt" : "jt"}, tid);`);
      add(`  rowsOut(tl, jt, ${gated}, tid);`);
      add(`}`);
      out.push(lines.join("\n"));
    }
  }
  return out.join("\n\n") + "\n";
}

export const TRANSFORM_SOURCES = {
  norm_transform: normSource + "\n" + libSource,
  rope_kv: ropeKvSource + "\n" + libSource,
  block_transform: blockSource + "\n" + rowsSource + "\n" + rowsEntries() + "\n" + libSource,
} as const;

/** Sign bits of every had_K a model needs, in one buffer, and the specs of its transforms. */
export class HadTable {
  readonly buffer: GPUBuffer;
  #offsets = new Map<number, number>();

  constructor(device: GPUDevice, sizes: number[]) {
    const Ks = [...new Set([1, ...sizes.map((n) => hadamardFactor(n).K)])];
    const parts: Uint32Array[] = [];
    let at = 0;
    for (const K of Ks) {
      const bits = hadSignBits(K);
      this.#offsets.set(K, at);
      parts.push(bits);
      at += bits.length;
    }
    const all = new Uint32Array(Math.max(4, at));
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    this.buffer = device.createBuffer({
      label: "had-table",
      size: Math.ceil(all.byteLength / 16) * 16,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(this.buffer, 0, all);
  }

  /**
   * The transform of n elements in chunks of `chunk` (QTIP's tensor-parallel checkpoints transform each
   * shard alone; default n): had_K' kron H_p per chunk, scaled by 1 / sqrt(chunk). `transpose` is the
   * input side (had_K^T).
   */
  spec(n: number, transpose: boolean, chunk = n): HadSpec {
    if (n % chunk !== 0) throw new KernelError(`Cannot split a transform of ${n} into chunks of ${chunk}`);
    const { K, pow2 } = hadamardFactor(chunk);
    const base = this.#offsets.get(K);
    if (base === undefined) throw new KernelError(`The Hadamard table holds no had_${K} (size ${chunk})`);
    const words = Math.ceil(K / 32);
    return {
      K,
      p: pow2,
      groups: n / chunk,
      rows: base + (transpose ? K * words : 0),
      words,
      scale: 1 / Math.sqrt(chunk),
    };
  }

  destroy(): void {
    this.buffer.destroy();
  }
}

/** A HadSpec in the Params block; log2 of `q` goes in its second pad (block_transform.wgsl's H_Q factor, a
 * power of two). */
function writeHad(w: ParamWriter, s: HadSpec | null | undefined, q = 1): ParamWriter {
  const qShift = Math.log2(q);
  if (!Number.isInteger(qShift)) throw new KernelError(`writeHad: H_Q of ${q} is not a power of two`);
  if (!s) return w.u32(1).u32(1).u32(1).u32(0).u32(1).f32(1).u32(0).u32(qShift);
  return w.u32(s.K).u32(s.p).u32(s.groups).u32(s.rows).u32(s.words).f32(s.scale).u32(0).u32(qShift);
}

/** f32 slots a whole-vector transform of n needs in workgroup memory (the vector, and a copy to mix). */
function smSlots(n: number, s: HadSpec | null | undefined): number {
  return s && s.K > 1 ? 2 * n : n;
}

/** Most blocks of a mix transform_lib.wgsl runs in place (MIX_MAX_K there). */
const MIX_MAX_K = 32;

/**
 * Workgroup slots for vectors of the given sizes under their transforms, and the pipeline constants: two
 * vectors' worth where a mix (K > 1) needs it and the device holds it, else one with the mixes in place
 * (MIX_IN_PLACE; K <= 32): a 32 KiB GPU runs Llama 2 13B's 5120 (had_20 x 256) that way.
 */
export function mixPlan(
  k: Pick<Kernels, "device">,
  parts: [number, HadSpec | null | undefined][],
): { need: number; constants: Record<string, number> } {
  const need = Math.max(...parts.map(([n, s]) => smSlots(n, s)));
  const max = Math.floor(k.device.limits.maxComputeWorkgroupStorageSize / 4);
  if (need <= max || !parts.every(([, s]) => !s || s.K <= MIX_MAX_K)) return { need, constants: {} };
  return { need: Math.max(...parts.map(([n]) => n)), constants: { MIX_IN_PLACE: 1 } };
}

const dummies = new WeakMap<GPUDevice, GPUBuffer[]>();
/** Small buffers for unused bindings; one per binding, since a read-only and a writable binding of one
 * dispatch may not share a buffer. */
function dummy(k: Kernels, i: number): GPUBuffer {
  let list = dummies.get(k.device);
  if (!list) dummies.set(k.device, list = []);
  list[i] ??= k.device.createBuffer({
    label: `transform-unused-${i}`,
    size: 16,
    usage: GPUBufferUsage.STORAGE,
  });
  return list[i];
}

/** Workgroup size for a vector of n: enough threads for a radix-4 pass in one sweep, within the device. */
function vectorWg(k: Kernels, n: number): number {
  const max = Math.min(k.device.limits.maxComputeInvocationsPerWorkgroup, 1024);
  let wg = 64;
  while (wg < max && wg * 4 < n) wg *= 2;
  return wg;
}

/** Rounds workgroup slots up to a multiple of 512, so few pipeline variants exist. */
function slots(k: Kernels, need: number, label: string): number {
  const max = Math.floor(k.device.limits.maxComputeWorkgroupStorageSize / 4);
  const sm = Math.ceil(need / 512) * 512;
  if (need > max) {
    throw new KernelError(`${label} needs ${need * 4} bytes of workgroup memory; the device has ${max * 4}`);
  }
  return Math.min(sm, max);
}

/** Records the residual step (norm_transform.wgsl): (rows, parts) workgroups. */
export function normTransform(k: Kernels, pass: GPUComputePassEncoder, o: NormTransformOptions): void {
  if (o.rows === 0) return;
  // The register plan (vector.ts) where it fits; legacy "norm" keeps this workgroup-memory plan.
  if (!k.features.legacy.has("norm") && normTransformVector(k, pass, o)) return;
  const n = o.dim;
  const fin = o.finish;
  const writeX = (o.writeX ?? !!fin) && !o.gather;
  let flags = 0;
  if (fin) flags |= 1 | (fin.had ? 2 : 0) | (fin.sv !== undefined ? 4 : 0);
  if (o.norm) flags |= 8;
  if (o.su !== undefined) flags |= 16;
  if (o.inHad) flags |= 32;
  if (writeX) flags |= 64;
  if (o.gather) flags |= 128;
  const { need, constants } = mixPlan(k, [[n, fin?.had], [n, o.inHad]]);
  const wg = vectorWg(k, n);
  const p = k.pipeline("norm_transform", TRANSFORM_SOURCES.norm_transform, {
    WG: wg,
    SM: slots(k, need, `A transform of ${n}`),
    ...constants,
  });
  const outStride = o.outStride ?? n;
  const params = new ParamWriter()
    .u32(n).f32(o.eps).u32(flags).u32(o.gather?.idxOffset ?? 0)
    .u32(o.xStride ?? n).u32(o.xInOffset ?? 0).u32(o.xOutOffset ?? 0).u32(fin?.yStride ?? n)
    .u32(fin?.yOffset ?? 0).u32(outStride).u32(o.outOffset ?? 0).u32(o.outPartStride ?? o.rows * outStride)
    .u32(fin?.sv ?? 0).u32(o.norm?.gamma ?? 0).u32(o.su ?? 0).u32(0);
  writeHad(params, fin?.had);
  writeHad(params, o.inHad);
  k.dispatch(
    pass,
    p,
    [
      o.xIn,
      fin?.y ?? dummy(k, 0),
      fin?.vec ?? o.vec,
      o.vec,
      o.had.buffer,
      o.gather?.meta ?? dummy(k, 1),
      writeX ? o.xOut : dummy(k, 2),
      o.out,
      k.params(params),
    ],
    o.rows,
    o.parts,
  );
}

/** Records the q/k/v finish (rope_kv.wgsl): (T, 3) workgroups. */
export function ropeKv(k: Kernels, pass: GPUComputePassEncoder, o: RopeKvOptions): void {
  if (o.T === 0) return;
  // The register plan (vector.ts) where it fits; legacy "rope" keeps this workgroup-memory plan.
  if (!k.features.legacy.has("rope") && ropeKvVector(k, pass, o)) return;
  const qDim = o.nHeads * o.headDim, kvDim = o.nKvHeads * o.headDim;
  if (!!o.hq !== !!o.hkv) throw new KernelError("ropeKv: transform q, k and v alike");
  const flags = (o.hq ? 1 : 0) | (o.sv !== undefined ? 2 : 0);
  const { need, constants } = mixPlan(k, [[qDim, o.hq], [kvDim, o.hkv]]);
  const p = k.pipeline("rope_kv", TRANSFORM_SOURCES.rope_kv, {
    WG: vectorWg(k, qDim),
    SM: slots(k, need, `A transform of ${qDim}`),
    ...constants,
  });
  const params = new ParamWriter()
    .u32(qDim).u32(kvDim).u32(o.headDim).u32(flags)
    .u32(o.yStride ?? qDim + 2 * kvDim).u32(o.yOffset ?? 0).u32(o.sv ?? 0).u32(o.qStride ?? qDim)
    .u32(o.qOffset ?? 0).u32(0).u32(0).u32(o.ropeMaxPos)
    .u32(o.blockSize).u32(o.maxBlocksPerSeq).u32(o.nKvHeads).u32(0);
  writeHad(params, o.hq);
  writeHad(params, o.hkv);
  k.dispatch(
    pass,
    p,
    [
      o.y,
      o.vec,
      o.had.buffer,
      o.rope,
      o.tokenSeq,
      o.tokenPos,
      o.blockTable,
      o.qOut,
      o.kCache,
      o.vCache,
      k.params(params),
    ],
    o.T,
    3,
  );
}

export interface BlockTransformOptions {
  x: BufferArg; // f32 (T, xStride) from xOffset; gated: [gate (n) | up (n)]
  vec: BufferArg;
  had: HadTable;
  out: BufferArg; // f32 (T, outStride) from outOffset
  T: number;
  n: number;
  /** gated: h = silu(post(gate)) * post(up) * su; input: out = H^T(x * su). */
  gated: boolean;
  spec?: HadSpec | null; // none: gated is elementwise; input must have one
  sv?: number; // gated: offset of [SV_gate | SV_up] in vec
  su?: number; // offset in vec
  xStride?: number; // default gated ? 2n : n
  xOffset?: number;
  outStride?: number; // default n
  outOffset?: number;
  /** Output blocks per thread in the many-rows plan; default by the grid's size. For tests. */
  rowsPer?: 4 | 8;
  /** Threads to a block row in the decode plan without subgroups (default 16), e.g. 32 for the layout the
   * H100's subgroups give. For tests. */
  decodeLanes?: 8 | 16 | 32 | 64;
}

/** Block length of the block kernel's FWHT: a transform's power-of-two factor beyond it mixes as H_Q. */
const MIX_BLOCK = 64;

/** Rows from which a transform on a GPU takes the many-rows plan (block_rows.wgsl), where each workgroup
 * reads its row's inputs once; below, the block plan (one output element's mix per thread, its inputs read
 * straight from global memory), which spreads a single row over more workgroups. */
export const BLOCK_ROWS_MIN_T = 8;
/** Workgroups from which the many-rows plan gives each thread 8 output blocks rather than 4 (tiles of 32
 * blocks of 64 rather than 16): half the reads of each input and twice the work per workgroup memory load,
 * once there are enough workgroups to fill a GPU (four of 64 threads for each of an H100's 132 SMs). */
const ROWS_WIDE_MIN_GROUPS = 528;

/** The Params block both plans of block_transform.wgsl read: the job, its layout, and `had` with Q beside. */
function blockParams(o: BlockTransformOptions, had: HadSpec, q: number): ParamWriter {
  const flags = (o.gated ? 1 : 0) | (o.spec ? 2 : 0) | (o.sv !== undefined ? 4 : 0) |
    (o.su !== undefined ? 8 : 0);
  const params = new ParamWriter()
    .u32(o.n).u32(flags).u32(o.xStride ?? (o.gated ? 2 * o.n : o.n)).u32(o.xOffset ?? 0)
    .u32(o.outStride ?? o.n).u32(o.outOffset ?? 0).u32(o.sv ?? 0).u32(o.su ?? 0);
  writeHad(params, had, q);
  return params;
}

/**
 * Records the many-rows plan (block_rows.wgsl) when the transform suits it (blocks of pb >= 8 elements, at
 * least 8 of them per group, within the device's workgroup memory); false when it does not (nothing
 * recorded). pb and q as in blockTransform: blocks of pb, H_Q beside had_K.
 */
function rowsTransform(
  k: Kernels,
  pass: GPUComputePassEncoder,
  o: BlockTransformOptions,
  spec: HadSpec,
  pb: number,
  q: number,
): boolean {
  const kq = spec.K * q;
  if (pb < 8 || kq < 8) return false;
  const cols = pb / 4; // vec4 columns of a block; 64 threads = 64 / cols column teams
  const tileOf = (per: number) => per * (64 / cols);
  let per = o.rowsPer ?? 4;
  if (o.rowsPer === undefined && kq > tileOf(4)) {
    if (o.T * spec.groups * Math.ceil(kq / tileOf(8)) >= ROWS_WIDE_MIN_GROUPS) per = 8;
  }
  const jt = tileOf(per);
  const tiles = Math.ceil(kq / jt);
  const rv = cols * Math.max(32, jt) * (o.gated ? 2 : 1);
  const rs = Math.ceil((jt * Math.ceil(kq / 32)) / 64) * 64;
  if (rv * 16 + rs * 4 > k.device.limits.maxComputeWorkgroupStorageSize) return false;
  const maxDim = k.device.limits.maxComputeWorkgroupsPerDimension;
  if (o.T > maxDim || spec.groups * tiles > maxDim) return false;
  const pipe = k.pipeline(
    "block_transform",
    TRANSFORM_SOURCES.block_transform,
    { RCOL: cols, RV: rv, RS: rs },
    `rows_${o.gated ? "g" : "i"}${per}`,
  );
  const params = blockParams(o, { ...spec, p: pb }, q);
  k.dispatch(pass, pipe, [o.x, o.vec, o.had.buffer, o.out, k.params(params)], spec.groups * tiles, o.T);
  return true;
}

/**
 * Records the spread transform: from BLOCK_ROWS_MIN_T rows on a GPU, the many-rows plan (block_rows.wgsl,
 * entry points rows_*: (groups * tiles, T) workgroups); else, with a transform on a GPU, the decode plan
 * (block_decode.ts: (blocks / J, T) workgroups, J = 1 or 2); else (a CPU adapter, no transform, legacy
 * "block", or a call the decode plan cannot take) block_transform.wgsl's `main` (T, ceil(blocks /
 * OUT_BLOCKS)) workgroups. The rows plan and `main` are pipelines of the "block_transform" module.
 */
export function blockTransform(k: Kernels, pass: GPUComputePassEncoder, o: BlockTransformOptions): void {
  if (o.T === 0) return;
  if (!o.gated && !o.spec) throw new KernelError("blockTransform: an input job needs a transform");
  const maxInv = Math.min(1024, k.device.limits.maxComputeInvocationsPerWorkgroup);
  // With a transform: blocks of at most MIX_BLOCK, each output element a mix of K * Q inputs shared by
  // SPLIT threads (about 16-32 terms each), one or a few blocks per workgroup, so a vector of 11008 is
  // 172 workgroups. Without one the "blocks" only split the elementwise work.
  // A CPU adapter gains nothing from more workgroups and pays for the longer mixes: there each workgroup
  // makes 256 elements with the whole power-of-two block transformed by FWHT, one thread to an element.
  const cpu = k.features.cpuAdapter;
  const pb = o.spec ? (cpu ? o.spec.p : Math.min(o.spec.p, MIX_BLOCK)) : Math.min(256, o.n & -o.n);
  if (o.n % pb !== 0) throw new KernelError(`blockTransform: ${o.n} is not a multiple of ${pb}`);
  const q = o.spec ? o.spec.p / pb : 1;
  if (o.spec && !cpu && o.T >= BLOCK_ROWS_MIN_T && rowsTransform(k, pass, o, o.spec, pb, q)) return;
  if (o.spec && !cpu && !k.features.legacy.has("block")) {
    const call = {
      gated: o.gated,
      pre: !o.gated && o.su !== undefined,
      T: o.T,
      n: o.n,
      pb,
      kq: o.spec.K * q,
      q,
      lanes: o.decodeLanes,
      buffers: [o.x, o.vec, o.had.buffer, o.out] as [BufferArg, BufferArg, BufferArg, BufferArg],
      params: blockParams(o, { ...o.spec, p: pb }, q),
    };
    if (blockDecode(k, pass, call)) return;
  }
  const blocks = o.n / pb;
  let outBlocks: number, split = 1, wg: number;
  if (o.spec && !cpu) {
    outBlocks = Math.max(1, Math.min(blocks, Math.floor(MIX_BLOCK / pb)));
    const lenMax = outBlocks * pb;
    const want = Math.min(8, 2 ** Math.ceil(Math.log2(Math.max(1, Math.ceil((o.spec.K * q) / 24)))));
    while (split < want && lenMax * split * 2 <= maxInv) split *= 2;
    wg = Math.min(maxInv, Math.max(64, lenMax * split));
  } else {
    outBlocks = Math.max(1, Math.min(blocks, Math.floor(256 / pb)));
    wg = Math.min(256, maxInv);
  }
  const need = (o.gated ? 2 : 1) * split * outBlocks * pb;
  const pipe = k.pipeline("block_transform", TRANSFORM_SOURCES.block_transform, {
    WG: wg,
    SM: slots(k, need, `A block transform of ${outBlocks} x ${pb}`),
    OUT_BLOCKS: outBlocks,
    SPLIT: split,
  });
  // The spec with p = the block length, and Q beside it (block_transform.wgsl's mixPart).
  const params = blockParams(
    o,
    o.spec ? { ...o.spec, p: pb } : { K: 1, p: pb, groups: blocks, rows: 0, words: 1, scale: 1 },
    q,
  );
  const groups = Math.ceil(blocks / outBlocks);
  const maxDim = k.device.limits.maxComputeWorkgroupsPerDimension;
  if (o.T > maxDim || groups > maxDim) {
    throw new KernelError(`blockTransform: grid ${o.T} x ${groups} too large`);
  }
  k.dispatch(pass, pipe, [o.x, o.vec, o.had.buffer, o.out, k.params(params)], o.T, groups);
}
