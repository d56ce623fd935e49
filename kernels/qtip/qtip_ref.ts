// Plain-TS reference decode of QTIP trellis-coded weights (bitshift trellis, 16x16 tiles): the three codes,
// the plain `pack_trellis` bit order and the CUDA kernel's swizzled order. Dumb and exact: it follows
// Cornell-RelaxML/qtip lib/codebook/bitshift.py and lib/utils/kernel_decompress.py step by step, so its hatW
// equals the official decode bit for bit. The GPU kernels (qtip.wgsl) are checked against it.

/** Trellis codes: HYB (`quantlut_sym`, V = 2), 1MAD and 3INST (V = 1). */
export type QtipCode = "hyb" | "1mad" | "3inst";
/** On-disk word order: "swizzled" when the official `has_kernel` is true (HYB, L16, 9-bit LUT), else "plain". */
export type TrellisLayout = "swizzled" | "plain";

/** Weights per trellis sequence: one 16x16 tile (td_x * td_y). */
export const TILE_WEIGHTS = 256;

/** Weights decoded from one state: 2 for HYB, 1 for the computed codes. */
export function codeV(code: QtipCode): 1 | 2 {
  return code === "hyb" ? 2 : 1;
}

const f16Bits = new Uint16Array(1);
const f16View = new Float16Array(f16Bits.buffer);

/** The f16 value with bit pattern `bits` (exact, as f64). */
export function f16FromBits(bits: number): number {
  f16Bits[0] = bits;
  return f16View[0];
}

/**
 * HYB (`quantlut_sym`): t = s(s+1) mod 2^32; row = (t >> (15 - tlutBits)) & (2^tlutBits - 1); the pair is
 * tlut[row] with the first component negated when bit 15 of t is set. `tlut` holds f16 bits, (2^tlutBits, 2).
 */
export function hybValues(state: number, tlut: Uint16Array, tlutBits: number): [number, number] {
  const t = (state * (state + 1)) % 4294967296; // exact: state < 2^16 keeps the product below 2^53
  const row = Math.floor(t / 2 ** (15 - tlutBits)) % 2 ** tlutBits;
  const flip = Math.floor(t / 32768) % 2 === 1;
  const a = f16FromBits(tlut[2 * row]);
  const b = f16FromBits(tlut[2 * row + 1]);
  return [flip ? -a : a, b];
}

/** 1MAD: x = s * 34038481 + 76625530 mod 2^32; (sum of x's four bytes - 510) / 147.800537109375 in f32. */
export function oneMadValue(state: number): number {
  const x = (Math.imul(state, 34038481) + 76625530) >>> 0;
  const sum = (x & 255) + ((x >>> 8) & 255) + ((x >>> 16) & 255) + (x >>> 24);
  // torch divides an f32 tensor by an f32-exact constant; f64 division then rounding to f32 is the same.
  return Math.fround((sum - 510) / 147.800537109375);
}

/**
 * 3INST: x = s * 89226354 + 64248484 mod 2^32; keep mask 0x8FFF8FFF, XOR 0x3B603B60; the two 16-bit halves
 * are f16 values, added in f16 (torch half addition: exact sum rounded to nearest even f16).
 */
export function threeInstValue(state: number): number {
  const x = (Math.imul(state, 89226354) + 64248484) >>> 0;
  const r = ((x & 0x8fff8fff) ^ 0x3b603b60) >>> 0;
  return Math.f16round(f16FromBits(r >>> 16) + f16FromBits(r & 0xffff));
}

/**
 * The expanded table of every L = 16 state: (65536, V) f32, row s = the values of state s. This is the
 * Python's `cb.lut.T` (`expanded_lut` in decode_compressed).
 */
