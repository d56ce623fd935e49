// Plain references for the fused transform kernels, written as the unfused steps they replace: the QTIP
// output transform (hadamardRef64 with SV), the residual add, RMSNorm, the input transform (SU, then the
// transposed transform), RoPE and the f16 KV write, silu * up. Doubles throughout, rounded to f32 at the end.
import { hadamardRef64 } from "../hadamard/hadamard_ref.ts";

/** Rows of n, each transformed in chunks of `chunk` by H (or H^T). */
export function chunkedHadamard(
  x: ArrayLike<number>,
  n: number,
  transpose: boolean,
  chunk = n,
): Float64Array {
  if (chunk === n) return hadamardRef64(x, n, transpose);
  const out = new Float64Array(x.length);
  const part = new Float64Array(chunk);
  for (let at = 0; at < x.length; at += chunk) {
    for (let i = 0; i < chunk; i++) part[i] = x[at + i];
    out.set(hadamardRef64(part, chunk, transpose), at);
  }
  return out;
}

export interface NormTransformRef {
  xIn: Float32Array; // (rows, dim)
  dim: number;
  eps: number;
  parts: number;
  rows?: number[]; // source rows (gather); default all
  finish?: { y: Float32Array; sv?: Float32Array; had?: { chunk?: number } | null };
  gamma?: Float32Array;
  su?: Float32Array[]; // per part
  inHad?: { chunk?: number } | null;
}

/** { xOut: the new residual rows (all rows), out: [part][t * dim + i] }. */
export function normTransformRef(o: NormTransformRef): { xOut: Float32Array; out: Float32Array[] } {
  const n = o.dim;
  const all = o.xIn.length / n;
  const resid = Float64Array.from(o.xIn);
  if (o.finish) {
    let post: ArrayLike<number> = o.finish.y;
    if (o.finish.had) post = chunkedHadamard(o.finish.y, n, false, o.finish.had.chunk ?? n);
    for (let r = 0; r < all; r++) {
      for (let i = 0; i < n; i++) resid[r * n + i] += post[r * n + i] * (o.finish.sv ? o.finish.sv[i] : 1);
    }
  }
  const rows = o.rows ?? Array.from({ length: all }, (_, i) => i);
  const out: Float32Array[] = [];
  for (let g = 0; g < o.parts; g++) {
    const z = new Float64Array(rows.length * n);
    rows.forEach((r, t) => {
      let inv = 1;
      if (o.gamma) {
        let ss = 0;
        for (let i = 0; i < n; i++) ss += resid[r * n + i] ** 2;
        inv = 1 / Math.sqrt(ss / n + o.eps);
      }
      for (let i = 0; i < n; i++) {
        z[t * n + i] = resid[r * n + i] * inv * (o.gamma ? o.gamma[i] : 1) * (o.su ? o.su[g][i] : 1);
      }
    });
    out.push(Float32Array.from(o.inHad ? chunkedHadamard(z, n, true, o.inHad.chunk ?? n) : z));
  }
  return { xOut: Float32Array.from(resid), out };
}

export interface RopeKvRef {
  y: Float32Array; // (T, qDim + 2 kvDim)
  T: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  positions: number[];
  rope: Float32Array; // (maxPos, half, 2)
  ropeMaxPos: number;
  sv?: Float32Array; // qDim + 2 kvDim
  had?: boolean;
}

/** { q: (T, qDim), k, v: (T, kvDim) } before the f16 rounding of the cache. */
export function ropeKvRef(o: RopeKvRef): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const hd = o.headDim, half = hd / 2;
  const qDim = o.nHeads * hd, kvDim = o.nKvHeads * hd, w = qDim + 2 * kvDim;
  const res = [new Float32Array(o.T * qDim), new Float32Array(o.T * kvDim), new Float32Array(o.T * kvDim)];
  for (let t = 0; t < o.T; t++) {
    for (let g = 0; g < 3; g++) {
      const m = g === 0 ? qDim : kvDim, col = g === 0 ? 0 : qDim + (g - 1) * kvDim;
      let z: ArrayLike<number> = o.y.subarray(t * w + col, t * w + col + m);
      if (o.had) z = hadamardRef64(z, m, false);
      const v = Float64Array.from(z, (val, i) => val * (o.sv ? o.sv[col + i] : 1));
      if (g < 2) {
        const row = Math.min(o.positions[t], o.ropeMaxPos - 1) * half;
        for (let h = 0; h < m / hd; h++) {
          for (let i = 0; i < half; i++) {
            const c = o.rope[2 * (row + i)], s = o.rope[2 * (row + i) + 1];
            const x0 = v[h * hd + i], x1 = v[h * hd + i + half];
            v[h * hd + i] = x0 * c - x1 * s;
            v[h * hd + i + half] = x1 * c + x0 * s;
          }
        }
      }
      res[g].set(v, t * m);
    }
  }
  return { q: res[0], k: res[1], v: res[2] };
}

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

export interface BlockTransformRef {
  x: Float32Array; // gated: (T, 2n) [gate | up]; input: (T, n)
  T: number;
  n: number;
  gated: boolean;
  had?: { chunk?: number } | null;
  sv?: Float32Array; // gated: 2n
  su?: Float32Array; // n
}

export function blockTransformRef(o: BlockTransformRef): Float32Array {
  const n = o.n, out = new Float32Array(o.T * n);
  const w = o.gated ? 2 * n : n;
  for (let t = 0; t < o.T; t++) {
    const row = o.x.subarray(t * w, t * w + w);
    if (o.gated) {
      const gate = o.had
        ? chunkedHadamard(row.subarray(0, n), n, false, o.had.chunk ?? n)
        : row.subarray(0, n);
      const up = o.had ? chunkedHadamard(row.subarray(n), n, false, o.had.chunk ?? n) : row.subarray(n);
      for (let i = 0; i < n; i++) {
        const g = gate[i] * (o.sv ? o.sv[i] : 1), u = up[i] * (o.sv ? o.sv[n + i] : 1);
        out[t * n + i] = silu(g) * u * (o.su ? o.su[i] : 1);
      }
    } else {
      const pre = Float64Array.from(row, (v, i) => v * (o.su ? o.su[i] : 1));
      out.set(Float32Array.from(chunkedHadamard(pre, n, true, o.had?.chunk ?? n)), t * n);
    }
  }
  return out;
}
