// Perplexity over a token stream, the way the fixtures' references were computed: non-overlapping
// windows of `ctx` tokens (the remainder dropped), the mean next-token NLL of each window, then the
// exponential of the mean over windows.
import type { Engine } from "./engine.ts";

export interface PerplexityResult {
  ppl: number;
  windows: number;
  tokens: number;
  seconds: number;
}

/** Mean NLL of predicting ids[1..] from the logits rows of ids[..-1] (row-major, `vocab` wide). */
export function meanNll(logits: Float32Array, ids: ArrayLike<number>, vocab: number): number {
  let total = 0;
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = logits.subarray(t * vocab, (t + 1) * vocab);
    let max = -Infinity;
    for (let i = 0; i < vocab; i++) if (row[i] > max) max = row[i];
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += Math.exp(row[i] - max);
    total += max + Math.log(sum) - row[ids[t + 1]];
  }
  return total / (ids.length - 1);
}

export async function perplexity(
  engine: Engine,
  stream: ArrayLike<number>,
  opts: { ctx?: number; maxWindows?: number; onWindow?: (i: number, n: number, nll: number) => void } = {},
): Promise<PerplexityResult> {
  const ctx = opts.ctx ?? 512;
  const n = Math.min(Math.floor(stream.length / ctx), opts.maxWindows ?? Infinity);
  const t0 = performance.now();
  let sum = 0;
  for (let w = 0; w < n; w++) {
    const ids = Array.from({ length: ctx }, (_, i) => stream[w * ctx + i]);
    const logits = await engine.promptLogits(ids);
    const nll = meanNll(logits, ids, engine.cfg.vocabSize);
    sum += nll;
    opts.onWindow?.(w, n, nll);
  }
  return { ppl: Math.exp(sum / n), windows: n, tokens: n * ctx, seconds: (performance.now() - t0) / 1000 };
}
