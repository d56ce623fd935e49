// Plain references for the paged attention kernels: causal attention over each sequence's cached
// positions with K/V rounded to f16 as the cache holds them, the cache write, and block copies.

export interface AttentionRefInput {
  q: Float32Array; // (T, nHeads * headDim)
  keys: Float32Array[]; // per sequence row: (seqLen, nKvHeads * headDim)
  values: Float32Array[]; // per sequence row: (seqLen, nKvHeads * headDim)
  tokenSeq: ArrayLike<number>; // (T) sequence row of each token
  tokenPos: ArrayLike<number>; // (T) position of each token
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  scale?: number;
}

/** out[t, h] = sum_{p <= pos} softmax_p(scale * q[t, h] . f16(K[s, p, g])) f16(V[s, p, g]). */
export function attentionRef(x: AttentionRefInput): Float32Array {
  const { nHeads, nKvHeads, headDim } = x;
  const T = x.tokenSeq.length;
  const scale = x.scale ?? 1 / Math.sqrt(headDim);
  const group = nHeads / nKvHeads;
  const kvDim = nKvHeads * headDim;
  const out = new Float32Array(T * nHeads * headDim);
  for (let t = 0; t < T; t++) {
    const s = x.tokenSeq[t];
    const ctx = x.tokenPos[t] + 1;
    const keys = x.keys[s];
    const values = x.values[s];
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / group);
      const scores: number[] = [];
      let max = -Infinity;
      for (let p = 0; p < ctx; p++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) {
          dot += x.q[(t * nHeads + h) * headDim + d] * Math.f16round(keys[p * kvDim + g * headDim + d]);
        }
        scores.push(dot * scale);
        max = Math.max(max, dot * scale);
      }
      let sum = 0;
      for (let p = 0; p < ctx; p++) {
        scores[p] = Math.exp(scores[p] - max);
        sum += scores[p];
      }
      for (let d = 0; d < headDim; d++) {
        let y = 0;
        for (let p = 0; p < ctx; p++) y += scores[p] * Math.f16round(values[p * kvDim + g * headDim + d]);
        out[(t * nHeads + h) * headDim + d] = y / sum;
      }
    }
  }
  return out;
}

export interface KvWriteRefInput {
  cache: Uint16Array; // f16 bits (numBlocks, nKvHeads, blockSize, headDim), updated in place
  rows: Float32Array; // (T, nKvHeads * headDim)
  tokenSeq: ArrayLike<number>;
  tokenPos: ArrayLike<number>;
  blockTable: ArrayLike<number>; // (numSeqRows, maxBlocksPerSeq)
  maxBlocksPerSeq: number;
  nKvHeads: number;
  headDim: number;
  blockSize: number;
}

/** Writes each token's row into its cache slot, rounded to f16 (round to nearest even). */
export function kvWriteRef(x: KvWriteRefInput): void {
  const half = new Float16Array(1);
  const bits = new Uint16Array(half.buffer);
  for (let t = 0; t < x.tokenSeq.length; t++) {
    const pos = x.tokenPos[t];
    const blk = x.blockTable[x.tokenSeq[t] * x.maxBlocksPerSeq + Math.floor(pos / x.blockSize)];
    for (let g = 0; g < x.nKvHeads; g++) {
      for (let d = 0; d < x.headDim; d++) {
        half[0] = x.rows[(t * x.nKvHeads + g) * x.headDim + d];
        x.cache[((blk * x.nKvHeads + g) * x.blockSize + pos % x.blockSize) * x.headDim + d] = bits[0];
      }
    }
  }
}