export function expandLut(code: QtipCode, tlut?: Uint16Array, tlutBits = 9): Float32Array {
  const V = codeV(code);
  const out = new Float32Array(65536 * V);
  for (let s = 0; s < 65536; s++) {
    if (code === "hyb") {
      if (!tlut || tlut.length < 2 << tlutBits) {
        throw new Error(`HYB needs a tlut of ${2 << tlutBits} f16 values, got ${tlut?.length ?? "none"}`);
      }
      const [a, b] = hybValues(s, tlut, tlutBits);
      out[2 * s] = a;
      out[2 * s + 1] = b;
    } else {
      out[s] = code === "1mad" ? oneMadValue(s) : threeInstValue(s);
    }
  }
  return out;
}

/** Bit i (MSB first) of a tile's bitstream held in `words` from word `base`. */
function bitAt(words: Uint16Array, base: number, i: number): number {
  return (words[base + (i >> 4)] >> (15 - (i & 15))) & 1;
}

/**
 * `unpack_trellis`: per tile, 16K MSB-first u16 words -> 256/V states of L bits. State 0 is the first L bits;
 * each next state shifts in K*V bits; the stream is circular (the last windows wrap to the first bits).
 * Returns (tiles, 256/V) states.
 */
export function unpackTrellisPlain(words: Uint16Array, K: number, V: number, L = 16): Uint32Array {
  const bitsPerTile = TILE_WEIGHTS * K;
  const wordsPerTile = bitsPerTile / 16;
  const tiles = words.length / wordsPerTile;
  if (!Number.isInteger(tiles)) {
    throw new Error(`Cannot unpack trellis: ${words.length} words is not a multiple of ${wordsPerTile}`);
  }
  const T = TILE_WEIGHTS / V;
  const kv = K * V;
  const out = new Uint32Array(tiles * T);
  for (let tile = 0; tile < tiles; tile++) {
    const base = tile * wordsPerTile;
    let state = 0;
    for (let i = 0; i < L; i++) state = state * 2 + bitAt(words, base, i);
    out[tile * T] = state;
    for (let i = 1; i < T; i++) {
      let next = 0;
      for (let b = 0; b < kv; b++) next = next * 2 + bitAt(words, base, (L + (i - 1) * kv + b) % bitsPerTile);
      state = ((state * 2 ** kv) % 2 ** L) + next;
      out[tile * T + i] = state;
    }
  }
  return out;
}

/**
 * `pack_trellis`, the inverse of unpackTrellisPlain: (tiles, 256/V) states -> 16K u16 words per tile. Throws
 * when consecutive states do not overlap by L - K*V bits, the last-to-first wrap-around included.
 */
export function packTrellisPlain(states: ArrayLike<number>, K: number, V: number, L = 16): Uint16Array {
  const T = TILE_WEIGHTS / V;
  const kv = K * V;
  const tiles = states.length / T;
  const bitsPerTile = TILE_WEIGHTS * K;
  const out = new Uint16Array(tiles * (bitsPerTile / 16));
  const keep = 2 ** (L - kv);
  for (let tile = 0; tile < tiles; tile++) {
    const s = (i: number) => states[tile * T + (i % T)];
    const bits: number[] = [];
    for (let b = L - 1; b >= 0; b--) bits.push(Math.floor(s(0) / 2 ** b) % 2);
    for (let i = 1; i <= T; i++) {
      if (s(i - 1) % keep !== Math.floor(s(i) / 2 ** kv)) {
        throw new Error(
          `Cannot pack trellis tile ${tile}: states ${i - 1} and ${i % T} do not overlap by ${L - kv} bits`,
        );
      }
      if (i < T) { for (let b = kv - 1; b >= 0; b--) bits.push(Math.floor(s(i) / 2 ** b) % 2); }
    }
    for (let i = 0; i < bitsPerTile; i++) {
      out[tile * (bitsPerTile / 16) + (i >> 4)] |= bits[i] << (15 - (i & 15));
    }
  }
  return out;
}

