// The GPU layout of QTIP trellis weights, made once per tensor at load time from the checkpoint's words
// (swizzled or plain, qtip_ref.ts), and read by the fused kernels in qtip.wgsl.
//
// Design note: one layout for every code, K and on-disk order.
// - A 16x16 tile's 256*K bits are one circular bitstream whose overlapping 16-bit windows are the states, so
//   the bits cannot be regrouped per thread without storing the overlaps twice. The layout keeps each tile's
//   bitstream whole and makes it easy to slice: u32 word w of a tile holds stream bits [32w, 32w + 32), the
//   first of them in bit 31 (MSB first). A state at stream bit p is the 16 bits at p of word(p/32):word(p/32+1),
//   the tile's last word followed by its first.
// - Buffer (u32): words 0..3 are a header [GPU_LAYOUT_MAGIC, flags, K, V]; then (m/16) x (n/16) tiles, tile
//   (I, J) at word 4 + (I * (n/16) + J) * 8K: a tile-row (16 output rows) is one contiguous run, which a
//   matvec workgroup streams front to back.
// - A "pair" P in [0, 128) of a tile is 2K stream bits at 2K*P and decodes to two adjacent weights of one row:
//   HYB (V = 2) reads one state at 2K*P; 1MAD/3INST (V = 1) read states at 2K*P and 2K*P + K. A "lane"
//   l in [0, 8) is the 16 pairs 16l..16l+15: its bits lie in words K*l .. K*l + K (the last one shared).
// - Where a pair's two weights sit in the tile depends on the checkpoint's word order (has_kernel), which the
//   bitstream cannot absorb, so flags bit 0 records it and the kernels read it from the header:
//   plain (pack_trellis, get_hatW):   row = P >> 3,                 column = 2 * (P & 7) (+1)
//   mma (decode_compressed, m16n8k16): l = P >> 4, u = P & 15, row = l + 8 * (u & 1),
//                                      column = 8 * ((u >> 1) & 1) + 2 * (u >> 2) (+1)
import { type QtipCode, TILE_WEIGHTS, type TrellisLayout } from "./qtip_ref.ts";
import { expandLut } from "./qtip_ref.ts";

/** "QTIP" as little-endian bytes: the first word of every GPU-layout buffer. */
export const GPU_LAYOUT_MAGIC = 0x50495451;
/** u32 words before the first tile. */
export const GPU_LAYOUT_HEADER = 4;
/** Header flags bit: pairs are placed in the m16n8k16 (swizzled checkpoint) order. */
export const GPU_LAYOUT_MMA = 1;

export interface GpuLayoutOptions {
  m: number;
  n: number;
  K: number;
  V: number;
  layout: TrellisLayout;
}

/** u32 words of the GPU layout of an m x n weight at K bits. */
export function gpuLayoutWords(m: number, n: number, K: number): number {
  return GPU_LAYOUT_HEADER + (m / 16) * (n / 16) * 8 * K;
}

/**
 * The checkpoint's `trellis` (int16 viewed as u16, (m/16)(n/16) x 16K) -> the GPU layout above. O(size):
 * swizzled words are moved in their K-byte interleave groups, plain words are paired into u32.
 */
export function toGpuLayout(words: Uint16Array, o: GpuLayoutOptions): Uint32Array {
  const { m, n, K, V } = o;
  if (![2, 3, 4].includes(K)) throw new Error(`Cannot lay out trellis: K must be 2, 3 or 4, got ${K}`);
  if (V !== 1 && V !== 2) throw new Error(`Cannot lay out trellis: V must be 1 or 2, got ${V}`);
  const mult = o.layout === "swizzled" ? 32 : 16;
  if (m % mult !== 0 || n % mult !== 0) {
    throw new Error(
      `Cannot lay out ${o.layout} trellis: m and n must be multiples of ${mult}, got ${m}x${n}`,
    );
  }
  if (words.length !== (m * n * K) / 16) {
    throw new Error(
      `Cannot lay out trellis of ${m}x${n} at K=${K}: expected ${
        (m * n * K) / 16
      } words, got ${words.length}`,
    );
  }
  const out = new Uint32Array(gpuLayoutWords(m, n, K));
  out.set([GPU_LAYOUT_MAGIC, o.layout === "swizzled" ? GPU_LAYOUT_MMA : 0, K, V]);
  if (o.layout === "plain") {
    // Tiles are already row-major with MSB-first u16 words: pair them.
    for (let i = 0, h = GPU_LAYOUT_HEADER; i < words.length; i += 2, h++) {
      out[h] = ((words[i] << 16) | words[i + 1]) >>> 0;
    }
    return out;
  }
  // Swizzled: group g = (((a*(n/32) + b)*32 + c)*2 + d)*2 + e of K bytes (little-endian view of the words)
  // is stream bytes c*K .. c*K + K-1 of tile (2a + e, 2b + d), in reverse order (see swizzledByteIndex in
  // qtip_ref.ts). For K = 2 that is u16 word g -> stream u16 word c; for K = 4 u32 word g -> stream word c.
  const tilesPerRow = n / 16, tileWords = 8 * K;
  const src8 = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  const dst8 = new Uint8Array(out.buffer);
  let g = 0;
  for (let a = 0; a < m / 32; a++) {
    for (let b = 0; b < n / 32; b++) {
      const t00 = GPU_LAYOUT_HEADER + (2 * a * tilesPerRow + 2 * b) * tileWords;
      for (let c = 0; c < 32; c++) {
        for (let d = 0; d < 2; d++) {
          for (let e = 0; e < 2; e++, g++) {
            const tileBase = t00 + (e * tilesPerRow + d) * tileWords;
            if (K === 2) {
              out[tileBase + (c >> 1)] |= (c & 1) ? words[g] : words[g] << 16;
            } else if (K === 4) {
              out[tileBase + c] = words[2 * g] | (words[2 * g + 1] << 16);
            } else {
              // Stream byte B of the tile sits at memory byte B ^ 3 of its little-endian u32 words.
              const tb = tileBase * 4;
              for (let f = 0; f < K; f++) dst8[tb + ((c * K + K - 1 - f) ^ 3)] = src8[g * K + f];
            }
          }
        }
      }
    }
  }
  return out;
}

