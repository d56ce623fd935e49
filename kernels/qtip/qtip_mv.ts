// Source generator for the decode-batch QTIP matvec (qtip_mv.wgsl): fills the template's blocks with
// straight-line WGSL for one (code, K, pair order, tokens, workgroup size, LUT copies, subgroups, unroll), so
// every bit position and column is a constant and partial sums are named registers, never indexed arrays.
import template from "./qtip_mv.wgsl" with { type: "text" };
import type { QtipCode } from "./qtip_ref.ts";

export const QTIP_MV_TEMPLATE = template;
/** Largest batch the matvec serves; larger batches take the tiled matmul. */
export const QTIP_MV_MAX_TOKENS = 16;

export interface QtipMvVariant {
  code: QtipCode;
  K: 2 | 3 | 4;
  /** Pairs in the m16n8k16 order of swizzled checkpoints (else plain pack_trellis order). */
  mma: boolean;
  tokens: number;
  /** Threads per workgroup: 8 lanes x WG/8 tile slots; a power of two in 64..1024. */
  wg: number;
  /** log2 of the HYB LUT copies in workgroup memory (0..5): lane l of a warp reads copy l % copies. */
  repShift: number;
  tlutBits: number;
  /** Reduce the slots with subgroup shuffles first (needs `subgroups`). */
  subgroups: boolean;
  /** The device's subgroup size (a power of two, 8..128) when `subgroups`. */
  subgroupSize: number;
  /** Tiles a thread decodes per loop trip (1 or 2): more loads in flight. */
  unroll: 1 | 2;
  /**
   * Tile-rows a workgroup takes (1, 2 or 4; default 1): each x load and the LUT fill serve that many, at
   * rows x 2 x tokens partial sums a thread. The rows must not straddle a part boundary.
   */
  rows?: 1 | 2 | 4;
}

export function qtipMvKey(v: QtipMvVariant): string {
  return `qtip_mv:${v.code}:${v.K}:${v.mma ? "mma" : "plain"}:${v.tokens}:${v.wg}:${v.repShift}:` +
    `${v.tlutBits}:${v.subgroups ? `sg${v.subgroupSize}` : "nosg"}:${v.unroll}:r${v.rows ?? 1}`;
}

/** (q, first column) of pair u of a lane: q selects the lane's row (mma: l + 8q; plain: 2l + q). */
export function lanePair(u: number, mma: boolean): [number, number] {
  if (mma) return [u & 1, 8 * ((u >> 1) & 1) + 2 * (u >> 2)];
  return [u >> 3, 2 * (u & 7)];
}

/**
 * The 16-bit state at bit b of a lane's words w0..wK (MSB first), as a WGSL expression; with `masked` false
 * the bits above the state's 16 are left as they fall (HYB reads only what the low 16 bits decide).
 */
function stateExpr(b: number, p: string, masked = true): string {
  const i = b >> 5, o = b & 31;
  const mask = (e: string) => masked ? `((${e}) & 0xffffu)` : `(${e})`;
  if (o === 0) return `(${p}w${i} >> 16u)`;
  if (o < 16) return mask(`${p}w${i} >> ${16 - o}u`);
  if (o === 16) return mask(`${p}w${i}`);
  return mask(`(${p}w${i} << ${o - 16}u) | (${p}w${i + 1} >> ${48 - o}u)`);
}

const COMP = ["x", "y", "z", "w"];

/**
 * The decode of one lane of the tile at `jExpr` in each of the workgroup's tile-rows R, accumulated into
 * a{R}_{q}_{t}; `p` prefixes its names.
 */
