// Hadamard sizes and the had_K factor matrices of QTIP's randomized Hadamard transform: a size
// n = K * 2^k is transformed as (had_K kron H_{2^k}) / sqrt(n) (Cornell-RelaxML/qtip
// lib/utils/matmul_had.py, get_hadK). The tables live in _had_data.ts, generated from that file.
import { HAD_HEX } from "./_had_data.ts";
import { isPow2 } from "../core.ts";

/** The non-power-of-two factors, in the order get_hadK() tries them. */
export const HAD_K_SIZES: readonly number[] = [172, 156, 140, 124, 116, 108, 60, 52, 36, 28, 20, 12];

/**
 * Splits a transform size n into K * pow2 the way get_hadK() does: the first K of HAD_K_SIZES that
 * divides n, else K = 1 for a power of two. Throws for any other n.
 */
export function hadamardFactor(n: number): { K: number; pow2: number } {
  if (Number.isInteger(n) && n > 0 && n < 2 ** 31) {
    for (const K of HAD_K_SIZES) {
      if (n % K === 0) {
        if (isPow2(n / K)) return { K, pow2: n / K };
        break;
      }
    }
    if (isPow2(n)) return { K: 1, pow2: n };
  }
  throw new RangeError(
    `Unsupported Hadamard size ${n}: expected a power of two or K * 2^k with K in ` +
      `{${HAD_K_SIZES.join(", ")}}`,
  );
}

const cache = new Map<number, Int8Array>();

/** had_K as K * K entries of +1 / -1, row-major; K = 1 gives [1]. */
export function hadKMatrix(K: number): Int8Array {
  let m = cache.get(K);
  if (m) return m;
  if (K === 1) {
    m = Int8Array.of(1);
  } else {
    const rows = HAD_HEX[K];
    if (!rows) {
      throw new RangeError(
        `No Hadamard factor of order ${K}: expected one of {1, ${HAD_K_SIZES.join(", ")}}`,
      );
    }
    m = new Int8Array(K * K);
    for (let r = 0; r < K; r++) {
      for (let c = 0; c < K; c++) {
        const nibble = parseInt(rows[r][c >> 2], 16);
        m[r * K + c] = (nibble >> (3 - (c & 3))) & 1 ? -1 : 1;
      }
    }
  }
  cache.set(K, m);
  return m;
}
