// The register plan of normTransform and ropeKv (the residual step and the q/k/v finish), for vectors whose
// transforms are plain Sylvester FWHTs (K = 1: every Llama width that is a power of two, 4096 and 8192
// among them). At decode these steps are one to three workgroups each, so their time is their latency chain,
// not their arithmetic: norm_transform.wgsl measured 17-22 us on an H100 for a 4096-vector, where an empty
// dispatch costs 2.2 us. This plan shortens the chain:
// - each thread holds V vec4 registers of the row: vec4 j of thread t is elements 4 (t + WG j) .. + 3, so
//   every global load is a coalesced vec4 issued at the start, all of them before any arithmetic (loads of
//   a loop whose trip count is a runtime value wait one memory latency per trip);
// - the FWHT does the levels of bits 0-1 (inside a vec4) and of the j bits in registers; with subgroups the
//   lane bits by subgroupShuffleXor and only the warp bits in one pass over workgroup memory (a 4096-vector
//   on 8 warps: one radix-8 pass, 2 barriers), without them all thread bits in radix-16 passes (2 passes,
//   3 barriers; the H100 measured two such FWHTs at 3.8 us of normTransform's 7.2, bank conflicts included);
// - the RMSNorm sum is a subgroupAdd and one barrier where subgroups exist (else a two-level tree), against
//   a ten-barrier tree.
// Everything a workgroup branches on (sizes, flags, subgroups) is a generation-time constant, so each
// variant is its own small module. The results are the old plan's to rounding: same expressions per
// element, sums taken in another order. Bindings use array<vec4<f32>>, so offsets and strides must be
// multiples of 4 elements; the encoders return false (recording nothing) when a call does not fit this plan,
// and the caller takes the workgroup-memory plan (norm_transform.wgsl, rope_kv.wgsl).
// References: transform_ref.ts `normTransformRef`, `ropeKvRef`.
import { type BufferArg, isPow2, type Kernels, ParamWriter, subgroupWidth } from "../core.ts";
import type { HadSpec, NormTransformOptions, RopeKvOptions } from "./options.ts";

/** Elements a thread holds (4 vec4 registers) when the vector is long enough. */
const PER_THREAD = 16;

/** Whether a transform is absent or a plain power-of-two FWHT of the whole vector. */
function plain(s: HadSpec | null | undefined, n: number): boolean {
  return !s || (s.K === 1 && s.groups === 1 && s.p === n);
}

/** Threads for the longest vector m: 16 elements each, between 32 and the device's maximum. */
function threadsFor(k: Kernels, m: number): number {
  const max = Math.min(1024, k.device.limits.maxComputeInvocationsPerWorkgroup);
  return Math.max(32, Math.min(max, m / PER_THREAD));
}

/**
 * Whether a vector of m fits the plan with wg threads: at most 4 vec4 registers a thread, and sm (the vector)
 * plus `extra` floats (normTransform's partial sums) in workgroup memory.
 */
function fits(k: Kernels, m: number, wg: number, extra = 0): boolean {
  return isPow2(m) && m >= 128 && m <= 16 * wg &&
    (m + extra) * 4 <= k.device.limits.maxComputeWorkgroupStorageSize;
}

/**
 * The subgroup size the kernels may use (its shuffles, its sums), or 0: the device's one fixed size, when it
 * is a power of two no larger than the threads that hold a row (`active`), so lane bits are thread bits.
 */
function shuffleSize(k: Kernels, active: number): number {
  // Legacy "vec-shuffle": the plan without subgroups (workgroup-memory passes, a tree sum), for measuring.
  if (k.features.legacy.has("vec-shuffle")) return 0;
  return subgroupWidth(k.features, 4, active);
}

/** Source-text builder: the generated WGSL, one statement a line. */
class Src {
  lines: string[] = [];
  add(...s: string[]): this {
    this.lines.push(...s);
    return this;
  }
  text(): string {
    return this.lines.join("\n") + "\n";
  }
}

