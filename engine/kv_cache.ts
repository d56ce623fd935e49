// Block bookkeeping for the paged KV cache: the cache is numBlocks fixed-size blocks of blockSize
// token slots, and each sequence owns a list of blocks (its block table) that grows as it does. The
// GPU side only ever sees the block tables; this allocator decides which physical block holds what.
//
// Prefix caching: a full block of prompt tokens, once its K/V are computed, is registered under a hash
// of all tokens from the start of the prompt up to its end. A later prompt that starts with the same
// tokens takes those blocks into its own table (shared, reference-counted, never written again) and
// starts its prefill after them. A block whose last user is gone stays cached, least recently used
// first in line to be reused, until the free list runs dry.
import { EngineError } from "./errors.ts";

interface CachedBlock {
  block: number;
  key: string;
  /** The block's own tokens, compared on a hit so a hash collision can never alias two prefixes. */
  tokens: number[];
  parentKey: string;
}

/** FNV-1a over 32-bit words, two lanes: a 64-bit chained hash as a string. */
function chainHash(parentKey: string, tokens: ArrayLike<number>): string {
  let a = 0x811c9dc5, b = 0x9747b28c;
  for (let i = 0; i < parentKey.length; i++) {
    const c = parentKey.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    a = Math.imul(a ^ t, 0x01000193);
    b = Math.imul(b ^ (t + 0x9e3779b9), 0x5bd1e995) ^ (b >>> 15);
  }
  return (a >>> 0).toString(36) + "." + (b >>> 0).toString(36);
}

export class KvBlockAllocator {
  readonly numBlocks: number;
  readonly blockSize: number;
  #free: number[];
  #tables = new Map<string, number[]>();
  #refs: Uint32Array;
  /** Registered prefix blocks by chained hash. */
  #byKey = new Map<string, CachedBlock>();
  /** The registration of a block, if it holds a cached prefix. */
  #byBlock = new Map<number, CachedBlock>();
  /** Cached blocks nobody uses, oldest first (a Map keeps insertion order). */
  #idle = new Map<number, true>();
  /** Prompt tokens served from the cache / looked up, since creation. */
  hits = 0;
  queries = 0;

