// Block bookkeeping for the paged KV cache: the cache is numBlocks fixed-size blocks of blockSize
// token slots, and each sequence owns a list of blocks (its block table) that grows as it does. The
// GPU side only ever sees the block tables; this allocator decides which physical block holds what.
import { EngineError } from "./errors.ts";

export class KvBlockAllocator {
  readonly numBlocks: number;
  readonly blockSize: number;
  #free: number[];
  #tables = new Map<string, number[]>();

  constructor(numBlocks: number, blockSize: number) {
    if (!Number.isInteger(numBlocks) || numBlocks <= 0) {
      throw new EngineError(`KV cache needs a positive whole number of blocks, got ${numBlocks}`);
    }
    if (!Number.isInteger(blockSize) || blockSize <= 0) {
      throw new EngineError(`KV cache block size must be a positive integer, got ${blockSize}`);
    }
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    // Pop from the end: block 0 is handed out first.
    this.#free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  /** Blocks needed to hold `tokens` token slots. */
  blocksFor(tokens: number): number {
    return Math.ceil(Math.max(0, tokens) / this.blockSize);
  }

  get freeBlocks(): number {
    return this.#free.length;
  }

  get usedBlocks(): number {
    return this.numBlocks - this.#free.length;
  }

  /** Whether a new sequence of `tokens` slots fits in the free blocks now. */
  canAllocate(tokens: number): boolean {
    return this.blocksFor(tokens) <= this.#free.length;
  }

  /** Grows `id`'s table (creating it) to hold at least `tokens` slots; throws when blocks run out. */
  ensureCapacity(id: string, tokens: number): readonly number[] {
    let table = this.#tables.get(id);
    if (!table) {
      table = [];
      this.#tables.set(id, table);
    }
    const need = this.blocksFor(tokens) - table.length;
    if (need > this.#free.length) {
      throw new EngineError(
        `KV cache is full: sequence "${id}" needs ${need} more blocks of ${this.blockSize} tokens, ` +
          `${this.#free.length} of ${this.numBlocks} are free`,
      );
    }
    for (let i = 0; i < need; i++) table.push(this.#free.pop()!);
    return table;
  }

  /** The physical blocks of `id`, in order (empty when unknown). */
  table(id: string): readonly number[] {
    return this.#tables.get(id) ?? [];
  }

  has(id: string): boolean {
    return this.#tables.has(id);
  }

  /** Returns all of `id`'s blocks to the free list. */
  free(id: string): void {
    const table = this.#tables.get(id);
    if (!table) return;
    this.#tables.delete(id);
    for (let i = table.length - 1; i >= 0; i--) this.#free.push(table[i]);
  }
}
