// Plain reference for the rotary embedding: rotates each head of a dense (T, nHeads * headDim) matrix
// with the (maxPos, headDim / 2, 2) cos/sin table, in JS doubles.

export function ropeRef(
  x: Float32Array, // (T, nHeads * headDim)
  positions: ArrayLike<number>, // (T)
  cosSin: Float32Array, // (maxPos, headDim / 2, 2)
  nHeads: number,
  headDim: number,
): Float32Array {
  const half = headDim / 2;
  const maxPos = cosSin.length / headDim;
  const out = x.slice();
  for (let t = 0; t < positions.length; t++) {
    const pos = Math.min(positions[t], maxPos - 1);
    for (let h = 0; h < nHeads; h++) {
      const base = (t * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const c = cosSin[(pos * half + i) * 2], s = cosSin[(pos * half + i) * 2 + 1];
        const x0 = x[base + i], x1 = x[base + i + half];
        out[base + i] = x0 * c - x1 * s;
        out[base + i + half] = x1 * c + x0 * s;
      }
    }
  }
  return out;
}
