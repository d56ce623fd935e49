// The register plan of the decode attention: attention_decode.wgsl generated per (head dim, query heads a
// workgroup, lanes a position, subgroup size), so every per-invocation value is a named register.
// attention.ts attentionDecode() records it where planDecodeRegs() serves the heads (else, and under
// KernelFeatures.legacy "attn-decode", attention_decode_legacy.wgsl).
//
// Design note. At batch 1 the split decode attention is a latency chain, not work: on the H100 (Llama 2 7B,
// context 640, bench/step_profile.ts --ablate) the legacy kernel cost 12.6 us a layer beyond an empty
// dispatch's 2.2 us, where its 10.5 MB of K and V stream in ~4 us. Its chain: the queries staged through
// workgroup memory (a barrier), the block table, K, five barriers a 64-position chunk, the running max taken
// by one invocation a head reading the chunk's 64 scores one after another, and the V rows loaded only
// after that (a second trip to DRAM, although their addresses were known with K's). Here:
// - An invocation's loads all go out first: its queries (from global memory, not staged), then the block
//   table entries of its NP positions, then the K and V words of those positions together: three trips
//   (tokenSeq/tokenPos with q, the table, the cache), then arithmetic on registers.
// - A position's row is read by a team of L lanes, one 16-byte word each (VPT words a lane for wide heads),
//   so a warp's K loads are 512 consecutive bytes for 128-dim heads; the lanes' partial dot products meet by
//   log2(L) subgroupShuffleXor steps, after which all lanes of a team hold the same scores.
// - The running max is a subgroupMax, shared by the subgroup's teams, so a round has no barrier and no
//   serial loop; each lane accumulates weight * V for its own 8 * VPT dims of the row. A workgroup of
//   256 takes R = 64 positions a round (16 teams x NP = 4), one round per partition at the shortest
//   partitions (DECODE_MIN_PARTITION = R), so at 7B's 640 positions each workgroup is one pass of loads
//   and one barrier: at its end the subgroups' states (max, sum, output) meet in workgroup memory and are
//   combined as partitions are.
// - Without subgroups of a known size (the portable path) the team's dot products meet in workgroup memory
//   (two barriers a round) and each team keeps its own running max (GS = L), so the end combines WG / L
//   states instead of WG / 32.
// Estimate for 7B at 640: 2.2 us launch + three dependent trips (~0.5 + ~0.5 + ~1 us, the last from DRAM)
// + ~0.5 us of arithmetic, shuffles, the barrier and the combine, against 14.8 us. Longer partitions (long
// contexts, batches) loop over rounds; with several workgroups an SM (registers: ~70 a thread at 7B's heads)
// their rounds' loads overlap, so a 4096-position context streams.
// Reference: attention_ref.ts `attentionRef`.
import template from "./attention_decode.wgsl" with { type: "text" };
import { isPow2, KernelError } from "../core.ts";

/** The constants of one generated module. */
export interface DecodeRegPlan {
  HEAD_DIM: number; // a multiple of 8
  HG: number; // query heads a workgroup
  L: number; // lanes a position (a power of two, <= SG when SG > 0)
  VPT: number; // vec4<u32> of a row a lane: HEAD_DIM / 8 = L * VPT
  NP: number; // positions a lane a round
  WG: number;
  SG: number; // subgroup size of the shuffles and subgroupMax; 0: workgroup memory instead
  headChunks: number; // query-head chunks a kv head: HG * headChunks >= group
}

/** Positions a workgroup takes a round (R = WG / L * NP in every plan). */
export const DECODE_ROUND = 64;
/** Most vec4 registers of queries a lane holds (HG * VPT), and as many of accumulators. */
const MAX_QUERY_VEC4 = 4;
/** Most lanes a position: 16 x 16 bytes is a 128-dim row. */
const MAX_LANES = 16;
/** Most positions a lane a round (each holds 2 * VPT vec4<u32> of K and V). */
const MAX_POSITIONS = 8;