/**
 * Byte index, in the swizzled u16 array viewed as little-endian bytes, of byte `B` (MSB-first) of tile
 * (I, J)'s bitstream. decode_compressed views the words as bytes shaped (m/32, n/32, 32, 2, 2, K), permutes to
 * (m/32, 2, n/32, 2, 32, K), reverses the K axis, and byte-swaps each pair: tile I = 2a + e, J = 2b + d, and
 * stream byte c*K + f' comes from original byte ((((a*(n/32) + b)*32 + c)*2 + d)*2 + e)*K + (K - 1 - f').
 */
function swizzledByteIndex(I: number, J: number, B: number, n: number, K: number): number {
  const a = I >> 1, e = I & 1, b = J >> 1, d = J & 1;
  const c = Math.floor(B / K), f = K - 1 - (B % K);
  return ((((a * (n / 32) + b) * 32 + c) * 2 + d) * 2 + e) * K + f;
}

function checkSwizzledShape(words: Uint16Array, m: number, n: number, K: number): void {
  if (m % 32 !== 0 || n % 32 !== 0) {
    throw new Error(`Swizzled trellis needs m and n divisible by 32, got m=${m} n=${n}`);
  }
  if (words.length !== (K * m * n) / 16) {
    throw new Error(
      `Swizzled trellis of ${m}x${n} at K=${K}: expected ${(K * m * n) / 16} words, got ${words.length}`,
    );
  }
}

/** Un-interleaves swizzled words into per-tile MSB-first bitstreams, tiles row-major (the plain word order). */
export function unswizzleWords(words: Uint16Array, m: number, n: number, K: number): Uint16Array {
  checkSwizzledShape(words, m, n, K);
  const src = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  const out = new Uint16Array(words.length);
  const bytesPerTile = 32 * K;
  for (let I = 0; I < m / 16; I++) {
    for (let J = 0; J < n / 16; J++) {
      const tile = I * (n / 16) + J;
      for (let B = 0; B < bytesPerTile; B += 2) {
        const hi = src[swizzledByteIndex(I, J, B, n, K)];
        const lo = src[swizzledByteIndex(I, J, B + 1, n, K)];
        out[tile * 16 * K + B / 2] = (hi << 8) | lo;
      }
    }
  }
  return out;
}

/** The inverse of unswizzleWords: per-tile bitstreams (tiles row-major) -> the kernel's swizzled words. */
export function swizzleWords(tileWords: Uint16Array, m: number, n: number, K: number): Uint16Array {
  const out = new Uint16Array(tileWords.length);
  checkSwizzledShape(out, m, n, K);
  const dst = new Uint8Array(out.buffer);
  for (let I = 0; I < m / 16; I++) {
    for (let J = 0; J < n / 16; J++) {
      const tile = I * (n / 16) + J;
      for (let B = 0; B < 32 * K; B += 2) {
        const w = tileWords[tile * 16 * K + B / 2];
        dst[swizzledByteIndex(I, J, B, n, K)] = w >> 8;
        dst[swizzledByteIndex(I, J, B + 1, n, K)] = w & 255;
      }
    }
  }
  return out;
}

/**
 * decode_compressed: swizzled words (K*m*n/16 u16) -> hatW row-major (m, n) f32. `lut` is the expanded
 * (65536, V) table (expandLut). Steps: un-interleave; per tile, u32 window i = word[i] << 16 | word[i+1]
 * (the last word followed by the first); state j = the 16 bits at stream bit j*K*V; value t = j*V + v of the
 * tile, read as t = g*32 + h*8 + p*4 + q*2 + r (the m16n8k16 A fragment), lands at row q*8 + g, column
 * p*8 + h*2 + r.
 */
