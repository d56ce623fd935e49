// Seeded random data for tests: the same seed gives the same numbers on every machine.

/** Deterministic uniform floats in [0, 1) (mulberry32). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` uniform floats in [lo, hi). */
export function randomF32(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = seededRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/** Random values already rounded to f16, returned as both the f16 bits and their f32 values. */
export function randomF16(
  n: number,
  seed: number,
  lo = -1,
  hi = 1,
): { bits: Uint16Array; values: Float32Array } {
  const h = new Float16Array(randomF32(n, seed, lo, hi));
  return { bits: new Uint16Array(h.buffer), values: Float32Array.from(h) };
}