function laneBody(v: QtipMvVariant, jExpr: string, p: string, indent: string): string[] {
  const L: string[] = [];
  const K = v.K;
  const rows = v.rows ?? 1;
  L.push(`let ${p}b = laneBase + (${jExpr}) * TILE_WORDS;`);
  for (let R = 0; R < rows; R++) {
    const at = R === 0 ? `${p}b` : `${p}b + ${R === 1 ? "" : `${R}u * `}rowWords`;
    for (let i = 0; i < K; i++) L.push(`let ${p}r${R}w${i} = trellis[${at} + ${i}u];`);
    L.push(`let ${p}r${R}w${K} = trellis[${at} + wrap];`);
  }
  for (let t = 0; t < v.tokens; t++) {
    for (let c = 0; c < 4; c++) {
      L.push(
        `let ${p}x${t}_${c} = x[xRow + ${
          t === 0 ? "" : `${t}u * params.xStride + `
        }(${jExpr}) * 4u + ${c}u];`,
      );
    }
  }
  const tlutMask = (1 << v.tlutBits) - 1;
  const shift = 15 - v.tlutBits - v.repShift;
  const idxMask = (tlutMask << v.repShift) >>> 0;
  const xAt = (t: number, c: number) => `${p}x${t}_${c >> 2}.${COMP[c & 3]}`;
  for (let R = 0; R < rows; R++) {
    const pr = `${p}r${R}`;
    for (let u = 0; u < 16; u++) {
      const b = 2 * K * u;
      let va: string, vb: string;
      if (v.code === "hyb") {
        // t = s (s + 1) as one multiply-add; its low 16 bits need only the state's.
        L.push(`let ${pr}s${u} = ${stateExpr(b, pr, false)};`);
        L.push(`let ${pr}t${u} = ${pr}s${u} * ${pr}s${u} + ${pr}s${u};`);
        const idx = shift >= 0
          ? `((${pr}t${u} >> ${shift}u) & ${idxMask}u)`
          : `((${pr}t${u} << ${-shift}u) & ${idxMask}u)`;
        L.push(`let ${pr}v${u} = unpack2x16float(smem[${idx} | rep] ^ (${pr}t${u} & 0x8000u));`);
        va = `${pr}v${u}.x`;
        vb = `${pr}v${u}.y`;
      } else {
        const fn = v.code === "1mad" ? "mad1" : "inst3";
        L.push(`let ${pr}va${u} = ${fn}(${stateExpr(b, pr)});`);
        L.push(`let ${pr}vb${u} = ${fn}(${stateExpr(b + K, pr)});`);
        va = `${pr}va${u}`;
        vb = `${pr}vb${u}`;
      }
      const [q, c] = lanePair(u, v.mma);
      for (let t = 0; t < v.tokens; t++) {
        L.push(`a${R}_${q}_${t} = fma(${va}, ${xAt(t, c)}, fma(${vb}, ${xAt(t, c + 1)}, a${R}_${q}_${t}));`);
      }
    }
  }
  return L.map((l) => indent + l);
}

/** The reduction of tile-row I + R's partial sums a{R}_{q}_{t} and its output rows. */
function reduceBlock(v: QtipMvVariant, R: number): string[] {
  const T = v.tokens, WG = v.wg;
  const vals: string[] = [];
  for (let q = 0; q < 2; q++) for (let t = 0; t < T; t++) vals.push(`a${R}_${q}_${t}`);
  const L: string[] = [];
  // Partial sums meet in smem[v * WG + g * 8 + lane] for groups g < G, then a tree halves G. A group is a
  // slot, or with subgroups a whole subgroup: its S / 8 slots share lanes (tid % 8 when the subgroup is
  // S consecutive invocations), so xor-shuffles by 8 .. S / 2 sum them first.
  let groups = WG / 8;
  if (v.subgroups) {
    const S = v.subgroupSize;
    for (let m = 8; m < S; m *= 2) for (const a of vals) L.push(`${a} += subgroupShuffleXor(${a}, ${m}u);`);
    groups = WG / S;
    L.push(`if (sgid < 8u) {`);
    L.push(`  let g = tid / ${S}u;`);
    vals.forEach((a, i) => L.push(`  smem[${i * WG}u + g * 8u + lane] = bitcast<u32>(${a});`));
    L.push(`}`);
  } else {
    vals.forEach((a, i) => L.push(`smem[${i * WG}u + tid] = bitcast<u32>(${a});`));
  }
  L.push(`workgroupBarrier();`);
  if (groups > 1) {
    L.push(`for (var h = ${groups / 2}u; h > 0u; h >>= 1u) {`);
    L.push(`  if (slot < h) {`);
    L.push(`    for (var i = 0u; i < ${vals.length}u; i++) {`);
    L.push(`      let at = i * ${WG}u + tid;`);
    L.push(`      smem[at] = bitcast<u32>(bitcast<f32>(smem[at]) + bitcast<f32>(smem[at + h * 8u]));`);
    L.push(`    }`);
    L.push(`  }`);
    L.push(`  workgroupBarrier();`);
    L.push(`}`);
  }
  // Row r of the tile from (lane l, q): mma r = l + 8q, plain r = 2l + q.
  L.push(`for (var i = tid; i < ${16 * T}u; i += ${WG}u) {`);
  L.push(`  let t = i >> 4u;`);
  L.push(`  let r = i & 15u;`);
  L.push(v.mma ? `  let l = r & 7u;\n  let q = r >> 3u;` : `  let l = r >> 1u;\n  let q = r & 1u;`);
  L.push(`  let s = bitcast<f32>(smem[(q * ${T}u + t) * ${WG}u + l]);`);
  L.push(`  store(params.outOffset + t * params.outStride + ${R ? `(I + ${R}u)` : "I"} * 16u + r, s);`);
  L.push(`}`);
  return L.map((l) => "  " + l);
}