export function decodeSwizzled(
  words: Uint16Array,
  m: number,
  n: number,
  K: number,
  lut: Float32Array,
): Float32Array {
  const V = lut.length / 65536;
  const tileWords = unswizzleWords(words, m, n, K);
  const wordsPerTile = 16 * K;
  const out = new Float32Array(m * n);
  for (let I = 0; I < m / 16; I++) {
    for (let J = 0; J < n / 16; J++) {
      const base = (I * (n / 16) + J) * wordsPerTile;
      for (let j = 0; j < TILE_WEIGHTS / V; j++) {
        const p = j * K * V;
        const i = p >> 4, shift = p & 15;
        const w32 = tileWords[base + i] * 65536 + tileWords[base + ((i + 1) % wordsPerTile)];
        const state = Math.floor(w32 / 2 ** (16 - shift)) % 65536;
        for (let v = 0; v < V; v++) {
          const t = j * V + v;
          const g = t >> 5, h = (t >> 3) & 3, pp = (t >> 2) & 1, q = (t >> 1) & 1, r = t & 1;
          out[(I * 16 + q * 8 + g) * n + J * 16 + pp * 8 + h * 2 + r] = lut[state * V + v];
        }
      }
    }
  }
  return out;
}

/**
 * get_hatW for the plain layout: tile b = I*(n/16) + J holds rows I*16.., columns J*16..; its value
 * t = j*V + v (state j) sits at row t >> 4, column t & 15.
 */
function decodePlain(states: Uint32Array, m: number, n: number, lut: Float32Array): Float32Array {
  const V = lut.length / 65536;
  const out = new Float32Array(m * n);
  for (let I = 0; I < m / 16; I++) {
    for (let J = 0; J < n / 16; J++) {
      const base = (I * (n / 16) + J) * (TILE_WEIGHTS / V);
      for (let t = 0; t < TILE_WEIGHTS; t++) {
        const state = states[base + Math.floor(t / V)];
        out[(I * 16 + (t >> 4)) * n + J * 16 + (t & 15)] = lut[state * V + (t % V)];
      }
    }
  }
  return out;
}

export interface DecodeHatWOptions {
  m: number;
  n: number;
  code: QtipCode;
  K: number;
  /** Weights per state; defaults to the code's (2 for HYB, 1 otherwise). */
  V?: number;
  /** Trellis state bits; only 16 is supported. */
  L?: number;
  tlutBits?: number;
  /** HYB only: the tlut as f16 bits, (2^tlutBits, 2). */
  tlut?: Uint16Array;
  layout: TrellisLayout;
}

/** The checkpoint's `trellis` words -> hatW row-major (m, n) f32, before Hadamard transforms and scales. */
export function decodeHatW(words: Uint16Array, o: DecodeHatWOptions): Float32Array {
  const V = o.V ?? codeV(o.code);
  if (V !== codeV(o.code)) {
    throw new Error(`Code "${o.code}" decodes ${codeV(o.code)} weights per state, got V=${V}`);
  }
  if ((o.L ?? 16) !== 16) throw new Error(`Only L=16 trellises are supported, got L=${o.L}`);
  if (o.m % 16 !== 0 || o.n % 16 !== 0) {
    throw new Error(`Trellis needs m and n divisible by 16, got ${o.m}x${o.n}`);
  }
  const lut = expandLut(o.code, o.tlut, o.tlutBits ?? 9);
  if (o.layout === "swizzled") return decodeSwizzled(words, o.m, o.n, o.K, lut);
  if (words.length !== (o.K * o.m * o.n) / 16) {
    throw new Error(
      `Trellis of ${o.m}x${o.n} at K=${o.K}: expected ${(o.K * o.m * o.n) / 16} words, got ${words.length}`,
    );
  }
  return decodePlain(unpackTrellisPlain(words, o.K, V), o.m, o.n, lut);
}

/** out[t, o] = sum_i hatW[o, i] * x[t, i] in f64: x (M, n), hatW (m, n) -> (M, m). */
export function matmulRef(
  hatW: Float32Array,
  x: Float32Array,
  M: number,
  m: number,
  n: number,
): Float64Array {
  const out = new Float64Array(M * m);
  for (let t = 0; t < M; t++) {
    for (let o = 0; o < m; o++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += hatW[o * n + i] * x[t * n + i];
      out[t * m + o] = s;
    }
  }
  return out;
}
