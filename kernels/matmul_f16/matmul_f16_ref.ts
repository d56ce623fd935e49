// Plain reference for the fp16-weight linear layer on dense matrices, summed in JS doubles.

/** (M, N) = x (M, K) times W^T for W (N, K); also returns sum_i |x * w| per output for tolerances. */
export function matmulF16Ref(
  x: Float32Array,
  w: Float32Array, // f16 values as f32
  M: number,
  N: number,
  K: number,
): { out: Float32Array; absSum: Float64Array } {
  const out = new Float32Array(M * N);
  const absSum = new Float64Array(M * N);
  for (let t = 0; t < M; t++) {
    for (let o = 0; o < N; o++) {
      let s = 0, a = 0;
      for (let i = 0; i < K; i++) {
        const p = x[t * K + i] * w[o * K + i];
        s += p;
        a += Math.abs(p);
      }
      out[t * N + o] = s;
      absSum[t * N + o] = a;
    }
  }
  return { out, absSum };
}