/** One storage binding of a generated module: its name, element type, whether it is written, and (when the
 * list is built for a dispatch) the buffer bound to it. */
type Binding = [name: string, type: "vec4<f32>" | "u32", write: boolean, arg?: BufferArg];

/** The buffers of `list`, in binding order, then the Params block: a dispatch's arguments. */
function args(list: Binding[], params: BufferArg): BufferArg[] {
  return [...list.map((b) => b[3]!), params];
}

/** Declares `list` at bindings 0.. and the Params uniform after them (the order the encoder passes). */
function declare(s: Src, list: Binding[]): void {
  list.forEach(([name, type, write], i) => {
    s.add(`@group(0) @binding(${i}) var<storage, ${write ? "read_write" : "read"}> ${name}: array<${type}>;`);
  });
  s.add(`@group(0) @binding(${list.length}) var<uniform> params: Params;`);
}

/** The layout of one vector held in registers: m elements, wg threads, v vec4 registers a thread. */
interface Row {
  m: number;
  wg: number;
  v: number;
  /** Threads that hold elements (all but when m < 4 wg). */
  active: number;
}

function rowOf(m: number, wg: number): Row {
  return { m, wg, v: Math.max(1, m / (4 * wg)), active: Math.min(wg, m / 4) };
}

/** Indices 0..n-1. */
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * The unnormalized FWHT of the row held in registers `${r}0..` (every thread calls it; inactive threads
 * hold zeros): bits 0-1 and the register bits in registers; then the thread bits. Without subgroups (sg = 0)
 * the thread bits go through radix-16 (then 8, 4, 2) passes over the scalar array `sm`; with them, the lane
 * bits through subgroupShuffleXor (no workgroup memory) and only the warp bits through passes over the vec4
 * array `smv`, whose accesses are whole vec4s of consecutive lanes (free of bank conflicts, where the
 * scalar passes' short strides collide 4-8 ways). The result ends in the same registers; with `keep` (or
 * always, without subgroups) a copy stays in workgroup memory, element e at load4(e). It starts with a
 * barrier where it writes workgroup memory (an earlier step may still be reading it).
 */
function fwhtRows(s: Src, row: Row, r: string, sg: number, keep: boolean): void {
  const { m, wg, v, active } = row;
  for (const j of range(v)) s.add(`  ${r}${j} = h4(${r}${j});`);
  for (let h = 1; h < v; h *= 2) {
    for (const j of range(v)) {
      if (j & h) continue;
      s.add(`  { let a = ${r}${j}; let b = ${r}${j + h}; ${r}${j} = a + b; ${r}${j + h} = a - b; }`);
    }
  }
  const guard = active < wg ? `if (tid < ${active}u) ` : "";
  if (sg) {
    for (let mask = 1; mask < sg; mask *= 2) {
      for (const j of range(v)) {
        s.add(
          `  { let p = subgroupShuffleXor(${r}${j}, ${mask}u); ` +
            `${r}${j} = select(${r}${j} + p, p - ${r}${j}, (tid & ${mask}u) != 0u); }`,
        );
      }
    }
    let bits = Math.log2(active / sg);
    if (bits === 0 && !keep) return;
    s.add(`  workgroupBarrier();`);
    for (const j of range(v)) s.add(`  ${guard}{ smv[tid + ${wg * j}u] = ${r}${j}; }`);
    s.add(`  workgroupBarrier();`);
    let h = sg;
    while (bits > 0) {
      const b = Math.min(4, bits);
      s.add(`  vpass${1 << b}(${h}u, tid);`);
      h <<= b;
      bits -= b;
    }
    for (const j of range(v)) s.add(`  ${guard}{ ${r}${j} = smv[tid + ${wg * j}u]; }`);
    return;
  }
  s.add(`  workgroupBarrier();`);
  for (const j of range(v)) s.add(`  ${guard}{ store4(4u * (tid + ${wg * j}u), ${r}${j}); }`);
  s.add(`  workgroupBarrier();`);
  // Thread bits of the element index: 2 .. 2 + log2(m / (4 v)).
  let bits = Math.log2(m / (4 * v));
  let h = 4;
  while (bits > 0) {
    const b = Math.min(4, bits);
    s.add(`  pass${1 << b}(${h}u, tid);`);
    h <<= b;
    bits -= b;
  }
  for (const j of range(v)) s.add(`  ${guard}{ ${r}${j} = load4(4u * (tid + ${wg * j}u)); }`);
}