/** Concatenates GPU layouts of linears with the same n, K, V and order along m (e.g. fused q/k/v). */
export function fuseGpuLayouts(parts: Uint32Array[]): Uint32Array {
  if (parts.length === 0) throw new Error("Cannot fuse GPU layouts: no parts given");
  const head = parts[0].subarray(0, GPU_LAYOUT_HEADER);
  let total = GPU_LAYOUT_HEADER;
  for (const p of parts) {
    if (p[0] !== GPU_LAYOUT_MAGIC || p[1] !== head[1] || p[2] !== head[2] || p[3] !== head[3]) {
      throw new Error(
        `Cannot fuse GPU layouts: header [${p.subarray(0, 4).join()}] differs from [${head.join()}]`,
      );
    }
    total += p.length - GPU_LAYOUT_HEADER;
  }
  const out = new Uint32Array(total);
  out.set(head);
  let at = GPU_LAYOUT_HEADER;
  for (const p of parts) {
    out.set(p.subarray(GPU_LAYOUT_HEADER), at);
    at += p.length - GPU_LAYOUT_HEADER;
  }
  return out;
}

/** Row and column (of the first weight) of pair P in its tile, per the header's order. */
export function pairPosition(P: number, mma: boolean): [number, number] {
  if (!mma) return [P >> 3, 2 * (P & 7)];
  const l = P >> 4, u = P & 15;
  return [l + 8 * (u & 1), 8 * ((u >> 1) & 1) + 2 * (u >> 2)];
}

/**
 * CPU decode of a GPU-layout buffer into hatW row-major (m, n), the way the kernels decode it: lets the
 * layout be checked against decodeHatW without a GPU.
 */
export function decodeGpuLayout(
  gpu: Uint32Array,
  o: { m: number; n: number; code: QtipCode; tlut?: Uint16Array; tlutBits?: number },
): Float32Array {
  if (gpu[0] !== GPU_LAYOUT_MAGIC) throw new Error(`Not a QTIP GPU layout: first word is ${gpu[0]}`);
  const mma = (gpu[1] & GPU_LAYOUT_MMA) !== 0, K = gpu[2], V = gpu[3];
  const lut = expandLut(o.code, o.tlut, o.tlutBits);
  const tileWords = 8 * K, tilesPerRow = o.n / 16;
  const out = new Float32Array(o.m * o.n);
  const stateAt = (base: number, p: number) => {
    const w = p >>> 5, off = p & 31;
    const hi = gpu[base + w], lo = gpu[base + ((w + 1) % tileWords)];
    return (((hi << off) | ((lo >>> 1) >>> (31 - off))) >>> 16) & 0xffff;
  };
  for (let I = 0; I < o.m / 16; I++) {
    for (let J = 0; J < tilesPerRow; J++) {
      const base = GPU_LAYOUT_HEADER + (I * tilesPerRow + J) * tileWords;
      for (let P = 0; P < TILE_WEIGHTS / 2; P++) {
        const [r, c] = pairPosition(P, mma);
        const at = (I * 16 + r) * o.n + J * 16 + c;
        if (V === 2) {
          const s = stateAt(base, 2 * K * P);
          out[at] = lut[2 * s];
          out[at + 1] = lut[2 * s + 1];
        } else {
          out[at] = lut[stateAt(base, 2 * K * P)];
          out[at + 1] = lut[stateAt(base, 2 * K * P + K)];
        }
      }
    }
  }
  return out;
}