/** Workgroup memory of a register plan (attention_decode.wgsl's arrays). */
export function decodeRegSmemBytes(p: Omit<DecodeRegPlan, "headChunks">): number {
  const groups = p.WG / (p.SG || p.L);
  const q4 = p.HEAD_DIM / 4;
  const ps = p.SG === 0 && p.L > 1 ? p.NP * p.HG * p.WG * 4 : 0;
  return groups * p.HG * 8 + groups * p.HG * q4 * 16 + ps;
}

/**
 * The register plan for `group` query heads a kv head within `budget` bytes of workgroup memory, with
 * subgroups of `subgroupSize` (0: none), or null where it does not serve the heads (headDim not a multiple
 * of 8, or a row of more than 4 vec4 a lane): attention_decode_legacy.wgsl serves those.
 */
export function planDecodeRegs(
  headDim: number,
  group: number,
  budget: number,
  subgroupSize: number,
): DecodeRegPlan | null {
  if (!(headDim >= 8 && headDim % 8 === 0 && group >= 1)) return null;
  const c = headDim / 8; // vec4<u32> a row
  for (const sg of isPow2(subgroupSize) && subgroupSize >= 2 ? [subgroupSize, 0] : [0]) {
    // The largest power of two dividing the row, within a subgroup.
    let l = 1;
    while (2 * l <= Math.min(MAX_LANES, sg || MAX_LANES) && c % (2 * l) === 0) l *= 2;
    const vpt = c / l;
    if (vpt > MAX_QUERY_VEC4) continue;
    const hgMax = Math.max(1, Math.floor(MAX_QUERY_VEC4 / vpt));
    for (let headChunks = Math.ceil(group / hgMax); headChunks <= group; headChunks++) {
      const hg = Math.ceil(group / headChunks);
      if (Math.ceil(group / hg) !== headChunks) continue; // the same HG as fewer chunks
      // 4 positions a lane (16 teams), or fewer teams of more positions where workgroup memory is short.
      for (
        let wg = Math.min(256, Math.max(64, 16 * l));
        wg >= l && DECODE_ROUND * l / wg <= MAX_POSITIONS;
        wg /= 2
      ) {
        // A subgroup must lie in the workgroup (and the workgroup be whole subgroups).
        if (sg && (wg < sg || wg % sg !== 0)) continue;
        const np = DECODE_ROUND * l / wg;
        const plan = { HEAD_DIM: headDim, HG: hg, L: l, VPT: vpt, NP: np, WG: wg, SG: sg, headChunks };
        if (decodeRegSmemBytes(plan) <= budget) return plan;
      }
    }
  }
  return null;
}

