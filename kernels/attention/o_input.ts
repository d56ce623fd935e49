// Host side of attention_o_input.wgsl: the split decode attention's combine step fused with o_proj's QTIP
// input transform (out = scale * H^T(SU * att)), so a decode layer runs one dispatch where it ran
// attention_reduce.wgsl and then blockTransform. attentionDecode() records it when given `oInput` and
// planOInput() finds a plan for the row; otherwise the caller keeps the two dispatches.
import template from "./attention_o_input.wgsl" with { type: "text" };
import { type BufferArg, isPow2, KernelError, type Kernels, ParamWriter, subgroupWidth } from "../core.ts";
import type { HadSpec, HadTable } from "../transform/transform.ts";

/** Where attentionDecode() writes o_proj's input instead of the attention output (blockTransform's input job). */
export interface OInputOptions {
  vec: BufferArg; // f32 side vectors, SU at `su`
  had: HadTable;
  spec: HadSpec; // input side of nHeads * headDim: had.spec(n, true) (or per tensor-parallel chunk)
  su?: number; // offset of SU (nHeads * headDim) in vec; none: no SU
  out: BufferArg; // f32 (T, outStride) from outOffset
  outStride?: number; // default nHeads * headDim
  outOffset?: number;
}

/** The constants of one generated module (attention_o_input.wgsl's CONSTS and shape). */
export interface OInputPlan {
  N: number; // nHeads * HEAD_DIM
  HEAD_DIM: number;
  K: number;
  P_LEN: number; // the FWHT's length, a power of two
  WORDS: number; // u32 per row of had_K
  WG: number;
  V: number; // vec4 registers per thread
  PARTS: number; // partitions whose maxima are loaded straight-line
  GROUP: number; // partitions whose stats and outputs one trip of the sums' loop loads
  SG: number; // subgroup size whose lanes run FWHT levels by shuffles; 0: none
  SU: boolean;
  PAD: boolean;
}

/** Partitions whose loads a module issues straight-line at most; a longer context reads the rest in a loop. */
export const O_INPUT_MAX_PARTS = 16;
/** Partitions (times vec4 slots) whose stats and outputs one trip of the weighted sums loads. */
const O_INPUT_GROUP_VALUES = 4;
/** Most bits of one FWHT pass over workgroup memory (32 elements in a thread's registers). */
const MAX_PASS_BITS = 5;

export interface OInputPlanOptions {
  nHeads: number;
  headDim: number;
  nParts: number;
  spec: HadSpec;
  su?: number;
}

/**
 * The module for a row of nHeads * headDim under `spec`, or null when the fused kernel does not serve it
 * (then the caller runs attention_reduce.wgsl and blockTransform): headDim a multiple of 4, at most 4 vec4
 * a thread, the row in workgroup memory, and blocks of at least 4 within 4 * WG elements unless the row is
 * a power of two (the FWHT's slot levels pair registers by bits of the slot). Llama's 4096 and 8192 (K = 1)
 * and 5120 (13B: had_20 x 256) fit.
 */
export function planOInput(k: Kernels, o: OInputPlanOptions): OInputPlan | null {
  const n = o.nHeads * o.headDim;
  const s = o.spec;
  if (o.headDim % 4 !== 0 || s.groups * s.K * s.p !== n || !isPow2(s.p)) return null;
  if (s.K > 1 && s.p < 4) return null;
  const nq = n / 4;
  const maxInv = Math.min(1024, k.device.limits.maxComputeInvocationsPerWorkgroup);
  let wg = 32;
  while (wg < maxInv && wg < nq) wg *= 2;
  if (wg > maxInv) return null;
  const v = Math.ceil(nq / wg);
  if (v > 4) return null;
  if (s.p > 4 * wg && !(s.K === 1 && isPow2(n))) return null;
  const limit = k.device.limits.maxComputeWorkgroupStorageSize;
  const padded = n + Math.ceil(n / 32);
  if (n * 4 > limit) return null;
  const sg = subgroupWidth(k.features, 4, wg);
  const parts = Math.min(O_INPUT_MAX_PARTS, 2 ** Math.ceil(Math.log2(Math.max(1, o.nParts))));
  return {
    N: n,
    HEAD_DIM: o.headDim,
    K: s.K,
    P_LEN: s.p,
    WORDS: s.words,
    WG: wg,
    V: v,
    PARTS: parts,
    // Call 22 (H100): all 16 partitions' stats and outputs up front (6 values each) cost 12.6 us a layer,
    // more than the reduce and transform they replaced: 1024 invocations get 64 registers each. Four
    // partitions a trip keep 24 values in flight per vec4 slot.
    // Partitions a trip: `TRELLIS_LEGACY_KERNELS=o-group` keeps call 22's plan (all PARTS in one trip).
    GROUP: k.features.legacy.has("o-group")
      ? parts
      : Math.min(parts, Math.max(1, Math.floor(O_INPUT_GROUP_VALUES / v))),
    // Shuffles only when the FWHT has levels past the vec4's.
    SG: s.p > 4 ? sg : 0,
    SU: o.su !== undefined,
    PAD: padded * 4 <= limit,
  };
}

