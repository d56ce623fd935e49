// The batch builder without a GPU: where each kind of forward pass puts its tokens' slots and positions,
// which rows get logits, and how a layout binds to the engine's buffers.
import assert from "node:assert/strict";
import { decodeLayout, forwardBatch, prefillLayout, promptLogitsLayout } from "./batch.ts";

Deno.test("prefillLayout() packs chunks of several prompts and samples those it completes", () => {
  const a = [10, 11, 12, 13, 14];
  const b = [20, 21, 22];
  // a's chunk [2, 5) completes it; b's chunk [0, 2) does not.
  const p = prefillLayout([{ slot: 3, promptIds: a, from: 2, n: 3 }, {
    slot: 0,
    promptIds: b,
    from: 0,
    n: 2,
  }]);
  assert.deepEqual([...p.tokens], [12, 13, 14, 20, 21]);
  assert.deepEqual(p.partOffsets, [0, 3]);
  assert.deepEqual(p.completes, [0]);
  const l = p.layout;
  assert.equal(l.nTokens, 5);
  assert.deepEqual([...p.meta.subarray(l.tokenSeq.offset, l.tokenSeq.offset + 5)], [3, 3, 3, 0, 0]);
  assert.equal(l.tokenPos.offset, 64, "segments start on 256-byte boundaries");
  assert.deepEqual([...p.meta.subarray(64, 69)], [2, 3, 4, 0, 1]);
  assert.deepEqual(l.logitRows, { offset: 128, words: 1 });
  assert.equal(p.meta[128], 2, "the last token of a's chunk");
  assert.equal(l.maxQueryTokens, 3);
  assert.equal(l.maxContext, 5);
});

Deno.test("prefillLayout() still names one logits row when no prompt completes", () => {
  const p = prefillLayout([{ slot: 1, promptIds: [1, 2, 3, 4], from: 0, n: 2 }]);
  assert.deepEqual(p.completes, []);
  assert.deepEqual(p.layout.logitRows, { offset: 128, words: 1 });
  assert.equal(p.meta.length, 129);
});

Deno.test("decodeLayout() gives each step the slots and its positions, reading history row s", () => {
  const d = decodeLayout([{ slot: 5, pos: 9 }, { slot: 2, pos: 30 }], 3);
  assert.equal(d.meta.length, 64 * 4);
  assert.deepEqual([...d.meta.subarray(0, 2)], [5, 2]);
  assert.deepEqual(d.steps.map((s) => [...d.meta.subarray(s.tokenPos.offset, s.tokenPos.offset + 2)]), [
    [9, 30],
    [10, 31],
    [11, 32],
  ]);
  assert.deepEqual(d.steps.map((s) => s.tokensOffset), [0, 2, 4]);
  for (const s of d.steps) {
    assert.deepEqual(s.tokenSeq, { offset: 0, words: 2 });
    assert.equal(s.maxQueryTokens, 1);
    assert.equal(s.maxContext, 33);
    assert.equal(s.logitRows, null);
  }
});

Deno.test("decodeLayout() runs the last singleStep rows in step 0 only and lists their slots", () => {
  const d = decodeLayout([{ slot: 5, pos: 9 }, { slot: 2, pos: 30 }, { slot: 7, pos: 4 }], 3, 2);
  assert.equal(d.singleStepSlots?.offset, 64 * 4);
  assert.deepEqual([...d.meta.subarray(64 * 4, 64 * 4 + 2)], [2, 7]);
  assert.deepEqual(d.steps.map((s) => s.nTokens), [3, 1, 1]);
  assert.deepEqual(d.steps.map((s) => s.tokenSeq.words), [3, 1, 1]);
  // Later steps keep the history stride of all three rows: row j stays at column j.
  assert.deepEqual(d.steps.map((s) => s.tokensOffset), [0, 3, 6]);
  assert.deepEqual([...d.meta.subarray(64, 67)], [9, 30, 4]);
  assert.equal(decodeLayout([{ slot: 1, pos: 2 }], 2).singleStepSlots, null);
});

Deno.test("promptLogitsLayout() asks for every row, or only the prompt's last", () => {
  const ids = [1, 2, 3, 4, 5, 6, 7];
  const all = promptLogitsLayout({ slot: 0, ids, from: 4, n: 3, lastOnly: false });
  assert.equal(all.rows, 3);
  assert.deepEqual([...all.tokens], [5, 6, 7]);
  assert.deepEqual([...all.meta.subarray(64, 67)], [4, 5, 6]);
  assert.deepEqual([...all.meta.subarray(128, 131)], [0, 1, 2]);
  assert.equal(all.layout.maxContext, 7);
  const early = promptLogitsLayout({ slot: 0, ids, from: 0, n: 4, lastOnly: true });
  assert.equal(early.rows, 0);
  assert.deepEqual(early.layout.logitRows, { offset: 128, words: 1 });
  const last = promptLogitsLayout({ slot: 0, ids, from: 4, n: 3, lastOnly: true });
  assert.equal(last.rows, 1);
  assert.equal(last.meta[128], 2);
});

Deno.test("forwardBatch() binds a layout's ranges of the meta buffer", () => {
  const meta = { label: "meta" } as GPUBuffer;
  const tokens = { label: "tokens" } as GPUBuffer;
  const blockTable = { label: "blockTable" } as GPUBuffer;
  const logits = { label: "logits" } as GPUBuffer;
  const { layout } = prefillLayout([{ slot: 0, promptIds: [7, 8], from: 0, n: 2 }]);
  const b = forwardBatch(layout, { meta, tokens, blockTable, logits, ropeMaxPos: 100 });
  assert.deepEqual(b.tokenSeq, { buffer: meta, offset: 0, size: 8 });
  assert.deepEqual(b.tokenPos, { buffer: meta, offset: 256, size: 8 });
  assert.deepEqual(b.logitRows, { idx: { buffer: meta, offset: 512, size: 4 }, count: 1 });
  assert.equal(b.tokens, tokens);
  assert.equal(b.ropeMaxPos, 100);
});
