// The decode plan of blockTransform (a few rows on a GPU): the MLP's middle or a linear's input transform
// of block_transform.wgsl, generated as one entry point `decode` per (job, values a thread, output blocks a
// workgroup, subgroups) so every loaded term and partial sum is a named register.
//
// Design note. At decode these dispatches are latency chains, not work: on the H100 the old block plan took
// 12.1-12.6 us for n = 11008 (had_172 x H_64) where an empty dispatch costs 2.2 us, and 11.3 us at n = 4096
// with a seventh of the traffic, so the time went to its chain: a loop of four terms a trip (six trips at
// 11008, each waiting ~0.5 us for L2), a barrier to meet the SPLIT partial sums, and six barriers of FWHT.
// Here:
// - A thread holds V = PB / LANES elements of a block row (LANES apart, so a warp's loads are consecutive
//   floats) and sums U = 32 / V consecutive terms of the mix a trip, U a divisor of 32 so one sign word
//   serves them. LANES threads cover a row and WG / LANES such runs of terms cover the mix, so a trip
//   is every term (TRIPS = 1 up to 512 blocks a group): all of a thread's loads are issued before any
//   sum, 32 a vector; the side factors of the epilogue and the sign words are loaded at the start too.
// - The FWHT of a block is its V value bits in registers, its LANES lane bits by subgroup shuffles (LANES =
//   min(PB, subgroup size)), and the partial sums of the runs in a subgroup meet by shuffles too; the
//   subgroups then meet in workgroup memory across one barrier (a subgroup taken to be SG consecutive
//   invocations, as qtip_mv does). Without subgroups (or a known size) the partials meet there and the
//   lane bits take transform_lib.wgsl's fwht (LANES = 16: two more barriers).
// - Grid: a workgroup reads every input of its group (KQ x PB, twice that gated or with pre), so splitting
//   the outputs finer multiplies L2 traffic, not latency. One output block a workgroup gives n = 11008 172
//   workgroups: 40 of an H100's 132 SMs would run two, reading 2 x 88 KB, about 15 MB from L2 in all (~2.5
//   us at ~6 TB/s). Two blocks a workgroup (J = 2) halves that to 86 workgroups of 88 KB (7.5 MB) for twice
//   the FMAs a thread (about 100 more instructions, ~0.15 us for a workgroup's 11 warps), so J = 2 wherever
//   one block a workgroup would give more workgroups than an H100 has SMs, J = 1 below (n = 4096: 64
//   workgroups of 32 KB). Estimate for 11008: 2.2 us launch + ~1-1.5 us loads and sums + ~0.5 us of
//   shuffles, one barrier and the epilogue, against 12.6 us.
// The results are the old plan's to rounding (the same terms summed in another order). Reference:
// transform_ref.ts `blockTransformRef`.
import blockSource from "./block_transform.wgsl" with { type: "text" };
import libSource from "./transform_lib.wgsl" with { type: "text" };
import { type BufferArg, isPow2, type Kernels, type ParamWriter, subgroupWidth } from "../core.ts";

/** One block-plan call as blockTransform sets it up (its Params block already written). */
export interface BlockDecodeCall {
  gated: boolean;
  /** Input job: multiply x by the side vector at suOff before the transform. */
  pre: boolean;
  T: number;
  n: number;
  /** Block length (a power of two, at most 64) and blocks mixed per group (K Q). */
  pb: number;
  kq: number;
  q: number;
  /** Threads to a block row without subgroups (default PORTABLE_LANES). */
  lanes?: number;
  /** x, vec, had, out: bindings 0-3. */
  buffers: [BufferArg, BufferArg, BufferArg, BufferArg];
  params: ParamWriter;
}

/** One generated entry point: the job, V elements of a block row a thread, J output blocks a workgroup,
 * and whether the lane bits and partial sums meet by subgroup shuffles. */
export interface BlockDecodeVariant {
  gated: boolean;
  v: 1 | 2 | 4 | 8;
  j: 1 | 2;
  subgroups: boolean;
}

/** Workgroups from which one output block a workgroup gives way to two: an H100's SMs (see the note). */
const DECODE_FILL = 132;
/** Threads to a block row without subgroups (the lane bits' FWHT then takes two radix-4 passes). */
const PORTABLE_LANES = 16;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** `a` times override `name` as WGSL, folding the zero and one cases. */
function times(a: number, name: string): string {
  return a === 0 ? "" : a === 1 ? ` + ${name}` : ` + ${a}u * ${name}`;
}

