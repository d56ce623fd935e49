// The engine's running sequences: each one's slot (its row in the block table and in every per-slot
// buffer), its KV blocks as it grows (kv_cache.ts allocates them; the block table on the GPU mirrors
// them), and where it stands in its prompt and its generation.
import { TOP_LOGPROBS_MAX } from "../kernels/mod.ts";
import { EngineError } from "./errors.ts";
import { KvBlockAllocator } from "./kv_cache.ts";
import { contextOverflow, type GenerateRequest } from "./types.ts";

/** What the engine needs of a request: the GenerateRequest's generation fields. */
export type SequenceRequest = Pick<
  GenerateRequest,
  "id" | "promptIds" | "maxTokens" | "sampling" | "logprobs"
>;

export interface AddSequenceOptions {
  request: SequenceRequest;
  /** Tokens the request generated before it was preempted: appended to its prompt, and its sampling
   * counter and penalty counts continue from them, so a seed still reproduces. */
  resumed?: readonly number[];
  /** Reuse the KV blocks of prompt prefixes seen before (default: the engine's prefixCache). */
  prefixCache?: boolean;
  /** Each token needs a mask (Engine.setTokenMask) first: the sequence takes one step per decode round. */
  constrained?: boolean;
}

/** One running sequence as the engine sees it: its request and where it stands. */
export interface EngineSequence {
  id: string;
  request: SequenceRequest;
  /** Row in the block table and in every per-slot buffer. */
  slot: number;
  /** The request's prompt, plus the tokens of a resumed sequence. */
  promptIds: readonly number[];
  /** Tokens whose K/V are in the cache. */
  cached: number;
  /** Prompt tokens whose K/V came from the prefix cache. */
  cachedPrompt: number;
  /** Generated token count (including ones already reported). */
  generated: number;
  /** Tokens generated before a preemption (0 for a fresh sequence): added to the sampling counter. */
  counterBase: number;
  /** Top alternatives to report per token (0: none). */
  topLogprobs: number;
  /** Sampled under a token mask: one step per decode round. */
  constrained: boolean;
}

export interface SequenceTableOptions {
  device: GPUDevice;
  /** u32 (maxSeqs, maxBlocksPerSeq): physical KV block ids of each slot. */
  blockTable: GPUBuffer;
  maxBlocksPerSeq: number;
  numBlocks: number;
  blockSize: number;
  maxSeqs: number;
  maxContext: number;
  maxRoundSteps: number;
  prefixCache: boolean;
}

export class SequenceTable {
  readonly kvBlocks: KvBlockAllocator;
  readonly #o: SequenceTableOptions;
  readonly #free: number[];
  readonly #seqs = new Map<string, EngineSequence>();

  constructor(o: SequenceTableOptions) {
    this.#o = o;
    this.kvBlocks = new KvBlockAllocator(o.numBlocks, o.blockSize);
    this.#free = Array.from({ length: o.maxSeqs }, (_, i) => o.maxSeqs - 1 - i);
  }

  get all(): ReadonlyMap<string, EngineSequence> {
    return this.#seqs;
  }

  get(id: string): EngineSequence {
    const s = this.#seqs.get(id);
    if (!s) throw new EngineError(`Unknown sequence "${id}"`);
    return s;
  }

  /**
   * Whether a new sequence with `promptTokens` prompt tokens can start now: a free slot, and KV blocks for
   * its prompt and a first round, plus a block of headroom per running sequence so that admitting it does
   * not force a preemption at once. Blocks for later tokens are taken as the sequence grows (`grow`).
   */
  canAdmit(promptTokens: number): boolean {
    const need = this.kvBlocks.blocksFor(promptTokens + this.#o.maxRoundSteps) + this.#seqs.size;
    return this.#free.length > 0 && need <= this.kvBlocks.freeBlocks;
  }

  /**
   * Takes the KV blocks that `steps` more decode steps of each sequence need. Returns the ids that could
   * not grow because the cache is full (the caller preempts someone and tries again); the others grew.
   */
  grow(ids: readonly string[], steps: number): string[] {
    const failed: string[] = [];
    for (const id of ids) {
      const s = this.get(id);
      const before = this.kvBlocks.table(id).length;
      // Step st writes position prompt + generated - 1 + st.
      const need = s.promptIds.length + s.generated - 1 + steps;
      if (this.kvBlocks.blocksFor(need) - before > this.kvBlocks.freeBlocks) {
        failed.push(id);
        continue;
      }
      this.kvBlocks.ensureCapacity(id, need);
      if (this.kvBlocks.table(id).length !== before) this.#writeBlockTable(id, s.slot);
    }
    return failed;
  }

  /** Registers a sequence and takes KV blocks for its prompt and a first round (`grow` takes the rest). */
  add(o: AddSequenceOptions): EngineSequence {
    const { request } = o;
    const id = request.id;
    const resumed = o.resumed ?? [];
    const topLogprobs = Math.max(0, request.logprobs ?? 0);
    if (!(Number.isInteger(topLogprobs) && topLogprobs <= TOP_LOGPROBS_MAX)) {
      throw new EngineError(`top logprobs must be an integer in 0..${TOP_LOGPROBS_MAX}, got ${topLogprobs}`);
    }
    if (this.#seqs.has(id)) throw new EngineError(`Sequence "${id}" already exists`);
    const promptIds = resumed.length ? [...request.promptIds, ...resumed] : request.promptIds;
    if (promptIds.length === 0) throw new EngineError(`Sequence "${id}" has an empty prompt`);
    const overflow = contextOverflow({
      promptTokens: promptIds.length,
      maxTokens: request.maxTokens - resumed.length,
      maxContext: this.#o.maxContext,
    });
    if (overflow !== null) throw new EngineError(overflow);
    const slot = this.#free.pop();
    if (slot === undefined) {
      throw new EngineError(`No free sequence slot for "${id}" (max ${this.#o.maxSeqs})`);
    }
    let cached = 0;
    try {
      if (o.prefixCache ?? this.#o.prefixCache) cached = this.kvBlocks.matchPrefix(id, promptIds);
      this.kvBlocks.ensureCapacity(id, promptIds.length + this.#o.maxRoundSteps);
    } catch (e) {
      this.kvBlocks.free(id);
      this.#free.push(slot);
      throw e;
    }
    this.#writeBlockTable(id, slot);
    const s: EngineSequence = {
      id,
      request,
      slot,
      promptIds,
      cached,
      cachedPrompt: cached,
      generated: 0,
      counterBase: resumed.length,
      topLogprobs,
      constrained: o.constrained ?? false,
    };
    this.#seqs.set(id, s);
    return s;
  }

  /** Frees a sequence's slot and KV blocks. */
  remove(id: string): void {
    const s = this.#seqs.get(id);
    if (!s) return;
    this.#seqs.delete(id);
    this.kvBlocks.free(id);
    this.#free.push(s.slot);
  }

  #writeBlockTable(id: string, slot: number): void {
    const table = this.kvBlocks.table(id);
    const width = this.#o.maxBlocksPerSeq;
    if (table.length > width) {
      throw new EngineError(
        `Sequence "${id}" holds ${table.length} KV blocks; a block table row has ${width}`,
      );
    }
    const row = new Uint32Array(width);
    row.set(table.slice(0, row.length));
    this.#o.device.queue.writeBuffer(this.#o.blockTable, slot * row.byteLength, row);
  }
}