/**
 * A radix-R pass (R = 2, 4, 8, 16) over groups of R entries h apart, then a barrier: over the scalar `sm`
 * (`count` elements), or with `vec` over the vec4 `smv` (`count` vec4s; h >= the subgroup size, so the
 * lanes of a warp touch consecutive vec4s).
 */
function radixPass(s: Src, count: number, wg: number, R: number, vec: boolean): void {
  const ks = range(R);
  const arr = vec ? "smv" : "sm";
  s.add(`fn ${vec ? "vpass" : "pass"}${R}(h: u32, tid: u32) {`);
  s.add(`  for (var i = tid; i < ${count / R}u; i += ${wg}u) {`);
  s.add(`    let lo = i & (h - 1u);`);
  s.add(`    let b = ((i - lo) * ${R}u) + lo;`);
  for (const k of ks) s.add(`    var a${k} = ${arr}[b + ${k}u * h];`);
  for (let st = 1; st < R; st *= 2) {
    for (const k of ks) {
      if (k & st) continue;
      s.add(`    { let p = a${k}; let q = a${k + st}; a${k} = p + q; a${k + st} = p - q; }`);
    }
  }
  for (const k of ks) s.add(`    ${arr}[b + ${k}u * h] = a${k};`);
  s.add(`  }`);
  s.add(`  workgroupBarrier();`);
  s.add(`}`);
}

/**
 * Helpers every variant declares: the in-vec4 FWHT, workgroup memory for `smSlots` elements (scalar, or
 * vec4 with subgroups) with load4 reading element e's vec4, and the passes that `rows` need. Rows of
 * different lengths share a module only in ropeKv, where each pass takes the longest row's bound: the
 * shorter row's extra groups lie past its elements, inside the array, so they change nothing it reads.
 */
function common(s: Src, rows: Row[], smSlots: number, sg: number): void {
  s.add(
    `fn h4(a: vec4<f32>) -> vec4<f32> {`,
    `  let b = vec4<f32>(a.x + a.y, a.x - a.y, a.z + a.w, a.z - a.w);`,
    `  return vec4<f32>(b.x + b.z, b.y + b.w, b.x - b.z, b.y - b.w);`,
    `}`,
  );
  if (sg) {
    s.add(
      `var<workgroup> smv: array<vec4<f32>, ${smSlots / 4}>;`,
      `fn load4(e: u32) -> vec4<f32> {`,
      `  return smv[e >> 2u];`,
      `}`,
    );
  } else {
    s.add(
      `var<workgroup> sm: array<f32, ${smSlots}>;`,
      `fn store4(e: u32, a: vec4<f32>) {`,
      `  sm[e] = a.x;`,
      `  sm[e + 1u] = a.y;`,
      `  sm[e + 2u] = a.z;`,
      `  sm[e + 3u] = a.w;`,
      `}`,
      `fn load4(e: u32) -> vec4<f32> {`,
      `  return vec4<f32>(sm[e], sm[e + 1u], sm[e + 2u], sm[e + 3u]);`,
      `}`,
    );
  }
  // Radix R -> the largest count it runs over (elements, or vec4s with subgroups).
  const needed = new Map<number, number>();
  for (const row of rows) {
    let bits = sg ? Math.log2(row.active / sg) : Math.log2(row.m / (4 * row.v));
    const count = sg ? row.active * row.v : row.m;
    while (bits > 0) {
      const b = Math.min(4, bits);
      const R = 1 << b;
      needed.set(R, Math.max(needed.get(R) ?? 0, count));
      bits -= b;
    }
  }
  for (const [R, count] of needed) radixPass(s, count, rows[0].wg, R, sg > 0);
}