  constructor(numBlocks: number, blockSize: number) {
    if (!Number.isInteger(numBlocks) || numBlocks <= 0) {
      throw new EngineError(`KV cache needs a positive whole number of blocks, got ${numBlocks}`);
    }
    if (!Number.isInteger(blockSize) || blockSize <= 0) {
      throw new EngineError(`KV cache block size must be a positive integer, got ${blockSize}`);
    }
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.#refs = new Uint32Array(numBlocks);
    // Pop from the end: block 0 is handed out first.
    this.#free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  /** Blocks needed to hold `tokens` token slots. */
  blocksFor(tokens: number): number {
    return Math.ceil(Math.max(0, tokens) / this.blockSize);
  }

  /** Blocks that can be handed out now: never used, or cached but idle. */
  get freeBlocks(): number {
    return this.#free.length + this.#idle.size;
  }

  /** Blocks some sequence holds. */
  get usedBlocks(): number {
    return this.numBlocks - this.freeBlocks;
  }

  /** Blocks that hold a registered prefix (in use or idle). */
  get cachedBlocks(): number {
    return this.#byBlock.size;
  }

  /** Whether a new sequence of `tokens` slots fits in the free blocks now (ignoring prefix hits). */
  canAllocate(tokens: number): boolean {
    return this.blocksFor(tokens) <= this.freeBlocks;
  }

  /**
   * Starts `id`'s table with the cached blocks of the longest registered prefix of `prompt`, leaving at
   * least `keepLast` prompt tokens uncached (the last prompt token must run to give logits). Returns the
   * number of prompt tokens whose K/V are already in those blocks.
   */
  matchPrefix(id: string, prompt: ArrayLike<number>, keepLast = 1): number {
    if (this.#tables.has(id)) throw new EngineError(`Sequence "${id}" already has KV blocks`);
    const table: number[] = [];
    const bs = this.blockSize;
    const maxBlocks = Math.floor(Math.max(0, prompt.length - keepLast) / bs);
    let key = "";
    for (let i = 0; i < maxBlocks; i++) {
      const tokens = Array.prototype.slice.call(prompt, i * bs, (i + 1) * bs) as number[];
      const next = chainHash(key, tokens);
      const hit = this.#byKey.get(next);
      if (!hit || hit.parentKey !== key || hit.tokens.some((t, j) => t !== tokens[j])) break;
      this.#retain(hit.block);
      table.push(hit.block);
      key = next;
    }
    this.#tables.set(id, table);
    this.queries += prompt.length;
    this.hits += table.length * bs;
    return table.length * bs;
  }

  /** Registers `id`'s full blocks among the first `computed` tokens of `prompt` as cached prefixes. */
  registerPrefix(id: string, prompt: ArrayLike<number>, computed: number): void {
    const table = this.#tables.get(id);
    if (!table) return;
    const bs = this.blockSize;
    const full = Math.min(Math.floor(Math.min(computed, prompt.length) / bs), table.length);
    let key = "";
    for (let i = 0; i < full; i++) {
      const tokens = Array.prototype.slice.call(prompt, i * bs, (i + 1) * bs) as number[];
      const next = chainHash(key, tokens);
      const block = table[i];
      const known = this.#byBlock.get(block);
      if (!known && !this.#byKey.has(next)) {
        const entry = { block, key: next, tokens, parentKey: key };
        this.#byKey.set(next, entry);
        this.#byBlock.set(block, entry);
      }
      key = next;
    }
  }

  /** Grows `id`'s table (creating it) to hold at least `tokens` slots; throws when blocks run out. */
  ensureCapacity(id: string, tokens: number): readonly number[] {
    let table = this.#tables.get(id);
    if (!table) {
      table = [];
      this.#tables.set(id, table);
    }
    const need = this.blocksFor(tokens) - table.length;
    if (need > this.freeBlocks) {
      throw new EngineError(
        `KV cache is full: sequence "${id}" needs ${need} more blocks of ${this.blockSize} tokens, ` +
          `${this.freeBlocks} of ${this.numBlocks} are free`,
      );
    }
    for (let i = 0; i < need; i++) table.push(this.#take());
    return table;
  }

  /** The physical blocks of `id`, in order (empty when unknown). */
  table(id: string): readonly number[] {
    return this.#tables.get(id) ?? [];
  }

  has(id: string): boolean {
    return this.#tables.has(id);
  }

  /** Releases `id`'s blocks: unshared uncached ones go back to the free list, cached ones turn idle. */
  free(id: string): void {
    const table = this.#tables.get(id);
    if (!table) return;
    this.#tables.delete(id);
    for (let i = table.length - 1; i >= 0; i--) this.#release(table[i]);
  }

  /** Forgets every idle cached prefix (their blocks become plain free blocks). */
  clearCache(): void {
    for (const block of [...this.#idle.keys()]) {
      this.#forget(block);
      this.#idle.delete(block);
      this.#free.push(block);
    }
  }

  #retain(block: number): void {
    if (this.#refs[block]++ === 0) this.#idle.delete(block);
  }

  #release(block: number): void {
    if (this.#refs[block] === 0) throw new EngineError(`KV block ${block} released twice`);
    if (--this.#refs[block] > 0) return;
    if (this.#byBlock.has(block)) this.#idle.set(block, true);
    else this.#free.push(block);
  }

  #take(): number {
    let block = this.#free.pop();
    if (block === undefined) {
      // Evict the least recently idled cached block (and with it, every longer prefix through it
      // stays registered but unreachable until evicted too: lookups stop at the first miss).
      block = this.#idle.keys().next().value as number;
      this.#idle.delete(block);
      this.#forget(block);
    }
    this.#refs[block] = 1;
    return block;
  }

  #forget(block: number): void {
    const entry = this.#byBlock.get(block);
    if (!entry) return;
    this.#byBlock.delete(block);
    this.#byKey.delete(entry.key);
  }
}
