import assert from "node:assert/strict";
import { KvBlockAllocator } from "./kv_cache.ts";

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

Deno.test("KvBlockAllocator grows tables, frees them, and refuses what does not fit", () => {
  const kv = new KvBlockAllocator(8, 4);
  assert.equal(kv.blocksFor(0), 0);
  assert.equal(kv.blocksFor(9), 3);
  kv.ensureCapacity("a", 9);
  assert.equal(kv.table("a").length, 3);
  kv.ensureCapacity("a", 12); // still 3 blocks
  assert.equal(kv.table("a").length, 3);
  kv.ensureCapacity("b", 20);
  assert.equal(kv.usedBlocks, 8);
  assert.equal(new Set([...kv.table("a"), ...kv.table("b")]).size, 8, "no block is handed out twice");
  assert.equal(kv.canAllocate(1), false);
  assert.throws(
    () => kv.ensureCapacity("c", 1),
    /KV cache is full: sequence "c" needs 1 more blocks of 4 tokens, 0 of 8/,
  );
  kv.free("a");
  kv.free("a"); // unknown now: a no-op
  assert.equal(kv.usedBlocks, 5);
  assert.equal(kv.canAllocate(12), true);
  kv.free("b");
  kv.free("c");
  assert.equal(kv.usedBlocks, 0);
  assert.throws(() => new KvBlockAllocator(0, 16), /positive whole number of blocks, got 0/);
  assert.throws(() => new KvBlockAllocator(4, 1.5), /block size must be a positive integer, got 1.5/);
});

Deno.test("matchPrefix reuses registered full prompt blocks, never the last prompt token", () => {
  const kv = new KvBlockAllocator(16, 4);
  const p = range(10, 100); // 2 full blocks + 2 tokens
  assert.equal(kv.matchPrefix("a", p), 0);
  kv.ensureCapacity("a", 14);
  kv.registerPrefix("a", p, 6); // only block 0 is computed so far
  assert.equal(kv.cachedBlocks, 1);
  kv.registerPrefix("a", p, 10);
  assert.equal(kv.cachedBlocks, 2);
  // Same prompt: both full blocks are reusable (the last token is in the partial third block).
  assert.equal(kv.matchPrefix("b", p), 8);
  assert.deepEqual(kv.table("b"), kv.table("a").slice(0, 2));
  // A prompt of exactly 8 tokens keeps its last token uncached: only block 0.
  assert.equal(kv.matchPrefix("c", p.slice(0, 8)), 4);
  // A prompt that differs inside block 1 reuses block 0 only; one differing in block 0 nothing.
  const q = [...p.slice(0, 5), 7, ...p.slice(6)];
  assert.equal(kv.matchPrefix("d", q), 4);
  assert.equal(kv.matchPrefix("e", [1, ...p.slice(1)]), 0);
  assert.throws(() => kv.matchPrefix("a", p), /already has KV blocks/);
  // Shared blocks count once; freeing every user keeps them cached (idle), not used.
  kv.ensureCapacity("b", 12);
  for (const id of ["a", "b", "c", "d", "e"]) kv.free(id);
  assert.equal(kv.usedBlocks, 0);
  assert.equal(kv.cachedBlocks, 2);
  assert.equal(kv.matchPrefix("f", p), 8, "idle cached blocks are still found");
  kv.free("f");
});

Deno.test("cached idle blocks are evicted oldest first when the free list runs dry", () => {
  const kv = new KvBlockAllocator(4, 2);
  const p = [1, 2, 3, 4, 5];
  kv.matchPrefix("a", p);
  kv.ensureCapacity("a", 5);
  kv.registerPrefix("a", p, 5); // blocks [1,2] and [3,4] cached
  kv.free("a");
  assert.equal(kv.freeBlocks, 4);
  assert.equal(kv.cachedBlocks, 2);
  kv.ensureCapacity("b", 6); // needs 3: 1 never-cached free block + ... evicts cached ones
  assert.equal(kv.cachedBlocks < 2, true, "an idle cached block was reused");
  assert.equal(new Set(kv.table("b")).size, 3);
  kv.free("b");
  assert.equal(kv.usedBlocks, 0);
  // A cached block in use is never evicted.
  kv.matchPrefix("c", p);
  kv.ensureCapacity("c", 5);
  kv.registerPrefix("c", p, 5);
  const before = [...kv.table("c")];
  kv.ensureCapacity("d", 2);
  assert.deepEqual(kv.table("c"), before);
  assert.equal(new Set([...kv.table("c"), ...kv.table("d")]).size, 4);
  assert.throws(() => kv.ensureCapacity("e", 1), /KV cache is full/);
  kv.clearCache();
});