// ---------------------------------------------------------------------------------------------------------
// normTransform

interface NormFlags {
  finish: boolean;
  finHad: boolean;
  sv: boolean;
  norm: boolean;
  su: boolean;
  inHad: boolean;
  writeX: boolean;
  gather: boolean;
}

/** The bindings a variant reads or writes (an unused binding would be left out of its layout). */
function normBindings(f: NormFlags, o?: NormTransformOptions): Binding[] {
  const list: Binding[] = [["xIn", "vec4<f32>", false, o?.xIn]];
  if (f.finish) list.push(["y", "vec4<f32>", false, o?.finish?.y]);
  if (f.sv) list.push(["post", "vec4<f32>", false, o?.finish?.vec ?? o?.vec]);
  if (f.norm || f.su) list.push(["side", "vec4<f32>", false, o?.vec]);
  if (f.gather) list.push(["rowMeta", "u32", false, o?.gather?.meta]);
  if (f.writeX) list.push(["xOut", "vec4<f32>", true, o?.xOut]);
  list.push(["out", "vec4<f32>", true, o?.out]);
  return list;
}

/** The generated residual step for one (dim, threads, flags, subgroup size) variant. */
function normSource(n: number, wg: number, f: NormFlags, sg: number): string {
  const row = rowOf(n, wg);
  const { v } = row;
  const s = new Src();
  const js = range(v);
  s.add(
    `// normTransform, register plan (kernels/transform/vector.ts): dim ${n}, ${wg} threads, ${v} vec4 a thread.`,
    `struct Params {`,
    `  eps: f32, idxOffset: u32, xStride: u32, xInOffset: u32,`,
    `  xOutOffset: u32, yStride: u32, yOffset: u32, outStride: u32,`,
    `  outOffset: u32, outPartStride: u32, svOff: u32, gammaOff: u32,`,
    `  suOff: u32, finScale: f32, inScale: f32, _pad: u32,`,
    `}`,
  );
  declare(s, normBindings(f));
  s.add(`var<workgroup> red: array<f32, ${sg ? wg / sg : wg}>;`);
  common(s, [row], n, sg);
  s.add(
    `@compute @workgroup_size(${wg})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32${
      sg ? ", @builtin(subgroup_invocation_id) lane: u32" : ""
    }) {`,
    `  let t = wid.x;`,
    `  let g = wid.y;`,
    f.gather ? `  let r = rowMeta[params.idxOffset + t];` : `  let r = t;`,
    `  let xb = params.xInOffset + r * params.xStride + tid;`,
  );
  // Every global load first.
  for (const j of js) s.add(`  var x${j} = xIn[xb + ${wg * j}u];`);
  if (f.finish) {
    s.add(`  let yb = params.yOffset + r * params.yStride + tid;`);
    for (const j of js) s.add(`  var y${j} = y[yb + ${wg * j}u];`);
    if (f.sv) { for (const j of js) s.add(`  let sv${j} = post[params.svOff + tid + ${wg * j}u];`); }
  }
  if (f.norm) { for (const j of js) s.add(`  let gm${j} = side[params.gammaOff + tid + ${wg * j}u];`); }
  if (f.su) {
    s.add(`  let sub = params.suOff + g * ${n / 4}u + tid;`);
    for (const j of js) s.add(`  let su${j} = side[sub + ${wg * j}u];`);
  }
  // 1. The residual: v = x + sv * scale * H(y).
  if (f.finish) {
    if (f.finHad) fwhtRows(s, row, "y", sg, false);
    for (const j of js) {
      const p = f.finHad ? `y${j} * params.finScale` : `y${j}`;
      s.add(`  x${j} = x${j} + ${f.sv ? `(${p}) * sv${j}` : p};`);
    }
  }
  if (f.writeX) {
    s.add(`  if (g == 0u) {`, `    let ob = params.xOutOffset + r * params.xStride + tid;`);
    for (const j of js) s.add(`    xOut[ob + ${wg * j}u] = x${j};`);
    s.add(`  }`);
  }
  // 2. RMSNorm.
  if (f.norm) {
    s.add(`  var ss = 0.0;`);
    for (const j of js) s.add(`  ss += dot(x${j}, x${j});`);
    if (sg) {
      s.add(
        `  ss = subgroupAdd(ss);`,
        `  if (lane == 0u) {`,
        `    red[tid / ${sg}u] = ss;`,
        `  }`,
        `  workgroupBarrier();`,
        `  var total = 0.0;`,
        `  for (var w = 0u; w < ${wg / sg}u; w++) {`,
        `    total += red[w];`,
        `  }`,
      );
    } else {
      // Two levels: sums of 16 partials, then their sum.
      s.add(
        `  red[tid] = ss;`,
        `  workgroupBarrier();`,
        `  var part = 0.0;`,
        `  if (tid < ${wg / 16}u) {`,
        `    for (var w = 0u; w < 16u; w++) {`,
        `      part += red[16u * tid + w];`,
        `    }`,
        `  }`,
        `  workgroupBarrier();`,
        `  if (tid < ${wg / 16}u) {`,
        `    red[tid] = part;`,
        `  }`,
        `  workgroupBarrier();`,
        `  var total = 0.0;`,
        `  for (var w = 0u; w < ${wg / 16}u; w++) {`,
        `    total += red[w];`,
        `  }`,
      );
    }
    s.add(`  let inv = inverseSqrt(total / ${n}.0 + params.eps);`);
    for (const j of js) s.add(`  x${j} = x${j} * inv * gm${j};`);
  }
  // 3. The input of part g.
  if (f.su) { for (const j of js) s.add(`  x${j} = x${j} * su${j};`); }
  if (f.inHad) fwhtRows(s, row, "x", sg, false);
  s.add(`  let ob = params.outOffset + g * params.outPartStride + t * params.outStride + tid;`);
  for (const j of js) s.add(`  out[ob + ${wg * j}u] = x${j}${f.inHad ? " * params.inScale" : ""};`);
  s.add(`}`);
  return s.text();
}

