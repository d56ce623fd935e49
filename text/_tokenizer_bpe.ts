// The "BPE" model of a tokenizer.json: one pre-tokenized word in, token ids out. Used by tokenizer.ts.
// Merges run lowest rank first (leftmost on ties) over a linked list of symbols with a min-heap of
// candidate pairs, the order of HF tokenizers' `Word::merge_all` (tokenizers/src/models/bpe/word.rs).

/** Pair key = left id * PAIR_SPAN + right id; ids stay below 2^21. */
const PAIR_SPAN = 2 ** 21;
/** Heap key = rank * POS_SPAN + symbol position, so ties on rank pop the leftmost pair first. */
const POS_SPAN = 2 ** 24;
/** Words longer than this many UTF-16 units are not cached (Llama 2 chunks can be whole chapters). */
const CACHE_WORD_MAX = 256;
const CACHE_ENTRIES_MAX = 200_000;

export interface BpeOptions {
  /** Id of the unknown token, or null when the vocabulary has none (unknown chars are then dropped). */
  unkId: number | null;
  /** Consecutive unknown chars become one unknown token. */
  fuseUnk: boolean;
  /** Chars missing from the vocabulary become their UTF-8 bytes as `<0xXX>` tokens. */
  byteFallback: boolean;
  /** A word that is itself in the vocabulary is one token, whatever the merges say (Llama 3). */
  ignoreMerges: boolean;
}

export class BpeModel {
  #vocab: Map<string, number>;
  /** Pair key -> merge rank. */
  #ranks = new Map<number, number>();
  /** Merge rank -> id of the merged token. */
  #mergedIds: Int32Array;
  /** Byte value -> id of its `<0xXX>` token, or -1. */
  #byteIds = new Int32Array(256).fill(-1);
  #options: BpeOptions;
  #cache = new Map<string, number[]>();
  #encoder = new TextEncoder();

  constructor(vocab: Map<string, number>, merges: [string, string][], options: BpeOptions) {
    this.#vocab = vocab;
    this.#options = options;
    this.#mergedIds = new Int32Array(merges.length);
    for (const id of vocab.values()) {
      if (!Number.isInteger(id) || id < 0 || id >= PAIR_SPAN) {
        throw new Error(`Cannot load BPE vocabulary: expected ids in [0, ${PAIR_SPAN}), found ${id}`);
      }
    }
    merges.forEach(([left, right], rank) => {
      const a = vocab.get(left);
      const b = vocab.get(right);
      const merged = vocab.get(left + right);
      if (a === undefined || b === undefined || merged === undefined) {
        throw new Error(
          `Cannot load BPE merge ${rank} "${left} ${right}": expected both parts and "${
            left + right
          }" in the vocabulary`,
        );
      }
      this.#ranks.set(a * PAIR_SPAN + b, rank);
      this.#mergedIds[rank] = merged;
    });
    if (options.byteFallback) {
      for (let b = 0; b < 256; b++) {
        const id = vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
        if (id !== undefined) this.#byteIds[b] = id;
      }
    }
  }

  /** Token ids of one word (a piece of normalized, pre-tokenized text). */
  tokenize(word: string): number[] {
    if (word.length === 0) return [];
    const cached = this.#cache.get(word);
    if (cached !== undefined) return cached;
    const whole = this.#options.ignoreMerges ? this.#vocab.get(word) : undefined;
    const ids = whole !== undefined ? [whole] : this.#merge(this.#initialSymbols(word));
    if (word.length <= CACHE_WORD_MAX) {
      if (this.#cache.size >= CACHE_ENTRIES_MAX) this.#cache.clear();
      this.#cache.set(word, ids);
    }
    return ids;
  }

  /** One symbol per char; chars outside the vocabulary become byte tokens or the unknown token. */
  #initialSymbols(word: string): number[] {
    const symbols: number[] = [];
    let lastWasUnk = false;
    for (const ch of word) {
      const id = this.#vocab.get(ch);
      if (id !== undefined) {
        symbols.push(id);
        lastWasUnk = false;
        continue;
      }
      if (this.#options.byteFallback) {
        const bytes = this.#encoder.encode(ch);
        const byteIds = Array.from(bytes, (b) => this.#byteIds[b]);
        if (byteIds.every((b) => b >= 0)) {
          symbols.push(...byteIds);
          lastWasUnk = false;
          continue;
        }
      }
      const unk = this.#options.unkId;
      if (unk === null) continue;
      if (!(this.#options.fuseUnk && lastWasUnk)) symbols.push(unk);
      lastWasUnk = true;
    }
    return symbols;
  }

  /** Applies merges by rank until none applies. */
  #merge(initial: number[]): number[] {
    const n = initial.length;
    if (n < 2) return initial;
    if (n >= POS_SPAN) throw new Error(`Cannot encode a word of ${n} symbols: at most ${POS_SPAN - 1}`);
    const ids = Int32Array.from(initial); // (n) symbol ids, valid where alive
    const prev = new Int32Array(n); // (n) index of the previous live symbol, -1 at the start
    const next = new Int32Array(n); // (n) index of the next live symbol, -1 at the end
    const alive = new Uint8Array(n).fill(1);
    const heap = new MinHeap();
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
      if (i + 1 < n) this.#pushPair(heap, ids[i], ids[i + 1], i);
    }
    while (heap.size > 0) {
      const key = heap.pop();
      const rank = Math.floor(key / POS_SPAN);
      const pos = key - rank * POS_SPAN;
      const right = next[pos];
      // Skip entries made stale by an earlier merge at or next to this position.
      if (alive[pos] === 0 || right < 0) continue;
      if (this.#ranks.get(ids[pos] * PAIR_SPAN + ids[right]) !== rank) continue;
      ids[pos] = this.#mergedIds[rank];
      alive[right] = 0;
      next[pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = pos;
      if (prev[pos] >= 0) this.#pushPair(heap, ids[prev[pos]], ids[pos], prev[pos]);
      if (next[pos] >= 0) this.#pushPair(heap, ids[pos], ids[next[pos]], pos);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(ids[i]);
    return out;
  }

  #pushPair(heap: MinHeap, left: number, right: number, pos: number): void {
    const rank = this.#ranks.get(left * PAIR_SPAN + right);
    if (rank !== undefined) heap.push(rank * POS_SPAN + pos);
  }
}

/** Binary min-heap of numbers. */
class MinHeap {
  #items: number[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(value: number): void {
    const items = this.#items;
    let i = items.length;
    items.push(value);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= value) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = value;
  }

  pop(): number {
    const items = this.#items;
    const top = items[0];
    const last = items.pop()!;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      while (true) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && items[r] < items[l] ? r : l;
        if (items[c] >= last) break;
        items[i] = items[c];
        i = c;
      }
      items[i] = last;
    }
    return top;
  }
}