/** The module of one variant: block_transform.wgsl (bindings, Params, helpers), fwht, and `decode`. */
export function blockDecodeSource(v: BlockDecodeVariant): string {
  const V = v.v, J = v.j, U = 32 / V, G = v.gated ? 2 : 1;
  const ks = range(V), js = range(J), is = range(U);
  // Accumulator names: gate (or the input job's only vector) "g", up "u"; [j][k].
  const vecs = v.gated ? ["g", "u"] : ["g"];
  const accs = vecs.flatMap((a) => js.flatMap((j) => ks.map((k) => `${a}${j}_${k}`)));
  const L: string[] = [];
  const add = (...s: string[]) => L.push(...s);
  add(`@compute @workgroup_size(WG)`);
  add(`fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {`);
  add(`  let b0 = wid.x * ${J}u; // first output block of the row`);
  add(`  let grp = b0 / KQ;`);
  add(`  let j0 = b0 - grp * KQ; // its index within the group`);
  add(`  let lane = tid & (LANES - 1u);`);
  add(`  let part = tid / LANES;`);
  add(`  let first = grp * KQ * PB + lane; // this lane's element of the group's block 0`);
  add(`  let xRow = params.xOffset + wid.y * params.xStride + first;`);
  add(`  let e = b0 * PB + tid; // the output element of threads tid < ${J} PB`);
  add(`  let finals = tid < ${J}u * PB;`);
  if (v.gated) {
    add(`  var sides = vec3<f32>(1.0);`);
    add(`  if (finals) {`);
    add(`    sides = decSides(e);`);
    add(`  }`);
  }
  for (const a of accs) add(`  var ${a} = 0.0;`);
  add(`  for (var c = 0u; c < TRIPS; c++) {`);
  add(`    let aBase = (c * (WG / LANES) + part) * ${U}u;`);
  add(`    if (aBase < KQ) {`);
  // Terms past KQ exist only in the group's last run (KQ % U of them valid there): their loads are skipped
  // and their values stay zero.
  add(`      let full = aBase + ${U}u <= KQ;`);
  add(`      let at = xRow + aBase * PB;`);
  if (!v.gated) add(`      let atPre = params.suOff + first + aBase * PB;`);
  for (const j of js) add(`      let m${j} = decSigns(j0 + ${j}u, aBase, ${U}u);`);
  for (const i of is) {
    for (const k of ks) for (const a of vecs) add(`      var ${a}x${i}_${k} = 0.0;`);
    add(`      if (full || ${i}u < KQ % ${U}u) {`);
    for (const k of ks) {
      const off = `${times(i, "PB")}${times(k, "LANES")}`;
      add(`        gx${i}_${k} = x[at${off}];`);
      if (v.gated) add(`        ux${i}_${k} = x[at + params.n${off}];`);
    }
    if (!v.gated) {
      add(`        if (PRE) {`);
      for (const k of ks) add(`          gx${i}_${k} *= side[atPre${times(i, "PB")}${times(k, "LANES")}];`);
      add(`        }`);
    }
    add(`      }`);
  }
  for (const i of is) {
    for (const j of js) {
      add(`      let f${i}_${j} = decSign(m${j}, ${i}u);`);
      for (const a of vecs) {
        for (const k of ks) add(`      ${a}${j}_${k} = fma(f${i}_${j}, ${a}x${i}_${k}, ${a}${j}_${k});`);
      }
    }
  }
  add(`    }`);
  add(`  }`);
  // FWHT over the value bits (element bits log2 LANES and up), in registers.
  for (const a of vecs) {
    for (const j of js) {
      for (let h = 1; h < V; h *= 2) {
        for (const k of ks) {
          if (k & h) continue;
          const p = `${a}${j}_${k}`, q = `${a}${j}_${k + h}`;
          add(`  { let s = ${p}; let d = ${q}; ${p} = s + d; ${q} = s - d; }`);
        }
      }
    }
  }
  // Partials of subgroup (or thread) pg meet at sm[((pg J + j) G + vector) PB + element].
  const slot = (j: number, a: number, k: number) =>
    `(pg * ${J * G}u + ${j * G + a}u) * PB + lane${times(k, "LANES")}`;
  if (v.subgroups) {
    // Lane bits: the lower lane of a pair keeps s + d, the upper d - s (d the partner's value).
    add(`  for (var m = 1u; m < LANES; m <<= 1u) {`);
    add(`    let hi = select(1.0, -1.0, (lane & m) != 0u);`);
    for (const a of accs) add(`    ${a} = fma(hi, ${a}, subgroupShuffleXor(${a}, m));`);
    add(`  }`);
    add(`  for (var m = LANES; m < SG; m <<= 1u) {`);
    for (const a of accs) add(`    ${a} += subgroupShuffleXor(${a}, m);`);
    add(`  }`);
    add(`  let pg = tid / SG;`);
    add(`  if ((tid & (SG - 1u)) < LANES) {`);
  } else {
    add(`  let pg = part;`);
    add(`  {`);
  }
  vecs.forEach((a, ai) =>
    js.forEach((j) => ks.forEach((k) => add(`    sm[${slot(j, ai, k)}] = ${a}${j}_${k};`)))
  );
  add(`  }`);
  add(`  workgroupBarrier();`);
  // Thread tid < J PB sums element tid of the workgroup's output over the partials.
  const groups = v.subgroups ? "WG / SG" : "WG / LANES";
  add(`  let own = (tid / PB) * ${G}u * PB + (tid & (PB - 1u)); // its slot in group 0`);
  for (const a of vecs) add(`  var ${a}s = 0.0;`);
  add(`  if (finals) {`);
  add(`    for (var q = 0u; q < ${groups}; q++) {`);
  vecs.forEach((a, ai) => add(`      ${a}s += sm[q * ${J * G}u * PB + own${times(ai, "PB")}];`));
  add(`    }`);
  add(`  }`);
  if (!v.subgroups) {
    // The lane bits' FWHT in workgroup memory: the sums go where group 0's partials were (thread tid alone
    // read those slots).
    add(`  if (finals) {`);
    vecs.forEach((a, ai) => add(`    sm[own${times(ai, "PB")}] = ${a}s;`));
    add(`  }`);
    add(`  workgroupBarrier();`);
    add(`  fwht(0u, LANES, ${J * G}u * PB / LANES, tid);`);
    add(`  if (finals) {`);
    vecs.forEach((a, ai) => add(`    ${a}s = sm[own${times(ai, "PB")}];`));
    add(`  }`);
  }
  add(`  if (finals) {`);
  add(`    let o = params.outOffset + wid.y * params.outStride + e;`);
  add(v.gated ? `    out[o] = decGated(gs, us, sides);` : `    out[o] = gs * params.h.scale;`);
  add(`  }`);
  add(`}`);
  return blockSource + "\n" + libSource + "\n" + L.join("\n") + "\n";
}