/** Whether every offset and stride is a whole number of vec4s. */
const aligned = (...xs: (number | undefined)[]) => xs.every((x) => (x ?? 0) % 4 === 0);

/**
 * Records normTransform's register plan and returns true, or returns false (nothing recorded) when the call
 * does not fit it: a dim that is not a power of two in [128, 16 x threads], a mixing transform (K > 1 or
 * tensor-parallel chunks), offsets or strides that are not multiples of 4, or too little workgroup memory.
 */
export function normTransformVector(
  k: Kernels,
  pass: GPUComputePassEncoder,
  o: NormTransformOptions,
): boolean {
  const n = o.dim;
  const wg = threadsFor(k, n);
  const fin = o.finish;
  const sg = shuffleSize(k, rowOf(n, wg).active);
  if (!fits(k, n, wg, sg ? wg / sg : wg) || !plain(fin?.had, n) || !plain(o.inHad, n)) return false;
  const outStride = o.outStride ?? n;
  const outPartStride = o.outPartStride ?? o.rows * outStride;
  if (
    !aligned(
      o.xStride,
      o.xInOffset,
      o.xOutOffset,
      outStride,
      o.outOffset,
      outPartStride,
      fin?.yStride,
      fin?.yOffset,
      fin?.sv,
      o.norm?.gamma,
      o.su,
    )
  ) return false;
  const flags: NormFlags = {
    finish: !!fin,
    finHad: !!fin?.had,
    sv: fin?.sv !== undefined,
    norm: !!o.norm,
    su: o.su !== undefined,
    inHad: !!o.inHad,
    writeX: (o.writeX ?? !!fin) && !o.gather,
    gather: !!o.gather,
  };
  const bits = Object.values(flags).map((b) => (b ? 1 : 0)).join("");
  const name = `norm_vec:${n}:${wg}:${sg}:${bits}`;
  const p = k.pipeline(name, () => normSource(n, wg, flags, sg));
  const params = new ParamWriter()
    .f32(o.eps).u32(o.gather?.idxOffset ?? 0).u32((o.xStride ?? n) / 4).u32((o.xInOffset ?? 0) / 4)
    .u32((o.xOutOffset ?? 0) / 4).u32((fin?.yStride ?? n) / 4).u32((fin?.yOffset ?? 0) / 4).u32(outStride / 4)
    .u32((o.outOffset ?? 0) / 4).u32(outPartStride / 4).u32((fin?.sv ?? 0) / 4).u32((o.norm?.gamma ?? 0) / 4)
    .u32((o.su ?? 0) / 4).f32(fin?.had?.scale ?? 1).f32(o.inHad?.scale ?? 1).u32(0);
  k.dispatch(
    pass,
    p,
    args(normBindings(flags, o), k.params(params)),
    o.rows,
    o.parts,
  );
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// ropeKv

interface RopeShape {
  qDim: number;
  kvDim: number;
  headDim: number;
  wg: number;
  had: boolean;
  sv: boolean;
  /** Subgroup size of the shuffle FWHT, or 0. */
  sg: number;
}

/**
 * The body of one part (q: role "q", k and v: role "kv", which branches on g) for a vector of m at column
 * col (in vec4s, a runtime value): z = sv * scale * H(y), RoPE for q and k with the partner element of each
 * pair (i, i + half) read from workgroup memory (or global memory without a transform), then q to qOut and
 * k, v as f16 pairs to the paged cache.
 */
function ropeBody(s: Src, sh: RopeShape, row: Row, role: "q" | "kv"): void {
  const { wg, v, active } = row;
  const half = sh.headDim / 2;
  const js = range(v);
  const guard = active < wg ? `tid < ${active}u` : "true";
  s.add(`  let col = ${role === "q" ? "0u" : `${sh.qDim / 4}u + (g - 1u) * ${sh.kvDim / 4}u`};`);
  s.add(`  let act = ${guard};`);
  s.add(`  let yb = params.yOffset + t * params.yStride + col;`);
  // Element e = 4 (tid + wg j) .. + 3 of the part; its head-local index d, rope index i = d mod half, and
  // the partner e +- half (the same side of the pair for all four).
  for (const j of js) {
    s.add(
      `  let e${j} = 4u * (tid + ${wg * j}u);`,
      `  let d${j} = e${j} % ${sh.headDim}u;`,
      `  let lo${j} = d${j} < ${half}u;`,
      `  let pe${j} = select(e${j} - ${half}u, e${j} + ${half}u, lo${j});`,
      `  var y${j} = vec4<f32>(0.0);`,
      `  var sv${j} = vec4<f32>(1.0);`,
      `  var svp${j} = vec4<f32>(1.0);`,
      `  var yp${j} = vec4<f32>(0.0);`,
      `  var cs${j}a = vec4<f32>(1.0, 0.0, 1.0, 0.0);`,
      `  var cs${j}b = vec4<f32>(1.0, 0.0, 1.0, 0.0);`,
    );
  }
  s.add(`  if (act) {`);
  for (const j of js) {
    s.add(`    y${j} = y[yb + tid + ${wg * j}u];`);
    if (sh.sv) {
      s.add(`    sv${j} = side[params.svOff + col + tid + ${wg * j}u];`);
      s.add(`    svp${j} = side[params.svOff + col + pe${j} / 4u];`);
    }
    if (!sh.had) s.add(`    yp${j} = y[yb + pe${j} / 4u];`);
    // (cos, sin) of rope indices i .. i + 3: 8 floats from (ropeRow + i) * 2, a whole number of vec4s.
    s.add(
      `    let ri${j} = (ropeRow + (d${j} % ${half}u)) / 2u;`,
      `    cs${j}a = rope[ri${j}];`,
      `    cs${j}b = rope[ri${j} + 1u];`,
    );
  }
  s.add(`  }`);
  if (sh.had) {
    fwhtRows(s, row, "y", sh.sg, true);
    // The partners, from the transform's copy in sm.
    for (const j of js) s.add(`  if (act) { yp${j} = load4(pe${j}); }`);
  }
  const scale = sh.had ? ` * params.${role}Scale` : "";
  for (const j of js) {
    s.add(`  var z${j} = y${j}${scale} * sv${j};`);
    s.add(`  let zp${j} = yp${j}${scale} * svp${j};`);
  }
  // RoPE: low half x0 c - x1 s, high half x1 c + x0 s (x0 low, x1 high): own * c -+ partner * s.
  const rot = role === "q" ? "true" : "g == 1u";
  s.add(`  if (${rot}) {`);
  for (const j of js) {
    s.add(
      `    {`,
      `      let c = vec4<f32>(cs${j}a.x, cs${j}a.z, cs${j}b.x, cs${j}b.z);`,
      `      let sn = vec4<f32>(cs${j}a.y, cs${j}a.w, cs${j}b.y, cs${j}b.w);`,
      `      z${j} = select(z${j} * c + zp${j} * sn, z${j} * c - zp${j} * sn, lo${j});`,
      `    }`,
    );
  }
  s.add(`  }`);
  s.add(`  if (!act) {`, `    return;`, `  }`);
  if (role === "q") {
    s.add(`  let qb = params.qOffset + t * params.qStride + tid;`);
    for (const j of js) s.add(`  qOut[qb + ${wg * j}u] = z${j};`);
  } else {
    s.add(
      `  let seq = tokenSeq[t];`,
      `  let blk = blockTable[seq * params.maxBlocksPerSeq + pos / params.blockSize];`,
      `  let slot = pos % params.blockSize;`,
    );
    for (const j of js) {
      s.add(
        `  {`,
        `    let head = e${j} / ${sh.headDim}u;`,
        `    let dst = ((blk * ${
          sh.kvDim / sh.headDim
        }u + head) * params.blockSize + slot) * ${half}u + d${j} / 2u;`,
        `    let w0 = pack2x16float(z${j}.xy);`,
        `    let w1 = pack2x16float(z${j}.zw);`,
        `    if (g == 1u) {`,
        `      kCache[dst] = w0;`,
        `      kCache[dst + 1u] = w1;`,
        `    } else {`,
        `      vCache[dst] = w0;`,
        `      vCache[dst + 1u] = w1;`,
        `    }`,
        `  }`,
      );
    }
  }
}

function ropeBindings(sv: boolean, o?: RopeKvOptions): Binding[] {
  return [
    ["y", "vec4<f32>", false, o?.y],
    ...(sv ? [["side", "vec4<f32>", false, o?.vec] as Binding] : []),
    ["rope", "vec4<f32>", false, o?.rope],
    ["tokenSeq", "u32", false, o?.tokenSeq],
    ["tokenPos", "u32", false, o?.tokenPos],
    ["blockTable", "u32", false, o?.blockTable],
    ["qOut", "vec4<f32>", true, o?.qOut],
    ["kCache", "u32", true, o?.kCache],
    ["vCache", "u32", true, o?.vCache],
  ];
}

function ropeSource(sh: RopeShape): string {
  const s = new Src();
  const rq = rowOf(sh.qDim, sh.wg), rkv = rowOf(sh.kvDim, sh.wg);
  s.add(
    `// ropeKv, register plan (kernels/transform/vector.ts): q ${sh.qDim}, k/v ${sh.kvDim}, head ${sh.headDim},`,
    `// ${sh.wg} threads.`,
    `struct Params {`,
    `  yStride: u32, yOffset: u32, svOff: u32, qStride: u32,`,
    `  qOffset: u32, ropeMaxPos: u32, blockSize: u32, maxBlocksPerSeq: u32,`,
    `  qScale: f32, kvScale: f32, _p0: u32, _p1: u32,`,
    `}`,
  );
  declare(s, ropeBindings(sh.sv));
  common(s, rq.m >= rkv.m ? [rq, rkv] : [rkv, rq], Math.max(sh.qDim, sh.kvDim), sh.sg);
  s.add(
    `@compute @workgroup_size(${sh.wg})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {`,
    `  let t = wid.x;`,
    `  let g = wid.y;`,
    `  let pos = tokenPos[t];`,
    `  let ropeRow = min(pos, params.ropeMaxPos - 1u) * ${sh.headDim / 2}u;`,
    `  if (g == 0u) {`,
    `    partQ(t, g, tid, pos, ropeRow);`,
    `  } else {`,
    `    partKv(t, g, tid, pos, ropeRow);`,
    `  }`,
    `}`,
  );
  for (const [role, row] of [["q", rq], ["kv", rkv]] as const) {
    s.add(`fn part${role === "q" ? "Q" : "Kv"}(t: u32, g: u32, tid: u32, pos: u32, ropeRow: u32) {`);
    ropeBody(s, sh, row, role);
    s.add(`}`);
  }
  return s.text();
}

/**
 * Records ropeKv's register plan and returns true, or returns false (nothing recorded) when the call does
 * not fit it (widths not powers of two in range, mixing transforms, a head dim not a multiple of 8, offsets
 * or strides not multiples of 4).
 */
export function ropeKvVector(k: Kernels, pass: GPUComputePassEncoder, o: RopeKvOptions): boolean {
  const qDim = o.nHeads * o.headDim, kvDim = o.nKvHeads * o.headDim;
  const wg = threadsFor(k, Math.max(qDim, kvDim));
  if (!fits(k, qDim, wg) || !fits(k, kvDim, wg) || o.headDim % 8 !== 0) return false;
  if (!plain(o.hq, qDim) || !plain(o.hkv, kvDim) || !!o.hq !== !!o.hkv) return false;
  const yStride = o.yStride ?? qDim + 2 * kvDim, qStride = o.qStride ?? qDim;
  if (!aligned(yStride, o.yOffset, o.sv, qStride, o.qOffset)) return false;
  const sg = shuffleSize(k, Math.min(rowOf(qDim, wg).active, rowOf(kvDim, wg).active));
  const sh: RopeShape = { qDim, kvDim, headDim: o.headDim, wg, had: !!o.hq, sv: o.sv !== undefined, sg };
  const name = `rope_vec:${qDim}:${kvDim}:${o.headDim}:${wg}:${sg}:${sh.had ? 1 : 0}${sh.sv ? 1 : 0}`;
  const p = k.pipeline(name, () => ropeSource(sh));
  const params = new ParamWriter()
    .u32(yStride / 4).u32((o.yOffset ?? 0) / 4).u32((o.sv ?? 0) / 4).u32(qStride / 4)
    .u32((o.qOffset ?? 0) / 4).u32(o.ropeMaxPos).u32(o.blockSize).u32(o.maxBlocksPerSeq)
    .f32(o.hq?.scale ?? 1).f32(o.hkv?.scale ?? 1).u32(0).u32(0);
  k.dispatch(
    pass,
    p,
    args(ropeBindings(sh.sv, o), k.params(params)),
    o.T,
    3,
  );
  return true;
}