/** Pipeline name of a plan's module (bench/step_profile.ts reports kernels by it). */
export function oInputKernelName(p: OInputPlan): string {
  return `attention_o_input_n${p.N}_d${p.HEAD_DIM}_k${p.K}x${p.P_LEN}_wg${p.WG}x${p.V}_p${p.PARTS}g${p.GROUP}_sg${p.SG}` +
    `${p.SU ? "_su" : ""}${p.PAD ? "" : "_nopad"}`;
}

/** attention_o_input.wgsl with the plan's constants, bindings and straight-line body. */
export function oInputSource(p: OInputPlan): string {
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const log2 = (v: number) => Math.round(Math.log2(v));
  const nq = p.N / 4;
  const logP = log2(p.P_LEN), logWg = log2(p.WG), logSg = p.SG ? log2(p.SG) : 0;
  const slots = range(p.V), parts = range(p.PARTS);
  // Slot s holds a vec4 of the row for every thread, or only for threads lid < nq - s * WG.
  const full = (s: number) => (s + 1) * p.WG <= nq;
  const guarded = (s: number, body: string[]) =>
    full(s) ? body : [`if (lid + ${s * p.WG}u < NQ) {`, ...body.map((l) => "  " + l), "}"];
  const smWords = Math.max(4, p.PAD ? p.N + Math.ceil(p.N / 32) : p.N);
  const consts = [
    `const N: u32 = ${p.N}u; // nHeads * HEAD_DIM: the row`,
    `const HEAD_DIM: u32 = ${p.HEAD_DIM}u;`,
    `const N_HEADS: u32 = ${p.N / p.HEAD_DIM}u;`,
    `const QH: u32 = ${p.HEAD_DIM / 4}u; // vec4s per head`,
    `const NQ: u32 = ${nq}u; // vec4s per row`,
    `const WG: u32 = ${p.WG}u;`,
    `const K: u32 = ${p.K}u;`,
    `const P_LEN: u32 = ${p.P_LEN}u;`,
    `const WORDS: u32 = ${p.WORDS}u;`,
    `const SM: u32 = ${smWords}u;`,
    `const PAD: bool = ${p.PAD};`,
  ];
  const bindings = [
    ["scratch", "f32", "read"],
    ["tokenPos", "u32", "read"],
    ...(p.SU ? [["side", "f32", "read"]] : []),
    ...(p.K > 1 ? [["had", "u32", "read"]] : []),
    ["out", "f32", "read_write"],
  ].map(([name, type, access], i) =>
    `@group(0) @binding(${i}) var<storage, ${access}> ${name}: array<${type}>;`
  );
  bindings.push(`@group(0) @binding(${bindings.length}) var<uniform> params: Params;`);
  const fns: string[] = [];
  if (p.SU) {
    fns.push(
      `fn side4(i: u32) -> vec4<f32> {`,
      `  return vec4<f32>(side[i], side[i + 1u], side[i + 2u], side[i + 3u]);`,
      `}`,
    );
  }
  if (p.K > 1) {
    fns.push(
      ``,
      `// Elements e .. e + 3 (one block j of a group) of sum_a had_K^T[j][a] * (block a of the group), from sm.`,
      `fn mixBlocks(e: u32) -> vec4<f32> {`,
      `  let b = e / P_LEN;`,
      `  let j = b % K;`,
      `  let first = (b - j) * P_LEN + e % P_LEN;`,
      `  let row = params.hadRows + j * WORDS;`,
      `  var acc = vec4<f32>(0.0);`,
      `  for (var w = 0u; w < WORDS; w++) {`,
      `    let bits = had[row + w];`,
      `    for (var i = 0u; i < min(32u, K - 32u * w); i++) {`,
      `      let f = first + (32u * w + i) * P_LEN;`,
      `      let x = vec4<f32>(sm[at(f)], sm[at(f + 1u)], sm[at(f + 2u)], sm[at(f + 3u)]);`,
      `      acc += select(x, -x, ((bits >> i) & 1u) != 0u);`,
      `    }`,
      `  }`,
      `  return acc;`,
      `}`,
    );
  }
  const B: string[] = [];
  const forSlots = (f: (s: number) => string[]) => slots.forEach((s) => B.push(...f(s)));
  // 1. The heads' maxima M: the stats' m of the first PARTS partitions straight-line (a token that uses fewer
  // repeats its last one), the rest in a loop.
  B.push(`// The thread's vec4s of the row (q), their heads' partial rows (row) and outputs (ob).`);
  forSlots((s) => [
    full(s)
      ? `let q${s} = ${s ? `lid + ${s * p.WG}u` : "lid"};`
      : `let q${s} = min(lid + ${s * p.WG}u, NQ - 1u);`,
    `let row${s} = (t * N_HEADS + q${s} / QH) * params.nParts;`,
    `let ob${s} = outBase + row${s} * HEAD_DIM + (q${s} % QH) * 4u;`,
  ]);
  for (const j of parts.slice(1)) B.push(`let r${j} = min(${j}u, last);`);
  // Partition j's stats are at 2 * (row + j), its output at ob + j * HEAD_DIM.
  const stat = (s: number, j: number) => (j === 0 ? `2u * row${s}` : `2u * (row${s} + r${j})`);
  forSlots((s) => parts.map((j) => `let m${s}_${j} = scratch[${stat(s, j)}];`));
  if (p.SU) forSlots((s) => [`let su${s} = side4(params.suOff + 4u * q${s});`]);
  const tail = p.PARTS === O_INPUT_MAX_PARTS;
  B.push(
    ``,
    `// att = sum_j w_j o_j / sum_j w_j l_j, w_j = exp(m_j - M): attention_reduce.wgsl's math and order.`,
  );
  forSlots((s) => {
    let terms = parts.map((j) => `m${s}_${j}`);
    while (terms.length > 1) {
      terms = range(terms.length / 2).map((i) => `max(${terms[2 * i]}, ${terms[2 * i + 1]})`);
    }
    const lines = [`${tail ? "var" : "let"} mx${s} = ${terms[0]};`];
    if (tail) {
      lines.push(
        `for (var j = ${p.PARTS}u; j < used; j++) {`,
        `  mx${s} = max(mx${s}, scratch[2u * (row${s} + j)]);`,
        `}`,
      );
    }
    lines.push(`var ls${s} = 0.0;`, `var a${s} = vec4<f32>(0.0);`);
    return lines;
  });
  // 2. The weighted sums, GROUP partitions a trip: every load of a trip before its arithmetic, partitions
  // past the token's last repeating it with weight 0 (adding exact zeros keeps the sums' order and value).
  const group = range(p.GROUP);
  B.push(`for (var j0 = 0u; j0 < used; j0 += ${p.GROUP}u) {`);
  const G: string[] = [];
  for (const g of group) G.push(`let j${g} = ${g ? `min(j0 + ${g}u, last)` : "j0"};`);
  for (const s of slots) {
    for (const g of group) {
      G.push(
        `let n${s}_${g} = scratch[2u * (row${s} + j${g})];`,
        `let l${s}_${g} = scratch[2u * (row${s} + j${g}) + 1u];`,
        `let o${s}_${g} = scratch4(ob${s} + j${g} * HEAD_DIM);`,
      );
    }
  }
  for (const s of slots) {
    for (const g of group) {
      const w = `exp(n${s}_${g} - mx${s})`;
      G.push(`let w${s}_${g} = ${g ? `select(0.0, ${w}, j0 + ${g}u < used)` : w};`);
    }
    for (const g of group) G.push(`ls${s} += w${s}_${g} * l${s}_${g};`, `a${s} += o${s}_${g} * w${s}_${g};`);
  }
  B.push(...G.map((l) => "  " + l), `}`);
  forSlots((s) => [`a${s} = a${s} / ls${s}${p.SU ? ` * su${s}` : ""};`]);
  // 3. had_K^T across the blocks of each group, through workgroup memory.
  if (p.K > 1) {
    B.push(``, `// had_K^T mixes the K blocks of each group.`);
    forSlots((s) => guarded(s, [`store4(4u * q${s}, a${s});`]));
    B.push(`workgroupBarrier();`);
    forSlots((s) => [`a${s} = mixBlocks(4u * q${s});`]);
    B.push(`workgroupBarrier();`);
  }
  // 4. The FWHT of each block of P_LEN: bits 0-1 and the slot bits in registers, the lane bits by shuffles.
  B.push(``, `// FWHT levels in registers (element bits 0-1, then the slot bits) and across subgroup lanes.`);
  if (logP >= 1) forSlots((s) => [`a${s} = fwht4(a${s});`]);
  for (let b = 0; (1 << b) < p.V; b++) {
    if (2 + logWg + b >= logP) break;
    for (const s of slots.filter((s) => !(s & (1 << b)))) {
      const u = s | (1 << b);
      B.push(`{`, `  let lo = a${s};`, `  a${s} = lo + a${u};`, `  a${u} = lo - a${u};`, `}`);
    }
  }
  for (let i = 0; i < logSg && 2 + i < logP; i++) {
    forSlots((s) => [
      `{`,
      `  let o = subgroupShuffleXor(a${s}, ${1 << i}u);`,
      `  a${s} = select(a${s} + o, o - a${s}, (lid & ${1 << i}u) != 0u);`,
      `}`,
    ]);
  }
  // 5. The levels of the other lane bits: passes over workgroup memory, the last one writing out.
  const lo = 2 + logSg, hi = Math.min(logP, 2 + logWg);
  const rest = Math.max(0, hi - lo);
  if (rest === 0) {
    B.push(``, `// Every level is done: out = scale * a.`);
    forSlots((s) =>
      guarded(
        s,
        ["x", "y", "z", "w"].map((c, i) => `out[dst + 4u * q${s} + ${i}u] = a${s}.${c} * params.scale;`),
      )
    );
  } else {
    B.push(``, `// The levels of element bits ${lo} .. ${hi - 1}, in passes over workgroup memory.`);
    forSlots((s) => guarded(s, [`store4(4u * q${s}, a${s});`]));
    const nPass = Math.ceil(rest / MAX_PASS_BITS);
    let b = lo;
    for (let pi = 0; pi < nPass; pi++) {
      const bits = Math.floor(rest / nPass) + (pi < rest % nPass ? 1 : 0);
      const lastPass = pi === nPass - 1;
      const groups = p.N >> bits;
      B.push(`workgroupBarrier();`, `// Bits ${b} .. ${b + bits - 1}: ${groups} groups of ${1 << bits}.`);
      for (let trip = 0; trip * p.WG < groups; trip++) {
        const body = [
          `let e = ((g >> ${b}u) << ${b + bits}u) | (g & ${(1 << b) - 1}u);`,
          ...range(1 << bits).map((i) => `let x0_${i} = sm[at(e + ${i << b}u)];`),
        ];
        for (let h = 0; h < bits; h++) {
          for (const i of range(1 << bits).filter((i) => !(i & (1 << h)))) {
            const j = i | (1 << h);
            body.push(
              `let x${h + 1}_${i} = x${h}_${i} + x${h}_${j};`,
              `let x${h + 1}_${j} = x${h}_${i} - x${h}_${j};`,
            );
          }
        }
        for (const i of range(1 << bits)) {
          body.push(
            lastPass
              ? `out[dst + e + ${i << b}u] = x${bits}_${i} * params.scale;`
              : `sm[at(e + ${i << b}u)] = x${bits}_${i};`,
          );
        }
        const g = `lid + ${trip * p.WG}u`;
        B.push(`{`, `  let g = ${g};`);
        if ((trip + 1) * p.WG > groups) {
          B.push(
            `  if (g < ${groups}u) {`,
            ...body.map((l) => "    " + l),
            `  }`,
          );
        } else B.push(...body.map((l) => "  " + l));
        B.push(`}`);
      }
      b += bits;
    }
  }
  const blocks: Record<string, string> = {
    CONSTS: consts.join("\n"),
    BINDINGS: bindings.join("\n"),
    FNS: fns.join("\n"),
    BODY: B.map((l) => (l ? "  " + l : l)).join("\n"),
  };
  return template.replace(/\{\{([A-Z_]+)\}\}/g, (_, name: string) => {
    if (!(name in blocks)) throw new KernelError(`attention_o_input.wgsl: unknown block ${name}`);
    return blocks[name];
  });
}

