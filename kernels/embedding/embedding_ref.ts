// Plain reference for the embedding lookup: copies rows of an f16 table (given as f32 values).

export function embeddingRef(
  tokens: ArrayLike<number>,
  table: Float32Array, // (vocab, dim)
  dim: number,
  vocab: number,
  idBase = 0,
): Float32Array {
  const out = new Float32Array(tokens.length * dim);
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t] - idBase;
    if (id < 0 || id >= vocab) continue; // out-of-range ids give zeros
    for (let i = 0; i < dim; i++) out[t * dim + i] = table[id * dim + i];
  }
  return out;
}