/** Pipeline name of a register plan's module (bench/step_profile.ts reports kernels by it). */
export function decodeRegKernelName(p: Omit<DecodeRegPlan, "headChunks">): string {
  return `attention_decode_d${p.HEAD_DIM}_h${p.HG}_l${p.L}x${p.VPT}_np${p.NP}_wg${p.WG}_sg${p.SG}`;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** a[0] op a[1] op ... as a balanced tree of `f`, for short dependency chains. */
function tree(a: string[], f: (x: string, y: string) => string): string {
  let t = a;
  while (t.length > 1) {
    const next: string[] = [];
    for (let i = 0; i < t.length; i += 2) next.push(i + 1 < t.length ? f(t[i], t[i + 1]) : t[i]);
    t = next;
  }
  return t[0];
}

/** attention_decode.wgsl with the plan's constants and straight-line body. */
export function decodeSource(p: Omit<DecodeRegPlan, "headChunks">): string {
  const { HG, L, VPT, NP, WG, SG } = p;
  const C = p.HEAD_DIM / 8, teams = WG / L, gs = SG || L;
  if (C !== L * VPT || teams * NP !== DECODE_ROUND || WG % gs !== 0 || gs < L) {
    throw new KernelError(`attention_decode.wgsl: inconsistent plan ${JSON.stringify(p)}`);
  }
  const hs = range(HG), is = range(VPT), js = range(NP);
  const u = (n: number) => `${n}u`;
  const consts = [
    `const HEAD_DIM: u32 = ${u(p.HEAD_DIM)};`,
    `const C: u32 = ${u(C)}; // vec4<u32> (8 halves) a K or V row`,
    `const Q4: u32 = ${u(p.HEAD_DIM / 4)}; // output vec4s a head`,
    `const HG: u32 = ${u(HG)}; // query heads a workgroup`,
    `const L: u32 = ${u(L)}; // lanes a position (a team), each VPT = ${VPT} vec4 of the row`,
    `const WG: u32 = ${u(WG)};`,
    `const TEAMS: u32 = ${u(teams)};`,
    `const R: u32 = ${u(DECODE_ROUND)}; // positions a round: TEAMS x NP = ${NP}`,
    `const GS: u32 = ${u(gs)}; // invocations sharing a running max: ${SG ? "a subgroup" : "a team"}`,
    `const GROUPS: u32 = ${u(WG / gs)};`,
  ];
  const portableSum = SG === 0 && L > 1;
  const smem = portableSum
    ? `// Without subgroups: the lanes' partial scores (NP * HG, WG), summed by each team.\n` +
      `var<workgroup> ps: array<f32, ${NP * HG * WG}>;`
    : "";
  const B: string[] = [];
  const qh = (h: number) => (h === 0 ? "qRow" : `qRow + min(${u(h)}, nh - 1u) * HEAD_DIM`);
  B.push(
    `let ctx = tokenPos[t] + 1u;`,
    `let tableRow = tokenSeq[t] * params.maxBlocksPerSeq;`,
    `let lane = lid % L;`,
    `let team = lid / L;`,
    `// Scaled queries: head h's dims 8 (lane + i L) .. + 7 in qa{h}_{i}, qb{h}_{i} (a head past nh repeats`,
    `// the last one and is not written).`,
    `let qRow = params.qOffset + t * params.qStride + headBase * HEAD_DIM + 8u * lane;`,
  );
  for (const h of hs) {
    B.push(`let qh${h} = ${qh(h)};`);
    for (const i of is) {
      const off = (x: number) => (x === 0 ? "" : ` + ${u(x)}`);
      B.push(
        `let qa${h}_${i} = load4(qh${h}${off(8 * L * i)}) * params.scale;`,
        `let qb${h}_${i} = load4(qh${h}${off(8 * L * i + 4)}) * params.scale;`,
      );
    }
  }
  B.push(`let p1 = min(ctx, pEnd);`, `if (p1 <= p0) {`, `  return false;`, `}`);
  if (portableSum) B.push(`let tb = lid - lane; // the team's first invocation`);
  B.push(`// Running max and sum per head (shared by the group), output dims of this lane.`);
  for (const h of hs) {
    B.push(`var m${h} = NEG;`, `var l${h} = 0.0;`);
    for (const i of is) B.push(`var aa${h}_${i} = vec4<f32>(0.0);`, `var ab${h}_${i} = vec4<f32>(0.0);`);
  }
  const L1: string[] = [];
  L1.push(
    `// Positions base + team + j * TEAMS; one past p1 reads the last position's row (and is masked).`,
  );
  for (const j of js) {
    L1.push(
      `let pos${j} = base + team${j ? ` + ${u(j * teams)}` : ""};`,
      `let ok${j} = pos${j} < p1;`,
      `let row${j} = rowOf(tableRow, g, min(pos${j}, p1 - 1u)) + lane;`,
    );
  }
  L1.push(`// Every K and V word of the round, before any arithmetic.`);
  for (const j of js) {
    for (const i of is) {
      const at = `row${j}${i ? ` + ${u(i * L)}` : ""}`;
      L1.push(`let k${j}_${i} = kCache[${at}];`, `let v${j}_${i} = vCache[${at}];`);
    }
  }
  L1.push(`// This lane's share of each score, then the team's sum.`);
  const teamSum = (SG > 0 || portableSum) && L > 1;
  for (const j of js) {
    for (const h of hs) {
      L1.push(
        `${teamSum ? "var" : "let"} s${j}_${h} = ${
          is.map((i) => `dot8(qa${h}_${i}, qb${h}_${i}, k${j}_${i})`).join(" + ")
        };`,
      );
    }
  }
  const scores = js.flatMap((j) => hs.map((h) => ({ j, h, name: `s${j}_${h}`, slot: j * HG + h })));
  if (SG && L > 1) {
    for (let mask = 1; mask < L; mask *= 2) {
      for (const s of scores) L1.push(`${s.name} += subgroupShuffleXor(${s.name}, ${u(mask)});`);
    }
  } else if (portableSum) {
    const at = (slot: number, i: string) => (slot ? `${u(slot * WG)} + ${i}` : i);
    for (const s of scores) L1.push(`ps[${at(s.slot, "lid")}] = ${s.name};`);
    L1.push(`workgroupBarrier();`);
    for (const s of scores) {
      const terms = range(L).map((x) => `ps[${at(s.slot, "tb")}${x ? ` + ${u(x)}` : ""}]`);
      L1.push(`${s.name} = ${tree(terms, (a, b) => `(${a} + ${b})`)};`);
    }
    L1.push(`workgroupBarrier();`);
  }
  L1.push(`// The group's new max, the rescale of what it holds, and the round's weights.`);
  for (const h of hs) {
    const mx = tree(js.map((j) => `select(NEG, s${j}_${h}, ok${j})`), (a, b) => `max(${a}, ${b})`);
    L1.push(`let mn${h} = max(m${h}, ${SG ? `subgroupMax(${mx})` : mx});`);
    L1.push(`let c${h} = exp(m${h} - mn${h});`, `m${h} = mn${h};`);
    for (const j of js) L1.push(`let w${j}_${h} = select(0.0, exp(s${j}_${h} - mn${h}), ok${j});`);
    L1.push(`l${h} = fma(l${h}, c${h}, ${tree(js.map((j) => `w${j}_${h}`), (a, b) => `(${a} + ${b})`)});`);
  }
  L1.push(`// Weighted V rows.`);
  for (const j of js) {
    for (const i of is) L1.push(`let va${j}_${i} = lo8(v${j}_${i});`, `let vb${j}_${i} = hi8(v${j}_${i});`);
  }
  for (const h of hs) {
    for (const i of is) {
      for (const half of ["a", "b"]) {
        let e = `a${half}${h}_${i} * c${h}`;
        for (const j of js) e = `fma(vec4<f32>(w${j}_${h}), v${half}${j}_${i}, ${e})`;
        L1.push(`a${half}${h}_${i} = ${e};`);
      }
    }
  }
  B.push(`for (var base = p0; base < p1; base += R) {`, ...L1.map((l) => "  " + l), `}`);
  const accs = hs.flatMap((h) => [`l${h}`, ...is.flatMap((i) => [`aa${h}_${i}`, `ab${h}_${i}`])]);
  if (SG && gs > L) {
    B.push(`// The teams of a subgroup (one running max) add up.`);
    for (let mask = L; mask < gs; mask *= 2) {
      for (const a of accs) B.push(`${a} += subgroupShuffleXor(${a}, ${u(mask)});`);
    }
  }
  const rec: string[] = [`let slot = (lid / GS) * HG;`];
  for (const h of hs) {
    rec.push(`if (lane == 0u) {`, `  recStat[slot + ${u(h)}] = vec2<f32>(m${h}, l${h});`, `}`);
    for (const i of is) {
      const at = `(slot + ${u(h)}) * Q4 + 2u * lane${i ? ` + ${u(2 * L * i)}` : ""}`;
      rec.push(`recAcc[${at}] = aa${h}_${i};`, `recAcc[${at} + 1u] = ab${h}_${i};`);
    }
  }
  B.push(`// Each group's state for the combine.`);
  if (gs > L) B.push(`if (lid % GS < L) {`, ...rec.map((l) => "  " + l), `}`);
  else B.push(...rec);
  B.push(`workgroupBarrier();`, `return true;`);
  const blocks: Record<string, string> = {
    CONSTS: consts.join("\n"),
    SMEM: smem,
    ATTEND: B.map((l) => "  " + l).join("\n"),
  };
  return template.replace(/\{\{([A-Z_]+)\}\}/g, (_, name: string) => {
    if (!(name in blocks)) throw new KernelError(`attention_decode.wgsl: unknown block ${name}`);
    return blocks[name];
  });
}
