// Plain reference for QTIP's Hadamard transform over rows: y = (had_K' kron H_{n/K}) x / sqrt(n), with
// had_K' = had_K, or its transpose when `transpose` (matmul_hadU_cuda / matmul_hadUt_cuda in
// Cornell-RelaxML/qtip lib/utils/matmul_had.py). Straight loops in doubles.
import { hadamardFactor, hadKMatrix } from "./had_tables.ts";

/** hadamardRef in doubles: each row of length n of `x` becomes H_n x (or H_n^T x when `transpose`). */
export function hadamardRef64(x: ArrayLike<number>, n: number, transpose: boolean): Float64Array {
  const { K, pow2: p } = hadamardFactor(n);
  const h = hadKMatrix(K);
  if (x.length % n !== 0) {
    throw new RangeError(`Cannot split ${x.length} values into rows of ${n}: length is not a multiple`);
  }
  const rows = x.length / n;
  const out = new Float64Array(x.length);
  const t = new Float64Array(n);
  const inv = 1 / Math.sqrt(n);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) t[i] = x[r * n + i];
    // Unnormalized Sylvester Walsh-Hadamard transform of each of the K blocks of length p.
    for (let b = 0; b < K; b++) {
      for (let half = 1; half < p; half *= 2) {
        for (let i = 0; i < p; i += 2 * half) {
          for (let j = i; j < i + half; j++) {
            const u = t[b * p + j], v = t[b * p + j + half];
            t[b * p + j] = u + v;
            t[b * p + j + half] = u - v;
          }
        }
      }
    }
    // Block j of the output = sum_i had[j][i] * block i.
    for (let j = 0; j < K; j++) {
      for (let a = 0; a < p; a++) {
        let s = 0;
        for (let i = 0; i < K; i++) s += (transpose ? h[i * K + j] : h[j * K + i]) * t[i * p + a];
        out[r * n + j * p + a] = s * inv;
      }
    }
  }
  return out;
}

/** Rows of length n of `x` transformed by H_n (or H_n^T when `transpose`), rounded to f32. */
export function hadamardRef(x: Float32Array, n: number, transpose: boolean): Float32Array {
  return Float32Array.from(hadamardRef64(x, n, transpose));
}
