// Plain references for add and copy over flat f32 arrays (offsets already applied by the caller).

export function addRef(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}

/** `dst` with n elements of `src` (from srcOffset) written at dstOffset. */
export function copyRef(
  src: Float32Array,
  dst: Float32Array,
  o: { n: number; srcOffset: number; dstOffset: number },
): Float32Array {
  const out = dst.slice();
  for (let i = 0; i < o.n; i++) out[o.dstOffset + i] = src[o.srcOffset + i];
  return out;
}
