// Plain reference of one QTIP linear layer (docs/QTIP_FORMAT.md, Cornell-RelaxML/qtip
// lib/codebook/bitshift.py BitshiftLinear.forward): y = SV ⊙ H_m (hatW (H_n^T (SU ⊙ x))), in doubles.
// Checks the decoded weights and the GPU path against the fixtures; not used at inference.
//
// Orientation (confirmed by the fixtures' W_effective_fp32 for the llama2-style down_proj, n = 172 * 32):
// the input side is H_n^T, i.e. had_K^T (matmul_hadUt_cuda), the output side H_m with had_K
// (matmul_hadU_cuda), where H = (had_K kron H_{2^k}) / sqrt(size) acts on K contiguous blocks.
// The official code's x / 32 before hatW and SV * 32 after cancel exactly and are left out.
import { hadamardRef64 } from "../kernels/mod.ts";

export interface QtipLinearRefWeights {
  hatW: ArrayLike<number>; // (m, n) decoded trellis values (Hadamard domain)
  m: number; // out features
  n: number; // in features
  su: ArrayLike<number>; // (n)
  sv: ArrayLike<number>; // (m), scale folded in
  /** 0: whole-size transforms; 1: input side per n / tpRank chunk; 2: output side per m / tpRank chunk. */
  rcp: number;
  tpRank: number;
}

/** Transform sizes of the input and output sides. */
function chunkSizes(w: QtipLinearRefWeights): { inChunk: number; outChunk: number } {
  if (w.rcp !== 0 && w.rcp !== 1 && w.rcp !== 2) {
    throw new RangeError(`Unsupported QTIP rcp ${w.rcp}: expected 0, 1 or 2`);
  }
  const split = (size: number) => {
    if (!(w.tpRank > 0) || size % w.tpRank !== 0) {
      throw new RangeError(`Cannot split ${size} features into tp_rank ${w.tpRank} chunks: not a divisor`);
    }
    return size / w.tpRank;
  };
  return { inChunk: w.rcp === 1 ? split(w.n) : w.n, outChunk: w.rcp === 2 ? split(w.m) : w.m };
}

/** The dense weight the layer applies, W = diag(SV) H_m hatW H_n^T diag(SU): (m, n), y = W x. */
export function qtipEffectiveWeight(w: QtipLinearRefWeights): Float32Array {
  const { m, n } = w;
  const { inChunk, outChunk } = chunkSizes(w);
  // Row r of hatW H_n^T is H_n applied to row r; H_n is block-diagonal over the chunks of a row.
  const right = hadamardRef64(w.hatW, inChunk, false); // (m, n)
  // H_m from the left acts on columns: transpose, transform rows, transpose back.
  const cols = new Float64Array(n * m);
  for (let r = 0; r < m; r++) for (let c = 0; c < n; c++) cols[c * m + r] = right[r * n + c];
  const both = hadamardRef64(cols, outChunk, false); // (n, m)
  const out = new Float32Array(m * n);
  for (let r = 0; r < m; r++) {
    for (let c = 0; c < n; c++) out[r * n + c] = w.sv[r] * both[c * m + r] * w.su[c];
  }
  return out;
}

/** The layer's forward over `rows` inputs x (rows, n): returns y (rows, m), step by step as QTIP runs it. */
export function qtipLinearRef(x: ArrayLike<number>, rows: number, w: QtipLinearRefWeights): Float32Array {
  const { m, n } = w;
  const { inChunk, outChunk } = chunkSizes(w);
  const scaled = new Float64Array(rows * n); // (rows, n)
  for (let r = 0; r < rows; r++) for (let c = 0; c < n; c++) scaled[r * n + c] = x[r * n + c] * w.su[c];
  const x2 = hadamardRef64(scaled, inChunk, true); // (rows, n): H_n^T (SU ⊙ x)
  const y1 = new Float64Array(rows * m); // (rows, m): hatW x2
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < m; o++) {
      let s = 0;
      for (let c = 0; c < n; c++) s += w.hatW[o * n + c] * x2[r * n + c];
      y1[r * m + o] = s;
    }
  }
  const y2 = hadamardRef64(y1, outChunk, false); // (rows, m): H_m y1
  const out = new Float32Array(rows * m);
  for (let r = 0; r < rows; r++) for (let o = 0; o < m; o++) out[r * m + o] = y2[r * m + o] * w.sv[o];
  return out;
}
