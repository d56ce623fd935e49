// Plain references for the indexed copies in gather.wgsl.

export function gatherRef(src: Uint32Array, idx: Uint32Array, srcOffset = 0): Uint32Array {
  return Uint32Array.from(idx, (j) => src[srcOffset + j]);
}

export function scatterRef(dst: Uint32Array, src: Uint32Array, idx: Uint32Array, dstOffset = 0): Uint32Array {
  const out = dst.slice();
  idx.forEach((j, i) => (out[dstOffset + j] = src[i]));
  return out;
}

export function gatherRowsRef(
  x: Float32Array,
  idx: Uint32Array,
  rowStride: number,
  width: number,
): Float32Array {
  const out = new Float32Array(idx.length * width);
  idx.forEach((j, r) => out.set(x.subarray(j * rowStride, j * rowStride + width), r * width));
  return out;
}