export interface ReduceOInputOptions {
  scratch: BufferArg; // the partials of attention_decode.wgsl `split`
  tokenPos: BufferArg; // u32 (T)
  T: number;
  nParts: number;
  partSize: number;
  plan: OInputPlan; // planOInput() for these heads, nParts and oInput.spec
  oInput: OInputOptions;
}

/** Records attention_o_input.wgsl: T workgroups of plan.WG. */
export function reduceOInput(k: Kernels, pass: GPUComputePassEncoder, o: ReduceOInputOptions): void {
  const { plan, oInput: x } = o;
  if (plan.SU !== (x.su !== undefined)) {
    throw new KernelError("reduceOInput: the plan and oInput disagree on SU");
  }
  const pipe = k.pipeline(oInputKernelName(plan), () => oInputSource(plan));
  const params = new ParamWriter()
    .u32(o.T).u32(o.nParts).u32(o.partSize).u32(x.su ?? 0)
    .u32(x.outStride ?? plan.N).u32(x.outOffset ?? 0).u32(x.spec.rows).f32(x.spec.scale);
  const args: BufferArg[] = [o.scratch, o.tokenPos];
  if (plan.SU) args.push(x.vec);
  if (plan.K > 1) args.push(x.had.buffer);
  args.push(x.out, k.params(params));
  k.dispatch(pass, pipe, args, o.T);
}