/** The module name of a variant (one module each: the pipeline cache keys modules by name). */
export function blockDecodeName(v: BlockDecodeVariant): string {
  return `block_decode:${v.gated ? "g" : "i"}:v${v.v}:j${v.j}:${v.subgroups ? "sg" : "wg"}`;
}

/**
 * Records the decode plan: (blocks / J, T) workgroups. False (nothing recorded) when the call does not fit
 * it (more workgroup memory or threads than the device has); the caller then takes block_transform.wgsl's
 * `main`.
 */
export function blockDecode(k: Kernels, pass: GPUComputePassEncoder, c: BlockDecodeCall): boolean {
  const lim = k.device.limits;
  const sg = subgroupWidth(k.features, 8, 128);
  if (!isPow2(c.pb) || c.pb > 64 || c.n % c.pb !== 0) return false;
  const lanes = Math.min(c.pb, sg || (c.lanes ?? PORTABLE_LANES));
  const v = (c.pb / lanes) as BlockDecodeVariant["v"];
  const U = 32 / v, G = c.gated ? 2 : 1;
  const blocks = c.n / c.pb;
  const maxWg = Math.min(1024, lim.maxComputeInvocationsPerWorkgroup, lim.maxComputeWorkgroupSizeX);
  const align = Math.max(32, sg);
  const runs = Math.ceil(c.kq / U);
  for (const J of (c.kq % 2 === 0 && blocks * c.T > DECODE_FILL ? [2, 1] : [1]) as (1 | 2)[]) {
    // Threads: enough runs of U terms for the mix in as few trips as the device allows, whole subgroups
    // (or warps), and one per output element for the epilogue.
    const maxRuns = Math.floor(maxWg / lanes);
    const wg = Math.ceil(Math.max(Math.ceil(runs / Math.ceil(runs / maxRuns)) * lanes, J * c.pb) / align) *
      align;
    if (wg > maxWg) return false;
    const trips = Math.ceil(runs / (wg / lanes));
    const partials = (sg ? wg / sg : wg / lanes) * J * G * c.pb;
    if (partials * 4 > lim.maxComputeWorkgroupStorageSize) continue;
    if (blocks / J > lim.maxComputeWorkgroupsPerDimension || c.T > lim.maxComputeWorkgroupsPerDimension) {
      return false;
    }
    const variant: BlockDecodeVariant = { gated: c.gated, v, j: J, subgroups: sg > 0 };
    const constants: Record<string, number> = {
      WG: wg,
      SM: partials,
      PB: c.pb,
      LANES: lanes,
      KQ: c.kq,
      QS: Math.log2(c.q),
      TRIPS: trips,
    };
    if (sg) constants.SG = sg;
    if (!c.gated) constants.PRE = c.pre ? 1 : 0;
    const name = blockDecodeName(variant);
    const pipe = k.pipeline(name, () => blockDecodeSource(variant), constants, "decode");
    k.dispatch(pass, pipe, [...c.buffers, k.params(c.params)], blocks / J, c.T);
    return true;
  }
  return false;
}