/** The WGSL of one variant. */
export function qtipMvSource(v: QtipMvVariant): string {
  if (!(v.tokens >= 1 && v.tokens <= QTIP_MV_MAX_TOKENS)) {
    throw new RangeError(`qtip_mv serves 1..${QTIP_MV_MAX_TOKENS} tokens, got ${v.tokens}`);
  }
  if (![64, 128, 256, 512, 1024].includes(v.wg)) throw new RangeError(`qtip_mv: bad workgroup size ${v.wg}`);
  if (!(Number.isInteger(v.repShift) && v.repShift >= 0 && v.repShift <= 5)) {
    throw new RangeError(`qtip_mv: LUT copies 2^${v.repShift}, expected 2^0..2^5`);
  }
  const hyb = v.code === "hyb";
  const reps = hyb ? 1 << v.repShift : 1;
  const lutWords = hyb ? (1 << v.tlutBits) * reps : 1;
  if (
    v.subgroups &&
    !(v.subgroupSize >= 8 && v.subgroupSize <= 128 && (v.subgroupSize & (v.subgroupSize - 1)) === 0)
  ) {
    throw new RangeError(`qtip_mv: unsupported subgroup size ${v.subgroupSize}`);
  }
  const redWords = 2 * v.tokens * v.wg;
  const rows = v.rows ?? 1;
  if (![1, 2, 4].includes(rows)) {
    throw new RangeError(`qtip_mv: ${rows} tile-rows a workgroup, expected 1, 2 or 4`);
  }
  const acc: string[] = [];
  for (let R = 0; R < rows; R++) {
    for (let q = 0; q < 2; q++) for (let t = 0; t < v.tokens; t++) acc.push(`  var a${R}_${q}_${t} = 0.0;`);
  }
  // Each tile-row's reduction reuses the words of the one before: a barrier between them.
  const reduce = Array.from({ length: rows }, (_, R) => [
    ...(R ? ["  workgroupBarrier();"] : []),
    "  {",
    ...reduceBlock(v, R).map((l) => "  " + l),
    "  }",
  ]).flat();
  let body: string[];
  if (v.unroll === 1) {
    body = laneBody(v, "j", "", "    ");
  } else {
    body = [
      ...laneBody(v, "j", "", "    "),
      "    if (j + SLOTS < tpr) {",
      ...laneBody(v, "j + SLOTS", "n", "      "),
      "    }",
    ];
  }
  let src = template
    .replaceAll("{{K}}", String(v.K))
    .replaceAll("{{TOKENS}}", String(v.tokens))
    .replaceAll("{{WG}}", String(v.wg))
    .replaceAll("{{LUT_ENTRIES}}", String(hyb ? 1 << v.tlutBits : 1))
    .replaceAll("{{REPS}}", String(reps))
    .replaceAll("{{REP_SHIFT}}", String(hyb ? v.repShift : 0))
    .replaceAll("{{SMEM_WORDS}}", String(Math.max(lutWords, redWords)))
    .replace("{{SG_BUILTINS}}", v.subgroups ? "  @builtin(subgroup_invocation_id) sgid: u32," : "")
    .replace("{{ACC}}", acc.join("\n"))
    .replace("{{BODY}}", body.join("\n"))
    .replace("{{ROWS}}", String(rows))
    .replace("{{REDUCE}}", reduce.join("\n"));
  if (v.unroll === 2) src = src.replace("j += SLOTS)", "j += 2u * SLOTS)");
  return src;
}
