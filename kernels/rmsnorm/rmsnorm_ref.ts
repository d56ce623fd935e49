// Plain reference for RMSNorm over the rows of a (rows, dim) matrix.

export function rmsnormRef(
  x: Float32Array,
  weight: Float32Array,
  rows: number,
  dim: number,
  eps: number,
): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] * x[r * dim + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i] * inv * weight[i];
  }
  return out;
}
